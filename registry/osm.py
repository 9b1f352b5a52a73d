"""OSM extracts as ledgers: carriers (street lamps, traffic signals, masts, power poles) and
fronts (surveillance and speed cameras) from an ``.osm.pbf``/``.osm`` file's points, with
what their tags say (height, operator, camera direction and type, start date), the OSM id
kept as an ``osm`` alias so a re-import updates instead of doubling."""

from __future__ import annotations

import re
from typing import Any

# OSM's tags -> the registry's kind; the first match wins, so a street lamp that also
# carries ``man_made=surveillance`` is a lamp when carriers are read and a camera when
# fronts are.
CARRIER_KINDS = (
    ("highway", "street_lamp", "street_lamp"),
    ("highway", "traffic_signals", "traffic_pole"),
    ("man_made", "mast", "mast"),
    ("man_made", "utility_pole", "power_pole"),
    ("power", "pole", "power_pole"),
)
FRONT_KINDS = (
    ("man_made", "surveillance", "camera"),
    ("highway", "speed_camera", "camera"),
)
# Where GDAL's OSM driver puts the keys: its own columns, or the other_tags hstore text.
COLUMNS = {"highway", "man_made"}
WHERE = ("highway IN ('street_lamp', 'traffic_signals', 'speed_camera')"
         " OR man_made IN ('mast', 'utility_pole', 'surveillance')"
         " OR other_tags LIKE '%\"power\"=>\"pole\"%'")
HSTORE = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')
# A camera's opening angle by its OSM camera:type, when the tags give none.
FOV = {"dome": 360.0, "panning": 360.0, "fixed": 60.0}
COMPASS = {"N": 0, "NE": 45, "E": 90, "SE": 135, "S": 180, "SW": 225, "W": 270, "NW": 315}


def is_osm(path: str) -> bool:
    return path.lower().endswith((".osm.pbf", ".osm", ".pbf"))


def tags(row: dict[str, Any]) -> dict[str, str]:
    """All of a point's tags: the driver's columns and the ``other_tags`` text."""
    out = {k: str(row[k]) for k in COLUMNS if isinstance(row.get(k), str)}
    other = row.get("other_tags")
    if isinstance(other, str):
        out.update((k.replace('\\"', '"'), v.replace('\\"', '"'))
                   for k, v in HSTORE.findall(other))
    return out


def _number(text: str | None) -> float | None:
    m = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(m)?\s*$", text or "")
    return float(m.group(1)) if m else None


def _direction(text: str | None) -> float | None:
    if text is None:
        return None
    if text.strip().upper() in COMPASS:
        return float(COMPASS[text.strip().upper()])
    d = _number(text)
    return d % 360 if d is not None else None


def as_ledger_row(row: dict[str, Any], entity: str) -> dict[str, Any] | None:
    """One OSM point as a ledger row in the registry's field names, or None if it is not
    a carrier/front of ``entity``."""
    t = tags(row)
    kinds = CARRIER_KINDS if entity == "carrier" else FRONT_KINDS
    kind = next((k for key, value, k in kinds if t.get(key) == value), None)
    if kind is None:
        return None
    point = row["geometry"]
    out: dict[str, Any] = {"kind": kind, "lon": point.x, "lat": point.y,
                           "osm_id": str(row["osm_id"]),
                           # OSM's owner is a name, not a department of the directory: it
                           # is kept as the operator; the owner is the importing department.
                           "operator": t.get("operator") or t.get("owner")}
    if (start := t.get("start_date")) and re.match(r"^\d{4}-\d{2}-\d{2}$", start):
        out["built_at"] = start
    if entity == "carrier":
        out["height_m"] = _number(t.get("height"))
        return out
    out["direction"] = _direction(t.get("camera:direction") or t.get("direction"))
    camera_type = t.get("camera:type")
    out["fov"] = _number(t.get("camera:angle")) or FOV.get(camera_type or "")
    if out["direction"] is None and out["fov"] != 360.0:
        out["fov"] = None  # a field of view with no direction says nothing
    return out


def read(path: str, entity: str) -> list[dict[str, Any]]:
    """The carriers or fronts among an OSM extract's points, as ledger rows."""
    import pyogrio

    df = pyogrio.read_dataframe(path, layer="points", where=WHERE)
    rows = (as_ledger_row(r, entity) for r in df.to_dict("records"))
    return [r for r in rows if r is not None]

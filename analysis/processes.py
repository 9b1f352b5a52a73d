"""The analysis processes (OGC API – Processes): what each takes and gives (its process
description), its inputs checked, and its run on the layers through ``layers.analysis``.

A process names its layers by id; ``Resolve`` (given by the caller of ``execute``) finds a
layer with the caller's access, and a layer the caller may not read is the same NotFound
as one that does not exist. Nothing here knows HTTP."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection

from layers import analysis
from layers.catalog import Layer
from layers.errors import Invalid
from layers.restrict import Restriction

Resolve = Callable[[str, tuple[str, ...]], Awaitable[tuple[Layer, Restriction]]]
MAX_NEAREST = 100
MAX_BUFFER_M = 50_000
MAX_GEOJSON = 200_000  # characters of a GeoJSON input

_POINT = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
          "description": "[longitude, latitude] in WGS84 / CGCS2000"}
_LAYER = {"type": "string", "description": "a layer id of the catalog"}
_FC = {"type": "object", "contentMediaType": "application/geo+json",
       "description": "a GeoJSON FeatureCollection"}


@dataclass(frozen=True)
class Process:
    id: str
    title: str
    description: str
    inputs: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    output: str

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "description": self.description,
                "version": "1.0.0", "jobControlOptions": ["sync-execute", "async-execute",
                                                            "dismiss"],
                "outputTransmission": ["value"], "keywords": ["analysis"]}

    def describe(self) -> dict[str, Any]:
        return {**self.summary(),
                "inputs": {k: {"title": k, "description": v.get("description", ""),
                               "schema": {x: y for x, y in v.items() if x != "description"},
                               "minOccurs": 1 if k in self.required else 0, "maxOccurs": 1}
                           for k, v in self.inputs.items()},
                "outputs": {"result": {"title": "result", "description": self.output,
                                       "schema": _FC}}}


PROCESSES = {p.id: p for p in (
    Process("locate", "Which polygon holds a point",
            "The features of a polygon layer (districts, streets, grid cells) that hold the "
            "point, smallest first, with the fields the caller may read.",
            {"layer": _LAYER, "point": _POINT,
             "geometry": {"type": "boolean", "default": False,
                          "description": "return the polygons' shapes too"}},
            ("layer", "point"), "the polygons holding the point"),
    Process("nearest", "The nearest features to a point",
            "The n nearest features of a layer to a point, nearest first, each with its "
            "distance in metres on the ellipsoid.",
            {"layer": _LAYER, "point": _POINT,
             "n": {"type": "integer", "minimum": 1, "maximum": MAX_NEAREST, "default": 5},
             "within": {"type": "number", "minimum": 0,
                        "description": "only features within this many metres"}},
            ("layer", "point"), "the nearest features, with distance_m"),
    Process("buffer", "A shape widened by a distance",
            "A GeoJSON geometry widened by a distance in metres on the ellipsoid, with the "
            "area of the result in square metres.",
            {"geometry": {"type": "object", "description": "a GeoJSON geometry (lon/lat)"},
             "distance": {"type": "number", "minimum": 0, "maximum": MAX_BUFFER_M,
                          "description": "metres"}},
            ("geometry", "distance"), "the widened shape, with area_m2"),
    Process("aggregate", "Statistics of a layer by the polygons of another",
            "For each polygon of `by` (districts, grid cells), a statistic of the features "
            "of `layer` inside it: count; sum, mean, min or max of a numeric field; length "
            "of lines or area of polygons apportioned by the part inside (metres, m²).",
            {"layer": _LAYER, "by": _LAYER,
             "stat": {"type": "string", "enum": list(analysis.STATS), "default": "count"},
             "field": {"type": "string", "description": "the field of sum, mean, min, max"},
             "geometry": {"type": "boolean", "default": False}},
            ("layer", "by"), "each polygon of `by` with its value"),
)}


def _point(inputs: dict[str, Any]) -> tuple[float, float]:
    p = inputs.get("point")
    if isinstance(p, dict) and p.get("type") == "Point":  # a GeoJSON point is taken too
        p = p.get("coordinates")
    if not (isinstance(p, list) and len(p) == 2
            and all(isinstance(v, int | float) and math.isfinite(v) for v in p)):
        raise Invalid("point: [longitude, latitude] is needed")
    lon, lat = float(p[0]), float(p[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise Invalid(f"point: [{lon}, {lat}] is not a longitude and latitude")
    return lon, lat


def _number(inputs: dict[str, Any], name: str, default: float | None, lo: float,
            hi: float | None = None, integer: bool = False) -> float | None:
    v = inputs.get(name, default)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, int | float) and math.isfinite(v)
    if isinstance(v, bool) or not ok or v < lo or (hi is not None and v > hi):
        raise Invalid(f"{name}: {'an integer' if integer else 'a number'} from {lo:g}"
                      + (f" to {hi:g}" if hi is not None else "") + " is needed")
    return v


def _plain(value: Any) -> Any:
    """Numbers as JSON numbers (PostgreSQL's sums are decimals), times as ISO text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _feature(row: dict[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    props = {k: _plain(v) for k, v in row.items() if not k.startswith("_")}
    for k in extra:
        props[k.lstrip("_")] = _plain(row[f"_{k.lstrip('_')}"])
    return {"type": "Feature", "id": row["_fid"], "geometry": row.get("_geometry"),
            "properties": props}


def _collection(features: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features, "numberReturned": len(features),
            **extra}


async def execute(process_id: str, inputs: Any, conn: AsyncConnection,
                  resolve: Resolve) -> tuple[dict[str, Any], list[str]]:
    """The result of a process, and the layers it read (for the audit)."""
    if not isinstance(inputs, dict):
        raise Invalid("inputs: an object of the process's inputs is needed")
    p = PROCESSES[process_id]
    unknown = sorted(set(inputs) - set(p.inputs))
    if unknown:
        raise Invalid(f"{process_id} takes no input {unknown[0]!r}; it takes "
                      f"{', '.join(p.inputs)}")
    missing = [k for k in p.required if k not in inputs]
    if missing:
        raise Invalid(f"{process_id} needs the input {missing[0]!r}")
    for k in ("layer", "by"):
        if k in inputs and not isinstance(inputs[k], str):
            raise Invalid(f"{k}: a layer id is needed")
    geometry = inputs.get("geometry") is True
    if process_id == "locate":
        layer, r = await resolve(inputs["layer"], ("vector",))
        if "Polygon" not in (layer.geometry_type or ""):
            raise Invalid(f"locate needs a polygon layer; {layer.id} has {layer.geometry_type}")
        rows = await analysis.locate(conn, layer, r, *_point(inputs), geometry=geometry)
        return _collection([_feature(x) for x in rows]), [layer.id]
    if process_id == "nearest":
        layer, r = await resolve(inputs["layer"], ("vector",))
        n = int(_number(inputs, "n", 5, 1, MAX_NEAREST, integer=True))
        within = _number(inputs, "within", None, 0)
        rows = await analysis.nearest(conn, layer, r, *_point(inputs), n, within)
        return _collection([_feature(x, ("distance_m",)) for x in
                            ({**x, "_distance_m": x["_distance"]} for x in rows)]), [layer.id]
    if process_id == "buffer":
        g = inputs["geometry"]
        text = json.dumps(g) if isinstance(g, dict) else ""
        if not text or "type" not in g or len(text) > MAX_GEOJSON:
            raise Invalid(f"geometry: a GeoJSON geometry of at most {MAX_GEOJSON} characters")
        distance = _number(inputs, "distance", None, 0, MAX_BUFFER_M)
        try:
            out = await analysis.buffer(conn, text, float(distance))
        except Exception as exc:  # PostGIS could not read it
            if exc.__class__.__module__.startswith("psycopg"):
                raise Invalid(f"geometry: not a GeoJSON geometry PostGIS reads "
                              f"({str(exc).splitlines()[0]})") from None
            raise
        return {"type": "Feature", "geometry": out["geometry"],
                "properties": {"distance_m": distance, "area_m2": out["area_m2"]}}, []
    items, ri = await resolve(inputs["layer"], ("vector",))
    zones, rz = await resolve(inputs["by"], ("vector",))
    if "Polygon" not in (zones.geometry_type or ""):
        raise Invalid(f"by: a polygon layer is needed; {zones.id} has {zones.geometry_type}")
    stat = inputs.get("stat", "count")
    field = inputs.get("field")
    if field is not None and not isinstance(field, str):
        raise Invalid("field: a field name is needed")
    rows = await analysis.aggregate(conn, items, ri, zones, rz, str(stat), field, geometry)
    return _collection([_feature(x, ("value",)) for x in rows], stat=stat,
                       field=field), [items.id, zones.id]

"""Reuse lookups: which existing carriers near a site can take a new front, and why the
others cannot; and whether a proposed front duplicates one that is already there.

Free capacity is computed, not stored: a carrier's power and ports minus what its current
fronts and live reservations draw, its slots minus those holding a front or claimed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from registry.scope import EVERYTHING, Scope, statement

MAX_RADIUS_M = 5000.0


@dataclass(frozen=True)
class Needs:
    """What a new front needs of its carrier (from its device model, or given)."""

    power_w: float = 0.0
    needs_24h: bool = False
    network: str | None = None  # the carrier must offer this network and a free port
    height_m: float | None = None  # a free slot must span this mounting height
    load_kg: float = 0.0  # and carry this weight


MODEL_NEEDS = ("SELECT power_w, needs_24h, network, weight_kg FROM registry.device_models"
               " WHERE id = %s")


def needs_from(row: tuple, height_m: float | None) -> Needs:
    """Needs from a MODEL_NEEDS row."""
    return Needs(float(row[0]), bool(row[1]), row[2], height_m, float(row[3]))


def needs_of_model(conn: psycopg.Connection, model: str, height_m: float | None = None) -> Needs:
    row = conn.execute(MODEL_NEEDS, (model,)).fetchone()
    if row is None:
        raise LookupError(f"no device model {model!r}")
    return needs_from(row, height_m)


# Carriers within the radius of the site, nearest first, with what is free on each. A
# slot is free if no front hangs on it and no live reservation claims it; power and ports
# are used by current fronts and by the models of live reservations.
NEARBY = """
WITH site AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(site)s), 4490)::geography AS g)
SELECT c.code, c.kind, c.status, c.power_supply, c.network,
       c.power_w - coalesce(u.w, 0) AS power_free, c.ports - coalesce(u.ports, 0) AS ports_free,
       ST_Distance(c.geom::geography, site.g) AS distance, ST_X(c.geom), ST_Y(c.geom),
       coalesce((SELECT json_agg(json_build_array(s.slot, s.height_min, s.height_max,
                                                  s.load_kg) ORDER BY s.slot)
                 FROM registry.slots s WHERE s.carrier = c.code
                 AND NOT EXISTS (SELECT 1 FROM registry.deployments d WHERE d.carrier = c.code
                                 AND d.slot = s.slot AND d.valid_to IS NULL)
                 AND NOT EXISTS (SELECT 1 FROM registry.reservations r
                                 WHERE r.carrier = c.code AND r.slot = s.slot
                                 AND r.status IN ('requested', 'approved'))), '[]') AS slots
FROM site, registry.carriers c
LEFT JOIN LATERAL (
    SELECT sum(m.power_w) AS w, count(m.network) AS ports FROM (
        SELECT f.model FROM registry.deployments d JOIN registry.fronts f ON f.code = d.front
        WHERE d.carrier = c.code AND d.valid_to IS NULL
        UNION ALL
        SELECT r.model FROM registry.reservations r
        WHERE r.carrier = c.code AND r.status IN ('requested', 'approved')) x
    JOIN registry.device_models m ON m.id = x.model) u ON true
WHERE ST_DWithin(c.geom::geography, site.g, %(radius)s)
  AND {limits}
ORDER BY distance, c.code
"""


@dataclass
class Carrier:
    code: str
    kind: str
    distance_m: float
    lon: float
    lat: float
    status: str
    power_supply: str
    network: str | None
    power_free_w: float
    ports_free: int
    free_slots: list[dict[str, float]]
    reasons: list[str]


def assess(c: Carrier, needs: Needs) -> list[str]:
    """Why this carrier cannot take the front (empty: it can); keeps only fitting slots."""
    why = []
    if c.status != "in_service":
        why.append(f"not in service ({c.status})")
    if needs.needs_24h and c.power_supply != "24h":
        why.append("power only from dusk to dawn, the device needs it 24/7"
                   if c.power_supply == "dusk_to_dawn" else "no power supply")
    if c.power_free_w < needs.power_w:
        why.append(f"{c.power_free_w:g} W free, the device draws {needs.power_w:g} W")
    if needs.network is not None:
        if c.network != needs.network:
            why.append(f"network is {c.network or 'none'}, the device needs {needs.network}")
        elif c.ports_free < 1:
            why.append("no free network port")
    fitting = [s for s in c.free_slots if s["load_kg"] >= needs.load_kg
               and (needs.height_m is None
                    or s["height_min"] <= needs.height_m <= s["height_max"])]
    if not fitting:
        at = f" at {needs.height_m:g} m" if needs.height_m is not None else ""
        why.append(f"no free slot{at} for {needs.load_kg:g} kg" if c.free_slots
                   else "no free slot")
    c.free_slots = fitting
    return why


def check_radius(radius_m: float) -> None:
    if not 0 < radius_m <= MAX_RADIUS_M:
        raise ValueError(f"radius {radius_m} m is outside (0, {MAX_RADIUS_M:g}]")


# What the lookup decides on: a caller who may not read one of these gets no lookup.
DECIDES_ON = ("status", "power_supply", "power_w", "network", "ports", "height_m", "slots",
              "slots_taken")


def nearby(site: dict[str, Any], radius_m: float, scope: Scope = EVERYTHING
           ) -> tuple[sql.Composed, dict[str, Any]]:
    """The NEARBY statement for what the caller may see, with its parameters."""
    check_radius(radius_m)
    query, params = statement(NEARBY, scope, "c")
    return query, {**params, "site": json.dumps(site), "radius": radius_m}


def answer(rows: list[tuple], site: dict[str, Any], radius_m: float,
           needs: Needs) -> dict[str, Any]:
    """Candidates (nearest first, with what is free) and the excluded, with reasons."""
    candidates, excluded = [], []
    for r in rows:
        c = Carrier(r[0], r[1], round(float(r[7]), 2), r[8], r[9], r[2], r[3], r[4],
                    float(r[5]), int(r[6]),
                    [{"slot": s[0], "height_min": s[1], "height_max": s[2], "load_kg": s[3]}
                     for s in r[10]], [])
        c.reasons = assess(c, needs)
        (excluded if c.reasons else candidates).append(c)
    return {"site": site, "radius_m": radius_m, "needs": asdict(needs),
            "candidates": [_doc(c) for c in candidates],
            "excluded": [{"code": c.code, "kind": c.kind, "distance_m": c.distance_m,
                          "reasons": c.reasons} for c in excluded]}


def lookup(conn: psycopg.Connection, site: dict[str, Any], radius_m: float, needs: Needs,
           scope: Scope = EVERYTHING) -> dict[str, Any]:
    rows = conn.execute(*nearby(site, radius_m, scope)).fetchall()
    return answer(rows, site, radius_m, needs)


def _doc(c: Carrier) -> dict[str, Any]:
    d = asdict(c)
    del d["reasons"]
    return d

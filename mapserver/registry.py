"""Registry endpoints: resolve a city code (or a legacy alias), and the reuse lookup.

Both read through the ``carriers`` / ``fronts`` layers' access: a caller who may not read
the layer gets the same 404 as for a missing code, and an area-limited caller sees only
carriers inside its area.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mapserver.deps import app_state, note, readable_layer
from registry import codes, reuse
from registry.ledger import ALIAS, ALIASES

ENTITY_LAYER = {"carrier": "carriers", "front": "fronts"}

CARRIER = """
SELECT c.code, c.kind, c.status, c.owner, c.operator, c.height_m, c.power_supply, c.power_w,
       c.network, c.ports, c.cabinet, c.built_at::text, ST_X(c.geom), ST_Y(c.geom),
       (SELECT coalesce(json_agg(json_build_object('slot', s.slot, 'height_min', s.height_min,
                'height_max', s.height_max, 'load_kg', s.load_kg, 'front', d.front)
                ORDER BY s.slot), '[]')
        FROM registry.slots s LEFT JOIN registry.deployments d ON d.carrier = s.carrier
        AND d.slot = s.slot AND d.valid_to IS NULL WHERE s.carrier = c.code)
FROM registry.carriers c WHERE c.code = %s"""
FRONT = """
SELECT f.code, f.kind, f.state, f.owner, f.model, f.direction, f.fov, f.range_m, f.protocol,
       ST_X(f.geom), ST_Y(f.geom),
       (SELECT json_build_object('carrier', d.carrier, 'slot', d.slot)
        FROM registry.deployments d WHERE d.front = f.code AND d.valid_to IS NULL)
FROM registry.fronts f WHERE f.code = %s"""


async def code(request: Request) -> Response:
    """``/codes/{code}``: a code, or ``scheme:value`` of a legacy identifier."""
    raw = request.path_params["code"]
    state = app_state(request)
    async with state.pool.connection() as conn:
        if ":" in raw:
            scheme, value = raw.split(":", 1)
            if scheme not in ALIASES.values():
                raise HTTPException(400, f"alias scheme {scheme!r} is not one of "
                                         + ", ".join(sorted(ALIASES.values())))
            cur = await conn.execute(ALIAS, (scheme, value))
            found = await cur.fetchone()
            c = found[0] if found else None
        else:
            try:
                c = codes.check(raw)
            except codes.CodeError as exc:
                raise HTTPException(400, str(exc)) from exc
        cur = await conn.execute(
            "SELECT r.entity FROM registry.codes k JOIN registry.code_rules r"
            " ON r.kind = k.kind WHERE k.code = %s", (c,))
        row = await cur.fetchone() if c else None
        if row is None:
            raise HTTPException(404, f"no entity with code {raw!r}")
        entity = row[0]
        _, access = await readable_layer(request, conn, ENTITY_LAYER[entity], ("vector",),
                                         "entity with code")
        cur = await conn.execute(CARRIER if entity == "carrier" else FRONT, (c,))
        r = await cur.fetchone()
        if r is None:
            raise HTTPException(404, f"no entity with code {raw!r}")
        lon, lat = (r[12], r[13]) if entity == "carrier" else (r[9], r[10])
        if access.restriction.area_id is not None:
            cur = await conn.execute(
                "SELECT ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))"
                " FROM onemap.areas WHERE id = %s", (lon, lat, access.restriction.area_id))
            inside = await cur.fetchone()
            if not inside or not inside[0]:
                raise HTTPException(404, f"no entity with code {raw!r}")
        cur = await conn.execute("SELECT scheme, value FROM registry.aliases WHERE code = %s"
                                 " ORDER BY scheme, value", (c,))
        aliases = [f"{s}:{v}" for s, v in await cur.fetchall()]
    note(request, [ENTITY_LAYER[entity]], 1)
    doc: dict[str, Any] = {"code": c, "entity": entity, "kind": r[1],
                           "position": {"type": "Point", "coordinates": [lon, lat]},
                           "aliases": aliases,
                           "layer": ENTITY_LAYER[entity],
                           "feature": f"/collections/{ENTITY_LAYER[entity]}/items/{c}"}
    if entity == "carrier":
        doc.update(status=r[2], owner=r[3], operator=r[4], height_m=r[5], power_supply=r[6],
                   power_w=r[7], network=r[8], ports=r[9], cabinet=r[10], built_at=r[11],
                   slots=r[14])
    else:
        doc.update(state=r[2], owner=r[3], model=r[4], direction=r[5], fov=r[6],
                   range_m=r[7], protocol=r[8], mounted_on=r[11])
    return JSONResponse(doc)


def _float(q, name: str, default: float | None = None) -> float | None:
    if not q.get(name):
        return default
    try:
        return float(q[name])
    except ValueError as exc:
        raise HTTPException(400, f"{name} {q[name]!r} is not a number") from exc


async def reuse_lookup(request: Request) -> Response:
    """``/registry/reuse?lon&lat&radius[&model|power_w&needs_24h&network][&height&load_kg]``."""
    q = request.query_params
    lon, lat = _float(q, "lon"), _float(q, "lat")
    if lon is None or lat is None or not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise HTTPException(400, "give the site as lon and lat (degrees)")
    radius = _float(q, "radius", 500.0)
    try:
        params = reuse.nearby_params({"type": "Point", "coordinates": [lon, lat]}, radius)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    height = _float(q, "height")
    state = app_state(request)
    async with state.pool.connection() as conn:
        _, access = await readable_layer(request, conn, "carriers", ("vector",), "layer")
        if q.get("model"):
            cur = await conn.execute(reuse.MODEL_NEEDS, (q["model"],))
            m = await cur.fetchone()
            if m is None:
                raise HTTPException(400, f"no device model {q['model']!r}")
            needs = reuse.needs_from(m, height)
        else:
            needs = reuse.Needs(_float(q, "power_w", 0.0), q.get("needs_24h") == "true",
                                q.get("network") or None, height, _float(q, "load_kg", 0.0))
        params["area"] = access.restriction.area_id
        cur = await conn.execute(reuse.NEARBY, params)
        rows = await cur.fetchall()
    note(request, ["carriers"], len(rows))
    return JSONResponse(reuse.answer(rows, {"type": "Point", "coordinates": [lon, lat]},
                                     radius, needs))


routes = [
    Route("/codes/{code}", code),
    Route("/registry/reuse", reuse_lookup),
]

"""Registry endpoints: resolve a city code (or a legacy alias), and the reuse lookup.

All read through the ``carriers`` / ``fronts`` layers' access (registry/scope.py): a caller
who may not read the layer gets the same 404 as for a missing code; a grant's area and
row filter limit the entities found, its hidden and masked fields are left out or masked
in the answers, and a lookup that decides on a field the caller may not read is a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import psycopg
from shapely import geometry
from shapely.errors import GEOSException
from shapely.validation import explain_validity
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from access.policy import LayerAccess
from layers import db as db_setup
from layers import writer
from layers.catalog import Layer
from layers.errors import DomainError, Invalid
from layers.restrict import Restriction, fid_concealed, visible_fields
from mapserver.deps import (
    WRITES,
    access,
    app_state,
    db,
    json_body,
    note,
    page,
    readable_layer,
)
from mapserver.guard import gone
from mapserver.ogc import int_value, number, parse_instant
from registry import codes, coverage, lifecycle, reservations, reuse
from registry.ledger import ALIAS, ALIASES
from registry.publish import publish_one
from registry.scope import Scope, Unreadable, conceal, conceal_history, statement

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
# An entity the caller may see: inside its area and passing its grant's filter.
VISIBLE = {"carrier": "SELECT 1 FROM registry.carriers x WHERE x.code = %(code)s AND {limits}",
           "front": "SELECT 1 FROM registry.fronts x WHERE x.code = %(code)s AND {limits}"}
POSITION = """
SELECT 'carrier', ST_X(geom), ST_Y(geom) FROM registry.carriers WHERE code = %(c)s
UNION ALL
SELECT 'front', ST_X(geom), ST_Y(geom) FROM registry.fronts WHERE code = %(c)s"""


async def _resolve(request: Request, conn: Any,
                   raw: str) -> tuple[str, str, LayerAccess, Layer]:
    """A code or ``scheme:value`` the caller may see: (code, entity, access, its layer);
    else 400/404.
    A mistyped code is refused before any lookup."""
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
    row = None
    if c is not None:
        cur = await conn.execute(POSITION, {"c": c})
        row = await cur.fetchone()
    missing = HTTPException(404, f"no entity with code {raw!r}")
    if row is None:
        raise missing
    entity = row[0]
    try:
        layer, access = await readable_layer(request, conn, ENTITY_LAYER[entity],
                                             ("vector",), "entity with code")
    except HTTPException as exc:
        # The same answer as for a code that never existed: neither that it exists nor
        # of which kind.
        raise missing from exc
    if fid_concealed(layer, access.restriction):
        raise HTTPException(403, f"your grant on {layer.id} masks or hides the code, so "
                                 "entities cannot be looked up by it")
    query, params = statement(VISIBLE[entity], Scope(layer, access.restriction), "x")
    if await (await conn.execute(query, {**params, "code": c})).fetchone() is None:
        raise missing
    return c, entity, access, layer


async def code(request: Request) -> Response:
    """``/codes/{code}``: a code, or ``scheme:value`` of a legacy identifier."""
    raw = request.path_params["code"]
    async with db(request, "registry") as conn:
        c, entity, access, _ = await _resolve(request, conn, raw)
        cur = await conn.execute(CARRIER if entity == "carrier" else FRONT, (c,))
        r = await cur.fetchone()
        cur = await conn.execute("SELECT scheme, value FROM registry.aliases WHERE code = %s"
                                 " ORDER BY scheme, value", (c,))
        aliases = [f"{s}:{v}" for s, v in await cur.fetchall()]
        doc = _entity_doc(c, entity, r, aliases, access.restriction)
        await conceal(conn, [doc], access.restriction)
    note(request, [ENTITY_LAYER[entity]], 1)
    return JSONResponse(doc)


def _entity_doc(c: str, entity: str, r: tuple, aliases: list[str],
                restriction: Restriction) -> dict[str, Any]:
    lon, lat = (r[12], r[13]) if entity == "carrier" else (r[9], r[10])
    doc: dict[str, Any] = {"code": c, "entity": entity, "kind": r[1],
                           "position": {"type": "Point", "coordinates": [lon, lat]},
                           "aliases": aliases,
                           "layer": ENTITY_LAYER[entity],
                           "feature": f"/collections/{ENTITY_LAYER[entity]}/items/{c}",
                           "history": f"/codes/{c}/history"}
    if entity == "carrier":
        doc.update(status=r[2], owner=r[3], operator=r[4], height_m=r[5], power_supply=r[6],
                   power_w=r[7], network=r[8], ports=r[9], cabinet=r[10], built_at=r[11],
                   slots=r[14])
    else:
        doc.update(state=r[2], owner=r[3], model=r[4], direction=r[5], fov=r[6],
                   range_m=r[7], protocol=r[8], mounted_on=r[11])
        # The layer calls where a front hangs its carrier.
        if "carrier" in restriction.hidden or restriction.mask_of("carrier"):
            del doc["mounted_on"]
    return doc


def _float(q, name: str, default: float | None = None) -> float | None:
    if q.get(name) is None or q.get(name) == "":
        return default
    return number(q[name], name)


def _point(q) -> dict[str, Any]:
    lon, lat = _float(q, "lon"), _float(q, "lat")
    if lon is None or lat is None or not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise HTTPException(400, "give the site as lon and lat (degrees)")
    return {"type": "Point", "coordinates": [lon, lat]}


SITE_TYPES = ("Point", "LineString", "MultiPoint", "MultiLineString", "Polygon",
              "MultiPolygon")


def _site(doc: Any) -> dict[str, Any]:
    """A GeoJSON site from a request body: a point, or a line or area to cover."""
    try:
        shape = geometry.shape(doc)
    except (AttributeError, KeyError, TypeError, ValueError, GEOSException) as exc:
        raise HTTPException(400, f"site is not a GeoJSON geometry: {exc}") from exc
    if doc.get("type") not in SITE_TYPES or shape.is_empty:
        raise HTTPException(400, f"site must be one of {', '.join(SITE_TYPES)}, not empty")
    x0, y0, x1, y1 = shape.bounds
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise HTTPException(400, "site coordinates are not longitude/latitude")
    if not shape.is_valid:
        raise HTTPException(400, f"site is not a valid shape: {explain_validity(shape)}")
    return doc


def _needs(given: Any, height: float | None, m: tuple | None) -> reuse.Needs:
    if m is not None:
        return reuse.needs_from(m, height)
    return reuse.Needs(_float(given, "power_w", 0.0),
                       str(given.get("needs_24h")).lower() == "true",
                       given.get("network") or None, height, _float(given, "load_kg", 0.0))


async def _lookup(request: Request, site: dict[str, Any], radius: float | None,
                  given: Any) -> Response:
    radius = 500.0 if radius is None else radius
    try:
        reuse.check_radius(radius)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    height = _float(given, "height")
    async with db(request, "registry") as conn:
        layer, access = await readable_layer(request, conn, "carriers", ("vector",), "layer")
        scope = _scope(layer, access, reuse.DECIDES_ON, "the reuse lookup")
        m = None
        if given.get("model"):
            cur = await conn.execute(reuse.MODEL_NEEDS, (given["model"],))
            m = await cur.fetchone()
            if m is None:
                raise HTTPException(400, f"no device model {given['model']!r}")
        needs = _needs(given, height, m)
        # Claims that lapsed free their slots before anyone looks.
        await conn.execute(reservations.EXPIRE, (app_state(request).settings.claim_hours,))
        cur = await conn.execute(*reuse.nearby(site, radius, scope))
        rows = await cur.fetchall()
        found = reuse.answer(rows, site, radius, needs)
        await conceal(conn, found["candidates"] + found["excluded"], access.restriction)
    note(request, ["carriers"], len(rows))
    return JSONResponse(found)


async def reuse_lookup(request: Request) -> Response:
    """``GET /registry/reuse?lon&lat&radius[&model|power_w&needs_24h&network][&height&load_kg]``;
    ``POST`` with ``{"site": <GeoJSON>, "radius": .., "model" or the needs}`` for a line or
    an area to cover: distances are then to the nearest point of the site."""
    if request.method == "GET":
        q = request.query_params
        return await _lookup(request, _point(q), _float(q, "radius"), q)
    body = await json_body(request)
    if "site" not in body:
        raise HTTPException(400, "give the site as GeoJSON in \"site\"")
    return await _lookup(request, _site(body["site"]), _float(body, "radius"), body)


async def duplicates(request: Request) -> Response:
    """``/registry/duplicates?lon&lat&kind[&radius][&direction&fov&range]``: what a proposed
    front would duplicate."""
    q = request.query_params
    site = _point(q)
    try:
        params = coverage.check_params(site, q.get("kind", "camera"),
                                       _float(q, "radius", coverage.SAME_KIND_M))
        view = coverage.view_params(_float(q, "direction"), _float(q, "fov"),
                                    _float(q, "range"))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    async with db(request, "registry") as conn:
        layer, access = await readable_layer(request, conn, "fronts", ("vector",), "layer")
        scope = _scope(layer, access, coverage.DECIDES_ON, "the duplicate check")
        found = [await (await conn.execute(q, p)).fetchall()
                 for q, p in coverage.statements(params, view, scope)]
        same, watching = found[0], found[1] if len(found) > 1 else []
        answer = coverage.duplicate_answer(site, params, same, watching,
                                           found[2][0][0] if len(found) > 2 else None)
        await conceal(conn, answer["same_kind_nearby"] + answer["watched_by"],
                      access.restriction)
    note(request, ["fronts"], len(same) + len(watching))
    return JSONResponse(answer)


def _scope(layer: Layer, a: LayerAccess, decides_on: tuple[str, ...], what: str) -> Scope:
    """What of the register the caller sees; 403 when the lookup would tell a field the
    caller's grant hides or masks."""
    scope = Scope(layer, a.restriction)
    try:
        scope.require(decides_on, what)
    except Unreadable as exc:
        raise HTTPException(403, str(exc)) from exc
    return scope


async def _shaped(request: Request, conn: Any, layer_id: str, shape: str,
                  role: str) -> tuple[Layer, LayerAccess]:
    """A readable vector layer of ``shape`` (or its Multi form), else 400."""
    layer, a = await readable_layer(request, conn, layer_id, ("vector",), "layer")
    if layer.geometry_type not in (shape, f"Multi{shape}"):
        raise HTTPException(400, f"{role} layer {layer.id!r} holds {layer.geometry_type}, "
                                 f"not {'polygons' if shape == 'Polygon' else 'lines'}")
    return layer, a


async def coverage_stats(request: Request) -> Response:
    """``/registry/coverage[?areas=LAYER&label=FIELD][&roads=LAYER]``: per area of a polygon
    layer (or for everything), fronts in service by kind and the share of a road layer
    within a camera's view."""
    q = request.query_params
    async with db(request, "registry") as conn:
        layer, fronts = await readable_layer(request, conn, "fronts", ("vector",), "layer")
        scope = _scope(layer, fronts, coverage.DECIDES_ON, "coverage")
        areas = roads = None
        areas_a = roads_a = LayerAccess(True, False, False)
        label = q.get("label") or None
        if q.get("areas"):
            areas, areas_a = await _shaped(request, conn, q["areas"], "Polygon", "areas")
            r = areas_a.restriction
            if label and label not in {f.name for f in visible_fields(areas, r)}:
                raise HTTPException(400, f"areas layer {areas.id!r} has no field {label!r}")
            if label and r.mask_of(label):
                raise HTTPException(400, f"field {label!r} is masked for you")
        if q.get("roads"):
            roads, roads_a = await _shaped(request, conn, q["roads"], "LineString", "roads")
        query, params = coverage.coverage_query(
            areas, label, roads, areas_a.restriction, roads_a.restriction, scope)
        rows = await (await conn.execute(query, params)).fetchall()
    note(request, ["fronts"], len(rows))
    return JSONResponse({"areas": areas.id if areas else None,
                         "roads": roads.id if roads else None,
                         "rows": coverage.coverage_rows(rows)})


async def _sync(request: Request, fn: Callable[[psycopg.Connection], Any]) -> Any:
    """Run a registry change in a worker thread of the writes' own, on its own connection
    with the writes' budget; committed unless the client has gone."""
    url, settings = app_state(request).pool.conninfo, app_state(request).settings
    options = (f"-c statement_timeout={settings.budget_ms('writes')}"
               f" -c lock_timeout={settings.lock_timeout_ms}")

    def run() -> Any:
        with psycopg.connect(url, options=options, **db_setup.CONNECT) as conn:
            out = fn(conn)
            writer.commit(conn, lambda: gone(request.scope))
            return out
    try:
        return await anyio.to_thread.run_sync(run, limiter=WRITES)
    except DomainError:
        raise
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


def _department(request: Request) -> str:
    return access(request).department


async def reserve(request: Request) -> Response:
    """``POST /registry/reservations {"carrier", "slot", "model"?, "note"?}``: the caller's
    department claims a slot; the carrier's owner then decides."""
    department = _department(request)
    body = await json_body(request)
    slot = body.get("slot")
    if not isinstance(slot, int) or isinstance(slot, bool) or not 1 <= slot <= 1000:
        raise HTTPException(400, "slot must be a whole number from 1 to 1000")
    async with db(request, "registry") as conn:
        carrier, entity, _, _ = await _resolve(request, conn, str(body.get("carrier", "")))
    if entity != "carrier":
        raise HTTPException(400, f"{carrier} is a front, not a carrier")
    settings = app_state(request).settings
    rid = await _sync(request, lambda c: reservations.reserve(
        c, carrier, slot, department, body.get("model"), body.get("note"),
        max_claims=settings.max_claims, claim_hours=settings.claim_hours))
    return JSONResponse({"id": rid, "carrier": carrier, "slot": slot,
                         "department": department, "status": "requested"}, 201)


async def list_reservations(request: Request) -> Response:
    """``GET /registry/reservations``: the caller's department's claims and those waiting
    for it as a carrier's owner (an administrator: all), waiting ones first."""
    a = access(request)
    dept = None if a.administers else _department(request)
    async with db(request, "registry") as conn:
        await conn.execute(reservations.EXPIRE, (app_state(request).settings.claim_hours,))
        cur = await conn.execute(reservations.LIST, {"dept": dept})
        columns = [c.name for c in cur.description]
        rows = [{k: v.isoformat() if hasattr(v, "isoformat") else v
                 for k, v in zip(columns, r, strict=True)} for r in await cur.fetchall()]
    return JSONResponse({"reservations": rows}, headers={"Cache-Control": "private, no-store"})


async def decide(request: Request) -> Response:
    """``POST /registry/reservations/{id} {"decision": "approve" | "refuse"}``, by the
    carrier's owner."""
    department = _department(request)
    body = await json_body(request)
    if body.get("decision") not in ("approve", "refuse"):
        raise HTTPException(400, "decision must be approve or refuse")
    try:
        rid = int_value(request.path_params["id"], "reservation id", 1)
    except Invalid as exc:
        raise HTTPException(404, "no such reservation") from exc
    async with db(request, "registry") as conn:
        cur = await conn.execute("SELECT carrier FROM registry.reservations WHERE id = %s",
                                 (rid,))
        row = await cur.fetchone()
        if row is None:
            raise HTTPException(404, f"no reservation {rid}")
        await _resolve(request, conn, row[0])
    a = access(request)
    status = await _sync(request, lambda c: reservations.decide(
        c, rid, body["decision"] == "approve", department,
        lambda owner: a.policy.may_decide(a.principal, owner),
        claim_hours=app_state(request).settings.claim_hours))
    return JSONResponse({"id": rid, "status": status, "decided_by": department})


async def withdraw(request: Request) -> Response:
    """``DELETE /registry/reservations/{id}``: the requesting department withdraws its
    claim; the slot is free again."""
    department = _department(request)
    try:
        rid = int_value(request.path_params["id"], "reservation id", 1)
    except Invalid as exc:
        raise HTTPException(404, "no such reservation") from exc
    status = await _sync(request, lambda c: reservations.cancel(c, rid, department))
    return JSONResponse({"id": rid, "status": status, "by": department})


async def history(request: Request) -> Response:
    """``/codes/{code}/history[?at=DATE]``: the lifecycle events, and the state at a date."""
    raw = request.path_params["code"]
    at = request.query_params.get("at")
    when = parse_instant(at, at) if at else datetime.now(UTC)
    async with db(request, "registry") as conn:
        c, entity, access, layer = await _resolve(request, conn, raw)
        state = await _sync(request, lambda conn: lifecycle.state_at(conn, c, when)
                            | {"events": lifecycle.events(conn, c)})
        await conceal_history(conn, layer, state, access.restriction)
    note(request, [ENTITY_LAYER[entity]], 1)
    return JSONResponse(state)


async def add_event(request: Request) -> Response:
    """``POST /codes/{code}/events {"event", "actual_at" | "planned_at", "operator"?,
    "note"?}``: needs the right to publish the entity's layer; the layer follows."""
    raw = request.path_params["code"]
    body = await json_body(request)
    times = {k: parse_instant(body[k], body[k]) for k in ("actual_at", "planned_at")
             if isinstance(body.get(k), str)}
    if not times:
        raise HTTPException(400, "give actual_at or planned_at (RFC 3339)")
    async with db(request, "registry") as conn:
        c, entity, a, _ = await _resolve(request, conn, raw)
    if not a.publish:
        raise HTTPException(403, f"you may read {ENTITY_LAYER[entity]!r} but not publish "
                                 "to it")
    settings = app_state(request).settings
    eid = await _sync(request, lambda conn: lifecycle.record(
        conn, c, str(body.get("event")), operator=body.get("operator") or
        access(request).principal.name, note=body.get("note"), **times))
    if "actual_at" in times and body.get("event") in lifecycle.AFTER:
        # The entity's state moved: its feature follows, alone.
        await anyio.to_thread.run_sync(lambda: publish_one(settings, c))
    return JSONResponse({"id": eid, "code": c, "event": body.get("event")}, 201)


async def models(request: Request) -> Response:
    """``/registry/models``: the device models whose needs a lookup can take by id."""
    async with db(request, "registry") as conn:
        await readable_layer(request, conn, "carriers", ("vector",), "layer")
        cur = await conn.execute(
            "SELECT json_build_object('id', id, 'maker', maker, 'model', model, 'category',"
            " category, 'power_w', power_w, 'weight_kg', weight_kg, 'needs_24h', needs_24h,"
            " 'network', network) FROM registry.device_models ORDER BY category, id")
        found = [r[0] for r in await cur.fetchall()]
    return JSONResponse({"models": found})


routes = [
    Route("/planner", page("planner.html")),  # pick a site and needs, see the poles
    Route("/registry/models", models),
    Route("/codes/{code}", code),
    Route("/codes/{code}/history", history),
    Route("/codes/{code}/events", add_event, methods=["POST"]),
    Route("/registry/reuse", reuse_lookup, methods=["GET", "POST"]),
    Route("/registry/duplicates", duplicates),
    Route("/registry/coverage", coverage_stats),
    Route("/registry/reservations", reserve, methods=["POST"]),
    Route("/registry/reservations", list_reservations),
    Route("/registry/reservations/{id}", decide, methods=["POST"]),
    Route("/registry/reservations/{id}", withdraw, methods=["DELETE"]),
]

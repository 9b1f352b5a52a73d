"""The department portal and what it drives: managing a layer (``PATCH /layers/{id}``, its
withdrawal and restoration), sharing on request (``/requests``, ``/requestable``) and the
portal's overview (``/portal/overview``: my layers with their readers, requests in and
out, grants given and received, reservations, the audit of my layers). The page itself is
``/portal`` (static/portal.html). Decisions are ``access/policy.py``'s (rules 10 to 12).
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from access import sharing
from access.admin import Actor
from layers import manage
from layers.catalog import LAYER_ID, Layer, fetch_layers
from layers.errors import Forbidden, Invalid, NotFound, Unauthenticated
from mapserver.deps import WRITES, access, app_state, db, json_body, note, page
from mapserver.guard import gone
from registry import reservations

PRIVATE = {"Cache-Control": "private, no-store"}


def _actor(request: Request) -> Actor:
    p = access(request).principal
    if p.anonymous:
        raise Unauthenticated("sign in first")
    return Actor(p.name, p.id, p.department)


async def _managed(request: Request, conn: Any, level: str | None = None) -> Layer:
    """The layer in the path, if the caller may manage it (a withdrawn one too)."""
    layer_id = request.path_params["layer"]
    note(request, [layer_id])
    found = await fetch_layers(conn, ids=[layer_id]) if LAYER_ID.match(layer_id) else []
    a = access(request)
    if a.principal.anonymous:
        raise Unauthenticated("sign in to manage a layer")
    if not found:
        raise NotFound(f"no layer {layer_id!r}")
    refusal = a.manage_refusal(found[0], level)
    if refusal is not None:
        if a.layer(found[0]) is None and found[0].withdrawn_at is None:
            raise NotFound(f"no layer {layer_id!r}")  # it does not exist for the caller
        raise Forbidden(refusal)
    return found[0]


async def _change(request: Request, layer: Layer, **how: Any) -> Layer:
    state = app_state(request)
    settings = state.settings
    _, new = await anyio.to_thread.run_sync(
        lambda: manage.change(state.pool.conninfo, layer.id, settings.levels,
                              by=access(request).principal.name,
                              lock_timeout_ms=settings.lock_timeout_ms,
                              statement_ms=settings.budget_ms("writes"),
                              abandoned=lambda: gone(request.scope), **how),
        limiter=WRITES)
    state.registry.clear()
    return new


async def edit_layer(request: Request) -> Response:
    """``PATCH /layers/{id}``: title, description, keywords, attribution, update_cycle,
    sharing_type, level, and ``fields`` notes (title, unit, description by field)."""
    body = await json_body(request)
    notes = body.pop("fields", None)
    if notes is not None and not isinstance(notes, dict):
        raise Invalid("fields must be an object of field -> {title, unit, description}")
    async with db(request, "admin") as conn:
        layer = await _managed(request, conn, body.get("level"))
    new = await _change(request, layer, values=body, notes=notes)
    note(request, [layer.id], changed=sorted(body) + (["fields"] if notes else []))
    return JSONResponse(new.as_dict(), headers=PRIVATE)


async def withdraw(request: Request) -> Response:
    """``POST /layers/{id}/withdraw`` and ``/restore``."""
    async with db(request, "admin") as conn:
        layer = await _managed(request, conn)
    back = request.url.path.endswith("/restore")
    new = await _change(request, layer, withdrawn=not back)
    return JSONResponse(new.as_dict(), headers=PRIVATE)


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append({k: (v.isoformat() if hasattr(v, "isoformat") else v)
                    for k, v in r.items()})
    return out


async def requestable(request: Request) -> Response:
    """Layers shared on condition that the caller's department may ask for: their catalog
    entries only (no data, no extent)."""
    a = access(request)
    if a.principal.anonymous:
        raise Unauthenticated("sign in to ask for layers")
    async with db(request, "admin") as conn:
        layers = await fetch_layers(conn)
    shown = [ly for ly in layers if a.discoverable(ly) and a.layer(ly) is None
             and ly.department != a.principal.department]
    return JSONResponse({"layers": [{
        "id": ly.id, "title": ly.title, "description": ly.description, "kind": ly.kind,
        "department": ly.department, "department_name": ly.department_name,
        "level": ly.level, "keywords": list(ly.keywords), "update_cycle": ly.update_cycle,
        "fields": [{k: f.as_dict().get(k) for k in ("name", "type", "title", "unit")}
                   for f in ly.fields]} for ly in shown]}, headers=PRIVATE)


async def ask(request: Request) -> Response:
    """``POST /requests {"layer", "purpose"}``: the caller's department asks for a layer."""
    body = await json_body(request)
    layer_id = body.get("layer")
    if not isinstance(layer_id, str) or not LAYER_ID.match(layer_id):
        raise Invalid("name the layer to ask for (layer)")
    a = access(request)
    async with db(request, "admin") as conn:
        found = await fetch_layers(conn, ids=[layer_id])
        if not found:
            raise NotFound(f"no layer {layer_id!r} to ask for")
        refusal = a.request_refusal(found[0])
        if refusal is not None:
            if not a.discoverable(found[0]):
                raise NotFound(f"no layer {layer_id!r} to ask for")
            raise Forbidden(refusal)
        row = await sharing.ask(conn, _actor(request), layer_id, a.principal.department,
                                str(body.get("purpose") or ""))
    note(request, [layer_id], share_request=row["id"])
    return JSONResponse(_jsonable([row])[0], status_code=201, headers=PRIVATE)


async def decide(request: Request) -> Response:
    """``POST /requests/{id}/decision {"approve": bool, "reason"?, "hidden"?, "masked"?,
    "area_id"?, "area_mode"?, "filter"?}``: the owning department decides."""
    body = await json_body(request)
    if not isinstance(body.get("approve"), bool):
        raise Invalid("say approve: true or false")
    rid = _id(request)
    state = app_state(request)
    async with db(request, "admin") as conn:
        req = await sharing.get(conn, rid)
        found = await fetch_layers(conn, ids=[req["layer_id"]])
        a = access(request)
        if not found or a.manage_refusal(found[0]) is not None:
            raise NotFound(f"no request {rid}")  # only the owner sees it to decide
        opts = {k: body[k] for k in ("hidden", "masked", "area_id", "area_mode", "filter")
                if body.get(k) is not None}
        row = await sharing.decide(conn, _actor(request), state.settings.levels, rid,
                                   approve=body["approve"], reason=body.get("reason"), **opts)
    note(request, [req["layer_id"]], share_request=rid, approve=body["approve"])
    return JSONResponse(_jsonable([row])[0], headers=PRIVATE)


def _id(request: Request) -> int:
    raw = request.path_params["request"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no request {raw!r}")
    return int(raw)


async def take_back(request: Request) -> Response:
    """``DELETE /requests/{id}``: the asking department withdraws its pending request."""
    a = access(request)
    actor = _actor(request)
    async with db(request, "admin") as conn:
        row = await sharing.withdraw(conn, actor, _id(request),
                                     None if a.administers else a.principal.department)
    return JSONResponse(_jsonable([row])[0], headers=PRIVATE)


async def list_requests(request: Request) -> Response:
    a = access(request)
    _actor(request)
    async with db(request, "admin") as conn:
        found = await sharing.requests(conn, None if a.administers else a.principal.department)
    return JSONResponse({k: _jsonable(v) for k, v in found.items()}, headers=PRIVATE)


async def overview(request: Request) -> Response:
    """Everything the portal shows for the caller's department at once."""
    a = access(request)
    actor = _actor(request)
    dept = None if a.administers else a.principal.department
    state = app_state(request)
    await state.audit.flush(state.pool)  # the readers and audit shown include the latest
    async with db(request, "admin") as conn:
        layers = await fetch_layers(conn)
        mine = [ly for ly in layers if a.manage_refusal(ly) is None
                and (dept is None or ly.department == dept)]
        ids = [ly.id for ly in mine]
        readers = await sharing.readers(conn, ids)
        reqs = await sharing.requests(conn, dept)
        grants = await sharing.grants(conn, ids, dept)
        audit = await sharing.audit_of(conn, ids)
        await conn.execute(reservations.EXPIRE, (app_state(request).settings.claim_hours,))
        cur = await conn.execute(reservations.LIST, {"dept": dept})
        columns = [c.name for c in cur.description]
        waiting = [dict(zip(columns, r, strict=True)) for r in await cur.fetchall()]
    by_layer: dict[str, list] = {}
    for r in _jsonable(readers):
        by_layer.setdefault(r["layer"], []).append(r)
    note(request, ids)
    return JSONResponse({
        "principal": actor.name, "department": dept,
        "layers": [{**ly.as_dict(), "readers": by_layer.get(ly.id, [])} for ly in mine],
        "requests": {k: _jsonable(v) for k, v in reqs.items()},
        "grants": {k: _jsonable(v) for k, v in grants.items()},
        "reservations": _jsonable(waiting), "audit": _jsonable(audit),
        "levels": [lv for lv in app_state(request).settings.levels
                   if a.principal.max_level is None or a.administers
                   or app_state(request).directory.policy.rank(lv)
                   <= app_state(request).directory.policy.rank(a.principal.max_level)],
    }, headers=PRIVATE)


routes = [
    Route("/portal", page("portal.html")),
    Route("/portal/overview", overview),
    Route("/layers/{layer}", edit_layer, methods=["PATCH"]),
    Route("/layers/{layer}/withdraw", withdraw, methods=["POST"]),
    Route("/layers/{layer}/restore", withdraw, methods=["POST"]),
    Route("/requestable", requestable),
    Route("/requests", list_requests),
    Route("/requests", ask, methods=["POST"]),
    Route("/requests/{request}/decision", decide, methods=["POST"]),
    Route("/requests/{request}", take_back, methods=["DELETE"]),
]

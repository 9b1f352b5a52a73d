"""The admin API: the same operations as ``onemap auth``, for administrators only."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from access import admin
from access.admin import Actor
from layers.errors import Invalid
from mapserver.deps import access, app_state, db, json_body
from mapserver.ogc import int_param, int_value, parse_instant


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=admin.to_json), status_code=status,
                    media_type="application/json")


def _actor(request: Request) -> Actor:
    a = access(request)
    p = a.principal
    if p.anonymous:
        raise HTTPException(401, "administration needs a signed-in administrator")
    if not a.administers:
        raise HTTPException(403, "administration is for administrators, with their own "
                                 "key or token (never an embedding key)")
    return Actor(p.name, p.id, p.department)


Handler = Callable[[Request, Actor, Any], Awaitable[Response]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Admin only; the change runs on one connection; AdminError becomes its 4xx."""
    async def run(request: Request) -> Response:
        actor = _actor(request)
        async with db(request, "admin") as conn:
            return await handler(request, actor, conn)
    return run


def fields(operation: Callable[..., Any], body: dict[str, Any]) -> dict[str, Any]:
    """The body as the operation's keyword arguments; unknown or missing ones are a 400."""
    params = {n: p for n, p in inspect.signature(operation).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(body) - set(params))
    if unknown:
        raise HTTPException(400, f"unknown fields {unknown}; expected some of {sorted(params)}")
    missing = sorted(n for n, p in params.items()
                     if p.default is inspect.Parameter.empty and n not in body)
    if missing:
        raise HTTPException(400, f"missing fields {missing}")
    return body


def _levels(request: Request) -> tuple[str, ...]:
    return app_state(request).settings.levels


@endpoint
async def departments(request: Request, actor: Actor, conn: Any) -> Response:
    if request.method == "POST":
        body = fields(admin.create_department, await json_body(request))
        return _json(await admin.create_department(conn, actor, _levels(request), **body),
                     201)
    return _json(await admin.listing(conn, "departments"))


@endpoint
async def principals(request: Request, actor: Actor, conn: Any) -> Response:
    if request.method == "POST":
        body = fields(admin.create_principal, await json_body(request))
        return _json(await admin.create_principal(conn, actor, **body), 201)
    return _json(await admin.listing(conn, "principals"))


@endpoint
async def keys(request: Request, actor: Actor, conn: Any) -> Response:
    if request.method == "POST":
        body = fields(admin.create_key, await json_body(request))
        if body.get("expires_at"):
            body["expires_at"] = parse_instant(body["expires_at"], body["expires_at"])
        return _json(await admin.create_key(conn, actor, **body), 201)
    return _json(await admin.listing(conn, "keys"))


@endpoint
async def revoke_key(request: Request, actor: Actor, conn: Any) -> Response:
    await admin.revoke_key(conn, actor, request.path_params["key_id"])
    return Response(status_code=204)


@endpoint
async def areas(request: Request, actor: Actor, conn: Any) -> Response:
    if request.method == "POST":
        body = fields(admin.create_area, await json_body(request))
        area_id = await admin.create_area(conn, actor, **body)
        return _json({"id": area_id}, 201)
    return _json(await admin.listing(conn, "areas"))


@endpoint
async def grants(request: Request, actor: Actor, conn: Any) -> Response:
    if request.method == "POST":
        body = fields(admin.grant, await json_body(request))
        return _json(await admin.grant(conn, actor, _levels(request), **body), 201)
    return _json(await admin.listing(conn, "grants"))


@endpoint
async def revoke_grant(request: Request, actor: Actor, conn: Any) -> Response:
    try:
        grant_id = int_value(request.path_params["grant_id"], "grant id", 1)
    except Invalid as exc:
        raise HTTPException(404, "no such grant") from exc
    await admin.revoke_grant(conn, actor, grant_id)
    return Response(status_code=204)


@endpoint
async def classify(request: Request, actor: Actor, conn: Any) -> Response:
    body = fields(admin.classify, {**await json_body(request),
                                   "layer": request.path_params["layer"]})
    return _json(await admin.classify(conn, actor, _levels(request), **body))


@endpoint
async def audit(request: Request, actor: Actor, conn: Any) -> Response:
    state = app_state(request)
    await state.audit.flush(state.pool)  # what happened up to now is in the answer
    q = request.query_params
    since = q.get("since")
    return _json(await admin.audit(
        conn, principal=q.get("principal"), layer=q.get("layer"), action=q.get("action"),
        since=parse_instant(since, since) if since else None,
        limit=min(int_param(request, "limit", 100, 1), 10_000)))


routes = [
    Route("/admin/departments", departments, methods=["GET", "POST"]),
    Route("/admin/principals", principals, methods=["GET", "POST"]),
    Route("/admin/keys", keys, methods=["GET", "POST"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/areas", areas, methods=["GET", "POST"]),
    Route("/admin/grants", grants, methods=["GET", "POST"]),
    Route("/admin/grants/{grant_id}", revoke_grant, methods=["DELETE"]),
    Route("/admin/layers/{layer}/classification", classify, methods=["PUT"]),
    Route("/admin/audit", audit),
]

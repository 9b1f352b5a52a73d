"""The federation over HTTP: joining, the nodes, notices, harvests, and the cascade
``/federation/{node}/{path}`` (``federation.cascade``) under rule 13 of the policy."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from federation import nodes
from federation.keys import claims_of
from federation.nodes import jurisdiction_of
from federation.sync import CHANNEL
from layers.errors import Forbidden, Invalid, NotFound, Unauthenticated
from mapserver.deps import access, app_state, db, json_body, note

# What a node may be asked for through this one: its tiles, features, styles, images,
# 3D tiles, base maps and catalog; never its administration, publishing or registry writes.
CASCADED = ("tiles", "collections", "styles", "3dtiles", "basemaps", "wms", "wmts",
            "rasters", "maps", "tileMatrixSets", "fonts", "sprites")
HEADS_WITHOUT_LAYER = ("wms", "wmts", "tileMatrixSets", "fonts", "sprites")
ASSETS = ("tileMatrixSets", "fonts", "sprites")  # about no layer: for any caller's map


def _admin(request: Request) -> None:
    a = access(request)
    if a.principal.anonymous:
        raise Unauthenticated("the federation is administered by a signed-in administrator")
    if not a.administers:
        raise Forbidden("the federation is administered by administrators")


async def join(request: Request) -> Response:
    """A district joins with a token its city's administrator issued: it gives its name,
    URL, key and jurisdiction, and is given the city's name, URL and key."""
    body = await json_body(request)
    for k in ("token", "name", "url", "public_key"):
        if not isinstance(body.get(k), str) or not body[k]:
            raise Invalid(f"{k}: a string is needed")
    state = app_state(request)
    if state.settings.node_role != "city":
        raise Forbidden("this node is a district: districts join a city")
    async with db(request, "admin") as conn:
        await nodes.admit(conn, body["token"], body["name"], body["url"], body["public_key"],
                          jurisdiction_of(body.get("jurisdiction")))
    state.directory.doubt()
    state.sync.soon()  # its catalog, at once
    return JSONResponse({"name": state.settings.node_name, "role": "city",
                         "url": state.settings.node_url, "public_key": state.node_key.public_pem},
                        status_code=201)


async def listing(request: Request) -> Response:
    _admin(request)
    state = app_state(request)
    async with db(request, "admin") as conn:
        rows = await nodes.listing(conn)
    stats = state.cascade.stats
    for r in rows:
        r["cascade"] = stats[r["name"]].as_dict() if r["name"] in stats else {}
        r["answering"] = not state.cascade.down(r["name"])
    return Response(json.dumps({"node": state.settings.node_name,
                                "role": state.settings.node_role, "nodes": rows,
                                "harvest": state.sync.last}, default=str),
                    media_type="application/json")


async def issue_token(request: Request) -> Response:
    _admin(request)
    body = await json_body(request)
    hours = body.get("hours", 24)
    if not isinstance(hours, int | float) or not 0 < hours <= 24 * 30:
        raise Invalid("hours: a number of hours up to 720")
    async with db(request, "admin") as conn:
        token = await nodes.issue_token(conn, float(hours))
    return JSONResponse({"token": token, "hours": hours}, status_code=201)


async def remove(request: Request) -> Response:
    _admin(request)
    async with db(request, "admin") as conn:
        await nodes.remove(conn, request.path_params["name"])
    app_state(request).directory.doubt()
    return Response(status_code=204)


async def notify(request: Request) -> Response:
    """A node says it changed (``catalog``: it published; ``access``: its grants): every
    process here hears it, its cascade asks that node again, and a city harvests it."""
    node = access(request).principal.node
    if node is None:
        raise Unauthenticated("notices come from nodes of this federation, signed")
    what = (await json_body(request)).get("what")
    if what not in ("catalog", "access"):
        raise Invalid("what: catalog or access")
    state = app_state(request)
    state.cascade.heard(node)  # this process at once; the others as they hear it
    async with db(request, "admin") as conn:
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{node} {what}"))
    return Response(status_code=202)


def heard(state: Any, payload: str) -> None:
    """A notice another process of this node passed on (``CHANNEL``)."""
    node, _, what = payload.partition(" ")
    state.cascade.heard(node)
    if what == "catalog" and state.settings.node_role == "city":
        state.sync.soon()


async def harvest(request: Request) -> Response:
    _admin(request)
    return JSONResponse(await app_state(request).sync.harvest_now())


async def cascade(request: Request) -> Response:
    node, path = request.path_params["node"], request.path_params["path"]
    state = app_state(request)
    known = state.directory.nodes.get(node)
    if known is None:
        raise NotFound(f"no node {node!r} in this federation")
    parts = path.strip("/").split("/")
    if parts[0] not in CASCADED:
        raise NotFound(f"/{parts[0]} of a node is not served through this one")
    layer = parts[1] if len(parts) > 1 and parts[0] not in HEADS_WITHOUT_LAYER else None
    a = access(request)
    why = a.policy.cascade_refusal(a.principal, node, layer, parts[0] in ASSETS)
    if why is not None:
        raise NotFound(f"no {node}:{layer or path}: {why}")
    note(request, [f"{node}:{layer}"] if layer else [])
    answer = await state.cascade.get(node, known["url"], "/" + path.lstrip("/"),
                                     _encoded(request),
                                     claims_of(a.principal, node),
                                     request.headers.get("accept"))
    headers = dict(answer.headers)
    headers["OneMap-Cache"] = answer.cache
    headers["Cache-Control"] = "private, max-age=60" if answer.status == 200 else "no-store"
    if answer.cache == "stale":
        headers["OneMap-Stale"] = f"{answer.age:.0f}"
        headers["Age"] = f"{answer.age:.0f}"
        headers["Warning"] = '110 - "Response is Stale"'
    etag = headers.get("etag")
    if answer.status == 200 and etag and etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={k: v for k, v in headers.items()
                                                  if k != "content-type"})
    return Response(answer.body, status_code=answer.status, headers=headers)


def _encoded(request: Request) -> str:
    """The query as the client sent it, without its embedding key (never passed on)."""
    return "&".join(p for p in request.url.query.split("&") if not p.startswith("key="))


routes = [
    Route("/federation", listing),
    Route("/federation/nodes", join, methods=["POST"]),
    Route("/federation/nodes/{name}", remove, methods=["DELETE"]),
    Route("/federation/tokens", issue_token, methods=["POST"]),
    Route("/federation/notify", notify, methods=["POST"]),
    Route("/federation/harvest", harvest, methods=["POST"]),
    Route("/federation/{node}/{path:path}", cascade),
]

"""OGC API – Features Part 4: create, replace, update and delete features.

Only a principal that may publish the layer edits it, and only a thematic layer (base
layers change by ingest). Each edit is a new version (layers.edit); a feature's ETag is
its version's row id, and ``If-Match`` with an older one is a 412.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from access.policy import LayerAccess
from layers.catalog import Layer
from layers.edit import save
from layers.errors import Forbidden
from mapserver.deps import WRITES, access, app_state, note, parse_json
from mapserver.features import COLLECTION_KINDS, collection_layer, etag_of
from mapserver.guard import gone
from mapserver.ogc import base

_ETAG = re.compile(r'^(?:W/)?"r(\d+)"$')


# The media types a feature body may come in (Part 4; PATCH also as a JSON merge patch).
BODY_TYPES = ("application/geo+json", "application/json", "application/merge-patch+json")
READS = "GET, HEAD, OPTIONS"


async def _editable(request: Request) -> tuple[Layer, LayerAccess]:
    layer, a = await collection_layer(request, COLLECTION_KINDS)
    if layer.kind != "vector":
        raise HTTPException(405, f"collection {layer.id!r} is a {layer.kind} layer: it changes "
                                 "by ingest, not by editing features", headers={"Allow": READS})
    refusal = access(request).edit_refusal(layer)
    if refusal is not None:
        raise Forbidden(refusal)
    return layer, a


async def options(request: Request) -> Response:
    """What the caller may do here (Part 4): reads always, edits where it may publish."""
    layer, _ = await collection_layer(request, COLLECTION_KINDS)
    may_edit = layer.kind == "vector" and access(request).edit_refusal(layer) is None
    edits = ("PUT, PATCH, DELETE" if "featureId" in request.path_params else "POST")
    return Response(status_code=204,
                    headers={"Allow": f"{READS}, {edits}" if may_edit else READS})


def _expected(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    match = _ETAG.match(raw.strip())
    if match is None:
        raise HTTPException(412, f"If-Match {raw!r} names no version of this feature")
    return int(match.group(1))


async def _feature(request: Request) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in BODY_TYPES:
        raise HTTPException(415, f"a feature comes as {' or '.join(BODY_TYPES[:2])}, not "
                                 f"{kind or 'a body without a Content-Type'}")
    # The body's size is bounded by mapserver/guard.py before it is read.
    doc = parse_json(await request.body())
    if not isinstance(doc, dict):
        raise HTTPException(400, "the body must be a GeoJSON Feature")
    return doc


async def _save(request: Request, layer: Layer, fid: str | None,
                feature: dict[str, Any] | None, **how: Any) -> Any:
    state = app_state(request)
    url, settings = state.pool.conninfo, state.settings
    return await anyio.to_thread.run_sync(
        lambda: save(url, layer, settings.detail_zoom, fid, feature,
                     lock_timeout_ms=settings.lock_timeout_ms,
                     statement_ms=settings.budget_ms("writes"),
                     abandoned=lambda: gone(request.scope), **how),
        limiter=WRITES)


def _saved(request: Request, layer: Layer, edited: Any, status: int) -> Response:
    note(request, [layer.id], 1, feature=edited.fid, version=edited.version)
    headers = {"Location": f"{base(request)}/collections/{layer.id}/items/{edited.fid}"}
    if edited.rid is not None:
        headers["ETag"] = etag_of(edited.rid)
    return Response(status_code=status, headers=headers)


async def create(request: Request) -> Response:
    layer, _ = await _editable(request)
    edited = await _save(request, layer, None, await _feature(request), create=True)
    return _saved(request, layer, edited, 201)


async def change(request: Request) -> Response:
    layer, _ = await _editable(request)
    fid = request.path_params["featureId"]
    expected = _expected(request)
    if request.method == "DELETE":
        edited = await _save(request, layer, fid, None, expected=expected)
        return _saved(request, layer, edited, 204)
    edited = await _save(request, layer, fid, await _feature(request),
                         merge=request.method == "PATCH", expected=expected)
    return _saved(request, layer, edited, 200)


routes = [
    Route("/collections/{collectionId}/items", create, methods=["POST"]),
    Route("/collections/{collectionId}/items", options, methods=["OPTIONS"]),
    Route("/collections/{collectionId}/items/{featureId:path}", change,
          methods=["PUT", "PATCH", "DELETE"]),
    Route("/collections/{collectionId}/items/{featureId:path}", options, methods=["OPTIONS"]),
]

"""Catalog and style endpoints: what layers there are, their dictionaries, their looks."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layers.catalog import LAYER_ID, fetch_layers
from mapserver.deps import app_state
from mapserver.ogc import base, layer_links
from mapserver.tiles import parse_ids, resolve
from styles.build import build_style


async def list_layers(request: Request) -> Response:
    async with app_state(request).pool.connection() as conn:
        layers = await fetch_layers(conn)
    return JSONResponse({"layers": [
        {**ly.as_dict(), "links": layer_links(request, ly)} for ly in layers]})


async def get_layer(request: Request) -> Response:
    layer_id = request.path_params["layer"]
    found = []
    if LAYER_ID.match(layer_id):
        async with app_state(request).pool.connection() as conn:
            found = await fetch_layers(conn, ids=[layer_id])
    if not found:
        raise HTTPException(404, f"no layer {layer_id!r}")
    return JSONResponse({**found[0].as_dict(), "links": layer_links(request, found[0])})


async def style(request: Request) -> Response:
    ids = parse_ids(request.path_params["layers"])
    async with app_state(request).pool.connection() as conn:
        resolved = await resolve(request, conn, ids)
    doc = build_style([r.layer for r in resolved],
                      f"{base(request)}/tiles/{','.join(ids)}/tilejson.json")
    return JSONResponse(doc, headers={"Cache-Control": "public, no-cache"})


routes = [
    Route("/layers", list_layers),
    Route("/layers/{layer}", get_layer),
    Route("/styles/{layers}/style.json", style),
]

"""Catalog and style endpoints: what layers there are, their dictionaries, their looks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layers.catalog import LAYER_KINDS, fetch_layers
from layers.restrict import visible
from layers.summary import seen
from mapserver.deps import access, db, note, readable_layer
from mapserver.ogc import base, layer_links
from mapserver.tileresponse import cache_scope
from mapserver.tiles import parse_ids, resolve
from styles.build import build_style


async def list_layers(request: Request) -> Response:
    async with db(request, "tiles") as conn:
        layers = [(await seen(conn, ly, a.restriction), a)
                  for ly, a in access(request).readable(await fetch_layers(conn))]
    note(request, [ly.id for ly, _ in layers])
    return JSONResponse({"layers": [
        {**ly.as_dict(), "links": layer_links(request, ly)} for ly, _ in layers]})


async def get_layer(request: Request) -> Response:
    async with db(request, "tiles") as conn:
        layer, a = await readable_layer(request, conn, request.path_params["layer"],
                                        LAYER_KINDS, "layer")
        layer = await seen(conn, layer, a.restriction)
    return JSONResponse({**layer.as_dict(),
                         "links": layer_links(request, layer)})


async def style(request: Request) -> Response:
    ids = parse_ids(request.path_params["layers"])
    async with db(request, "tiles") as conn:
        resolved = await resolve(request, conn, ids)
    doc = build_style([visible(r.layer, a.restriction) for r, a in resolved],
                      f"{base(request)}/tiles/{','.join(ids)}/tilejson.json")
    return JSONResponse(doc, headers={"Cache-Control": f"{cache_scope(request)}, no-cache"})


routes = [
    Route("/layers", list_layers),
    Route("/layers/{layer}", get_layer),
    Route("/styles/{layers}/style.json", style),
]

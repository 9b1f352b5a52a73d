"""Catalog and style endpoints: what layers there are, their dictionaries, their looks.

A layer's style lives in the catalog (``styles.store``): ``GET /styles/{layer}`` gives it,
``PUT`` replaces it (its publishers only; checked by the MapLibre style specification's
validator), ``DELETE`` returns it to the default look; ``/styles/{layer}/legend.json`` is
read from it, and every style document of any set of layers is made from it.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layers.catalog import LAYER_KINDS, Layer, fetch_layers
from layers.errors import Forbidden
from layers.restrict import filterable
from layers.summary import seen
from mapserver.deps import access, db, json_body, note, page, readable_layer
from mapserver.ogc import base, carry_key, layer_links
from mapserver.tileresponse import cache_scope
from mapserver.tiles import parse_ids, resolve
from styles import store
from styles.build import assets, style_doc, style_layers
from styles.legend import legend


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


def style_links(request: Request) -> dict[str, str]:
    """The glyphs and sprite of a style served to this caller, with its embedding key."""
    return {k: carry_key(request, v) for k, v in assets(base(request)).items()}


def _private(request: Request) -> dict[str, str]:
    return {"Cache-Control": f"{cache_scope(request)}, no-cache"}


async def style(request: Request) -> Response:
    ids = parse_ids(request.path_params["layers"])
    async with db(request, "tiles") as conn:
        resolved = await resolve(request, conn, ids)
        looks = await store.stored(conn, ids)
    # Drawn from the fields the caller may see in clear: nothing hidden or masked.
    doc = style_doc([filterable(r.layer, a.restriction) for r, a in resolved],
                    carry_key(request, f"{base(request)}/tiles/{','.join(ids)}/tilejson.json"),
                    looks, style_links(request))
    return JSONResponse(doc, headers=_private(request))


async def _styled(request: Request, conn) -> tuple[Layer, list[dict], bool]:
    """The layer, its style layers as the caller may be shown them, and whether they are
    its default look."""
    layer, a = await readable_layer(request, conn, request.path_params["layer"], ("vector",),
                                    "layer")
    looks = await store.stored(conn, [layer.id])
    return layer, style_layers(filterable(layer, a.restriction), looks), layer.id not in looks


async def layer_style(request: Request) -> Response:
    """The layer's style layers (with their source), as the caller may be shown them."""
    if request.method in ("PUT", "DELETE"):
        return await _set_style(request)
    async with db(request, "tiles") as conn:
        layer, entries, default = await _styled(request, conn)
    return JSONResponse({"layer": layer.id, "default": default, "layers": entries},
                        headers=_private(request))


async def _set_style(request: Request) -> Response:
    body = await json_body(request) if request.method == "PUT" else {}
    async with db(request, "writes") as conn:
        layer, a = await readable_layer(request, conn, request.path_params["layer"],
                                        ("vector",), "layer")
        refusal = access(request).style_refusal(layer)
        if refusal is not None:
            raise Forbidden(refusal)
        if request.method == "DELETE":
            await store.reset(conn, layer)
            return Response(status_code=204)
        entries = await anyio.to_thread.run_sync(store.checked, layer, body.get("layers"))
        version = await store.put(conn, layer, entries, access(request).principal.name)
    note(request, [layer.id], style_version=version)
    return JSONResponse({"layer": layer.id, "version": version, "layers": entries})


async def layer_legend(request: Request) -> Response:
    async with db(request, "tiles") as conn:
        layer, entries, _ = await _styled(request, conn)
    return JSONResponse(legend(layer, entries), headers=_private(request))


routes = [
    Route("/layers", list_layers),
    Route("/layers/{layer}", get_layer),
    Route("/styles/{layers}/style.json", style),
    Route("/styles/{layer}/legend.json", layer_legend),
    Route("/styles/{layer}", layer_style, methods=["GET", "PUT", "DELETE"]),
    Route("/embed", page("embed.html")),  # snippets for another system's page
]

"""Base maps at stable URLs: ``/basemaps``, ``/basemaps/{id}`` and its ``style.json``
(MapLibre), ``tilejson.json`` and tiles (``/basemaps/{id}/{z}/{x}/{y}.mvt`` for a vector
base map, ``/basemaps/{id}/{tms}/{z}/{x}/{y}.webp`` for imagery, in WebMercatorQuad or
CGCS2000Quad). A base map exists for a caller only if the caller may read every layer it
draws; each is drawn through the caller's own limits, like any layer.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layers.catalog import LAYER_ID, Layer, fetch_layers
from layers.errors import NotFound
from layers.restrict import filterable, narrowed
from layers.summary import seen
from mapserver.catalog import style_links
from mapserver.deps import app_state, db, layer_access, note
from mapserver.images import BASEMAP, IMAGE_GRIDS, map_tile
from mapserver.ogc import base, carry_key
from mapserver.rasters import raster_tile, tilejson_of
from mapserver.tileresponse import cache_scope, version_token
from mapserver.tiles import tilejson_doc, vector_tile
from styles import basemaps
from styles.basemaps import BaseMap


def _private(request: Request) -> dict[str, str]:
    return {"Cache-Control": f"{cache_scope(request)}, no-cache"}


def _readable(request: Request, bm: BaseMap, catalog: dict[str, Layer]) -> list | None:
    """The base map's layers with the caller's access, or None if one is unreadable."""
    found = []
    for layer_id in bm.layers:
        layer = catalog.get(layer_id)
        a = layer_access(request, layer) if layer is not None else None
        if a is None:
            return None
        found.append((layer, a))
    return found


async def _basemap(request: Request, conn) -> tuple[BaseMap, list, BaseMap | None]:
    """The base map in the path, its layers with the caller's access, and for a labels
    map the map its labels come from; a base map the caller may not read all of is a
    404, exactly as a missing one."""
    basemap_id = request.path_params["basemap"]
    missing = NotFound(f"no base map {basemap_id[:80]!r}")
    if not LAYER_ID.match(basemap_id):
        raise missing
    try:
        bm, of = await basemaps.fetch_with_labels_source(conn, basemap_id)
    except NotFound:
        raise missing from None
    note(request, list(bm.layers), basemap=bm.id)
    catalog = {ly.id: ly for ly in await fetch_layers(conn, ids=list(bm.layers))}
    found = _readable(request, bm, catalog)
    if found is None:
        raise missing
    return bm, found, of


def _links(request: Request, bm: BaseMap) -> list[dict[str, str]]:
    here = f"{base(request)}/basemaps/{bm.id}"
    links = [{"rel": "stylesheet", "type": "application/vnd.mapbox.style+json",
              "href": f"{here}/style.json"},
             {"rel": "tilejson", "type": "application/json", "href": f"{here}/tilejson.json"}]
    if bm.kind == "raster":
        return [*links, {"rel": "item", "type": "image/webp", "templated": "true",
                         "href": f"{here}/WebMercatorQuad/{{z}}/{{x}}/{{y}}.webp"}]
    return [*links, {"rel": "item", "type": "application/vnd.mapbox-vector-tile",
                     "templated": "true", "href": f"{here}/{{z}}/{{x}}/{{y}}.mvt"}]


async def list_basemaps(request: Request) -> Response:
    async with db(request, "tiles") as conn:
        every = await basemaps.fetch_all(conn)
        catalog = {ly.id: ly for ly in await fetch_layers(conn)}
    shown = [bm for bm in every if _readable(request, bm, catalog) is not None]
    note(request, sorted({i for bm in shown for i in bm.layers}))
    return JSONResponse({"basemaps": [{**bm.as_dict(), "links": _links(request, bm)}
                                      for bm in shown]}, headers=_private(request))


async def get_basemap(request: Request) -> Response:
    async with db(request, "tiles") as conn:
        bm, _, _ = await _basemap(request, conn)
    return JSONResponse({**bm.as_dict(), "links": _links(request, bm)},
                        headers=_private(request))


async def style(request: Request) -> Response:
    b = base(request)
    async with db(request, "tiles") as conn:
        bm, found, of = await _basemap(request, conn)
        shown = [await seen(conn, filterable(ly, a.restriction), a.restriction)
                 for ly, a in found]
    here = f"{b}/basemaps/{bm.id}"
    if bm.kind == "raster":
        doc = basemaps.raster_doc(bm, shown, {
            ly.id: carry_key(request, f"{b}/tiles/{ly.id}/WebMercatorQuad/tilejson.json")
            for ly in shown}, style_links(request))
    else:
        doc = basemaps.vector_doc(bm, basemaps.entries(bm, of), shown,
                                  carry_key(request, f"{here}/tilejson.json"),
                                  style_links(request))
    return JSONResponse(doc, headers=_private(request))


async def tilejson(request: Request) -> Response:
    async with db(request, "tiles") as conn:
        bm, found, of = await _basemap(request, conn)
        if bm.kind != "raster":
            fields = {i: n.fields for i, n in basemaps.needs(basemaps.entries(bm, of),
                                                             24).items()}
            resolved = await app_state(request).registry.resolve(conn, list(bm.layers))
            if resolved is None:
                raise NotFound(f"no base map {bm.id!r}")
            shown = [await seen(conn, r.layer, narrowed(r.layer, a.restriction,
                                                        fields.get(r.layer.id, frozenset())))
                     for r, (_ly, a) in zip(resolved, found, strict=True)]
            token = version_token([(r.layer.id, r.version, a.restriction)
                                   for r, (_ly, a) in zip(resolved, found, strict=True)], None)
    if bm.kind == "raster":
        return await tilejson_of(request, found[0][0].id, "WebMercatorQuad")
    doc = tilejson_doc(request, shown, token, path=f"/basemaps/{bm.id}")
    doc["name"] = bm.title
    return JSONResponse(doc, headers=_private(request))


async def tile(request: Request) -> Response:
    p = request.path_params
    async with db(request, "tiles") as conn:
        bm, found, of = await _basemap(request, conn)
    if bm.kind == "raster":
        raise NotFound(f"{bm.id!r} is an imagery base map: its tiles are "
                       f"/basemaps/{bm.id}/WebMercatorQuad/{{z}}/{{x}}/{{y}}.webp")
    if p["fmt"] not in ("mvt", "pbf"):
        raise NotFound(f"no tile format {p['fmt']!r}; use .mvt")
    # The tile takes what the style draws at its zoom, and the fields the style reads.
    style = basemaps.entries(bm, of)
    return await vector_tile(request, ",".join(bm.layers), p["z"], p["x"], p["y"],
                             needs=lambda z: basemaps.needs(style, z))


async def image_tile(request: Request) -> Response:
    """A base map's tile as an image: an imagery map's first layer at the newest slice, a
    vector map drawn in its style (``mapserver/images.py``), in either grid."""
    p = request.path_params
    async with db(request, "tiles") as conn:
        bm, found, of = await _basemap(request, conn)
    if bm.kind == "raster":
        return await raster_tile(request, found[0][0].id, p["tms"], p["z"], p["x"], p["y"],
                                 p["fmt"], request.query_params)
    if p["fmt"] in ("mvt", "pbf"):
        if p["tms"] not in IMAGE_GRIDS:
            raise NotFound(f"vector tiles are made in {' and '.join(IMAGE_GRIDS)}")
        style = basemaps.entries(bm, of)
        return await vector_tile(request, ",".join(bm.layers), p["z"], p["x"], p["y"],
                                 needs=lambda z: basemaps.needs(style, z), tms=p["tms"])
    return await map_tile(request, [BASEMAP + bm.id], p["tms"], p["z"], p["x"], p["y"],
                          p["fmt"], request.query_params)


routes = [
    Route("/basemaps", list_basemaps),
    Route("/basemaps/{basemap}", get_basemap),
    Route("/basemaps/{basemap}/style.json", style),
    Route("/basemaps/{basemap}/tilejson.json", tilejson),
    Route("/basemaps/{basemap}/{z}/{x}/{y}.{fmt}", tile),
    Route("/basemaps/{basemap}/{tms}/{z}/{x}/{y}.{fmt}", image_tile),
]

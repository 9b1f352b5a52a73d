"""OGC API – Tiles: tile matrix sets, each collection's tilesets, and their tiles.

Tiles are the ``/tiles`` routes' own (``raster_tile``, ``vector_tile``) under the standard's
paths; the path order is row then column, as the standard has it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layers.catalog import Layer
from layers.grids import GRIDS, MAX_LISTED_ZOOM, grid, limits
from layers.summary import seen
from mapserver.deps import db, readable_layer
from mapserver.images import IMAGE_GRIDS, map_tile, pins
from mapserver.ogc import base
from mapserver.rasters import raster_tile
from mapserver.tiles import MVT, vector_tile

TMS_REL = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/png",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/jpeg",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
]
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


def _grid_or_404(name: str):
    tms = grid(name)
    if tms is None:
        raise HTTPException(404, f"no tile matrix set {name!r}; use one of {', '.join(GRIDS)}")
    return tms


async def tile_matrix_sets(request: Request) -> Response:
    b = base(request)
    return JSONResponse({"tileMatrixSets": [
        {"id": name, "title": grid(name).title,  # type: ignore[union-attr]
         "links": [{"rel": "self", "type": "application/json",
                    "href": f"{b}/tileMatrixSets/{name}"}]} for name in GRIDS]})


def tms_v1(tms) -> dict:
    """A tile matrix set in the 1.0 encoding (OGC 17-083r2), which clients such as GDAL 3.6
    read: ``identifier``, ``supportedCRS`` and ``tileMatrix`` where 2.0 says ``id``, ``crs``
    and ``tileMatrices``."""
    return {
        "type": "TileMatrixSetType", "title": tms.title, "identifier": tms.id,
        "supportedCRS": tms.crs.srs,
        **({"wellKnownScaleSet": tms.uri} if tms.uri else {}),
        "tileMatrix": [{
            "type": "TileMatrixType", "identifier": m.id,
            "scaleDenominator": m.scaleDenominator,
            "topLeftCorner": list(m.pointOfOrigin), "tileWidth": m.tileWidth,
            "tileHeight": m.tileHeight, "matrixWidth": m.matrixWidth,
            "matrixHeight": m.matrixHeight} for m in tms.tileMatrices],
    }


async def tile_matrix_set(request: Request) -> Response:
    """The 2.0 encoding (OGC 17-083r4), or with ``encoding=1.0`` the 1.0 one, which a
    tileset names as its ``tileMatrixSetDefinition`` for the readers of that time."""
    tms = _grid_or_404(request.path_params["tms"])
    encoding = request.query_params.get("encoding", "2.0")
    if encoding not in ("1.0", "2.0"):
        raise HTTPException(400, f"encoding {encoding!r} is not 1.0 or 2.0")
    if encoding == "1.0":
        return JSONResponse(tms_v1(tms))
    return JSONResponse(tms.model_dump(mode="json", exclude_none=True))


async def _layer(request: Request) -> Layer:
    async with db(request, "tiles") as conn:
        layer, a = await readable_layer(request, conn, request.path_params["collectionId"],
                                        ("raster", "vector"), "collection")
        return await seen(conn, layer, a.restriction)


def _grids(layer: Layer, drawn: bool = False) -> tuple[str, ...]:
    """The grids of a layer's tilesets: its data's, or (``drawn``) its images'."""
    return GRIDS if layer.kind == "raster" else IMAGE_GRIDS


def tileset_doc(request: Request, layer: Layer, tms_name: str, full: bool,
                drawn: bool = False, pin: dict[str, str] | None = None) -> dict:
    """A tileset; ``drawn``: a vector layer's map tiles (images in its style), their
    templates carrying ``pin`` (``images.pins``: a shared cache may keep them)."""
    b = base(request)
    here = f"{b}/collections/{layer.id}/{'map/' if drawn else ''}tiles/{tms_name}"
    tms = _grid_or_404(tms_name)
    raster = layer.kind == "raster" or drawn
    doc: dict = {
        "title": f"{layer.title} ({tms_name})",
        "dataType": "map" if raster else "vector",
        "crs": tms.crs.srs,
        "tileMatrixSetURI": tms.uri or f"{b}/tileMatrixSets/{tms_name}",
        # The member of the drafts before 1.0, where readers of that time (GDAL among them)
        # look for the definition: in the 1.0 encoding, which they read.
        "tileMatrixSetDefinition": f"{b}/tileMatrixSets/{tms_name}?encoding=1.0",
        "links": [
            {"rel": "self", "type": "application/json", "href": here},
            {"rel": TMS_REL, "type": "application/json", "href": f"{b}/tileMatrixSets/{tms_name}"},
        ],
    }
    if not full:
        return doc
    template = f"{here}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"
    if raster:
        doc["links"] += [{"rel": "item", "type": t, "templated": True,
                          "href": f"{template}?f={f}" + (f"&v={pin[f]}" if pin else "")}
                         for f, t in IMAGE_TYPES.items()]
    else:
        doc["links"].append({"rel": "item", "type": MVT, "templated": True, "href": template})
    if layer.extent:
        doc["boundingBox"] = {"lowerLeft": list(layer.extent[:2]),
                              "upperRight": list(layer.extent[2:]),
                              "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
    doc["tileMatrixSetLimits"] = [
        {"tileMatrix": str(z), "minTileRow": r0, "maxTileRow": r1, "minTileCol": c0,
         "maxTileCol": c1}
        for z, r0, r1, c0, c1 in limits(tms, layer.extent, layer.minzoom,
                                        min(layer.maxzoom, MAX_LISTED_ZOOM))]
    return doc


def _drawn(request: Request) -> bool:
    return request.url.path.split("/")[3] == "map"


async def tilesets(request: Request) -> Response:
    layer = await _layer(request)
    drawn = _drawn(request)
    b = base(request)
    return JSONResponse({
        "links": [{"rel": "self", "type": "application/json",
                   "href": f"{b}/collections/{layer.id}/{'map/' if drawn else ''}tiles"}],
        "tilesets": [tileset_doc(request, layer, g, False, drawn)
                     for g in _grids(layer, drawn)]})


async def tileset(request: Request) -> Response:
    layer = await _layer(request)
    name = request.path_params["tms"]
    drawn = _drawn(request)
    if name not in _grids(layer, drawn):
        raise HTTPException(404, f"{layer.id!r} has no tileset in {name!r}")
    pin = None
    if drawn and layer.kind == "vector":
        async with db(request, "tiles") as conn:
            pin = (await pins(request, conn, [layer.id]))[layer.id]
    return JSONResponse(tileset_doc(request, layer, name, True, drawn, pin))


async def tile(request: Request) -> Response:
    p = request.path_params
    layer = await _layer(request)
    f = request.query_params.get("f")
    if layer.kind == "vector" and _drawn(request):
        return await map_tile(request, [layer.id], p["tms"], p["z"], p["col"], p["row"],
                              f or "png", request.query_params)
    if layer.kind == "vector":
        if p["tms"] not in IMAGE_GRIDS or f not in (None, "mvt"):
            raise HTTPException(404, f"{layer.id!r} has vector tiles (f=mvt) in "
                                     f"{' and '.join(IMAGE_GRIDS)}")
        return await vector_tile(request, layer.id, p["z"], p["col"], p["row"],
                                 tms=p["tms"])
    return await raster_tile(request, layer.id, p["tms"], p["z"], p["col"], p["row"],
                             f or "png", request.query_params)


routes = [
    Route("/tileMatrixSets", tile_matrix_sets),
    Route("/tileMatrixSets/{tms}", tile_matrix_set),
    Route("/collections/{collectionId}/tiles", tilesets),
    Route("/collections/{collectionId}/tiles/{tms}", tileset),
    Route("/collections/{collectionId}/tiles/{tms}/{z}/{row}/{col}", tile),
    # Map tilesets: a vector layer drawn in its style (a raster layer's are its tiles).
    Route("/collections/{collectionId}/map/tiles", tilesets),
    Route("/collections/{collectionId}/map/tiles/{tms}", tileset),
    Route("/collections/{collectionId}/map/tiles/{tms}/{z}/{row}/{col}", tile),
]

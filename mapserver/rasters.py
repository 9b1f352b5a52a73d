"""Raster endpoints: image tiles in both grids, TileJSON, and point values (heights).

Every tile request, whichever API it came through (these routes, WMTS, OGC API – Tiles),
ends in ``raster_tile``: the caller's access is checked, the time slice picked, the style
checked, and the caller's area masked out of the pixels before they are encoded.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import shapely
from shapely import MultiPolygon, Polygon
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from access.policy import LayerAccess
from layers.catalog import Layer
from layers.grids import CGCS2000, fit_zoom, grid
from layers.rasters import RasterSource
from layers.render import FORMATS, RenderError, Style, apply_area, render, style_for
from layers.restrict import area_shape
from layers.summary import seen
from mapserver.deps import app_state, db, note, readable_layer
from mapserver.ogc import base, carry_key, int_value, number, numbers, parse_datetime
from mapserver.tileresponse import (
    cache_headers,
    cache_scope,
    not_modified,
    parse_cell,
    tile_response,
)

# Changes whenever the way raster tiles are made changes.
RASTER_FORMAT = "1"
STYLE_PARAMS = ("bidx", "rescale", "colormap_name", "algorithm", "azimuth", "altitude",
                "exaggeration", "datetime")


async def raster_layer(request: Request, conn, layer_id: str) -> tuple[Layer, LayerAccess]:
    return await readable_layer(request, conn, layer_id, ("raster",), "raster layer")


def parse_style(params: QueryParams, meta: dict) -> Style:
    bidx = None
    if params.get("bidx"):
        bidx = [int_value(v, "bidx", 1, 1000) for v in params["bidx"].split(",")]
    rescale = None
    if params.getlist("rescale"):
        ranges = [numbers(r, "rescale") for r in params.getlist("rescale")]
        if any(len(r) != 2 for r in ranges):
            raise HTTPException(400, "rescale is min,max (repeat it for each band)")
        rescale = [(r[0], r[1]) for r in ranges]
    extra = {k: number(params[k], k) for k in ("azimuth", "altitude", "exaggeration")
             if params.get(k)}
    try:
        return style_for(meta, bidx=bidx, rescale=rescale,
                         colormap=params.get("colormap_name"),
                         algorithm=params.get("algorithm"), **extra)
    except RenderError as exc:
        raise HTTPException(400, str(exc)) from exc


def pick_slice(source: RasterSource, raw: str | None) -> datetime:
    """The time slice ``datetime`` names: the newest at or before an instant, the newest
    inside an interval, the newest of all by default."""
    if raw in (None, "", "default", "current"):
        when = source.pick()
    else:
        instant, start, end = parse_datetime(raw)
        when = source.pick(end=instant) if instant else source.pick(start, end)
    if when is None:
        raise HTTPException(404, f"no time slice of {source.layer.id!r} at {raw}")
    return when


async def area_of(request: Request, conn, area_id: int | None) -> Polygon | MultiPolygon | None:
    """The caller's area in lon/lat; areas are never edited, so each is read once."""
    if area_id is None:
        return None
    cache: dict[int, Any] = app_state(request).areas
    if area_id not in cache:
        cache[area_id] = await area_shape(conn, area_id)
    return cache[area_id]


async def raster_tile(request: Request, layer_id: str, tms_name: str, z: str, x: str, y: str,
                      fmt: str, params: QueryParams) -> Response:
    if fmt not in FORMATS:
        raise HTTPException(404, f"no image format {fmt!r}; use png, jpg or webp")
    tms, zi, xi, yi = parse_cell(tms_name, z, x, y)
    state = app_state(request)
    cell = f"{tms_name}/{zi}/{xi}/{yi}"
    async with db(request, "tiles") as conn:
        layer, a = await raster_layer(request, conn, layer_id)
        source = await state.rasters.source(conn, layer)
        area = await area_of(request, conn, a.restriction.area_id)
    style = parse_style(params, source.meta)
    if style.algorithm == "terrainrgb" and fmt not in ("png", "webp"):
        raise HTTPException(400, "terrain-RGB needs a lossless format: png")
    when = pick_slice(source, params.get("datetime"))
    text = "|".join([layer.id, str(source.version), a.restriction.token, style.key,
                     when.isoformat(), fmt, cell, RASTER_FORMAT])
    etag = f'"{hashlib.sha1(text.encode()).hexdigest()[:20]}"'
    note(request, [layer.id], tile=cell)
    if (unchanged := not_modified(request, etag)) is not None:
        return unchanged
    key = ("raster", etag)
    hit = state.cache.get(key)
    if hit is not None:
        return _image(request, etag, hit[0], fmt, "hit")
    body = await run_in_threadpool(_make, source, tms, xi, yi, zi, when, style, fmt, area)
    if body is None:
        return Response(status_code=204, headers=cache_headers(request, etag))
    state.cache.put(key, body, "")
    return _image(request, etag, body, fmt, "miss")


def _make(source: RasterSource, tms, x: int, y: int, z: int, when: datetime, style: Style,
          fmt: str, area) -> bytes | None:
    img = source.tile(tms, x, y, z, source.slice(when), indexes=style.indexes,
                      buffer=style.buffer or None)
    if img is None or not apply_area(img, area):
        return None
    return render(img, style, fmt)


def _image(request: Request, etag: str, body: bytes, fmt: str, cache: str) -> Response:
    return tile_response(request, etag, body, FORMATS[fmt], cache=cache)


def style_query(request: Request) -> str:
    """The style parameters a client gave, to pass on in tile URLs (never a key)."""
    kept = [(k, v) for k, v in request.query_params.multi_items()
            if k in STYLE_PARAMS]
    return ("?" + urlencode(kept)) if kept else ""


async def tilejson(request: Request) -> Response:
    return await tilejson_of(request, request.path_params["layer"], request.path_params["tms"])


async def tilejson_of(request: Request, layer_id: str, tms_name: str) -> Response:
    """A raster layer's TileJSON in a grid, whichever route asked."""
    tms = grid(tms_name)
    if tms is None:
        raise HTTPException(404, f"no tile matrix set {tms_name!r}")
    state = app_state(request)
    async with db(request, "tiles") as conn:
        layer, a = await raster_layer(request, conn, layer_id)
        source = await state.rasters.source(conn, layer)
        layer = await seen(conn, layer, a.restriction)
    parse_style(request.query_params, source.meta)  # refuse a bad style here, not per tile
    fmt = request.query_params.get("format", "webp" if source.band_count >= 3 else "png")
    if fmt not in FORMATS:
        raise HTTPException(400, f"format {fmt!r} is not one of png, jpg, webp")
    bounds = list(layer.extent) if layer.extent else [-180, -85.0511, 180, 85.0511]
    url = carry_key(request, f"{base(request)}/tiles/{layer.id}/{tms_name}/{{z}}/{{x}}/{{y}}"
                             f".{fmt}{style_query(request)}")
    return JSONResponse({
        "tilejson": "3.0.0", "name": layer.title, "description": layer.description or "",
        "version": "1.0.0", "attribution": layer.attribution or "", "scheme": "xyz",
        "tiles": [url], "minzoom": layer.minzoom, "maxzoom": layer.maxzoom,
        "bounds": bounds, "tileMatrixSet": tms_name,
        "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2,
                   fit_zoom(layer.extent, layer.minzoom, layer.maxzoom)],
        # TileJSON means Web Mercator; a CGCS2000Quad tileset says that it is not.
        **({"crs": "http://www.opengis.net/def/crs/EPSG/0/4490",
            "description": (layer.description or layer.title) + " (CGCS2000 lon/lat tiles of"
                           " the CGCS2000Quad grid, not Web Mercator)"}
           if tms_name == CGCS2000 else {}),
        "times": [t.isoformat() for t in source.times],
        **({"encoding": "mapbox"} if request.query_params.get("algorithm") == "terrainrgb"
           else {}),
    }, headers={"Cache-Control": f"{cache_scope(request)}, no-cache"})


async def point(request: Request) -> Response:
    """Values (heights, for elevation) at a lon/lat in the chosen time slice."""
    layer_id = request.path_params["layer"]
    q = request.query_params
    if "lon" not in q or "lat" not in q:
        raise HTTPException(400, "give lon and lat as numbers (degrees)")
    lon, lat = number(q["lon"], "lon"), number(q["lat"], "lat")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise HTTPException(400, f"lon {lon}, lat {lat} is not on the globe")
    state = app_state(request)
    async with db(request, "tiles") as conn:
        layer, a = await raster_layer(request, conn, layer_id)
        source = await state.rasters.source(conn, layer)
        area = await area_of(request, conn, a.restriction.area_id)
    when = pick_slice(source, q.get("datetime"))
    bidx = ([int_value(v, "bidx", 1, 1000) for v in q["bidx"].split(",")]
            if q.get("bidx") else None)
    if bidx and any(not 1 <= b <= source.band_count for b in bidx):
        raise HTTPException(400, f"bidx names a band outside 1..{source.band_count}")
    note(request, [layer.id], 1, point=f"{lon},{lat}")
    inside = area is None or area.covers(shapely.Point(lon, lat))
    found = (await run_in_threadpool(source.point, lon, lat, source.slice(when), bidx)
             if inside else None)
    if found is None:
        raise HTTPException(404, f"no data of {layer.id!r} at {lon}, {lat}")
    scene, values = found
    names = [source.meta["bands"][i - 1]["name"]
             for i in (bidx or range(1, source.band_count + 1))]
    doc = {"layer": layer.id, "coordinates": [lon, lat], "time": when.isoformat(),
           "scene": scene.name, "bands": names, "values": values}
    if source.elevation:
        doc["height"] = values[0]
    return JSONResponse(doc, headers={"Cache-Control": f"{cache_scope(request)}, no-cache"})


routes = [
    Route("/tiles/{layer}/{tms}/tilejson.json", tilejson),
    Route("/rasters/{layer}/point", point),
]

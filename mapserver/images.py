"""Map images of layers and base maps, for WMS and image tiles alike.

Image tiles (``/tiles/{ids}/{tms}/{z}/{x}/{y}.png``, ``/basemaps/{id}/{tms}/...png``) are
256 px images of a grid's cell in WebMercatorQuad or CGCS2000Quad, drawn with a margin so
labels and symbols meet across tile edges, with the ETag, 304 and cache of every tile.

``parts`` resolves what an image shows (catalog layers, base maps) with the caller's
access, each in the style the viewer draws it with; ``draw`` draws them, bottom first:
consecutive vector parts in one Mapnik pass (``mapimages``), rows read through
``layers/images.py`` under the caller's limits, raster parts read from their COGs with
their render parameters, laid over each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import anyio
import numpy as np
from psycopg import AsyncClientCursor
from rasterio.crs import CRS
from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.routing import Route

from access.policy import LayerAccess
from layers import images as image_rows
from layers.catalog import LAYER_ID, Layer, fetch_layers
from layers.errors import NotFound, Unavailable
from layers.grids import CGCS2000, WEB_MERCATOR
from layers.rasters import RasterSource
from layers.render import FORMATS, Style, apply_area, encode, pixels
from layers.restrict import filterable, narrowed
from mapimages.compose import Drawn, background_of, groups, marker_cell, visible_at
from mapimages.draw import LONLAT, DrawError, View, over
from mapserver.deps import app_state, db, layer_access, note
from mapserver.rasters import area_of, parse_style, pick_slice, raster_tile
from mapserver.tileresponse import not_modified, parse_cell, tile_response
from mapserver.tiles import vector_tile
from styles import basemaps, store
from styles.build import fields_read, style_layers

BASEMAP = "basemap:"  # a base map's name among layers
_TOKEN = re.compile(r"\{([^{}]+)\}")


@dataclass
class Part:
    """One named thing an image shows: a vector layer, a raster layer or a base map."""

    name: str
    layers: list[tuple[Layer, LayerAccess]]
    entries: list[dict[str, Any]] = field(default_factory=list)  # vector: its style layers
    background: str | None = None
    raster: RasterSource | None = None
    when: datetime | None = None
    style: Style | None = None

    @property
    def vector(self) -> bool:
        return self.raster is None

    def token(self) -> str:
        """Names what the image of this part depends on (versions, limits, style)."""
        bits = [self.name, repr(self.when), repr(self.style)]
        bits += [f"{ly.id}:{ly.version}:{a.restriction.token}" for ly, a in self.layers]
        bits.append(hashlib.sha1(repr(self.entries).encode()).hexdigest()[:12])
        return "|".join(bits)


def _readable(request, layer: Layer | None, name: str) -> LayerAccess:
    a = layer_access(request, layer) if layer is not None else None
    if a is None:
        raise NotFound(f"no layer {name!r}")
    return a


async def parts(request, conn, names: list[str], time: str | None = None,
                params: Any = None, alone: bool = False) -> list[Part]:
    """The parts ``names`` asks for, in that order; a name the caller may not read is
    missing, exactly as one that does not exist (``NotFound`` names it). ``alone``: each
    as if it were asked for alone (its style keyed as the first part's)."""
    state = app_state(request)
    ids = [n for n in names if not n.startswith(BASEMAP)]
    for n in ids:
        if not LAYER_ID.match(n):
            raise NotFound(f"no layer {n[:80]!r}")
    found = await _vector_layers(state, conn, ids) if ids else ({}, {})
    if found is None:  # a raster layer among them, or a missing one: the catalog's rows
        catalog = {ly.id: ly for ly in await fetch_layers(conn, ids=ids)}
        looks = await store.stored(conn, [i for i in ids if catalog.get(i)
                                          and catalog[i].kind == "vector"])
    else:
        catalog, looks = found
    out: list[Part] = []
    for i, name in enumerate(names):
        n = 0 if alone else i  # the place its style is keyed by
        if name.startswith(BASEMAP):
            out.append(await _basemap(request, conn, name, n))
            continue
        layer = catalog.get(name)
        a = _readable(request, layer, name)
        if layer.kind == "raster":
            source = await state.rasters.source(conn, layer)
            when = pick_slice(source, time)
            out.append(Part(name, [(layer, a)], raster=source, when=when,
                            style=parse_style(params if params is not None else QueryParams(),
                                              source.meta)))
        elif layer.kind == "vector":
            entries = style_layers(filterable(layer, a.restriction), looks)
            out.append(Part(name, [(layer, a)], _keyed(entries, n)))
        else:
            raise NotFound(f"no layer {name!r} to draw: it is a 3D scene")
    return out


# Stored styles by (layer, the stamp of their state): read again only when they change.
_LOOKS: OrderedDict[tuple[str, str], list[dict[str, Any]]] = OrderedDict()
KEPT_LOOKS = 256


async def _vector_layers(state, conn, ids: list[str]
                         ) -> tuple[dict[str, Layer], dict[str, list]] | None:
    """Vector layers at their current versions and their stored styles, from the tile
    sources' registry in one round trip (the styles only when they changed); None if one
    of ``ids`` is not a vector layer."""
    resolved = await state.registry.resolve(conn, ids)
    if resolved is None:
        return None
    missing = [r.layer.id for r in resolved
               if r.style_stamp and (r.layer.id, r.style_stamp) not in _LOOKS]
    if missing:
        got = await store.stored(conn, missing)
        for r in resolved:
            if r.layer.id in got:
                _LOOKS[(r.layer.id, r.style_stamp)] = got[r.layer.id]
        while len(_LOOKS) > KEPT_LOOKS:
            _LOOKS.popitem(last=False)
    looks = {r.layer.id: _LOOKS[(r.layer.id, r.style_stamp)] for r in resolved
             if r.style_stamp and (r.layer.id, r.style_stamp) in _LOOKS}
    return {r.layer.id: replace(r.layer, version=r.version) for r in resolved}, looks


async def _basemap(request, conn, name: str, n: int) -> Part:
    basemap_id = name[len(BASEMAP):]
    if not LAYER_ID.match(basemap_id):
        raise NotFound(f"no layer {name[:80]!r}")
    try:
        bm, of = await basemaps.fetch_with_labels_source(conn, basemap_id)
    except NotFound:
        raise NotFound(f"no layer {name!r}") from None
    vector = await _vector_layers(app_state(request), conn, list(bm.layers))
    catalog = vector[0] if vector is not None else {
        ly.id: ly for ly in await fetch_layers(conn, ids=list(bm.layers))}
    found = [(catalog.get(i), _readable(request, catalog.get(i), name)) for i in bm.layers]
    if bm.kind == "raster":
        layer, a = found[0]
        source = await app_state(request).rasters.source(conn, layer)
        return Part(name, [(layer, a)], raster=source, when=pick_slice(source, None),
                    style=parse_style(QueryParams(), source.meta))
    # The style document the viewer gets, as this caller may be shown it.
    doc = basemaps.vector_doc(bm, basemaps.entries(bm, of),
                              [filterable(ly, a.restriction) for ly, a in found], "", {})
    return Part(name, found, _keyed(doc["layers"], n),
                background=background_of(doc["layers"], 14))


def _keyed(entries: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Style layers whose source layer is named apart for part ``n``: a layer shown on
    its own and inside a base map is read under each one's limits."""
    return [{**e, "source-layer": f"{n}:{e['source-layer']}"} for e in entries
            if "source-layer" in e]


def _fields(entries: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """The fields the style layers read, and those among them that change how a point
    is drawn (all but a label's text)."""
    every: set[str] = set()
    keyed: set[str] = set()
    for e in entries:
        for part in ("paint", "layout"):
            for prop, value in (e.get(part) or {}).items():
                found = fields_read(value)
                if prop == "text-field" and isinstance(value, str):
                    found |= set(_TOKEN.findall(value))
                every |= found
                if prop != "text-field":
                    keyed |= found
        found = fields_read(e.get("filter"))
        every |= found
        keyed |= found
    return every, keyed


# Each layer's statement under each limit, bound once (``layers/images.py``), and the
# fields its rows carry.
_STATEMENTS: OrderedDict[tuple, tuple[str, tuple[str, ...]]] = OrderedDict()
KEPT_STATEMENTS = 512


def _statement(conn, layer: Layer, r, every: set[str], keyed: set[str], srid: int,
               cell: float) -> tuple[str, tuple[str, ...]]:
    key = (layer.id, layer.schema_version, r, frozenset(every), frozenset(keyed), srid, cell)
    found = _STATEMENTS.get(key)
    if found is None:
        statement = image_rows.statement(layer, r, every, srid, keyed, cell)
        found = (AsyncClientCursor(conn).mogrify(statement,
                                                 image_rows.limit_params(layer, r, srid)),
                 tuple(image_rows.columns(layer, r, every)))
        _STATEMENTS[key] = found
        while len(_STATEMENTS) > KEPT_STATEMENTS:
            _STATEMENTS.popitem(last=False)
    return found


def _sources(request, conn, part: Part, n: int, view: View) -> dict[str, Any]:
    """Mapnik sources for a vector part's layers, keyed as its style layers name them."""
    images = app_state(request).images
    out = {}
    needs = basemaps.needs([{**e, "source-layer": e["source-layer"].split(":", 1)[1]}
                            for e in part.entries], int(view.zoom))
    for layer, a in part.layers:
        key = f"{n}:{layer.id}"
        need = needs.get(layer.id)
        if need is None:
            continue  # nothing of it drawn at this zoom
        r = narrowed(layer, a.restriction, None, need.rows) if part.name.startswith(BASEMAP) \
            else a.restriction
        # Only what is drawn at this zoom is read (a street's labels are not read for a
        # city's million points).
        drawn = [e for e in part.entries if e["source-layer"] == key
                 and visible_at(e, view.style_zoom)]
        every, keyed = _fields(drawn)
        cell = marker_cell(drawn, view.style_zoom)
        table, columns = _statement(conn, layer, r, every, keyed, view.srid, cell)
        out[key] = images.source(
            key, table, view.srid, image_rows.area_of_use(view.srid), columns,
            image_rows.of_points(layer), cell)
    return out


def _vector(request, conn, run: list[tuple[int, Part]], view: View) -> list[Drawn]:
    sources: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for n, part in run:
        sources |= _sources(request, conn, part, n, view)
        entries += part.entries
    return groups(entries, sources)


async def render(request, conn, found: list[Part], view: View, transparent: bool,
                 bgcolor: str, fmt: str, buffer: int = 0) -> bytes:
    """The parts drawn bottom first, encoded in ``fmt``: vector parts alone in one
    drawing, encoded where they are drawn; with raster parts, laid over each other."""
    try:
        return await _render(request, conn, found, view, transparent, bgcolor, fmt, buffer)
    except DrawError as exc:
        if exc.spent:
            raise Unavailable("the image ran out of its time budget and was stopped; draw a "
                              "smaller area or fewer layers, or try again later") from None
        if exc.lost:
            raise Unavailable("the database is not reachable; try again later") from None
        if exc.stopped:
            raise Unavailable("the image could not be drawn this time; try again") from None
        raise


async def _render(request, conn, found: list[Part], view: View, transparent: bool,
                  bgcolor: str, fmt: str, buffer: int) -> bytes:
    if all(part.vector for part in found):
        background = found[0].background or (None if transparent else "#" + bgcolor[-6:])
        return await app_state(request).images.draw(
            _vector(request, conn, list(enumerate(found)), view), view, background, buffer,
            fmt)
    canvas = await draw(request, conn, found, view, transparent, bgcolor, buffer)
    return await anyio.to_thread.run_sync(encode_rgba, canvas, fmt)


async def draw(request, conn, found: list[Part], view: View, transparent: bool,
               bgcolor: str, buffer: int = 0) -> np.ndarray:
    """The parts drawn bottom first, as straight-alpha RGBA."""
    state = app_state(request)
    canvas = np.zeros((view.height, view.width, 4), np.uint8)
    if not transparent:
        canvas[...] = (*_rgb(bgcolor), 255)
    run: list[tuple[int, Part]] = []

    async def flush() -> None:
        nonlocal canvas
        if not run:
            return
        drawn = _vector(request, conn, run, view)
        background = run[0][1].background
        if drawn or background:
            canvas = over(canvas, await state.images.draw(drawn, view, background, buffer))
        run.clear()

    for n, part in enumerate(found):
        if part.vector:
            run.append((n, part))
            continue
        await flush()
        layer, a = part.layers[0]
        area = await area_of(request, conn, a.restriction.area_id)
        img = await anyio.to_thread.run_sync(_raster, part, view, area)
        if img is not None:
            canvas = over(canvas, img)
    await flush()
    return canvas


def _raster(part: Part, view: View, area) -> np.ndarray | None:
    source = part.raster
    crs = CRS.from_epsg(4326 if view.srid in LONLAT else view.srid)
    img = source.part(view.bbox, crs, view.width, view.height, source.slice(part.when),
                      indexes=part.style.indexes)
    if img is None or not apply_area(img, area):
        return None
    data, alpha = pixels(img, part.style)
    rgb = np.repeat(data[:1], 3, axis=0) if data.shape[0] == 1 else data[:3]
    return np.dstack([*rgb, alpha]).astype(np.uint8)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.removeprefix("0x").removeprefix("0X").removeprefix("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


IMAGE_FORMAT = "3"  # bump when the same data would draw other pixels
TILE_SIZE = 256
TILE_BUFFER = 64  # pixels drawn around a tile: labels near its edge are placed once
IMAGE_GRIDS = (WEB_MERCATOR, CGCS2000)


async def map_tile(request, names: list[str], tms_name: str, z: str, x: str, y: str,
                   fmt: str, params) -> Response:
    """A tile image of layers or a base map; one raster layer alone is its own tile."""
    if fmt not in FORMATS:
        raise NotFound(f"no image format {fmt!r}; use png, jpg or webp")
    tms, zi, xi, yi = parse_cell(tms_name, z, x, y)
    state = app_state(request)
    cell = f"{tms_name}/{zi}/{xi}/{yi}"
    async with db(request, "tiles") as conn:
        # One name that is no vector layer (one indexed read tells): a raster layer's own
        # tile (or its 404), made by the raster route without reading the layer twice.
        alone = len(names) == 1 and not names[0].startswith(BASEMAP) and (
            not LAYER_ID.match(names[0])
            or await state.registry.resolve(conn, names) is None)
        if alone:
            pass  # after the connection is back
        elif tms_name not in IMAGE_GRIDS:
            raise NotFound(f"image tiles of vector layers and base maps are made in "
                           f"{' and '.join(IMAGE_GRIDS)}")
        else:
            found = await parts(request, conn, names, params.get("datetime"), params)
            note(request, sorted({ly.id for part in found for ly, _ in part.layers}),
                 tile=cell)
            etag = image_etag(found, fmt)
            if (unchanged := not_modified(request, etag)) is not None:
                return unchanged
            key = ("image", etag, cell)
            hit = state.cache.get(key)
            if hit is not None:
                return tile_response(request, etag, hit[0], FORMATS[fmt], cache="hit")
            view = tile_view(tms_name, tms, zi, xi, yi)
            body = await render(request, conn, found, view, fmt != "jpg", "0xFFFFFF", fmt,
                                TILE_BUFFER)
            state.cache.put(key, body, "")
            return tile_response(request, etag, body, FORMATS[fmt], cache="miss")
    return await raster_tile(request, names[0], tms_name, z, x, y, fmt, params)


def image_etag(found: list[Part], fmt: str) -> str:
    """The ETag of the image tiles of ``found`` in ``fmt``: what every one of them depends
    on (versions, limits, style, format), the same for all tiles of both grids, so that a
    URL template can carry it (``?v=``, ``pins``) and a shared cache keep what it names."""
    text = "|".join([*(part.token() for part in found), fmt, IMAGE_FORMAT])
    return f'"{hashlib.sha1(text.encode()).hexdigest()[:20]}"'


async def pins(request, conn, names: list[str]) -> dict[str, dict[str, str]]:
    """For each of ``names`` (vector layers and base maps the caller may read), the
    version pin of its image tiles in each format (``image_etag``): what WMTS templates
    carry, as TileJSON's tile URLs carry their tiles' own."""
    try:  # each alone, as its tiles name it: a part's style is keyed by its place
        found = await parts(request, conn, names, alone=True)
    except NotFound:  # one gone since the caller's list was read: its templates stay plain
        found = []
        for name in names:
            with contextlib.suppress(NotFound):
                found += await parts(request, conn, [name])
    return {part.name: {fmt: image_etag([part], fmt).strip('"') for fmt in FORMATS}
            for part in found}


def tile_view(tms_name: str, tms, z: int, x: int, y: int) -> View:
    if tms_name == WEB_MERCATOR:
        b = tms.xy_bounds(x, y, z)
        lat = tms.bounds(x, y, z)
        return View(3857, (b.left, b.bottom, b.right, b.top), TILE_SIZE, TILE_SIZE,
                    (lat.bottom + lat.top) / 2)
    b = tms.bounds(x, y, z)
    return View(4490, (b.left, b.bottom, b.right, b.top), TILE_SIZE, TILE_SIZE,
                (b.bottom + b.top) / 2)


def encode_rgba(rgba: np.ndarray, fmt: str) -> bytes:
    return encode(np.moveaxis(rgba[..., :3], -1, 0), rgba[..., 3], fmt)


async def tile(request) -> Response:
    """``/tiles/{layers}/{tms}/{z}/{x}/{y}.{fmt}``: vector tiles, raster tiles and images."""
    p = request.path_params
    if p["fmt"] in ("mvt", "pbf"):
        if p["tms"] not in IMAGE_GRIDS:
            raise NotFound(f"vector tiles are made in {' and '.join(IMAGE_GRIDS)}")
        return await vector_tile(request, p["layer"], p["z"], p["x"], p["y"], tms=p["tms"])
    return await map_tile(request, p["layer"].split(","), p["tms"], p["z"], p["x"], p["y"],
                          p["fmt"], request.query_params)


routes = [Route("/tiles/{layer}/{tms}/{z}/{x}/{y}.{fmt}", tile)]

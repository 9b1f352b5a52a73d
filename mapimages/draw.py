"""Drawing a map image with Mapnik: the view, the sources and the worker processes.

Mapnik reads each layer's rows itself, from PostGIS, with the statement
``layers.images.statement`` composed under the caller's limits (its parameters bound by
psycopg into the text), on connections of its own that carry the images' statement
budget. Mapnik holds the interpreter while it reads and draws, so images are drawn in
worker processes of their own (``Images``): the server's event loop never waits on a
drawing, and the machine's cores draw side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import re
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
from psycopg.conninfo import conninfo_to_dict

from mapimages.compose import FONT_DIRS, Drawn, Source, map_xml

# Metres per pixel at MapLibre zoom 0 (a 512 px world) on the equator.
MERCATOR_Z0 = 2 * math.pi * 6378137 / 512
DEGREE = 2 * math.pi * 6378137 / 360  # metres of a degree on the equator
LONLAT = (4326, 4490)


@dataclass(frozen=True)
class View:
    """An image: a box in a CRS (easting, northing order), its size in pixels."""

    srid: int
    bbox: tuple[float, float, float, float]
    width: int
    height: int
    lat: float = 0.0  # the latitude of its centre, for its zoom

    @property
    def pixel(self) -> float:
        """One pixel, in the CRS's units (the larger of its two sides)."""
        x0, y0, x1, y1 = self.bbox
        return max((x1 - x0) / self.width, (y1 - y0) / self.height)

    @property
    def zoom(self) -> float:
        """The MapLibre zoom this image shows, so a style's zoom ranges apply as in the
        viewer: a Web Mercator pixel's size, at the image's latitude for other CRSs."""
        px = self.pixel
        if self.srid in LONLAT:
            px *= DEGREE
        elif self.srid != 3857:
            px /= max(math.cos(math.radians(self.lat)), 0.01)
        return max(0.0, min(24.0, math.log2(MERCATOR_Z0 / max(px, 1e-9))))

    @property
    def style_zoom(self) -> float:
        """The zoom its style is read at: to a tenth, so images of nearly one scale share
        a loaded map (and read the same fields)."""
        return round(self.zoom, 1)


def srs_of(srid: int) -> str:
    return f"epsg:{4326 if srid in LONLAT else srid}"


def database_params(url: str) -> dict[str, str]:
    """The connection parameters Mapnik's PostGIS source takes, from OneMap's URL."""
    info = conninfo_to_dict(url)
    return {k: str(info[k]) for k in ("host", "port", "dbname", "user", "password")
            if info.get(k)}


def source(db: dict[str, str], layer_id: str, table: str, srid: int,
           extent: tuple[float, float, float, float]) -> Source:
    """A Mapnik PostGIS source reading ``table`` (``layers.images.statement``, bound),
    over ``extent`` (the CRS's area, in its units)."""
    return Source(layer_id, {
        "type": "postgis", **db, "table": table, "geometry_field": "geom",
        "srid": str(4326 if srid in LONLAT else srid),
        "extent": ",".join(f"{v:.6f}" for v in extent),
        "estimate_extent": "false", "persist_connection": "true", "max_size": "4",
        "connect_timeout": "4",
    })


# ---- in a worker process ------------------------------------------------------------


class DrawError(Exception):
    """Mapnik could not draw: its message, without the connection's password; ``spent``
    when a read ran out of its statement budget."""

    def __init__(self, message: str) -> None:
        clean = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", message)
        super().__init__(clean[:2000])
        self.spent = "statement timeout" in message

    def __reduce__(self):  # crosses back from the drawing process
        return (DrawError, (str(self),))


# Encodings Mapnik writes itself. PNG is written by libpng instead, at zlib level 1 with
# no row filter: drawing, not squeezing, is the work, and a map's flat colours and
# transparent runs gain nothing from filters (Mapnik's PNG tries them all: twice the time,
# 3 ms against 1.4 ms for a street's 256 px image, for images no smaller).
ENCODINGS = {"jpg": "jpeg90", "webp": "webp:quality=90"}
PNG_LEVEL, PNG_FILTER = 1, imagecodecs.PNG.FILTER.NONE
_MAPS: OrderedDict[str, object] = OrderedDict()  # loaded maps by their XML, newest last
KEPT_MAPS = 32


def _start(budget_ms: int) -> None:
    import ctypes
    import signal

    import mapnik

    # Ends with the server process that started it, however that one ends (Linux).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    # libpq reads this for Mapnik's connections: the budget of one statement.
    os.environ["PGOPTIONS"] = f"-c statement_timeout={int(budget_ms)}"
    for d in FONT_DIRS:
        if Path(d).is_dir():
            mapnik.register_fonts(d)


def _draw(xml: str, bbox: tuple[float, float, float, float], width: int, height: int,
          buffer: int = 0, fmt: str | None = None) -> bytes:
    """The image encoded in ``fmt``, or straight-alpha RGBA bytes (rows top first); the
    map is loaded once per XML (its sources read each image's box through ``!bbox!``).
    ``buffer`` pixels around the image are drawn too (a tile's labels near its edges)."""
    import mapnik

    m = _MAPS.get(xml)
    if m is None:
        m = mapnik.Map(width, height)
        try:
            mapnik.load_map_from_string(m, xml)
        except RuntimeError as exc:
            raise DrawError(str(exc)) from None
        m.aspect_fix_mode = mapnik.aspect_fix_mode.RESPECT  # the box fills the image
        _MAPS[xml] = m
        while len(_MAPS) > KEPT_MAPS:
            _MAPS.popitem(last=False)
    else:
        _MAPS.move_to_end(xml)
    m.resize(width, height)
    m.buffer_size = buffer
    m.zoom_to_box(mapnik.Box2d(*bbox))
    im = mapnik.Image(width, height)
    try:
        mapnik.render(m, im)
    except RuntimeError as exc:
        raise DrawError(str(exc)) from None
    if fmt is not None and fmt != "png":
        return im.to_string(ENCODINGS[fmt])
    im.demultiply()
    if fmt == "png":
        rgba = np.frombuffer(im.to_string(), np.uint8).reshape(height, width, 4)
        return imagecodecs.png_encode(rgba, level=PNG_LEVEL, filter=PNG_FILTER)
    return im.to_string()


class Images:
    """The worker processes that draw, started at the first image."""

    def __init__(self, database_url: str, icons: Path | None, budget_ms: int,
                 workers: int) -> None:
        self.db = database_params(database_url)
        self.icons = icons if icons is not None and icons.is_dir() else None
        self._budget = budget_ms
        self._workers = max(1, workers)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self._workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start, initargs=(self._budget,))
        return self._executor

    def source(self, layer_id: str, table: str, srid: int,
               extent: tuple[float, float, float, float]) -> Source:
        return source(self.db, layer_id, table, srid, extent)

    async def draw(self, drawn: list[Drawn], view: View, background: str | None = None,
                   buffer: int = 0, fmt: str | None = None) -> np.ndarray | bytes:
        """The image encoded in ``fmt``, or as straight-alpha RGBA (height, width, 4)."""
        xml = map_xml(drawn, srs_of(view.srid), view.style_zoom, self.icons, background)
        return await self.draw_xml(xml, view.bbox, view.width, view.height, buffer, fmt)

    async def draw_xml(self, xml: str, bbox: tuple[float, float, float, float], width: int,
                       height: int, buffer: int = 0, fmt: str | None = None
                       ) -> np.ndarray | bytes:
        """A Mapnik map given as XML (a legend, a message), drawn the same way."""
        raw = await asyncio.get_running_loop().run_in_executor(
            self._pool(), _draw, xml, bbox, width, height, buffer, fmt)
        if fmt is not None:
            return raw
        return np.frombuffer(raw, np.uint8).reshape(height, width, 4)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def over(below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """``above`` laid over ``below`` (straight-alpha RGBA)."""
    a = above[..., 3:4].astype(np.float32) / 255
    b = below[..., 3:4].astype(np.float32) / 255
    out_a = a + b * (1 - a)
    rgb = (above[..., :3] * a + below[..., :3] * b * (1 - a)) / np.maximum(out_a, 1e-6)
    return np.dstack([rgb, out_a * 255]).round().clip(0, 255).astype(np.uint8)

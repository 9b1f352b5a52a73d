"""Drawing a map image with Mapnik: the view, the sources and the worker processes.

Mapnik reads each layer's rows itself, from PostGIS, with the statement
``layers.images.statement`` composed under the caller's limits (its parameters bound by
psycopg into the text), on connections of its own that carry the images' statement
budget; point labels are drawn over its image by Skia (``labels``), and an image of few
features is drawn by Skia alone from the same statements (``marks``). Mapnik holds the
interpreter while it reads and draws, so images are drawn in worker processes of their
own (``Images``): the server's event loop never waits on a drawing, and the machine's
cores draw side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import re
import shutil
import socket
import struct
import tempfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
from psycopg.conninfo import conninfo_to_dict

from mapimages import labels, marks
from mapimages.compose import DB_KEYS, FONT_DIRS, Drawn, Source, map_xml
from mapimages.labels import LabelLayer

log = logging.getLogger(__name__)

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
    return {k: str(info[k]) for k in DB_KEYS if info.get(k)}


def source(db: dict[str, str], layer_id: str, table: str, srid: int,
           extent: tuple[float, float, float, float], columns: tuple[str, ...] = (),
           points: bool = False, cell: float = 1.0) -> Source:
    """A Mapnik PostGIS source reading ``table`` (``layers.images.statement``, bound,
    its rows carrying ``columns``, points if ``points``, once per ``cell`` pixels), over
    ``extent`` (the CRS's area, in its units)."""
    return Source(layer_id, {
        "type": "postgis", **db, "table": table, "geometry_field": "geom",
        "srid": str(4326 if srid in LONLAT else srid),
        "extent": ",".join(f"{v:.6f}" for v in extent),
        "estimate_extent": "false", "persist_connection": "true", "max_size": "4",
        "connect_timeout": "4",
    }, columns, points, cell)


# ---- in a worker process ------------------------------------------------------------


class DrawError(Exception):
    """An image could not be drawn: the message, without the connection's password;
    ``spent`` when a read ran out of its statement budget (or the drawing, ``late``, out
    of ``DEADLINE`` times it), ``lost`` when the database could not be reached,
    ``stopped`` when the drawing process ended while drawing it."""

    def __init__(self, message: str, stopped: bool = False, late: bool = False) -> None:
        clean = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", message)
        super().__init__(clean[:2000])
        self.spent = late or "statement timeout" in message
        self.lost = any(s in message for s in (
            "could not connect", "connection failed", "server closed the connection",
            "terminating connection", "Connection refused"))
        self.stopped = stopped

    def __reduce__(self):  # crosses back from the drawing process
        return (DrawError, (str(self),))


# Encodings Mapnik writes itself. PNG is written here instead (``png``).
ENCODINGS = {"jpg": "jpeg90", "webp": "webp:quality=90"}
# zlib-ng's level 2 on unfiltered rows: drawing, not squeezing, is the work, and a map's
# flat colours and transparent runs gain little from row filters. For a street's
# 1024 x 768 image of labelled points: 0.7 ms and 22 KB, where libpng at zlib's level 1
# (no filter) took 4 ms for 34 KB, and Mapnik's own encoder, which tries every filter,
# twice that.
PNG_LEVEL = 2
# An image's drawing process that has not answered in this many times the statement
# budget is stopped (and replaced): its reads are bounded by the budget, so it is stuck.
DEADLINE = 4
_MAPS: OrderedDict[str, object] = OrderedDict()  # loaded maps by their XML, newest last
KEPT_MAPS = 32
# Maps (by their XML) whose images Mapnik draws for now, though Skia could (``marks``):
# how many more images it draws.
_DENSE: dict[str, int] = {}
_PLANS: OrderedDict[bytes, tuple] = OrderedDict()  # unpickled plans by their bytes


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


def plan_of(xml: str, point_labels: tuple[LabelLayer, ...] = (),
            whole: marks.Whole | None = None) -> bytes:
    """What ``_draw`` draws, pickled once: the Mapnik map's XML, the labels drawn over it,
    how Skia draws it whole (if it can). The server keeps it with the map it composed, so
    an image sends bytes to its drawing process instead of pickling the map again, and
    the drawing process unpickles it once (``_PLANS``)."""
    return pickle.dumps((xml, point_labels, whole), protocol=pickle.HIGHEST_PROTOCOL)


def _plan(blob: bytes) -> tuple[str, tuple[LabelLayer, ...], marks.Whole | None]:
    found = _PLANS.get(blob)
    if found is None:
        found = _PLANS[blob] = pickle.loads(blob)
        while len(_PLANS) > KEPT_MAPS * 4:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(blob)
    return found


def _draw(plan: bytes, bbox: tuple[float, float, float, float], width: int, height: int,
          buffer: int = 0, fmt: str | None = None, srid: int = 3857,
          zoom: float = 0.0) -> bytes:
    """The image of ``plan`` (``plan_of``) encoded in ``fmt``, or straight-alpha RGBA
    bytes (rows top first): drawn whole by Skia if the plan says how and it has few rows
    (``marks``), else by Mapnik (the map loaded once per XML, its sources reading each
    image's box through ``!bbox!``), then its point labels drawn over it. ``buffer``
    pixels around the image are drawn too (a tile's labels near its edges)."""
    import psycopg

    xml, point_labels, whole = _plan(plan)
    lonlat = 4326 if srid in LONLAT else srid
    rgba = None
    try:
        if whole is not None and _DENSE.get(xml, 0) == 0:
            drawn = marks.draw(whole, lonlat, bbox, width, height, buffer, zoom)
            if drawn is None:
                if len(_DENSE) > KEPT_MAPS * 4:
                    _DENSE.clear()
                _DENSE[xml] = marks.DENSE_SKIP
            else:
                rgba = straight(drawn, width, height)
        elif whole is not None:
            _DENSE[xml] -= 1
        if rgba is None:
            im = _mapnik(xml, bbox, width, height, buffer)
            if not point_labels and fmt is not None and fmt != "png":
                return im.to_string(ENCODINGS[fmt])
            if point_labels:
                # Mapnik's image comes straight (it demultiplies at the end of its
                # render); Skia draws on premultiplied pixels.
                im.premultiply()
                pixels = np.frombuffer(im.to_string(), np.uint8).reshape(
                    height, width, 4).copy()
                labels.draw(pixels, list(point_labels), lonlat, bbox, buffer, zoom)
                rgba = straight(pixels, width, height)
            else:
                rgba = np.frombuffer(im.to_string(), np.uint8).reshape(height, width, 4)
    except psycopg.Error as exc:
        raise DrawError(str(exc)) from None
    if fmt == "png":
        return png(rgba)
    if fmt == "jpg":
        return imagecodecs.jpeg8_encode(np.ascontiguousarray(rgba[..., :3]), level=90)
    if fmt == "webp":
        return imagecodecs.webp_encode(rgba, level=90)
    return rgba.tobytes()


def _mapnik(xml: str, bbox: tuple[float, float, float, float], width: int, height: int,
            buffer: int):
    """The map of ``xml`` drawn by Mapnik (straight alpha, as its render leaves it)."""
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
    return im


def straight(premultiplied, width: int, height: int) -> np.ndarray:
    """Premultiplied RGBA (bytes or an array, rows top first: what Skia draws) as
    straight alpha, by Skia."""
    import skia

    info = skia.ImageInfo.Make(width, height, skia.kRGBA_8888_ColorType,
                               skia.kPremul_AlphaType)
    image = skia.Image.MakeRasterData(info, skia.Data.MakeWithoutCopy(premultiplied),
                                      width * 4)
    out = np.empty((height, width, 4), np.uint8)
    image.readPixels(info.makeAlphaType(skia.kUnpremul_AlphaType), out, width * 4, 0, 0)
    return out


def png(rgba: np.ndarray) -> bytes:
    """Straight-alpha RGBA (rows top first) as a PNG: 8-bit RGBA, rows unfiltered,
    compressed by zlib-ng."""
    height, width = rgba.shape[:2]
    rows = np.empty((height, width * 4 + 1), np.uint8)
    rows[:, 0] = 0  # each row's filter: none
    rows[:, 1:] = rgba.reshape(height, width * 4)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    return b"".join((b"\x89PNG\r\n\x1a\n",
                     chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)),
                     chunk(b"IDAT", imagecodecs.zlibng_encode(rows, level=PNG_LEVEL)),
                     chunk(b"IEND", b"")))


class _Drawer:
    """One drawing process and the socket it is asked through: a call goes as a length
    and its pickle, the answer comes back as a status, a length and the bytes (the image,
    or the pickled exception). The server's event loop writes and reads the socket
    itself, so no thread of the server stands between a request and its drawing."""

    def __init__(self, budget_ms: int) -> None:
        ours, theirs = socket.socketpair()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(theirs, budget_ms), daemon=True, name="onemap-draw")
        self.process.start()
        theirs.close()
        self.socket = ours
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def ask(self, payload: bytes) -> tuple[int, bytes]:
        """The drawing's status (0: drawn) and its bytes."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # streams belong to the loop that opened them
            self._streams = await asyncio.open_connection(
                sock=socket.socket(fileno=os.dup(self.socket.fileno())), limit=1 << 22)
            self._loop = loop
        reader, writer = self._streams
        writer.write(struct.pack("!I", len(payload)) + payload)
        status, size = struct.unpack("!BI", await reader.readexactly(5))
        return status, await reader.readexactly(size)

    def close(self) -> None:
        """Its process asked to stop (its socket ends), killed if it does not."""
        if self._streams is not None and not self._loop.is_closed():
            self._streams[1].close()
        self.socket.close()
        self.process.join(timeout=3)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=3)

    def discard(self) -> None:
        """Its process killed at once: one whose answer can no longer be read."""
        if self.process.is_alive():
            self.process.kill()
        self.close()


def _serve(sock: socket.socket, budget_ms: int) -> None:
    """A drawing process: draws each call it reads (``_Drawer``) until its socket ends."""
    _start(budget_ms)

    def exactly(n: int) -> bytearray | None:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = sock.recv_into(view[got:])
            if k == 0:
                return None
            got += k
        return buf

    while (head := exactly(4)) is not None:
        call = exactly(struct.unpack("!I", head)[0])
        if call is None:
            return
        try:
            status, body = 0, _draw(*pickle.loads(call))
        except Exception as exc:  # crosses back to the server, raised there
            try:
                status, body = 1, pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                status, body = 1, pickle.dumps(DrawError(repr(exc)))
        head = struct.pack("!BI", status, len(body))
        sent = sock.sendmsg([head, body])
        if sent < len(head) + len(body):
            sock.sendall(memoryview(head + body)[sent:])


def _settled(task: asyncio.Future) -> None:
    """An exchange whose caller went away: its error is read (nobody else will)."""
    if not task.cancelled():
        task.exception()


class Images:
    """The processes that draw, started at the first image; each draws one image at a
    time, handed to it by the event loop (``_Drawer``)."""

    def __init__(self, database_url: str, icons: Path | None, budget_ms: int,
                 workers: int) -> None:
        self.db = database_params(database_url)
        self.icons = icons if icons is not None and icons.is_dir() else None
        self._budget = budget_ms
        self._workers = max(1, workers)
        self._drawers: list[_Drawer] = []
        self._idle: asyncio.Queue[_Drawer] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._made: OrderedDict[tuple, bytes] = OrderedDict()  # plans by what they draw
        self._sprites: Path | None = None
        self._no_sprites = False

    def source(self, layer_id: str, table: str, srid: int,
               extent: tuple[float, float, float, float], columns: tuple[str, ...] = (),
               points: bool = False, cell: float = 1.0) -> Source:
        return source(self.db, layer_id, table, srid, extent, columns, points, cell)

    async def draw(self, drawn: list[Drawn], view: View, background: str | None = None,
                   buffer: int = 0, fmt: str | None = None) -> np.ndarray | bytes:
        """The image encoded in ``fmt``, or as straight-alpha RGBA (height, width, 4)."""
        zoom = view.style_zoom
        return await self._run(self._composed(drawn, view.srid, zoom, background),
                               view.bbox, view.width, view.height, buffer, fmt, view.srid,
                               zoom)

    def _composed(self, drawn: list[Drawn], srid: int, zoom: float, background: str | None
                  ) -> bytes:
        """The plan of the image (``plan_of``): the Mapnik map and the labels drawn over
        it, and how Skia draws it whole if it can (``marks``), made once for the same
        sources (statements under the same limits), style layers, zoom and background."""
        key = (repr([(g.source.params, g.entries) for g in drawn]), srid, zoom, background)
        found = self._made.get(key)
        if found is None:
            rest, point_labels = labels.split(drawn, zoom)
            found = plan_of(map_xml(rest, srs_of(srid), zoom, self.icons, background,
                                    self._sprite_folder()),
                            tuple(point_labels), marks.plan(drawn, zoom, background))
            self._made[key] = found
            while len(self._made) > KEPT_MAPS * 4:
                self._made.popitem(last=False)
        else:
            self._made.move_to_end(key)
        return found

    def _sprite_folder(self) -> Path | None:
        """Where the circles drawn from images are made (``compose.sprite``): this
        server process's own, read by its drawing processes, removed with them; None
        (each circle drawn as a path) where no folder can be made."""
        if self._sprites is None and not self._no_sprites:
            try:
                self._sprites = Path(tempfile.mkdtemp(prefix="onemap-markers-"))
            except OSError as exc:
                self._no_sprites = True
                log.warning("dense circles are drawn one by one: no folder for their "
                            "images (%s)", exc)
        return self._sprites

    async def draw_xml(self, xml: str, bbox: tuple[float, float, float, float], width: int,
                       height: int) -> np.ndarray:
        """A Mapnik map given as XML (a legend, a message), drawn the same way, as
        straight-alpha RGBA."""
        return await self._run(plan_of(xml), bbox, width, height)

    async def _run(self, plan: bytes, bbox: tuple[float, float, float, float], width: int,
                   height: int, buffer: int = 0, fmt: str | None = None, srid: int = 3857,
                   zoom: float = 0.0) -> np.ndarray | bytes:
        payload = pickle.dumps((plan, bbox, width, height, buffer, fmt, srid, zoom),
                               protocol=pickle.HIGHEST_PROTOCOL)
        idle = self._free()
        drawer = await idle.get()
        # A caller that goes away leaves the exchange to finish, so the drawer's answer is
        # read before another call is handed to it.
        exchange = asyncio.ensure_future(self._exchange(drawer, payload))
        exchange.add_done_callback(_settled)
        raw = await asyncio.shield(exchange)
        if fmt is not None:
            return raw
        return np.frombuffer(raw, np.uint8).reshape(height, width, 4)

    def _free(self) -> asyncio.Queue[_Drawer]:
        loop = asyncio.get_running_loop()
        if self._idle is None or self._loop is not loop:
            self._idle, self._loop = asyncio.Queue(), loop
            for drawer in self._drawers:
                self._idle.put_nowait(drawer)
            for _ in range(self._workers - len(self._drawers)):
                self._hire()
        return self._idle

    def _hire(self) -> None:
        drawer = _Drawer(self._budget)
        self._drawers.append(drawer)
        self._idle.put_nowait(drawer)

    def _replace(self, drawer: _Drawer) -> None:
        self._drawers.remove(drawer)
        drawer.discard()
        self._hire()

    async def _exchange(self, drawer: _Drawer, payload: bytes) -> bytes:
        if not drawer.process.is_alive():  # ended while idle: another takes its place
            self._replace(drawer)
            drawer = await self._idle.get()
        try:
            status, body = await asyncio.wait_for(drawer.ask(payload),
                                                  DEADLINE * self._budget / 1000)
        except TimeoutError:
            self._replace(drawer)
            raise DrawError("the drawing did not end in its time", late=True) from None
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self._replace(drawer)
            raise DrawError("the drawing process stopped while drawing this image",
                            stopped=True) from None
        except asyncio.CancelledError:  # the loop ends (callers are shielded): no other
            self._drawers.remove(drawer)
            drawer.discard()
            raise
        except BaseException:  # stopped before its answer was read
            self._replace(drawer)
            raise
        self._idle.put_nowait(drawer)
        if status:
            raise pickle.loads(body)
        return body

    def close(self) -> None:
        for drawer in self._drawers:
            drawer.close()
        self._drawers.clear()
        self._idle = None
        if self._sprites is not None:
            shutil.rmtree(self._sprites, ignore_errors=True)
            self._sprites = None


def over(below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """``above`` laid over ``below`` (straight-alpha RGBA)."""
    a = above[..., 3:4].astype(np.float32) / 255
    b = below[..., 3:4].astype(np.float32) / 255
    out_a = a + b * (1 - a)
    rgb = (above[..., :3] * a + below[..., :3] * b * (1 - a)) / np.maximum(out_a, 1e-6)
    return np.dstack([rgb, out_a * 255]).round().clip(0, 255).astype(np.uint8)

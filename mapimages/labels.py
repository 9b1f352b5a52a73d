"""Point labels drawn with Skia over the image Mapnik drew.

A style layer of ``symbol`` type placed at points (text only, no icon) is not given to
Mapnik when every label of the image is of that kind and drawn after everything else:
its rows are read here (the same statement as Mapnik's source, so under the same limits,
with a label point per row: the point, a line's middle, a polygon's point on its surface;
one per cell of ``SPACING`` pixels, as two there could not both be placed),
its values evaluated per feature at the image's zoom (``mapimages.expr``), the labels laid
out (wrapped, anchored, offset as MapLibre does), kept apart with their padding, placed
in an order every image shares (``order``), and drawn with their halos by Skia. Mapnik's
own text path spends most of a street's image on label halos (it composites each glyph
pixel's neighbourhood one pixel at a time); Skia strokes the glyphs' outlines, at a
fraction of the time.

Line labels, icons and labels drawn beneath other style layers stay with Mapnik
(``split``), which places them along lines and against its other symbols.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from mapimages.compose import DB_KEYS, Drawn, text_parts, visible_at
from mapimages.compose import DEFAULTS as COMPOSE_DEFAULTS
from mapimages.expr import PerFeature, Unsupported, constant, evaluate, fold, rgba

log = logging.getLogger(__name__)

# MapLibre's defaults for what a label leaves out (the style specification's): the text's
# that Mapnik's labels use too (but letter spacing, which these do not draw), and what only
# these read.
DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in COMPOSE_DEFAULTS.items()
       if k.startswith("text-") and k != "text-letter-spacing"},
    "text-line-height": 1.2, "text-justify": "center", "text-allow-overlap": False,
    "text-ignore-placement": False, "text-font": [],
}
# What a label at a point may use; any other property keeps the style layer with Mapnik.
KNOWN = frozenset(DEFAULTS) | {"text-field", "symbol-placement", "visibility",
                               "text-optional", "symbol-sort-key", "text-rotation-alignment",
                               "text-pitch-alignment", "text-halo-blur", "symbol-z-order"}
# Which part of the label's box is at its point: (share of width, share of height) left
# and above the point.
ANCHORS = {"center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0),
           "left": (0.0, 0.5), "right": (1.0, 0.5), "top-left": (0.0, 0.0),
           "top-right": (1.0, 0.0), "bottom-left": (0.0, 1.0), "bottom-right": (1.0, 1.0)}
FACES = {  # family, then the one that has what it lacks (Chinese)
    "regular": (("Noto Sans", 400), ("Noto Sans CJK SC", 400)),
    "bold": (("Noto Sans", 700), ("Noto Sans CJK SC", 700)),
}
TYPES = {0: "Point", 1: "LineString", 2: "Polygon"}
CELL = 64  # pixels: the grid that finds a label's neighbours
MOST_LABELS = 20_000  # rows one label layer reads for an image
# Pixels between the label candidates read: labels of 8 px text and more, padded, whose
# points are closer both ways always overlap.
SPACING = 8
# The margin labels are read and placed in, as a multiple of the image's drawing margin:
# a label near a tile's edge has neighbours a label's width away, and those theirs.
REACH = 2


@dataclass(frozen=True)
class LabelLayer:
    """The point labels of one source: its statement (Mapnik's ``table``, with ``!bbox!``
    and ``!pixel_width!`` to fill in), the fields it has, its label style layers."""

    table: str
    columns: tuple[str, ...]
    entries: tuple[dict[str, Any], ...]
    db: tuple[tuple[str, str], ...]


def _folded(entry: dict[str, Any], zoom: float) -> dict[str, Any]:
    props = {**(entry.get("layout") or {}), **(entry.get("paint") or {})}
    return {k: fold(constant(v), zoom) for k, v in props.items()}


def is_point_label(entry: dict[str, Any], zoom: float) -> bool:
    """A style layer these labels draw: text at points, nothing else."""
    if entry.get("type") != "symbol":
        return False
    try:
        props = _folded(entry, zoom)
    except (Unsupported, TypeError, ValueError, IndexError, KeyError):
        return False
    if set(props) - KNOWN or props.get("text-field") in (None, ""):
        return False
    return props.get("symbol-placement", "point") == "point"


def split(groups: list[Drawn], zoom: float) -> tuple[list[Drawn], list[LabelLayer]]:
    """``groups`` without the point labels drawn here, and those labels: when every
    label drawn at ``zoom`` is one and they come after all else; otherwise ``groups`` as
    they are, and no labels."""
    shown = [(g, e) for g in groups for e in g.entries if visible_at(e, zoom)]
    symbols = [i for i, (_, e) in enumerate(shown) if e.get("type") == "symbol"]
    if not symbols or symbols[0] != len(shown) - len(symbols):
        return groups, []  # no labels, or a label beneath something else
    if not all(is_point_label(shown[i][1], zoom) for i in symbols):
        return groups, []
    taken = {id(shown[i][1]) for i in symbols}
    labels: list[LabelLayer] = []
    for g, e in (shown[i] for i in symbols):
        if labels and labels[-1].table == g.source.params["table"]:
            last = labels[-1]
            labels[-1] = LabelLayer(last.table, last.columns, (*last.entries, e), last.db)
            continue
        db = tuple((k, v) for k, v in g.source.params.items() if k in DB_KEYS)
        labels.append(LabelLayer(g.source.params["table"], tuple(g.source.columns), (e,), db))
    rest = [Drawn(g.source, [e for e in g.entries if id(e) not in taken]) for g in groups]
    return [g for g in rest if g.entries], labels


# ---- in a drawing process -----------------------------------------------------------


_CONNS: dict[tuple, Any] = {}


def connection(db: tuple[tuple[str, str], ...]):
    import psycopg

    conn = _CONNS.get(db)
    if conn is None or conn.closed or conn.broken:
        # The statement budget comes with PGOPTIONS, as for Mapnik's own connections.
        conn = psycopg.connect(**dict(db), autocommit=True, connect_timeout=4,
                               options=os.environ.get("PGOPTIONS", ""))
        _CONNS[db] = conn
    return conn


def read(layer: LabelLayer, box: tuple[float, float, float, float], srid: int,
         pixel: float) -> list[tuple[float, float, dict[str, Any]]]:
    """The label point and the fields of each row of ``layer`` in ``box``."""
    return rows(layer.db, _query(layer.table, layer.columns, srid), layer.columns, box,
                pixel)


def rows(db: tuple[tuple[str, str], ...], query, columns: tuple[str, ...],
         box: tuple[float, float, float, float], pixel: float
         ) -> list[tuple[float, float, dict[str, Any]]]:
    """The rows of ``query`` (its point's x and y, its shape's dimension, ``columns``) in
    ``box``: each as its point and its fields (and its geometry's type as ``$type``)."""
    out = []
    for x, y, dim, *values in connection(db).execute(query, {
            "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
            "px": float(pixel)}).fetchall():
        if x is not None:
            out.append((x, y, properties(columns, values, dim)))
    return out


def properties(columns: tuple[str, ...], values: list[Any], dim: int) -> dict[str, Any]:
    """A row's fields as expressions read them, with its geometry's type as ``$type``
    (from its dimension)."""
    props = {c: float(v) if isinstance(v, Decimal) else v
             for c, v in zip(columns, values, strict=True) if v is not None}
    props["$type"] = TYPES.get(dim, "Polygon")
    return props


def bound(statement: str, srid: int):
    """A source's statement (its Mapnik table, bound already: its literals quoted) with
    the box and the pixel Mapnik would fill in taken as parameters instead (``x0`` ...
    ``y1``, ``px``)."""
    from psycopg import sql

    envelope = sql.SQL("ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {})").format(
        sql.Literal(int(srid)))
    pieces: list[sql.Composable] = []
    for i, part in enumerate(statement.replace("%", "%%").split("!bbox!")):
        if i:
            pieces.append(envelope)
        pieces.append(sql.SQL("%(px)s").join(sql.SQL(b) for b in part.split("!pixel_width!")))
    return sql.Composed(pieces)


@functools.lru_cache(maxsize=256)
def _query(statement: str, columns: tuple[str, ...], srid: int):
    """The statement reading the label points of a source's rows (``statement``: its
    Mapnik table), the box and the pixel as parameters: one text per layer and limits,
    so the server prepares it once."""
    from psycopg import sql

    cols = [sql.Identifier("q", c) for c in columns]
    # One candidate per cell of SPACING pixels (two labels there would collide), those
    # with the fields labels read first: a city's labels are read over all of it.
    cell = sql.SQL("(%(px)s * {})").format(sql.Literal(SPACING))
    keys = sql.SQL("floor(ST_X(l.p) / {c}), floor(ST_Y(l.p) / {c})").format(c=cell)
    return sql.SQL(
        "SELECT DISTINCT ON ({keys}) ST_X(l.p), ST_Y(l.p), ST_Dimension(q.geom){cols}"
        " FROM {table} CROSS JOIN"
        " LATERAL (SELECT CASE ST_Dimension(q.geom) WHEN 0 THEN ST_GeometryN(q.geom, 1)"
        " WHEN 1 THEN ST_LineInterpolatePoint(ST_GeometryN(q.geom, 1), 0.5)"
        " ELSE ST_PointOnSurface(q.geom) END AS p) l WHERE l.p IS NOT NULL"
        " ORDER BY {keys}{missing}, ST_X(l.p), ST_Y(l.p) LIMIT {most}").format(
        keys=keys, cols=sql.SQL("").join(sql.SQL(", ") + c for c in cols),
        table=bound(statement, srid),
        missing=sql.SQL("").join(sql.SQL(", {} IS NULL").format(c) for c in cols),
        most=sql.Literal(MOST_LABELS))


@functools.cache
def _typeface(family: str, weight: int):
    import skia

    style = skia.FontStyle(weight, skia.FontStyle.kNormal_Width, skia.FontStyle.kUpright_Slant)
    return skia.FontMgr().matchFamilyStyle(family, style) or skia.Typeface.MakeDefault()


@functools.cache
def _font(face: str, size: float, fallback: bool):
    import skia

    family, weight = FACES[face][1 if fallback else 0]
    font = skia.Font(_typeface(family, weight), size)
    font.setEdging(skia.Font.Edging.kAntiAlias)
    font.setSubpixel(True)
    font.setHinting(skia.FontHinting.kSlight)
    return font


def _font_for(text: str, face: str, size: float):
    font = _font(face, size, False)
    # A character Noto Sans lacks: CJK's face has both.
    if not text.isascii() and 0 in font.textToGlyphs(text):
        return _font(face, size, True)
    return font


def _wrap(text: str, font, most: float) -> tuple[list[str], list[float]]:
    """Lines no wider than ``most`` pixels where the text can break (at spaces, and
    between Chinese characters), and their widths."""
    if "\n" not in text:
        width = font.measureText(text)
        if width <= most:
            return [text], [width]
    out: list[str] = []
    for para in text.split("\n"):
        words = para.split(" ")
        if len(words) == 1 and font.measureText(para) > most and any(
                ord(c) > 0x2E80 for c in para):
            words = list(para)
            joiner = ""
        else:
            joiner = " "
        line = ""
        for w in words:
            trial = f"{line}{joiner}{w}" if line else w
            if line and font.measureText(trial) > most:
                out.append(line)
                line = w
            else:
                line = trial
        out.append(line)
    lines = [ln for ln in out if ln]
    return lines, [font.measureText(ln) for ln in lines]


def _text(value: Any, props: dict[str, Any]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):  # the legacy {field} tokens
        return "".join(("" if props.get(piece) is None else _str(props[piece])) if field
                       else piece for piece, field in text_parts(value))
    return _str(value)


def _str(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _colour(v: Any, opacity: float):
    import skia

    c = rgba(v)
    if c is None:
        return None
    return skia.Color(round(c[0]), round(c[1]), round(c[2]),
                      round(255 * max(0.0, min(1.0, c[3] * opacity))))


class _Placed:
    """The boxes of the labels placed so far, by grid cell."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}

    def _keys(self, b: tuple[float, float, float, float]) -> list[tuple[int, int]]:
        i0, i1, j0, j1 = int(b[0] // CELL), int(b[2] // CELL), int(b[1] // CELL), int(b[3] // CELL)
        if i0 == i1 and j0 == j1:
            return [(i0, j0)]
        return [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]

    def free(self, b: tuple[float, float, float, float]) -> bool:
        cells = self.cells
        for key in self._keys(b):
            for o in cells.get(key, ()):
                if b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3]:
                    return False
        return True

    def add(self, b: tuple[float, float, float, float]) -> None:
        for key in self._keys(b):
            self.cells.setdefault(key, []).append(b)


@dataclass(frozen=True)
class _Layout:
    """What a label style layer's values make of a label but its text."""

    transform: str
    face: str
    size: float
    most: float  # its widest line, in pixels
    line_h: float
    anchor: tuple[float, float]
    offset: tuple[float, float]
    pad: float
    overlap: bool  # drawn over others
    ignored: bool  # others drawn over it
    fill: Any  # the text's colour (None: not drawn)
    halo: Any  # the halo's (None: none)
    halo_w: float


class _Style:
    """A label style layer read at the image's zoom: its constant values once, what
    depends on the feature evaluated per feature; the layout made once for features
    that agree on the fields it reads (most styles: only the text depends on them)."""

    def __init__(self, entry: dict[str, Any], zoom: float) -> None:
        self.filter = entry.get("filter")
        values = {**DEFAULTS, **_folded(entry, zoom)}
        self.zoom = zoom
        self.dynamic_text = "text-field" in PerFeature(values, zoom).dynamic
        self.text = values.pop("text-field", None)
        self._values = PerFeature(values, zoom)
        self._layouts: dict[tuple, _Layout] = {}

    def text_of(self, feature: dict[str, Any]) -> str:
        text = self.text
        if not self.dynamic_text:  # a string's {field} tokens filled in
            return _text(text, feature).strip()
        if len(text) == 2 and text[0] == "get" and isinstance(text[1], str):
            value = feature.get(text[1])  # most labels: a field as it is
        else:
            value = evaluate(text, self.zoom, feature)
        return "" if value is None else _str(value).strip()

    def layout(self, feature: dict[str, Any]) -> _Layout:
        reads = self._values.reads
        if reads is None:
            return self._layout(self._values.at(feature))
        key = tuple(feature.get(f) for f in reads)
        found = self._layouts.get(key)
        if found is None:
            found = self._layouts[key] = self._layout(self._values.at(feature))
        return found

    @staticmethod
    def _layout(v: dict[str, Any]) -> _Layout:
        import skia

        size = float(v["text-size"])
        offset = v["text-offset"]
        opacity = float(v["text-opacity"])
        halo = _colour(v["text-halo-color"], opacity)
        halo_w = float(v["text-halo-width"])
        if halo is not None and (halo_w <= 0 or skia.ColorGetA(halo) == 0):
            halo = None
        return _Layout(
            str(v["text-transform"]),
            "bold" if any("Bold" in str(f) for f in v["text-font"] or ()) else "regular",
            size, float(v["text-max-width"]) * size, float(v["text-line-height"]) * size,
            ANCHORS.get(str(v["text-anchor"]), (0.5, 0.5)),
            (float(offset[0]) * size, float(offset[1]) * size)
            if isinstance(offset, list) and len(offset) == 2 else (0.0, 0.0),
            float(v["text-padding"]), bool(v["text-allow-overlap"]),
            bool(v["text-ignore-placement"]), _colour(v["text-color"], opacity), halo, halo_w)


def draw(pixels: np.ndarray, layers: list[LabelLayer], srid: int,
         bbox: tuple[float, float, float, float], buffer: int, zoom: float) -> None:
    """The labels drawn onto ``pixels`` (premultiplied RGBA, rows top first, in place);
    labels are read and placed ``REACH`` times ``buffer`` pixels around the image too (a
    tile's neighbours' labels near its edges are placed alike)."""
    import skia

    height, width = pixels.shape[:2]
    pixel = pixel_of(bbox, width, height)
    box = grown(bbox, REACH * buffer * pixel)
    canvas = skia.Canvas(pixels, colorType=skia.kRGBA_8888_ColorType,
                         alphaType=skia.kPremul_AlphaType)
    place(canvas, [(e, rows) for layer in layers
                   for rows in (read(layer, box, srid, pixel),) for e in layer.entries],
          bbox, width, height, zoom)


def pixel_of(bbox: tuple[float, float, float, float], width: int, height: int) -> float:
    """One pixel of an image of ``bbox``, in its CRS's units (the larger side's)."""
    return max((bbox[2] - bbox[0]) / width, (bbox[3] - bbox[1]) / height)


def grown(bbox: tuple[float, float, float, float], by: float
          ) -> tuple[float, float, float, float]:
    return (bbox[0] - by, bbox[1] - by, bbox[2] + by, bbox[3] + by)


def order(row: tuple[float, float, dict[str, Any]]) -> int:
    """Where a feature comes among those placed and drawn: by its point's hash, the same
    in every image that reads it. Tiles on either side of an edge then place the labels
    in their margins alike, so labels meet across it; a sweep across the map (the
    order of a scan or of a grid) would carry one label's fate to the next along it,
    past the margin, where a hash rarely does."""
    return hash((row[0], row[1]))


def place(canvas, drawn: list[tuple[dict[str, Any], list[tuple[float, float, dict]]]],
          bbox: tuple[float, float, float, float], width: int, height: int,
          zoom: float) -> None:
    """Each label style layer's labels of its rows (label point and fields, in the
    image's CRS), laid out, kept apart and drawn on ``canvas``, placed in ``order``."""
    import skia

    x0, _, _, y1 = bbox
    sx, sy = width / (bbox[2] - x0), height / (y1 - bbox[1])
    placed = _Placed()
    paints = (skia.Paint(AntiAlias=True, Style=skia.Paint.kStroke_Style,
                         StrokeJoin=skia.Paint.kRound_Join), skia.Paint(AntiAlias=True))
    for entry, rows in drawn:
        style = _Style(entry, zoom)
        for x, y, feature in sorted(rows, key=order):
            if x is None:
                continue  # a shape without a label point (an empty one)
            try:
                if style.filter is not None and not evaluate(style.filter, zoom, feature):
                    continue
                _label(canvas, placed, style, feature, (x - x0) * sx, (y1 - y) * sy,
                       width, height, paints)
            except (Unsupported, TypeError, ValueError, IndexError, KeyError,
                    ZeroDivisionError) as exc:
                log.warning("a label of %r is not drawn: %s", entry.get("id"), exc)
                break


def _label(canvas, placed: _Placed, style: _Style, feature: dict[str, Any], px: float,
           py: float, width: int, height: int, paints: tuple[Any, Any]) -> None:
    import skia

    text = style.text_of(feature)
    if not text:
        return
    o = style.layout(feature)
    if o.transform == "uppercase":
        text = text.upper()
    elif o.transform == "lowercase":
        text = text.lower()
    font = _font_for(text, o.face, o.size)
    lines, widths = _wrap(text, font, o.most)
    w, h = max(widths), o.line_h * len(lines)
    left, top = px + o.offset[0] - o.anchor[0] * w, py + o.offset[1] - o.anchor[1] * h
    pad = o.pad
    b = (left - pad, top - pad, left + w + pad, top + h + pad)
    if not o.overlap and not placed.free(b):
        return
    if not o.ignored:
        placed.add(b)
    if b[2] < 0 or b[3] < 0 or b[0] > width or b[1] > height:
        return  # placed in the margin, for its neighbours; not on this image
    ascent, descent = _metrics(font)
    halo_paint, fill_paint = paints
    line_h = o.line_h
    for i, (ln, lw) in enumerate(zip(lines, widths, strict=True)):
        blob = skia.TextBlob.MakeFromString(ln, font)
        bx = left + (w - lw) / 2
        by = top + i * line_h + (line_h + ascent - descent) / 2
        if o.halo is not None:
            halo_paint.setColor(o.halo)
            halo_paint.setStrokeWidth(2 * o.halo_w)
            canvas.drawTextBlob(blob, bx, by, halo_paint)
        if o.fill is not None:
            fill_paint.setColor(o.fill)
            canvas.drawTextBlob(blob, bx, by, fill_paint)


_METRICS: dict[int, tuple[float, float]] = {}


def _metrics(font) -> tuple[float, float]:
    """A font's ascent and descent in pixels (above and below the baseline); fonts are
    kept for good (``_font``), so one is known by its identity."""
    key = id(font)
    found = _METRICS.get(key)
    if found is None:
        m = font.getMetrics()
        found = _METRICS[key] = (-m.fAscent, m.fDescent)
    return found

"""Images of points drawn whole by Skia: circles and their labels from one read.

Where every style layer an image draws is a circle of one size (its colours may depend on
the feature) or a point label (``labels``), all of point sources and the labels last, the
image is not given to Mapnik at all: each source's rows are read once (the same
statement as Mapnik's source, so under the same limits), their circles drawn in the
style's order, then their labels placed as ``labels`` places them. A street's image of
points is then one read and a few hundred Skia calls, where Mapnik's read, its render and
the labels' second read were three times that.

Only an image of few rows is drawn so (``MOST_MARKS``): past that Mapnik, which draws a
marker in C++ where this draws it from Python, is faster. An image that finds more rows
is drawn by Mapnik instead, and so are the next ``DENSE_SKIP`` images of that map (the
same sources, style and zoom), which are likely as dense.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mapimages import labels
from mapimages.compose import DB_KEYS, Drawn, visible_at
from mapimages.compose import DEFAULTS as COMPOSE_DEFAULTS
from mapimages.expr import Unsupported, constant, evaluate, fields_read, fold, rgba

log = logging.getLogger(__name__)

MOST_MARKS = 600  # rows an image of points drawn here reads, at most
DENSE_SKIP = 32  # images of a map drawn by Mapnik after one found too many rows
# What a circle may use here; any other paint or layout property leaves it to Mapnik.
CIRCLE = {k: v for k, v in COMPOSE_DEFAULTS.items() if k.startswith("circle-")} | {
    "circle-stroke-opacity": 1, "circle-blur": 0, "circle-translate": [0, 0],
    "circle-pitch-scale": "map", "circle-pitch-alignment": "viewport", "visibility": "visible"}
SIZED = ("circle-radius", "circle-stroke-width")  # one value for every feature


@dataclass(frozen=True)
class Whole:
    """An image drawn here: the statement of each source read (its Mapnik table, its
    fields, its connection), the circle style layers in order, then the labels', each
    with the index of the source it draws."""

    reads: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], ...]
    circles: tuple[tuple[int, dict[str, Any]], ...]
    labels: tuple[tuple[int, dict[str, Any]], ...]
    background: str | None
    reach: float  # pixels a circle reaches past its point


def _values(entry: dict[str, Any], zoom: float) -> dict[str, Any]:
    props = {**(entry.get("layout") or {}), **(entry.get("paint") or {})}
    return {**CIRCLE, **{k: fold(constant(v), zoom) for k, v in props.items()}}


def _simple_circle(entry: dict[str, Any], zoom: float) -> bool:
    if entry.get("type") != "circle":
        return False
    try:
        v = _values(entry, zoom)
    except (Unsupported, TypeError, ValueError, IndexError, KeyError):
        return False
    return (not set(v) - set(CIRCLE) and v["circle-blur"] == 0
            and v["circle-translate"] in ([0, 0], (0, 0))
            and all(isinstance(v[k], (int, float)) for k in SIZED))


def plan(groups: list[Drawn], zoom: float, background: str | None) -> Whole | None:
    """The image of ``groups`` at ``zoom`` as drawn here, or None if Mapnik draws it."""
    shown = [(g, e) for g in groups for e in g.entries if visible_at(e, zoom)]
    if not shown or not all(g.source.points for g, _ in shown):
        return None
    kinds = [e.get("type") for _, e in shown]
    if "circle" not in kinds or kinds != sorted(kinds, key=lambda k: k == "symbol"):
        return None  # a label beneath a circle
    if not all(_simple_circle(e, zoom) if e.get("type") == "circle"
               else labels.is_point_label(e, zoom) for _, e in shown):
        return None
    reads: list[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]] = []
    index: dict[str, int] = {}
    circles, marks = [], []
    reach = 0.0
    for g, e in shown:
        table = g.source.params["table"]
        if table not in index:
            index[table] = len(reads)
            reads.append((table, tuple(g.source.columns),
                          tuple((k, v) for k, v in g.source.params.items() if k in DB_KEYS)))
        if e.get("type") == "circle":
            v = _values(e, zoom)
            reach = max(reach, float(v["circle-radius"]) + float(v["circle-stroke-width"]))
            circles.append((index[table], e))
        else:
            marks.append((index[table], e))
    return Whole(tuple(reads), tuple(circles), tuple(marks), background, reach)


# ---- in a drawing process -----------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _query(statement: str, columns: tuple[str, ...], srid: int):
    """Every point of a source's rows in the box, with its fields, at most MOST_MARKS
    and one more (which says there are too many)."""
    from psycopg import sql

    cols = sql.SQL("").join(sql.SQL(", ") + sql.Identifier("q", c) for c in columns)
    return sql.SQL(
        "SELECT ST_X(d.geom), ST_Y(d.geom), 0{cols} FROM {table}"
        " CROSS JOIN LATERAL ST_Dump(q.geom) d LIMIT {most}").format(
        cols=cols, table=labels.bound(statement, srid), most=sql.Literal(MOST_MARKS + 1))


class _Circle:
    """A circle style layer at the image's zoom: its paints, made once for each set of
    the values that depend on the feature."""

    def __init__(self, entry: dict[str, Any], zoom: float) -> None:
        self.zoom = zoom
        self.filter = entry.get("filter")
        values = _values(entry, zoom)
        self.dynamic = {k: v for k, v in values.items()
                        if isinstance(v, list) and v and isinstance(v[0], str)}
        self.fixed = {k: v for k, v in values.items() if k not in self.dynamic}
        read = [fields_read(v) for v in self.dynamic.values()]
        # The fields its values read (a category's): features that agree on them are
        # painted alike. None: each feature's values are evaluated.
        self.reads = None if None in read else tuple(sorted(set().union(*read)))
        self._made: dict[tuple, tuple[Any, Any, float]] = {}

    def paints(self, feature: dict[str, Any]) -> tuple[Any, Any, float]:
        """The fill's and the stroke's paints (None: not drawn) and the radius they are
        drawn at."""
        if self.reads is not None:
            key = tuple(feature.get(f) for f in self.reads)
            found = self._made.get(key)
            if found is None:
                found = self._made[key] = self._paints(self._evaluated(feature))
            return found
        return self._paints(self._evaluated(feature))

    def _evaluated(self, feature: dict[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **{k: evaluate(v, self.zoom, feature)
                                 for k, v in self.dynamic.items()}}

    @staticmethod
    def _paints(v: dict[str, Any]) -> tuple[Any, Any, float]:
        import skia

        r, sw = float(v["circle-radius"]), float(v["circle-stroke-width"])

        def paint(colour: Any, opacity: Any, **kw: Any):
            c = rgba(colour)
            a = 0.0 if c is None else c[3] * max(0.0, min(1.0, float(opacity)))
            if a <= 0:
                return None
            return skia.Paint(AntiAlias=True, Color=skia.Color(
                round(c[0]), round(c[1]), round(c[2]), round(255 * a)), **kw)

        fill = paint(v["circle-color"], v["circle-opacity"]) if r > 0 else None
        stroke = paint(v["circle-stroke-color"], v["circle-stroke-opacity"],
                       Style=skia.Paint.kStroke_Style, StrokeWidth=sw) if sw > 0 else None
        # The stroke lies outside the radius, as MapLibre draws it: its middle at r + sw/2,
        # the fill to there too (beneath the stroke, so no seam shows between them).
        return fill, stroke, r + sw / 2


def draw(whole: Whole, srid: int, bbox: tuple[float, float, float, float], width: int,
         height: int, buffer: int, zoom: float) -> np.ndarray | None:
    """The image as premultiplied RGBA (rows top first), or None if a source has more
    than MOST_MARKS rows in it. ``buffer`` pixels around it are read and placed too."""
    import skia

    pixel = labels.pixel_of(bbox, width, height)
    box = labels.grown(bbox, (max(buffer, whole.reach) + 1) * pixel)
    read = []
    for table, columns, db in whole.reads:
        rows = labels.rows(db, _query(table, columns, srid), columns, box, pixel)
        if len(rows) > MOST_MARKS:
            return None
        read.append(rows)
    pixels = np.zeros((height, width, 4), np.uint8)
    canvas = skia.Canvas(pixels, colorType=skia.kRGBA_8888_ColorType,
                         alphaType=skia.kPremul_AlphaType)
    if whole.background is not None:
        c = rgba(whole.background)
        if c is not None:
            canvas.clear(skia.Color(round(c[0]), round(c[1]), round(c[2]), round(255 * c[3])))
    x0, _, _, y1 = bbox
    sx, sy = width / (bbox[2] - x0), height / (y1 - bbox[1])
    for i, entry in whole.circles:
        style = _Circle(entry, zoom)
        try:
            for x, y, feature in read[i]:
                if style.filter is not None and not evaluate(style.filter, zoom, feature):
                    continue
                fill, stroke, r = style.paints(feature)
                px, py = (x - x0) * sx, (y1 - y) * sy
                if fill is not None:
                    canvas.drawCircle(px, py, r, fill)
                if stroke is not None:
                    canvas.drawCircle(px, py, r, stroke)
        except (Unsupported, TypeError, ValueError, IndexError, KeyError,
                ZeroDivisionError) as exc:
            log.warning("circles of %r are not drawn: %s", entry.get("id"), exc)
    labels.place(canvas, [(e, read[i]) for i, e in whole.labels], bbox, width, height, zoom)
    return pixels

"""Images of few features drawn whole by Skia: circles, fills, lines and their labels from
one read.

Where every style layer an image draws is simple enough here — a circle of one size on
points, a fill on polygons, a solid line of one width on lines or polygons (their colours
and opacities may depend on the feature), or a point label (``labels``), the labels
last — the image is not given to Mapnik at all: each source's rows are read once (the
same statement as Mapnik's source, so under the same limits), shapes drawn in the style's
order, then labels placed as ``labels`` places them. A street's image is then one read
and a few hundred Skia calls, where Mapnik's read, its render, the labels' second read
and the copies of the whole image between them cost two to three times that.

Only an image of few rows is drawn so (``MOST_MARKS`` points, ``MOST_SHAPES`` lines or
polygons): past that Mapnik, which draws a feature in C++ where this builds it from
Python, is faster. An image that finds more rows is drawn by Mapnik instead, and so are
the next ``DENSE_SKIP`` images of that map (the same sources, style and zoom), which are
likely as dense.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mapimages import labels
from mapimages.compose import DB_KEYS, Drawn, skia_paint, visible_at
from mapimages.compose import DEFAULTS as COMPOSE_DEFAULTS
from mapimages.expr import PerFeature, Unsupported, constant, evaluate, fold, rgba

log = logging.getLogger(__name__)

MOST_MARKS = 600  # points an image drawn here reads, at most
MOST_SHAPES = 120  # lines or polygons an image drawn here reads, at most
DENSE_SKIP = 32  # images of a map drawn by Mapnik after one found too many rows
# What each kind of style layer may use here, with MapLibre's defaults; any other paint or
# layout property leaves the image to Mapnik.
KINDS: dict[str, dict[str, Any]] = {
    "circle": {k: v for k, v in COMPOSE_DEFAULTS.items() if k.startswith("circle-")} | {
        "circle-stroke-opacity": 1, "circle-blur": 0, "circle-translate": [0, 0],
        "circle-pitch-scale": "map", "circle-pitch-alignment": "viewport"},
    "fill": {"fill-color": "#000000", "fill-opacity": 1, "fill-antialias": True,
             "fill-translate": [0, 0], "fill-outline-color": None},
    "line": {k: v for k, v in COMPOSE_DEFAULTS.items() if k.startswith("line-")} | {
        "line-miter-limit": 2, "line-blur": 0, "line-translate": [0, 0]},
}
# Values each feature must share (a circle's size, a line's width); and values that must
# be as MapLibre's default, which these do not draw.
SIZED = ("circle-radius", "circle-stroke-width", "line-width")
PLAIN = {"circle-blur": 0, "line-blur": 0, "line-gap-width": 0, "line-offset": 0,
         "circle-translate": [0, 0], "fill-translate": [0, 0], "line-translate": [0, 0]}
CAPS = {"butt": "kButt_Cap", "round": "kRound_Cap", "square": "kSquare_Cap"}
JOINS = {"miter": "kMiter_Join", "round": "kRound_Join", "bevel": "kBevel_Join"}


@dataclass(frozen=True)
class Whole:
    """An image drawn here: each source read (its Mapnik table, its fields, its
    connection, whether it is of points), the shape style layers in order, then the
    labels', each with the index of the source it draws."""

    reads: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...], bool], ...]
    shapes: tuple[tuple[int, dict[str, Any]], ...]
    labels: tuple[tuple[int, dict[str, Any]], ...]
    background: str | None
    reach: float  # pixels a shape reaches past its geometry


def _values(entry: dict[str, Any], zoom: float) -> dict[str, Any]:
    props = {**(entry.get("layout") or {}), **(entry.get("paint") or {})}
    props.pop("visibility", None)
    return {**KINDS[entry["type"]], **{k: fold(constant(v), zoom) for k, v in props.items()}}


def _simple(entry: dict[str, Any], zoom: float, points: bool) -> bool:
    """A shape style layer drawn here: of its source's kind, using only what is drawn."""
    kind = entry.get("type")
    if kind not in KINDS or (kind == "circle") != points:
        return False
    try:
        v = _values(entry, zoom)
    except (Unsupported, TypeError, ValueError, IndexError, KeyError):
        return False
    if set(v) - set(KINDS[kind]) or any(
            k in v and not _same(v[k], d) for k, d in PLAIN.items()):
        return False
    if kind == "line" and (v["line-cap"] not in CAPS or v["line-join"] not in JOINS):
        return False
    return all(isinstance(v[k], (int, float)) for k in SIZED if k in v)


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, list):
        return isinstance(value, (list, tuple)) and list(value) == default
    return value == default


def plan(groups: list[Drawn], zoom: float, background: str | None) -> Whole | None:
    """The image of ``groups`` at ``zoom`` as drawn here, or None if Mapnik draws it."""
    shown = [(g, e) for g in groups for e in g.entries if visible_at(e, zoom)]
    kinds = [e.get("type") for _, e in shown]
    if not shown or kinds[0] == "symbol" or kinds != sorted(kinds, key=lambda k: k == "symbol"):
        return None  # nothing but labels, or a label beneath a shape
    if not all(labels.is_point_label(e, zoom) if e.get("type") == "symbol"
               else _simple(e, zoom, g.source.points) for g, e in shown):
        return None
    reads: list[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...], bool]] = []
    index: dict[str, int] = {}
    shapes, marks = [], []
    reach = 0.0
    for g, e in shown:
        table = g.source.params["table"]
        if table not in index:
            index[table] = len(reads)
            reads.append((table, tuple(g.source.columns),
                          tuple((k, v) for k, v in g.source.params.items() if k in DB_KEYS),
                          g.source.points))
        if e.get("type") == "symbol":
            marks.append((index[table], e))
            continue
        v = _values(e, zoom)
        reach = max(reach, float(v.get("circle-radius", 0)) + float(
            v.get("circle-stroke-width", 0)), float(v.get("line-width", 0)))
        shapes.append((index[table], e))
    return Whole(tuple(reads), tuple(shapes), tuple(marks), background, reach)


# ---- in a drawing process -----------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _query(statement: str, columns: tuple[str, ...], srid: int, points: bool):
    """A source's rows in the box with their fields, at most its kind's most and one more
    (which says there are too many): every point of a source of points; else each
    shape (as WKB) with its label point (a line's middle, a polygon's point on its
    surface)."""
    from psycopg import sql

    cols = sql.SQL("").join(sql.SQL(", ") + sql.Identifier("q", c) for c in columns)
    table = labels.bound(statement, srid)
    if points:
        return sql.SQL(
            "SELECT NULL, ST_X(d.geom), ST_Y(d.geom), 0{cols} FROM {table}"
            " CROSS JOIN LATERAL ST_Dump(q.geom) d LIMIT {most}").format(
            cols=cols, table=table, most=sql.Literal(MOST_MARKS + 1))
    return sql.SQL(
        "SELECT ST_AsBinary(q.geom), ST_X(l.p), ST_Y(l.p), ST_Dimension(q.geom){cols}"
        " FROM {table} CROSS JOIN LATERAL (SELECT CASE ST_Dimension(q.geom)"
        " WHEN 1 THEN ST_LineInterpolatePoint(ST_GeometryN(q.geom, 1), 0.5)"
        " ELSE ST_PointOnSurface(q.geom) END AS p) l LIMIT {most}").format(
        cols=cols, table=table, most=sql.Literal(MOST_SHAPES + 1))


def _read(read: tuple[str, tuple[str, ...], tuple[tuple[str, str], ...], bool], srid: int,
          box: tuple[float, float, float, float], pixel: float
          ) -> tuple[list[tuple[float, float, dict[str, Any]]], list[Any]] | None:
    """A source's rows as labels take them (label point, fields) and their shapes
    (shapely's; None for points), or None if there are too many."""
    import shapely

    table, columns, db, points = read
    out, shapes = [], []
    for wkb, x, y, dim, *values in labels.connection(db).execute(
            _query(table, columns, srid, points),
            {"x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
             "px": float(pixel)}).fetchall():
        out.append((x, y, labels.properties(columns, values, dim)))
        shapes.append(wkb)
    if len(out) > (MOST_MARKS if points else MOST_SHAPES):
        return None
    # In the order labels are placed in (``labels.order``), not the scan's: tiles on
    # either side of an edge draw the shapes in their margins alike too.
    order = sorted(range(len(out)), key=lambda k: labels.order(out[k]))
    out = [out[k] for k in order]
    if points or not shapes:
        return out, [None] * len(out)
    return out, list(shapely.from_wkb([shapes[k] for k in order]))


class _Paints:
    """A shape style layer at the image's zoom: its paints, made once for each set of
    the values that depend on the feature."""

    def __init__(self, entry: dict[str, Any], zoom: float) -> None:
        self.kind = entry["type"]
        self.filter = entry.get("filter")
        self.values = PerFeature(_values(entry, zoom), zoom)
        self._made: dict[tuple, tuple[Any, Any, float]] = {}

    def of(self, feature: dict[str, Any]) -> tuple[Any, Any, float]:
        """The fill's and the stroke's paints (None: not drawn), and a circle's radius
        they are drawn at: made once for features that agree on the fields the values
        read (a category)."""
        reads = self.values.reads
        if reads is None:
            return self._paints(self.values.at(feature))
        key = tuple(feature.get(f) for f in reads)
        found = self._made.get(key)
        if found is None:
            found = self._made[key] = self._paints(self.values.at(feature))
        return found

    def _paints(self, v: dict[str, Any]) -> tuple[Any, Any, float]:
        import skia

        if self.kind == "fill":
            outline = v["fill-outline-color"]
            return (skia_paint(v["fill-color"], v["fill-opacity"]),
                    None if outline is None else skia_paint(
                        outline, v["fill-opacity"], stroke=1), 0.0)
        if self.kind == "line":
            width = float(v["line-width"])
            return (None, skia_paint(v["line-color"], v["line-opacity"], stroke=width,
                                     StrokeCap=getattr(skia.Paint, CAPS[v["line-cap"]]),
                                     StrokeJoin=getattr(skia.Paint, JOINS[v["line-join"]]),
                                     StrokeMiter=float(v["line-miter-limit"]))
                    if width > 0 else None, 0.0)
        r, sw = float(v["circle-radius"]), float(v["circle-stroke-width"])
        fill = skia_paint(v["circle-color"], v["circle-opacity"]) if r > 0 else None
        stroke = skia_paint(v["circle-stroke-color"], v["circle-stroke-opacity"],
                            stroke=sw) if sw > 0 else None
        # The stroke lies outside the radius, as MapLibre draws it: its middle at r + sw/2,
        # the fill to there too (beneath the stroke, so no seam shows between them).
        return fill, stroke, r + sw / 2


def _path(shape, x0: float, y1: float, sx: float, sy: float):
    """A line's or a polygon's Skia path in the image's pixels (holes by even-odd)."""
    import shapely
    import skia

    path = skia.Path()
    path.setFillType(skia.PathFillType.kEvenOdd)
    for part in shapely.get_parts(shape):
        polygon = isinstance(part, shapely.Polygon)
        rings = [part.exterior, *part.interiors] if polygon else [part]
        for ring in rings:
            c = np.asarray(ring.coords)
            if len(c) < 2:
                continue
            xy = np.column_stack(((c[:, 0] - x0) * sx, (y1 - c[:, 1]) * sy)).tolist()
            path.moveTo(*xy[0])
            for x, y in xy[1:]:
                path.lineTo(x, y)
            if polygon:
                path.close()
    return path


def draw(whole: Whole, srid: int, bbox: tuple[float, float, float, float], width: int,
         height: int, buffer: int, zoom: float) -> np.ndarray | None:
    """The image as premultiplied RGBA (rows top first), or None if a source has more
    rows in it than are drawn here. Shapes ``buffer`` pixels around it are drawn too,
    labels ``labels.REACH`` times that placed."""
    import skia

    pixel = labels.pixel_of(bbox, width, height)
    box = labels.grown(bbox, (max(labels.REACH * buffer, whole.reach) + 1) * pixel)
    read = []
    for source in whole.reads:
        found = _read(source, srid, box, pixel)
        if found is None:
            return None
        read.append(found)
    pixels = np.zeros((height, width, 4), np.uint8)
    canvas = skia.Canvas(pixels, colorType=skia.kRGBA_8888_ColorType,
                         alphaType=skia.kPremul_AlphaType)
    if whole.background is not None:
        c = rgba(whole.background)
        if c is not None:
            canvas.clear(skia.Color(round(c[0]), round(c[1]), round(c[2]), round(255 * c[3])))
    x0, _, _, y1 = bbox
    sx, sy = width / (bbox[2] - x0), height / (y1 - bbox[1])
    paths: dict[tuple[int, int], Any] = {}  # each shape's path, made once for its layers
    for i, entry in whole.shapes:
        paints = _Paints(entry, zoom)
        rows, shapes = read[i]
        try:
            for n, ((x, y, feature), shape) in enumerate(zip(rows, shapes, strict=True)):
                if paints.filter is not None and not evaluate(paints.filter, zoom, feature):
                    continue
                fill, stroke, r = paints.of(feature)
                if shape is None:  # a point's circle
                    px, py = (x - x0) * sx, (y1 - y) * sy
                    if fill is not None:
                        canvas.drawCircle(px, py, r, fill)
                    if stroke is not None:
                        canvas.drawCircle(px, py, r, stroke)
                    continue
                path = paths.get((i, n))
                if path is None:
                    path = paths[(i, n)] = _path(shape, x0, y1, sx, sy)
                if fill is not None:
                    canvas.drawPath(path, fill)
                if stroke is not None:
                    canvas.drawPath(path, stroke)
        except (Unsupported, TypeError, ValueError, IndexError, KeyError,
                ZeroDivisionError) as exc:
            log.warning("shapes of %r are not drawn: %s", entry.get("id"), exc)
    labels.place(canvas, [(e, read[i][0]) for i, e in whole.labels], bbox, width, height,
                 zoom)
    return pixels

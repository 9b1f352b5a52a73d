"""The rows a map image draws of a layer: one statement, under the caller's limits.

An image of a box in a CRS at a resolution reads, through the same limits as tiles and
features (``layers.restrict``: area, filter, clip, hidden and masked fields), only the
current rows that touch the box, only the fields its style reads, shapes in the image's CRS
simplified to half a pixel; points that would fall on one pixel with the same drawn values
are read once (a second marker on the same pixel changes nothing on the image), or once
per cell of half a marker's radius, whatever their values, where markers of one size cover
each other.
"""

from __future__ import annotations

import functools

import pyproj
from psycopg import sql

from layers import restrict
from layers.catalog import Layer, table_of
from layers.restrict import Restriction
from layers.store import alive

MERCATOR = 3857
LONLAT = (4326, 4490)  # stored as lon/lat; CGCS2000 and WGS84 agree to centimetres


@functools.cache
def area_of_use(srid: int) -> tuple[float, float, float, float]:
    """Where a CRS may be drawn, in its own units: the world for lon/lat and Web
    Mercator, a projected CRS's area of use widened by 10 degrees (a Gauss-Kruger zone's
    strip and its neighbours: the projection holds far past its strip)."""
    if srid in LONLAT:
        return (-180.0, -90.0, 180.0, 90.0)
    if srid == MERCATOR:
        return (-20037508.34, -20037508.34, 20037508.34, 20037508.34)
    crs = pyproj.CRS.from_epsg(srid)
    a = crs.area_of_use
    return pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform_bounds(
        max(a.west - 10, -180), max(a.south - 10, -80), min(a.east + 10, 180),
        min(a.north + 10, 84), densify_pts=41)


def statement(layer: Layer, r: Restriction, fields: set[str], srid: int,
              keyed: set[str] | None = None, cell: float = 1.0) -> sql.Composed:
    """``(SELECT geom, fields...) AS q`` for Mapnik's PostGIS source, which fills in the
    image's box (``!bbox!``, in ``srid``) and its pixel (``!pixel_width!``): the statement
    is the same for every image of the layer under these limits, so it is made once. Its
    parameters are the limits' (``limit_params``).

    ``keyed``: the fields whose values change how a point is drawn (its category, its
    class); points are read once per pixel and such values. None: every point is read.
    ``cell`` > 1: points are read once per cell of that many pixels, whatever their values
    (where every marker covers more than its cell and they are drawn over each other)."""
    t = table_of(layer.id)
    names = columns(layer, r, fields)
    cols = sql.SQL("").join(sql.SQL(", ") + restrict.column(n, r) for n in names)
    box, px = sql.SQL("!bbox!"), sql.SQL("!pixel_width!")
    if srid == MERCATOR:
        shape = restrict.clipped(sql.SQL("t._geom_3857"), r, mercator=True)
        touches = sql.SQL("t._geom_3857 && {}").format(box)
    else:
        shape = restrict.clipped(sql.SQL("t.geom"), r)
        if srid in LONLAT:
            touches = sql.SQL("t.geom && ST_SetSRID({}, 4326)").format(box)
        else:
            shape = sql.SQL("ST_Transform({}, {})").format(shape, sql.Literal(srid))
            # The box's edges, bent into lon/lat, bound what it touches there; the box is
            # first cut to where the CRS is defined (outside it there is no lon/lat).
            x0, y0, x1, y1 = area_of_use(srid)
            box = sql.SQL("ST_ClipByBox2D({}, ST_MakeEnvelope({}, {}, {}, {}, {}))").format(
                box, *map(sql.Literal, (x0, y0, x1, y1, srid)))
            touches = sql.SQL(
                "t.geom && ST_Transform(ST_Segmentize({b}, (ST_XMax({b}) - ST_XMin({b})) / 8"
                " + 1), 4326)").format(b=box)
    limit, _ = restrict.rows(layer, r, mercator=srid == MERCATOR)
    where = sql.SQL("{} AND {}").format(touches, alive(False))
    if limit is not None:
        where = sql.SQL("{} AND {}").format(where, limit)
    point = of_points(layer)
    if point:
        geom = shape
    else:
        geom = sql.SQL("ST_Simplify({}, {} / 2, true)").format(shape, px)
    body = sql.SQL("SELECT {geom} AS geom{cols} FROM {t} t WHERE {where}").format(
        geom=geom, cols=cols, t=t, where=where)
    if point and keyed is not None and layer.geometry_type == "Point":
        side = px if cell <= 1 else sql.SQL("({} * {})").format(px, sql.Literal(float(cell)))
        keys = [sql.SQL("round(ST_X(q.geom) / {})").format(side),
                sql.SQL("round(ST_Y(q.geom) / {})").format(side)]
        if cell <= 1:
            keys += [sql.Identifier("q", n) for n in sorted(keyed & set(names))]
        body = sql.SQL("SELECT DISTINCT ON ({keys}) * FROM ({body}) q").format(
            keys=sql.SQL(", ").join(keys), body=body)
    return sql.SQL("({}) AS q").format(body)


def of_points(layer: Layer) -> bool:
    """Whether a layer's rows are points (or several points each)."""
    return (layer.geometry_type or "").removeprefix("Multi") == "Point"


def columns(layer: Layer, r: Restriction, fields: set[str]) -> list[str]:
    """The fields of ``fields`` that ``statement`` reads: those the caller may see."""
    visible = {f.name for f in restrict.visible_fields(layer, r)}
    return sorted(n for n in fields if n in visible)


def limit_params(layer: Layer, r: Restriction, srid: int) -> dict[str, object]:
    """The parameters the caller's limits add to ``statement``."""
    return restrict.rows(layer, r, mercator=srid == MERCATOR)[1] | (
        {"_area": r.area_id} if r.clip and r.area_id is not None else {})

"""Vector tile sources: one per layer, its SQL generated once per layer schema.

Below a layer's detail zoom, tiles are generalized so they stay small at every zoom, and
nothing is cut silently (docs/tiles.md):

* points, and shapes under half a pixel, are gathered into cells of ``CELL_UNITS`` tile units
  (4 px of a 256 px tile), read from the layer's overview (layers.overviews); a cell of
  several features is one point at their centroid with ``_count``, a cell of one is that
  feature, with its attributes, at its centre;
* lines and polygons big enough to see are simplified to a quarter pixel.

Every tile reports, per layer, how many features it covered and how many it holds.
"""

from __future__ import annotations

from typing import Any, Protocol

from psycopg import sql

from layers import restrict
from layers.catalog import Layer, overview_of, table_of
from layers.restrict import NONE, Restriction
from layers.store import alive

EXTENT = 4096
BUFFER = 64
CELL_UNITS = 64  # 4 px of a 256 px tile: a 64 x 64 grid, at most 4,096 cells per tile
WORLD = 2 * 20037508.342789244


def tile_size_m(z: int) -> float:
    return WORLD / (1 << z)


class TileSource(Protocol):
    """What the tile endpoint needs of a layer; every vector backend implements it."""

    id: str
    layer: Layer
    schema_version: int
    detail_zoom: int

    def query_bytes(self, z: int, as_of: bool, conn: Any, r: Restriction = NONE,
                    geographic: bool = False) -> tuple[bytes, str, dict[str, object]]:
        """The statement for a tile at zoom z (current or past) under a principal's limits,
        its method's name and the limits' parameters; ``geographic``: a CGCS2000Quad
        tile (lon/lat), else Web Mercator."""
        ...


class PostgisSource:
    """A layer table in ``onemap_data``: current rows, or rows valid at a past instant.

    Below the detail zoom, current tiles read the layer's overview; tiles of the past make
    the same cells on the fly (history has no overviews).
    """

    def __init__(self, layer: Layer, detail_zoom: int) -> None:
        self.layer = layer
        self.id = layer.id
        self.schema_version = layer.schema_version
        self.detail_zoom = layer.detail_zoom if layer.detail_zoom is not None else detail_zoom
        # Statements by (method, as_of, limits), rendered once; psycopg prepares them by
        # these bytes.
        self._rendered: dict[tuple[str, bool, Restriction, bool], tuple[bytes, dict]] = {}

    def method(self, z: int, as_of: bool, r: Restriction = NONE,
               geographic: bool = False) -> str:
        # A CGCS2000Quad tile is as wide in degrees as a Web Mercator tile one zoom deeper.
        if (z + 1 if geographic else z) >= self.detail_zoom:
            return "none"
        if geographic:  # the overview's cells are Web Mercator's: made now
            return "cells"
        # Overviews count every feature: a principal limited by a filter gets cells of its
        # own rows, made now, so counts reveal nothing outside its limits; one limited to
        # an area reads the overview's cells that lie inside the area and makes the others.
        if as_of or r.filter is not None:
            return "cells"
        return "area" if r.area_id is not None else "overview"

    def query_bytes(self, z: int, as_of: bool, conn: Any, r: Restriction = NONE,
                    geographic: bool = False) -> tuple[bytes, str, dict[str, object]]:
        method = self.method(z, as_of, r, geographic)
        key = (method, as_of, r, geographic)
        found = self._rendered.get(key)
        if found is None:
            statement, extra = _statement(self.layer, method, as_of, r, geographic)
            found = self._rendered[key] = (statement.as_bytes(conn), extra)
        return found[0], method, found[1]


def min_size(z: int) -> float:
    """Below this size (metres, both ways) a shape is under half a pixel at zoom z."""
    return tile_size_m(z) / 256 / 2


def params(layer_id: str, z: int, x: int, y: int, as_of: object,
           geographic: bool = False) -> dict[str, object]:
    """A tile's parameters; ``geographic``: of CGCS2000Quad (2 x 1 tiles of 180 degrees at
    matrix 0, rows from the north), in degrees."""
    size = 180.0 / (1 << z) if geographic else tile_size_m(z)
    cell = size * CELL_UNITS / EXTENT
    box = ({"x0": -180 + x * size, "y0": 90 - (y + 1) * size, "x1": -180 + (x + 1) * size,
            "y1": 90 - y * size, "pad": size * BUFFER / EXTENT} if geographic else {})
    return {
        **box,
        "z": z, "x": x, "y": y, "name": layer_id, "as_of": as_of,
        "margin": BUFFER / EXTENT,
        "cell": cell,
        "half": WORLD / 2,
        # How far a feature can lie from its cell: half a pixel (its size) at most.
        "reach": size / 256 / 2,
        # A cell that crosses the area's edge holds features this close to the edge.
        "edge": 1.5 * cell + size / 256 / 2,
        "tol": size / 256 / 4,
        "min_size": size / 256 / 2,
    }


# Every statement yields rows (_rid, _count, _id, attributes..., geom); _count (1 where
# NULL) is how many features a row stands for. The tail encodes them and counts, in one
# pass, what was covered and kept, with the layer's versions from the same snapshot, so the
# ETag names exactly these bytes; no row at all means the layer is gone.
_TAIL = (
    ") q) a, onemap.layers l WHERE l.id = %(name)s"
)
_HEAD = (
    " SELECT a.mvt, a.covered, a.kept, l.version, l.schema_version FROM"
    " (SELECT ST_AsMVT(q, %(name)s, {ext}, 'geom', '_rid') AS mvt,"
    "  coalesce(sum(coalesce(q._count, 1)), 0) AS covered, count(q.geom) AS kept FROM ("
)
_BOUNDS = ("WITH b AS (SELECT ST_TileEnvelope(%(z)s, %(x)s, %(y)s) AS e,"
           " ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s) AS em)")
_BOUNDS_LONLAT = ("WITH b AS (SELECT ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326) AS e,"
                  " ST_Expand(ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326), %(pad)s)"
                  " AS em)")
# Where a row sits in the cell grid: the centre of its bounding box.
CENTRE = ("(ST_XMin(t._geom_3857) + ST_XMax(t._geom_3857)) / 2 AS x,"
          " (ST_YMin(t._geom_3857) + ST_YMax(t._geom_3857)) / 2 AS y")
# The world-aligned cell (cx, cy) of the overview, grown by the reach of its features.
_CELL_BOX = ("ST_Expand(ST_MakeEnvelope({cx} * %(cell)s - %(half)s,"
             " %(half)s - ({cy} + 1) * %(cell)s, ({cx} + 1) * %(cell)s - %(half)s,"
             " %(half)s - {cy} * %(cell)s, 3857), %(reach)s)")
_SMALL = ("greatest(ST_XMax(t._geom_3857) - ST_XMin(t._geom_3857),"
          " ST_YMax(t._geom_3857) - ST_YMin(t._geom_3857)) < %(min_size)s")


def _lonlat(text: str) -> str:
    """A Web Mercator template made to read the stored lon/lat shapes (CGCS2000Quad)."""
    return text.replace("_geom_3857", "geom").replace(", 3857)", ", 4326)")


def _statement(layer: Layer, method: str, as_of: bool,
               r: Restriction = NONE, geographic: bool = False
               ) -> tuple[sql.Composed, dict[str, object]]:
    if geographic:
        if method not in ("none", "cells"):
            raise ValueError(method)
        return _made(layer, method, as_of, r, _lonlat, False)
    return _made(layer, method, as_of, r, lambda text: text, True)


def _made(layer: Layer, method: str, as_of: bool, r: Restriction, shape, mercator: bool
          ) -> tuple[sql.Composed, dict[str, object]]:
    """The statement, its templates read through ``shape`` (a CRS's columns)."""
    def q(text: str) -> sql.SQL:
        return sql.SQL(shape(text))

    t = table_of(layer.id)
    when = alive(as_of)
    limit, extra = restrict.rows(layer, r, mercator=mercator)
    if limit is not None:
        when = sql.SQL("{} AND {}").format(when, limit)
    attrs = sql.SQL("").join(sql.SQL(", ") + restrict.column(f.name, r)
                             for f in restrict.visible_fields(layer, r))
    fid = restrict.fid(layer, r)
    ext, buf = sql.Literal(EXTENT), sql.Literal(BUFFER)
    shapes = q(
        " SELECT t._rid, NULL::bigint AS _count, {fid} AS _id{attrs},"
        # A shape that collapses at this resolution is kept as a point on its surface.
        "  coalesce(ST_AsMVTGeom({geom}, b.e, {ext}, {buf}, true),"
        "   ST_AsMVTGeom(ST_PointOnSurface(t._geom_3857), b.e, {ext}, {buf}, true)) AS geom"
        "  FROM {t} t, b WHERE t._geom_3857 && b.em AND {when}{keep}")
    cell = sql.SQL(
        " SELECT c._rid, CASE WHEN c.n > 1 THEN c.n END AS _count,"
        "  CASE WHEN c.n = 1 THEN {fid} END AS _id{attrs},"
        "  ST_AsMVTGeom({g}, b.e, {ext}, {buf}, true) AS geom"
        " FROM {cells}"
        # The CASE keeps the lookup of a cell's attributes to cells of one feature.
        " LEFT JOIN {t} t ON t._rid = CASE WHEN c.n = 1 THEN c._rid END")
    point = layer.geometry_type == "Point"
    geom = restrict.clipped(q("t._geom_3857"), r, mercator=mercator)
    # Cells made now: the features small at this zoom, at the mean of their centres.
    small = sql.SQL("") if point else sql.SQL(" AND {}").format(q(_SMALL))
    centroid = q("ST_SetSRID(ST_MakePoint(c.sx / c.n, c.sy / c.n), 3857)")
    if method == "none":
        return _whole(shapes.format(attrs=attrs, fid=fid, geom=geom, ext=ext,
                                    buf=buf, t=t, when=when, keep=sql.SQL("")),
                      mercator), extra
    if method == "overview":
        body = cell.format(
            attrs=attrs, fid=fid, g=sql.SQL("c.g"), ext=ext, buf=buf, t=t,
            cells=sql.SQL("b JOIN {o} c ON c.z = %(z)s AND c.g && b.em").format(
                o=overview_of(layer.id)))
    elif method == "cells":
        # The same cells as the overview's (tile-aligned, bounding-box centres), made now.
        body = cell.format(
            attrs=attrs, fid=fid, ext=ext, buf=buf, t=t,
            g=centroid,
            cells=q(
                "(SELECT min(_rid) AS _rid, count(*)::int AS n, sum(x) AS sx, sum(y) AS sy"
                " FROM (SELECT t._rid, {centre}"
                "  FROM {t} t, b WHERE t._geom_3857 && b.em AND {when}{small}) f, b"
                " GROUP BY floor((x - ST_XMin(b.e)) / %(cell)s),"
                " floor((y - ST_YMin(b.e)) / %(cell)s)) c CROSS JOIN b"
            ).format(t=t, when=when, small=small, centre=q(CENTRE)))
    elif method == "area":
        # Exactly the cells "cells" makes from the area's rows, cheaper: a cell wholly
        # inside the area holds only the area's rows, so it is read from the overview;
        # the rows of the other cells lie near the area's edge and are found through it.
        inside = sql.SQL(_CELL_BOX).format(cx=sql.SQL("c.cx"), cy=sql.SQL("c.cy"))
        crossing = sql.SQL(_CELL_BOX).format(cx=sql.SQL("f.cx"), cy=sql.SQL("f.cy"))
        body = cell.format(
            attrs=attrs, fid=fid, ext=ext, buf=buf, t=t,
            g=centroid,
            cells=sql.SQL(
                "(WITH ar AS (SELECT geom_3857 AS g FROM onemap.areas WHERE id = %(_area)s),"
                " edge AS (SELECT ST_Expand(s.g, %(edge)s) AS g FROM b, ar,"
                "  ST_Subdivide(ST_Intersection(ST_Boundary(ar.g),"
                "   ST_Expand(b.em, %(edge)s)), 16) AS s(g))"
                " SELECT c._rid, c.n, c.sx, c.sy FROM {o} c, b, ar"
                " WHERE c.z = %(z)s AND c.g && b.em AND ST_Covers(ar.g, {inside})"
                " UNION ALL"
                " SELECT min(_rid), count(*)::int, sum(x), sum(y) FROM (SELECT f.*,"
                "  floor((f.x + %(half)s) / %(cell)s)::int AS cx,"
                "  floor((%(half)s - f.y) / %(cell)s)::int AS cy"
                # The edge's boxes drive the index; a row near two of them counts once.
                "  FROM (SELECT DISTINCT ON (t._rid) t._rid, {centre}"
                # OFFSET 0 keeps the planner from reading by the area's box instead.
                "   FROM edge, b, LATERAL (SELECT * FROM {t} t"
                "    WHERE t._geom_3857 && edge.g OFFSET 0) t"
                "   WHERE t._geom_3857 && b.em AND {when}{small}) f) f, ar"
                " GROUP BY f.cx, f.cy, ar.g HAVING NOT ST_Covers(ar.g, {crossing})"
                ") c CROSS JOIN b"
            ).format(o=overview_of(layer.id), inside=inside, crossing=crossing, t=t,
                     when=when, small=small, centre=sql.SQL(CENTRE)))
    else:
        raise ValueError(method)
    if not point:
        # Shapes big enough to see are drawn, simplified; the small ones are cells above.
        body = body + sql.SQL(" UNION ALL") + shapes.format(
            attrs=attrs, fid=fid, ext=ext, buf=buf, t=t, when=when,
            geom=restrict.clipped(q("ST_Simplify(t._geom_3857, %(tol)s, true)"), r,
                                  mercator=mercator),
            keep=sql.SQL(" AND NOT ({})").format(q(_SMALL)))
    return _whole(body, mercator), extra


def _whole(body: sql.Composable, mercator: bool = True) -> sql.Composed:
    return (sql.SQL(_BOUNDS if mercator else _BOUNDS_LONLAT)
            + sql.SQL(_HEAD).format(ext=sql.Literal(EXTENT)) + body + sql.SQL(_TAIL))

"""Vector tile sources: one per layer, its SQL generated once per layer schema.

Below a layer's detail zoom, tiles are generalized so they stay small at every zoom, and
nothing is cut silently:

* points are gathered into cells of ``CELL_UNITS`` tile units (2 px of a 256 px tile); each
  cell becomes one feature with ``_count``, the number of features it stands for, and the
  attributes of its lowest-id member;
* lines and polygons are simplified to a quarter pixel, and those smaller than half a pixel
  in both directions are left out.

Every tile reports, per layer, how many features it covered and how many it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from psycopg import sql

from layers.catalog import Layer, table_of

EXTENT = 4096
BUFFER = 64
CELL_UNITS = 32  # a 128 x 128 grid: at most 16,384 point features per tile and layer
WORLD = 2 * 20037508.342789244


def tile_size_m(z: int) -> float:
    return WORLD / (1 << z)


@dataclass(frozen=True)
class TileResult:
    layer: str
    data: bytes
    covered: int  # features in the tile's area
    kept: int  # features in the tile (a cluster counts once)
    method: str  # "none", "cluster" or "simplify"


class TileSource(Protocol):
    """What the tile endpoint needs of a layer; every vector backend implements it."""

    id: str
    schema_version: int

    def query(self, z: int, as_of: bool) -> tuple[sql.Composed, str]: ...


class PostgisSource:
    """A layer table in ``onemap_data``: current rows, or rows valid at a past instant."""

    def __init__(self, layer: Layer, detail_zoom: int) -> None:
        self.id = layer.id
        self.schema_version = layer.schema_version
        self.detail_zoom = layer.detail_zoom if layer.detail_zoom is not None else detail_zoom
        self._statements: dict[tuple[str, bool], sql.Composed] = {}
        methods = ["none", "cluster" if layer.geometry_type == "Point" else "simplify"]
        for method in methods:
            for as_of in (False, True):
                self._statements[(method, as_of)] = _statement(layer, method, as_of)
        self._generalized = methods[1]

    def query(self, z: int, as_of: bool) -> tuple[sql.Composed, str]:
        method = self._generalized if z < self.detail_zoom else "none"
        return self._statements[(method, as_of)], method


def params(layer_id: str, z: int, x: int, y: int, as_of: object) -> dict[str, object]:
    size = tile_size_m(z)
    return {
        "z": z, "x": x, "y": y, "name": layer_id, "as_of": as_of,
        "margin": BUFFER / EXTENT,
        "cell": size * CELL_UNITS / EXTENT,
        "tol": size / 256 / 4,
        "min_size": size / 256 / 2,
    }


def _statement(layer: Layer, method: str, as_of: bool) -> sql.Composed:
    t = table_of(layer.id)
    when = (sql.SQL("t._valid_from <= %(as_of)s AND (t._valid_to IS NULL"
                    " OR t._valid_to > %(as_of)s)") if as_of
            else sql.SQL("t._valid_to IS NULL"))
    attrs = sql.SQL("").join(
        sql.SQL(", t.") + sql.Identifier(f.name) for f in layer.fields)
    if method == "cluster":
        return sql.SQL(
            "WITH b AS (SELECT ST_TileEnvelope(%(z)s, %(x)s, %(y)s) AS e),"
            " src AS (SELECT t._rid, t._geom_3857 AS g FROM {t} t, b"
            "  WHERE t._geom_3857 && b.e AND {when}),"
            " cells AS (SELECT min(_rid) AS _rid, count(*) AS _count FROM src, b"
            "  GROUP BY floor((ST_X(g) - ST_XMin(b.e)) / %(cell)s),"
            "  floor((ST_Y(g) - ST_YMin(b.e)) / %(cell)s)),"
            " m AS (SELECT c._rid, c._count, t._fid AS _id{attrs},"
            "  ST_AsMVTGeom(t._geom_3857, b.e, {ext}, 0, true) AS geom"
            "  FROM cells c JOIN {t} t ON t._rid = c._rid, b)"
            " SELECT ST_AsMVT(m, %(name)s, {ext}, 'geom', '_rid'),"
            " (SELECT count(*) FROM src), count(m.geom) FROM m"
        ).format(t=t, when=when, attrs=attrs, ext=sql.Literal(EXTENT))
    geom = sql.SQL("t._geom_3857")
    keep = sql.SQL("true")
    if method == "simplify":
        geom = sql.SQL("ST_Simplify(t._geom_3857, %(tol)s, true)")
        keep = sql.SQL("(ST_XMax(t._geom_3857) - ST_XMin(t._geom_3857) >= %(min_size)s"
                       " OR ST_YMax(t._geom_3857) - ST_YMin(t._geom_3857) >= %(min_size)s)")
    return sql.SQL(
        "WITH b AS (SELECT ST_TileEnvelope(%(z)s, %(x)s, %(y)s) AS e,"
        "  ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s) AS em),"
        " src AS (SELECT t._rid, t._fid AS _id{attrs},"
        "  CASE WHEN {keep} THEN ST_AsMVTGeom({geom}, b.e, {ext}, {buf}, true) END AS geom"
        "  FROM {t} t, b WHERE t._geom_3857 && b.em AND {when})"
        " SELECT ST_AsMVT(src, %(name)s, {ext}, 'geom', '_rid'), count(*), count(src.geom)"
        " FROM src"
    ).format(t=t, when=when, attrs=attrs, keep=keep, geom=geom, ext=sql.Literal(EXTENT),
             buf=sql.Literal(BUFFER))

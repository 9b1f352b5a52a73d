"""The SQL behind a 3D scene: which tiles hold features, and one tile's features.

Both read the layer's current rows under the caller's restriction (layers.restrict): rows
outside the area or the filter are never read, a clip cuts footprints at the area's edge,
hidden fields are not selected and masked ones only through ``onemap.mask``. With
``as_of`` they read the rows alive at that moment: the city in 3D as it stood then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import shapely
from psycopg import sql

from layers import restrict
from layers.catalog import Layer, table_of
from layers.restrict import Restriction
from layers.store import alive
from layers.tiles import CENTRE, WORLD
from scenes3d.catalog import Scene, height
from scenes3d.tileset import Cell

# The owning tile of a row: the tile at a zoom holding the centre of its box, the same
# centre the overview's cells use. Any one point of the box would do (the box then meets
# the tile, which finds it through the index); the centre is read from the box PostGIS
# keeps with each shape.
_OWNER = sql.SQL("CROSS JOIN LATERAL (SELECT {}) o").format(sql.SQL(CENTRE))
HALF = sql.Literal(WORLD / 2)  # Web Mercator's half width: x and y run from -HALF to HALF


def _owner(size: str) -> tuple[sql.Composable, sql.Composable]:
    """Column and row of the owning tile, for tiles ``%(size)s`` metres wide."""
    return (sql.SQL("floor((o.x + {h}) / {s})::int").format(h=HALF, s=sql.Placeholder(size)),
            sql.SQL("floor(({h} - o.y) / {s})::int").format(h=HALF, s=sql.Placeholder(size)))


def _owned_by(z: int, x: int, y: int, prefix: str) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows whose owning tile is z/x/y (the index finds them through the tile's box)."""
    n = {k: f"{prefix}{k}" for k in ("z", "x", "y", "size")}
    tx, ty = _owner(n["size"])
    clause = sql.SQL(
        "t._geom_3857 && ST_TileEnvelope({z}, {x}, {y}) AND {tx} = {x} AND {ty} = {y}"
    ).format(z=sql.Placeholder(n["z"]), x=sql.Placeholder(n["x"]),
             y=sql.Placeholder(n["y"]), tx=tx, ty=ty)
    return clause, {n["z"]: z, n["x"]: x, n["y"]: y, n["size"]: WORLD / 2**z}


@dataclass
class Features:
    fids: list[str]
    footprints: list[shapely.Geometry]
    heights: list[float]
    properties: dict[str, list[str | None]]


def _common(layer: Layer, scene: Scene, r: Restriction, zoom: int, as_of: datetime | None
            ) -> tuple[sql.Composable, sql.Composable, sql.Composable, dict[str, Any]]:
    h, params = height(scene, r)
    limits, lparams = restrict.rows(layer, r)
    params.update(lparams, as_of=as_of)
    if r.clip and r.area_id is not None:
        params["_area"] = r.area_id
    params["size"] = WORLD / 2**zoom
    where = alive(as_of is not None)
    if limits is not None:
        where = sql.SQL("{} AND {}").format(where, limits)
    # A clip may leave lines and points at the area's edge: only its polygons stand.
    shape = (sql.SQL("ST_CollectionExtract({}, 3)").format(
        restrict.clipped(sql.SQL("t.geom"), r)) if r.clip and r.area_id is not None
        else sql.SQL("t.geom"))
    return h, shape, where, params


async def cells(conn: Any, layer: Layer, scene: Scene, r: Restriction, zoom: int,
                within: tuple[int, int, int] | None = None,
                as_of: datetime | None = None) -> list[Cell]:
    """The tiles at ``zoom`` that own features (as the layer stood at ``as_of``), with
    their counts, extents and tops; only those under the tile ``within`` (z, x, y)."""
    h, shape, where, params = _common(layer, scene, r, zoom, as_of)
    if within is not None:
        clause, p = _owned_by(*within, prefix="w")
        where = sql.SQL("{} AND {}").format(where, clause)
        params.update(p)
    tx, ty = _owner("size")
    query = sql.SQL(
        "SELECT tx, ty, n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), top FROM ("
        " SELECT tx, ty, ST_Extent(g) AS e, max(h) AS top, count(*) AS n FROM ("
        "  SELECT {tx} AS tx, {ty} AS ty, {shape} AS g, {h} AS h"
        "  FROM {table} t {owner} WHERE {where}) s"
        " WHERE NOT ST_IsEmpty(g) GROUP BY tx, ty) c ORDER BY tx, ty"
    ).format(tx=tx, ty=ty, shape=shape, h=h, table=table_of(layer.id), owner=_OWNER,
             where=where)
    cur = await conn.execute(query, params)
    return [Cell(*row) for row in await cur.fetchall()]


async def features(conn: Any, layer: Layer, scene: Scene, r: Restriction,
                   x: int, y: int, as_of: datetime | None = None) -> Features:
    h, shape, where, params = _common(layer, scene, r, scene.tile_zoom, as_of)
    names = [f.name for f in restrict.visible_fields(layer, r)]
    cols = sql.SQL("").join(sql.SQL(", {}").format(restrict.column(n, r)) for n in names)
    tile, p = _owned_by(scene.tile_zoom, x, y, prefix="t")
    params.update(p)
    query = sql.SQL(
        "SELECT {fid}, ST_AsBinary(g), h{cols} FROM ("
        " SELECT t.*, {shape} AS g, {h} AS h FROM {table} t {owner}"
        " WHERE {tile} AND {where}) t"
        " WHERE NOT ST_IsEmpty(g) ORDER BY t._fid"
    ).format(fid=restrict.fid(layer, r), cols=cols, shape=shape, h=h,
             table=table_of(layer.id), owner=_OWNER, tile=tile, where=where)
    cur = await conn.execute(query, params)
    rows = await cur.fetchall()
    return Features(
        fids=[str(row[0]) for row in rows],
        footprints=list(shapely.from_wkb([bytes(row[1]) for row in rows])),
        heights=[float(row[2]) for row in rows],
        properties={n: [None if row[3 + i] is None else str(row[3 + i]) for row in rows]
                    for i, n in enumerate(names)})

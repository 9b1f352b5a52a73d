"""A layer's totals as one caller sees them.

The catalog keeps each layer's feature count and extent, the whole layer's. A caller
limited by an area or a row filter must not learn those: ``seen`` gives the layer as that
caller sees it, its dictionary without hidden fields (``restrict.visible``) and its count
and extent measured under the caller's own limits (a raster's extent cut to the area's
box). Measured once per layer version and set of limits (the restriction's token) and kept,
so a catalog page costs one count per caller kind and change, within the statement budget.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from psycopg import AsyncConnection, sql

from layers import restrict, store
from layers.catalog import Layer, table_of
from layers.restrict import Restriction

Extent = tuple[float, float, float, float]
_KEPT = 4096
_seen: OrderedDict[tuple[str, int, str], tuple[int | None, Extent | None]] = OrderedDict()


def _cut(extent: Extent | None, box: Extent | None) -> Extent | None:
    if extent is None or box is None:
        return extent if box is None else None
    x0, y0 = max(extent[0], box[0]), max(extent[1], box[1])
    x1, y1 = min(extent[2], box[2]), min(extent[3], box[3])
    return (x0, y0, x1, y1) if x0 <= x1 and y0 <= y1 else None


async def _area_box(conn: AsyncConnection, area_id: int) -> Extent | None:
    cur = await conn.execute("SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom),"
                             " ST_YMax(geom) FROM onemap.areas WHERE id = %s", (area_id,))
    row = await cur.fetchone()
    return tuple(row) if row and row[0] is not None else None  # type: ignore[return-value]


async def _measure(conn: AsyncConnection, layer: Layer,
                   r: Restriction) -> tuple[int | None, Extent | None]:
    box = await _area_box(conn, r.area_id) if r.area_id is not None else None
    if layer.kind != "vector":
        return layer.feature_count, _cut(layer.extent, box)
    limit, params = restrict.rows(layer, r)
    where = store.alive(False) if limit is None else sql.SQL("{} AND {}").format(
        store.alive(False), limit)
    cur = await conn.execute(sql.SQL(
        "SELECT n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
        " (SELECT count(*) AS n, ST_Extent(t.geom) AS e FROM {t} t WHERE {w}) s").format(
        t=table_of(layer.id), w=where), params)
    row = await cur.fetchone()
    assert row is not None
    count = int(row[0])
    extent = tuple(float(v) for v in row[1:]) if row[1] is not None else None
    if r.clip:
        extent = _cut(extent, box)  # type: ignore[arg-type]
    return count, extent  # type: ignore[return-value]


async def seen(conn: AsyncConnection, layer: Layer, r: Restriction) -> Layer:
    """``layer`` as the caller with restriction ``r`` sees it."""
    shown = restrict.visible(layer, r)
    if not r.rows_limited:
        return shown
    key = (layer.id, layer.version, r.token)
    found = _seen.get(key)
    if found is None:
        found = await _measure(conn, layer, r)
        _seen[key] = found
        while len(_seen) > _KEPT:
            _seen.popitem(last=False)
    else:
        _seen.move_to_end(key)
    return replace(shown, feature_count=found[0], extent=found[1])

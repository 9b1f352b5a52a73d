"""Feature queries for OGC API – Features: filters in, GeoJSON features out.

Statements are composed from the catalog's identifiers with ``psycopg.sql``; every value a
client sends is a bound parameter. PostgreSQL writes each feature's GeoJSON, so serving a
page is joining strings, not building objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, sql

from layers.catalog import Layer, table_of

# System times every feature carries, shown with its properties.
TIME_PROPERTIES = ("_produced_at", "_ingested_at", "_updated_at")


@dataclass(frozen=True)
class ItemsQuery:
    """What a client asked of a collection's items, already validated."""

    limit: int
    offset: int = 0
    bbox: tuple[float, float, float, float] | None = None  # lon/lat
    start: datetime | None = None  # datetime interval on _produced_at, either end open
    end: datetime | None = None
    instant: datetime | None = None  # datetime=one instant
    as_of: datetime | None = None  # the layer as it stood then


def _feature_json(layer: Layer) -> sql.Composed:
    props = sql.SQL(", ").join(
        [sql.SQL("t.") + sql.Identifier(f.name) for f in layer.fields]
        + [sql.SQL("t.") + sql.Identifier(n) for n in TIME_PROPERTIES]
        + [sql.SQL("t._version")])
    return sql.SQL(
        "json_build_object('type', 'Feature', 'id', t._fid,"
        " 'geometry', ST_AsGeoJSON(t.geom, 9)::json,"
        " 'properties', (SELECT row_to_json(p) FROM (SELECT {props}) p))::text"
    ).format(props=props)


def _where(q: ItemsQuery) -> tuple[sql.Composed, dict[str, object]]:
    parts: list[sql.Composable] = []
    params: dict[str, object] = {}
    if q.as_of is None:
        parts.append(sql.SQL("t._valid_to IS NULL"))
    else:
        parts.append(sql.SQL("t._valid_from <= %(as_of)s"
                             " AND (t._valid_to IS NULL OR t._valid_to > %(as_of)s)"))
        params["as_of"] = q.as_of
    if q.bbox is not None:
        parts.append(sql.SQL("t.geom && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)"
                             " AND ST_Intersects(t.geom, ST_MakeEnvelope(%(x0)s, %(y0)s,"
                             " %(x1)s, %(y1)s, 4326))"))
        params.update(zip(("x0", "y0", "x1", "y1"), q.bbox, strict=True))
    if q.instant is not None:
        parts.append(sql.SQL("t._produced_at = %(instant)s"))
        params["instant"] = q.instant
    if q.start is not None:
        parts.append(sql.SQL("t._produced_at >= %(start)s"))
        params["start"] = q.start
    if q.end is not None:
        parts.append(sql.SQL("t._produced_at <= %(end)s"))
        params["end"] = q.end
    return sql.SQL(" AND ").join(parts), params


async def items(conn: AsyncConnection, layer: Layer, q: ItemsQuery) -> tuple[list[str], int]:
    """One page of features as GeoJSON texts, in a stable order, and how many match."""
    where, params = _where(q)
    t = table_of(layer.id)
    page = sql.SQL(
        "SELECT {feature} FROM {t} t WHERE {where} ORDER BY t._fid"
        " LIMIT %(limit)s OFFSET %(offset)s"
    ).format(feature=_feature_json(layer), t=t, where=where)
    cur = await conn.execute(page, {**params, "limit": q.limit, "offset": q.offset})
    rows = [r[0] for r in await cur.fetchall()]
    if q.offset == 0 and len(rows) < q.limit:
        return rows, len(rows)  # the whole answer is on this page: no need to count
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM {t} t WHERE {where}").format(t=t, where=where), params)
    row = await cur.fetchone()
    return rows, int(row[0]) if row else 0


async def item(conn: AsyncConnection, layer: Layer, fid: str,
               as_of: datetime | None = None) -> str | None:
    """One feature's GeoJSON, current or as of a past moment; None if there is none."""
    where, params = _where(ItemsQuery(limit=1, as_of=as_of))
    cur = await conn.execute(
        sql.SQL("SELECT {feature} FROM {t} t WHERE {where} AND t._fid = %(fid)s").format(
            feature=_feature_json(layer), t=table_of(layer.id), where=where),
        {**params, "fid": fid})
    row = await cur.fetchone()
    return row[0] if row else None

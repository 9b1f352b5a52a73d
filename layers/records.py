"""Searching the layer catalog: the query behind the OGC API – Records catalog."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import AsyncConnection, sql

from layers import cql2sql
from layers.where import Box, Where, contains, lonlat_boxes


@dataclass(frozen=True)
class RecordsQuery:
    limit: int
    offset: int = 0
    terms: tuple[str, ...] = ()  # free text: any term in id, title, description, keywords
    bbox: tuple[float, float, float, float] | None = None  # the layer's extent intersects it
    start: datetime | None = None  # on when the layer was last updated
    end: datetime | None = None
    keywords: tuple[str, ...] = ()  # any of them
    department: str | None = None
    kind: str | None = None
    ids: tuple[str, ...] | None = None  # only these layers: those the caller may read
    wanted: tuple[str, ...] | None = None  # only these records (``ids``)
    where: tuple[sql.Composable, dict[str, object]] | None = None  # a CQL2 filter's SQL
    sortby: tuple[tuple[str, bool], ...] = ()  # (sortable, descending), then the id
    # Layers the caller sees only part of, with the extent of that part (``summary.seen``):
    # ``bbox`` is matched against it, never against the whole layer's.
    seen_extents: Mapping[str, Box | None] = field(
        default_factory=dict)


# The catalog's queryables (OGC API - Records): name -> (type, column of onemap.layers).
QUERYABLES: dict[str, tuple[str, str]] = {
    "id": ("string", "id"), "title": ("string", "title"),
    "description": ("string", "description"), "type": ("string", "kind"),
    "role": ("string", "role"), "department": ("string", "department"),
    "updateCycle": ("string", "update_cycle"), "sharingType": ("string", "sharing_type"),
    "created": ("datetime", "created_at"), "updated": ("datetime", "updated_at"),
    "featureCount": ("integer", "feature_count"),
}
SORTABLES = ("id", "title", "type", "department", "created", "updated", "featureCount")


def filter_sql(tree: dict, prefix: str = "c") -> tuple[sql.Composable, dict[str, object]]:
    """A CQL2 filter over the catalog's queryables, as SQL on ``onemap.layers l``."""
    return cql2sql.to_sql(tree, None, prefix,
                          types={k: t for k, (t, _) in QUERYABLES.items()},
                          columns={k: sql.Identifier("l", c) for k, (_, c) in QUERYABLES.items()})


def _overlaps(extent: Box | None, box: Box) -> bool:
    return extent is not None and any(
        extent[0] <= b[2] and extent[2] >= b[0] and extent[1] <= b[3] and extent[3] >= b[1]
        for b in lonlat_boxes(box))


def _where(q: RecordsQuery) -> tuple[sql.Composable, dict[str, object]]:
    w = Where()
    w.when(list(q.ids) if q.ids is not None else None, "id = ANY(%(ids)s)", "ids")
    if q.terms:
        likes, terms = [], {}
        for i, term in enumerate(q.terms):
            name = f"q{i}"
            terms[name] = contains(term)
            likes.append(sql.SQL(
                "(id ILIKE {p} OR title ILIKE {p} OR coalesce(description, '') ILIKE {p}"
                " OR array_to_string(keywords, ' ') ILIKE {p})").format(p=sql.Placeholder(name)))
        w.add(sql.SQL("(") + sql.SQL(" OR ").join(likes) + sql.SQL(")"), **terms)
    if q.bbox is not None:
        partial = sorted(q.seen_extents)
        inside = [i for i in partial if _overlaps(q.seen_extents[i], q.bbox)]
        tests, params = [], {}
        for i, part in enumerate(lonlat_boxes(q.bbox)):
            tests.append(sql.SQL("(extent[1] <= {x1} AND extent[3] >= {x0}"
                                 " AND extent[2] <= {y1} AND extent[4] >= {y0})").format(
                **{c: sql.Placeholder(f"{c}{i}") for c in ("x0", "y0", "x1", "y1")}))
            params.update({f"{c}{i}": v for c, v in zip(("x0", "y0", "x1", "y1"), part,
                                                         strict=True)})
        w.add(sql.SQL("CASE WHEN id = ANY(%(partial)s) THEN id = ANY(%(inside)s)"
                      " ELSE extent IS NOT NULL AND ({}) END").format(
                          sql.SQL(" OR ").join(tests)),
              partial=partial, inside=inside, **params)
    w.when(q.start, "updated_at >= %(start)s", "start")
    w.when(q.end, "updated_at <= %(end)s", "end")
    w.when(list(q.keywords) or None, "keywords && %(keywords)s::text[]", "keywords")
    w.when(q.department, "(department = %(department)s OR department IN (SELECT id FROM"
                         " onemap.departments WHERE lower(name) = lower(%(department)s)))",
           "department")
    w.when(q.kind, "kind = %(kind)s", "kind")
    w.when(list(q.wanted) if q.wanted is not None else None, "id = ANY(%(wanted)s)", "wanted")
    if q.where is not None:
        clause, params = q.where
        w.add(sql.SQL("({})").format(clause), **params)
    return w.build()


def _order(q: RecordsQuery) -> sql.Composable:
    keys = [sql.SQL("{} {}").format(sql.Identifier("l", QUERYABLES[name][1]),
                                    sql.SQL("DESC NULLS LAST" if desc else "ASC NULLS LAST"))
            for name, desc in q.sortby]
    return sql.SQL(", ").join([*keys, sql.SQL("l.id")])


# Every entry of the catalog: this node's layers and the records harvested from its
# federation's nodes (``onemap.remote_records``, ids ``node:layer``), with the columns a
# search filters and sorts on.
_COLUMNS = ("id, kind, title, description, department, keywords, update_cycle, sharing_type,"
            " role, feature_count, extent, created_at, updated_at")
ENTRIES = sql.SQL(f"(SELECT {_COLUMNS} FROM onemap.layers UNION ALL"  # noqa: S608 (constant)
                  f" SELECT {_COLUMNS} FROM onemap.remote_records) l")


async def search(conn: AsyncConnection, q: RecordsQuery) -> tuple[list[str], int]:
    """One page of matching entries' ids, in order, and how many match in all."""
    where, params = _where(q)
    await_ = await conn.execute(sql.SQL("SELECT l.id FROM {} WHERE {} ORDER BY {}"
                                        " LIMIT %(limit)s OFFSET %(offset)s").format(
        ENTRIES, where, _order(q)), {**params, "limit": q.limit, "offset": q.offset})
    ids = [r[0] for r in await await_.fetchall()]
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(ENTRIES, where),
                             params)
    row = await cur.fetchone()
    return ids, int(row[0]) if row else 0

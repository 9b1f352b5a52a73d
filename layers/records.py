"""Searching the layer catalog: the query behind the OGC API – Records catalog."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from layers.catalog import SELECT_LAYERS, Layer, layer_from_row
from layers.where import Where


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
    # Layers the caller sees only part of, with the extent of that part (``summary.seen``):
    # ``bbox`` is matched against it, never against the whole layer's.
    seen_extents: Mapping[str, tuple[float, float, float, float] | None] = field(
        default_factory=dict)


def _overlaps(extent: tuple[float, float, float, float] | None,
              box: tuple[float, float, float, float]) -> bool:
    return (extent is not None and extent[0] <= box[2] and extent[2] >= box[0]
            and extent[1] <= box[3] and extent[3] >= box[1])


def _where(q: RecordsQuery) -> tuple[sql.Composable, dict[str, object]]:
    w = Where()
    w.when(list(q.ids) if q.ids is not None else None, "id = ANY(%(ids)s)", "ids")
    if q.terms:
        likes, terms = [], {}
        for i, term in enumerate(q.terms):
            name = f"q{i}"
            # The term is a value; its LIKE wildcards are escaped so they match themselves.
            terms[name] = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace(
                "_", "\\_") + "%"
            likes.append(sql.SQL(
                "(id ILIKE {p} OR title ILIKE {p} OR coalesce(description, '') ILIKE {p}"
                " OR array_to_string(keywords, ' ') ILIKE {p})").format(p=sql.Placeholder(name)))
        w.add(sql.SQL("(") + sql.SQL(" OR ").join(likes) + sql.SQL(")"), **terms)
    if q.bbox is not None:
        partial = sorted(q.seen_extents)
        inside = [i for i in partial if _overlaps(q.seen_extents[i], q.bbox)]
        w.add("CASE WHEN id = ANY(%(partial)s) THEN id = ANY(%(inside)s)"
              " ELSE extent IS NOT NULL AND extent[1] <= %(x1)s AND extent[3] >= %(x0)s"
              " AND extent[2] <= %(y1)s AND extent[4] >= %(y0)s END",
              partial=partial, inside=inside,
              **dict(zip(("x0", "y0", "x1", "y1"), q.bbox, strict=True)))
    w.when(q.start, "updated_at >= %(start)s", "start")
    w.when(q.end, "updated_at <= %(end)s", "end")
    w.when(list(q.keywords) or None, "keywords && %(keywords)s::text[]", "keywords")
    w.when(q.department, "(department = %(department)s OR department IN (SELECT id FROM"
                         " onemap.departments WHERE lower(name) = lower(%(department)s)))",
           "department")
    w.when(q.kind, "kind = %(kind)s", "kind")
    return w.build()


async def search(conn: AsyncConnection, q: RecordsQuery) -> tuple[list[Layer], int]:
    """One page of matching layers, by id, and how many match in all."""
    where, params = _where(q)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SELECT_LAYERS + sql.SQL(" WHERE {} ORDER BY id LIMIT %(limit)s"
                                                  " OFFSET %(offset)s").format(where),
                          {**params, "limit": q.limit, "offset": q.offset})
        layers = [layer_from_row(r) for r in await cur.fetchall()]
        await cur.execute(sql.SQL("SELECT count(*) AS n FROM onemap.layers WHERE {}").format(
            where), params)
        row = await cur.fetchone()
    return layers, int(row["n"]) if row else 0


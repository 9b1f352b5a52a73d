"""Feature queries for OGC API – Features: filters in, GeoJSON features out.

Statements are composed from the catalog's identifiers with ``psycopg.sql``; every value a
client sends is a bound parameter. PostgreSQL writes each feature's GeoJSON, so serving a
page is joining strings, not building objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, sql

from layers import restrict, store
from layers.catalog import Layer, table_of
from layers.restrict import NONE, Restriction
from layers.where import Where, contains, in_box

# System times every feature carries, shown with its properties.
TIME_PROPERTIES = ("_produced_at", "_ingested_at", "_updated_at")


@dataclass(frozen=True)
class Crs:
    """A coordinate reference system as served: its SRID and whether latitude comes first."""

    uri: str
    srid: int
    lat_first: bool
    digits: int  # decimals that keep about a millimetre


GAUSS_KRUGER = range(4491, 4555)
CRS84 = Crs("http://www.opengis.net/def/crs/OGC/1.3/CRS84", 4326, False, 9)
SUPPORTED_CRS = {c.uri: c for c in (
    CRS84,
    Crs("http://www.opengis.net/def/crs/EPSG/0/4326", 4326, True, 9),
    Crs("http://www.opengis.net/def/crs/EPSG/0/4490", 4490, True, 9),
    Crs("http://www.opengis.net/def/crs/EPSG/0/3857", 3857, False, 3),
    # CGCS2000 Gauss-Kruger: 6-degree zones 13-23 (4491-4501) and by central meridian
    # (4502-4512), 3-degree zones 25-45 (4513-4533) and by central meridian (4534-4554);
    # each is northing first, as EPSG defines it.
    *(Crs(f"http://www.opengis.net/def/crs/EPSG/0/{code}", code, True, 3)
      for code in GAUSS_KRUGER),
)}


@dataclass(frozen=True)
class ItemsQuery:
    """What a client asked of a collection's items, already validated."""

    limit: int
    offset: int = 0
    bbox: tuple[float, float, float, float] | None = None  # in bbox_crs, its axis order
    bbox_crs: Crs = CRS84
    crs: Crs = CRS84  # of the geometries served
    start: datetime | None = None  # datetime interval on _produced_at, either end open
    end: datetime | None = None
    instant: datetime | None = None  # datetime=one instant
    as_of: datetime | None = None  # the layer as it stood then
    # A CQL2 filter already made SQL by layers.cql2sql, with its parameters.
    where: tuple[sql.Composable, dict[str, object]] | None = None
    properties: tuple[str, ...] | None = None  # None: all the principal may see
    restriction: Restriction = NONE  # the principal's limits on this layer
    ids: tuple[str, ...] | None = None  # only these features
    text: tuple[str, ...] = ()  # free text: any term in any text field the caller may filter
    sortby: tuple[tuple[str, bool], ...] = ()  # (sortable name, descending), then the id
    after: str | None = None  # continue after this feature id (the default order only)

    @property
    def narrowed(self) -> bool:
        """Whether anything but the layer's own current rows limits the answer (paging by
        ``offset`` or ``after`` does not: it only picks the page)."""
        return not (self.bbox is None and self.where is None and self.as_of is None
                    and not self.restriction.rows_limited and self.ids is None
                    and not self.text and self.instant is None and self.start is None
                    and self.end is None)


def sortables(layer: Layer, r: Restriction = NONE) -> list[str]:
    """What items may be sorted by: the fields the caller may filter on (a masked value's
    order would tell it), the system times and the version."""
    return ([f.name for f in restrict.filterable(layer, r).fields]
            + [*TIME_PROPERTIES, "_version"])


def _order(q: ItemsQuery) -> sql.Composable:
    keys = [sql.SQL("{} {}").format(sql.Identifier("t", name),
                                    sql.SQL("DESC NULLS LAST" if desc else "ASC NULLS LAST"))
            for name, desc in q.sortby]
    return sql.SQL(", ").join([*keys, sql.SQL("t._fid")])


def _geometry(crs: Crs, r: Restriction = NONE) -> sql.Composable:
    # RFC 7946, 3.1.6: exterior rings counter-clockwise, holes clockwise.
    g: sql.Composable = sql.SQL("ST_ForcePolygonCCW({})").format(
        restrict.clipped(sql.SQL("t.geom"), r))
    if crs.srid != 4326:
        g = sql.SQL("ST_Transform({}, {})").format(g, sql.Literal(crs.srid))
    if crs.lat_first:
        g = sql.SQL("ST_FlipCoordinates({})").format(g)
    return sql.SQL("ST_AsGeoJSON({}, {})").format(g, sql.Literal(crs.digits))


def property_names(layer: Layer, r: Restriction = NONE) -> list[str]:
    return ([f.name for f in restrict.visible_fields(layer, r)]
            + [*TIME_PROPERTIES, "_version"])


def _feature_json(layer: Layer, crs: Crs, properties: tuple[str, ...] | None = None,
                  r: Restriction = NONE) -> sql.Composed:
    names = property_names(layer, r) if properties is None else list(properties)
    props = (sql.SQL(", ").join(restrict.column(n, r) for n in names)
             if names else sql.SQL("1 AS _none"))
    return sql.SQL(
        "json_build_object('type', 'Feature', 'id', {fid},"
        " 'geometry', {geometry}::json,"
        " 'properties', {properties})::text"
    ).format(fid=restrict.fid(layer, r), geometry=_geometry(crs, r), properties=(
        sql.SQL("(SELECT row_to_json(p) FROM (SELECT {}) p)").format(props) if names
        else sql.SQL("'{}'::json")))


def _where(q: ItemsQuery, layer: Layer) -> tuple[sql.Composable, dict[str, object]]:
    """The WHERE clause, the principal's limits first."""
    w = Where()
    limit, limit_params = restrict.rows(layer, q.restriction)
    if limit is not None:
        w.add(limit, **limit_params)
    w.add(store.alive(q.as_of is not None),
          **({"as_of": q.as_of} if q.as_of is not None else {}))
    if q.bbox is not None:
        x0, y0, x1, y1 = q.bbox
        if q.bbox_crs.lat_first:
            x0, y0, x1, y1 = y0, x0, y1, x1
        clause, box_params = in_box((x0, y0, x1, y1), q.bbox_crs.srid)
        w.add(clause, **box_params)
    if q.ids is not None:
        w.add("t._fid = ANY(%(ids)s)", ids=list(q.ids))
    if q.text:
        texts = [f.name for f in restrict.filterable(layer, q.restriction).fields
                 if f.type == "string"]
        terms = []
        for i, term in enumerate(q.text):
            name = f"q{i}"
            w.params[name] = contains(term)
            terms.append(sql.SQL("({})").format(sql.SQL(" OR ").join(
                [sql.SQL("{} ILIKE {}").format(sql.Identifier("t", c), sql.Placeholder(name))
                 for c in texts] or [sql.SQL("false")])))
        w.add(sql.SQL("(") + sql.SQL(" OR ").join(terms) + sql.SQL(")"))
    w.when(q.instant, "t._produced_at = %(instant)s", "instant")
    w.when(q.start, "t._produced_at >= %(start)s", "start")
    w.when(q.end, "t._produced_at <= %(end)s", "end")
    if q.where is not None:
        clause, filter_params = q.where
        w.add(sql.SQL("({})").format(clause), **filter_params)
    return w.build()


# A count that would read more rows than this stops there, and the page says how many
# match as the planner's estimate instead: an exact count of a large match costs as much as
# reading it all.
COUNT_CAP = 10_000


@dataclass(frozen=True)
class Page:
    rows: list[str]  # GeoJSON texts
    matched: int | None  # exact, where it was cheap to know
    estimate: int | None  # the planner's, where counting would have cost too much
    last: str | None  # the last feature's id, where a page may continue after it


def keyset(q: ItemsQuery, layer: Layer) -> bool:
    """Whether the next page continues after the last id (as fast as the first page)
    rather than at an offset: in the default order, with ids the caller may see."""
    return not q.sortby and not restrict.fid_concealed(layer, q.restriction)


async def items(conn: AsyncConnection, layer: Layer, q: ItemsQuery) -> Page:
    """One page of features as GeoJSON texts, in a stable order, and how many match."""
    where, params = _where(q, layer)
    t = table_of(layer.id)
    page_where = where if q.after is None else sql.SQL("{} AND t._fid > %(after)s").format(
        where)
    page = sql.SQL(
        "SELECT {feature}, t._fid FROM {t} t WHERE {where} ORDER BY {order}"
        " LIMIT %(limit)s OFFSET %(offset)s"
    ).format(feature=_feature_json(layer, q.crs, q.properties, q.restriction), t=t,
             where=page_where, order=_order(q))
    # Planned for these values every time (never a prepared, generic plan): whether to
    # walk the id index or search the shapes first depends on how much a box or a filter
    # keeps, which only the values tell.
    cur = await conn.execute(page, {**params, "limit": q.limit, "offset": q.offset,
                                    "after": q.after}, prepare=False)
    found = await cur.fetchall()
    rows = [r[0] for r in found]
    last = found[-1][1] if found and keyset(q, layer) else None
    if q.offset == 0 and q.after is None and len(rows) < q.limit:
        return Page(rows, len(rows), None, last)  # the whole answer is on this page
    if not q.narrowed:
        return Page(rows, layer.feature_count, None, last)  # counted by the ingest
    if q.after is not None:
        return Page(rows, None, None, last)  # counted, if at all, on the first page
    cur = await conn.execute(sql.SQL(
        "SELECT count(*) FROM (SELECT 1 FROM {t} t WHERE {where} LIMIT %(cap)s) s").format(
            t=t, where=where), {**params, "cap": COUNT_CAP + 1}, prepare=False)
    row = await cur.fetchone()
    counted = int(row[0]) if row else 0
    if counted <= COUNT_CAP:
        return Page(rows, counted, None, last)
    cur = await conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {t} t WHERE {where}"
                                     ).format(t=t, where=where), params)
    plan = (await cur.fetchone())[0]  # type: ignore[index]
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    return Page(rows, None, max(estimate, COUNT_CAP + 1), last)


async def item(conn: AsyncConnection, layer: Layer, fid: str,
               as_of: datetime | None = None, crs: Crs = CRS84,
               r: Restriction = NONE) -> tuple[str, int] | None:
    """One feature's GeoJSON and the row id of its version (its ETag), current or as of a
    past moment; None if there is none the principal may see."""
    where, params = _where(ItemsQuery(limit=1, as_of=as_of, restriction=r), layer)
    cur = await conn.execute(
        sql.SQL("SELECT {feature}, t._rid FROM {t} t WHERE {where} AND t._fid = %(fid)s"
                ).format(feature=_feature_json(layer, crs, None, r), t=table_of(layer.id),
                         where=where),
        {**params, "fid": fid})
    row = await cur.fetchone()
    return (row[0], int(row[1])) if row else None

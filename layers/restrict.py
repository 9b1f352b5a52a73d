"""A principal's limits on a layer, applied inside the SQL that reads it.

Tiles, features and items compose the same clauses, so no reader can forget one: rows
outside the area or the filter are never read, hidden fields never selected, masked ones
selected only through ``onemap.mask``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import shapely
from psycopg import sql

from layers import cql2sql
from layers.catalog import Field, Layer

MASKS = ("middle", "full")


@dataclass(frozen=True)
class Restriction:
    hidden: frozenset[str] = frozenset()
    masks: tuple[tuple[str, str], ...] = ()  # (field, one of MASKS)
    area_id: int | None = None  # a row of onemap.areas
    clip: bool = False  # cut shapes at the area's edge, not only pick those that touch it
    filter: str | None = None  # CQL2 text the features must also satisfy

    @property
    def rows_limited(self) -> bool:
        return self.area_id is not None or self.filter is not None

    @property
    def token(self) -> str:
        """Names these limits in cache keys and ETags; empty when there are none."""
        if self == NONE:
            return ""
        return hashlib.sha1(repr(self).encode()).hexdigest()[:12]

    def mask_of(self, name: str) -> str | None:
        return dict(self.masks).get(name)


NONE = Restriction()


def narrowed(layer: Layer, r: Restriction, keep: frozenset[str] | None = None,
             rows: dict | None = None) -> Restriction:
    """``r`` and also: only the fields in ``keep`` (a base map's tile carries what its
    style reads), only the rows ``rows`` selects (CQL2-JSON: what its style draws at the
    zoom). A row condition on a field ``r`` hides or masks is not applied, so which rows
    are served never tells a value the caller may not see."""
    hidden = r.hidden | {f.name for f in layer.fields if f.name not in keep} if keep is not None \
        else r.hidden
    out = replace(r, hidden=frozenset(hidden))
    if rows is None:
        return out
    masked = {n for n, _ in r.masks}
    if _properties(rows) & (set(r.hidden) | masked):
        return out
    both = rows if r.filter is None else {
        "op": "and", "args": [cql2sql.parse(r.filter, "cql2-text"), rows]}
    return replace(out, filter=cql2sql.text_of(both))


def _properties(expr: object) -> set[str]:
    if isinstance(expr, dict):
        found = {expr["property"]} if isinstance(expr.get("property"), str) else set()
        return found.union(*(_properties(v) for v in expr.values()))
    if isinstance(expr, list):
        return set().union(*(_properties(v) for v in expr))
    return set()


def visible_fields(layer: Layer, r: Restriction) -> tuple[Field, ...]:
    return tuple(f for f in layer.fields if f.name not in r.hidden)


def visible(layer: Layer, r: Restriction) -> Layer:
    """The layer as this principal sees it: hidden fields are not in its dictionary."""
    return layer if not r.hidden else replace(layer, fields=visible_fields(layer, r))


def filterable(layer: Layer, r: Restriction) -> Layer:
    """The layer whose fields a client may filter on: a masked value cannot be probed."""
    masked = {n for n, _ in r.masks}
    return replace(layer, fields=tuple(f for f in visible_fields(layer, r)
                                       if f.name not in masked))


def column(name: str, r: Restriction, alias: str = "t") -> sql.Composable:
    """A field as this principal may read it, named as the field."""
    col = sql.Identifier(alias, name)
    how = r.mask_of(name)
    if how is None:
        return col
    return sql.SQL("onemap.mask({}, {}) AS {}").format(col, sql.Literal(how),
                                                     sql.Identifier(name))


def fid_concealed(layer: Layer, r: Restriction) -> bool:
    """Whether the feature id, being made of a hidden or masked key, is concealed too; then
    features cannot be looked up by id either, or lookups would probe the values."""
    keys = [k for k in (layer.key_field or "").split(",") if k]
    return any(k in r.hidden or r.mask_of(k) for k in keys)


def fid(layer: Layer, r: Restriction) -> sql.Composable:
    if not fid_concealed(layer, r):
        return sql.SQL("t._fid")
    return sql.SQL("onemap.mask(t._fid, 'full')")


def rows(layer: Layer, r: Restriction, mercator: bool = False, prefix: str = ""
         ) -> tuple[sql.Composable | None, dict[str, object]]:
    """The condition a row must meet, and its parameters; None when nothing limits rows.

    ``mercator``: test ``t._geom_3857`` (tiles) rather than ``t.geom`` (features).
    ``prefix``: names the parameters apart when one statement limits several layers.
    """
    parts: list[sql.Composable] = []
    params: dict[str, object] = {}
    if r.area_id is not None:
        g, a = (("_geom_3857", "geom_3857") if mercator else ("geom", "geom"))
        area = sql.SQL("(SELECT {} FROM onemap.areas WHERE id = {})").format(
            sql.Identifier(a), sql.Placeholder(f"{prefix}_area"))
        parts.append(sql.SQL("t.{g} && {a} AND ST_Intersects(t.{g}, {a})").format(
            g=sql.Identifier(g), a=area))
        params[f"{prefix}_area"] = r.area_id
    if r.filter is not None:
        tree = cql2sql.parse(r.filter, "cql2-text")
        clause, fparams = cql2sql.to_sql(tree, layer, prefix=f"{prefix}_g")
        parts.append(sql.SQL("({})").format(clause))
        params.update(fparams)
    if not parts:
        return None, params
    return sql.SQL(" AND ").join(parts), params


def clipped(geom: sql.Composable, r: Restriction, mercator: bool = False) -> sql.Composable:
    """A shape cut at the area's edge when the limit says clip."""
    if not r.clip or r.area_id is None:
        return geom
    a = "geom_3857" if mercator else "geom"
    return sql.SQL("ST_Intersection({}, (SELECT {} FROM onemap.areas WHERE id = %(_area)s))"
                   ).format(geom, sql.Identifier(a))


async def area_shape(conn, area_id: int | None) -> shapely.Geometry | None:
    """A caller's area as a lon/lat shape, None for no limit; an area that is gone leaves
    nothing visible rather than everything."""
    if area_id is None:
        return None
    cur = await conn.execute("SELECT ST_AsBinary(geom) FROM onemap.areas WHERE id = %s",
                             (area_id,))
    row = await cur.fetchone()
    return shapely.from_wkb(bytes(row[0])) if row else shapely.Polygon()

"""What of a register a caller may see, applied inside the registry's own statements.

The lookups read the ``registry.*`` tables, but grants are stated on the layers the
registry publishes (``carriers``, ``fronts``). So a grant's area becomes
``registry.in_area``, its row filter a test of the entity's current row in its layer (the
row's id is the entity's code), and the fields it hides or masks are left out or masked
in what a lookup returns. A lookup that decides on a field the caller may not read is
refused: its answer would tell the value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from psycopg import sql

from layers import restrict
from layers.catalog import Layer, table_of
from layers.errors import Forbidden
from layers.restrict import NONE, Restriction


class Unreadable(Forbidden):
    """The lookup decides on fields the caller's grant hides or masks."""


@dataclass(frozen=True)
class Scope:
    layer: Layer | None = None  # the register's layer, whose fields a filter names
    restriction: Restriction = NONE

    def clause(self, alias: str, prefix: str = "") -> tuple[sql.Composable, dict[str, Any]]:
        """The condition an entity row ``alias`` must meet, with its parameters."""
        a, area = sql.Identifier(alias), f"{prefix}area"
        parts: list[sql.Composable] = [sql.SQL("registry.in_area({}.geom, {})").format(
            a, sql.Placeholder(area))]
        params: dict[str, Any] = {area: self.restriction.area_id}
        if self.restriction.filter is not None and self.layer is not None:
            cond, p = restrict.rows(self.layer, replace(self.restriction, area_id=None),
                                    prefix=f"{prefix}f")
            parts.append(sql.SQL(
                "EXISTS (SELECT 1 FROM {} t WHERE t._fid = {}.code AND t._valid_to IS NULL"
                " AND {})").format(table_of(self.layer.id), a, cond))
            params.update(p)
        return sql.SQL(" AND ").join(parts), params

    def require(self, fields: Iterable[str], what: str) -> None:
        """Refuse a lookup deciding on ``fields`` when the caller may not read one."""
        r = self.restriction
        hidden = sorted(f for f in fields if f in r.hidden or r.mask_of(f))
        if hidden:
            layer = self.layer.id if self.layer else "the layer"
            raise Unreadable(f"{what} decides on {', '.join(hidden)}, which your grant on "
                             f"{layer} hides or masks")


EVERYTHING = Scope()


def statement(template: str, scope: Scope, alias: str,
              prefix: str = "") -> tuple[sql.Composed, dict[str, Any]]:
    """A registry statement whose ``{limits}`` is the scope's condition on ``alias``."""
    cond, params = scope.clause(alias, prefix)
    return sql.SQL(template).format(limits=cond), params


# The layer field that holds an entity's lifecycle state.
STATE_FIELD = {"carriers": "status", "fronts": "state"}


async def conceal_history(conn: Any, layer: Layer, doc: dict[str, Any],
                          r: Restriction) -> None:
    """A ``/codes/{code}/history`` answer under the same field rules as the layer, in place:
    a hidden or masked state field takes the state, the last event and the ledger with it
    (every event tells a state); an event's operator and note follow the fields of those
    names."""
    state = STATE_FIELD.get(layer.id, "state")
    if state in r.hidden or r.mask_of(state):
        for name in ("state", "last_event", "events"):
            doc.pop(name, None)
        return
    await conceal(conn, doc.get("events", []), r)


async def conceal(conn: Any, docs: list[dict[str, Any]], r: Restriction) -> None:
    """Leave hidden fields out of the documents and mask the masked ones, in place, by
    the database's own ``onemap.mask``."""
    for doc in docs:
        for name in r.hidden & doc.keys():
            del doc[name]
    for name, how in r.masks:
        having = [d for d in docs if d.get(name) is not None]
        if not having:
            continue
        cur = await conn.execute(
            "SELECT onemap.mask(v, %s) FROM unnest(%s::text[]) WITH ORDINALITY u(v, i)"
            " ORDER BY i", (how, [str(d[name]) for d in having]))
        for d, (masked,) in zip(having, await cur.fetchall(), strict=True):
            d[name] = masked

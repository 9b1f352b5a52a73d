"""A WHERE clause built from optional conditions, each with its bound parameters."""

from __future__ import annotations

from psycopg import sql


class Where:
    def __init__(self) -> None:
        self.parts: list[sql.Composable] = []
        self.params: dict[str, object] = {}

    def add(self, clause: str | sql.Composable, **params: object) -> None:
        self.parts.append(sql.SQL(clause) if isinstance(clause, str) else clause)
        self.params.update(params)

    def when(self, value: object, clause: str, name: str) -> None:
        """Adds ``clause`` with ``%(name)s`` bound to ``value``, if there is a value."""
        if value is not None:
            self.add(clause, **{name: value})

    def build(self) -> tuple[sql.Composable, dict[str, object]]:
        return sql.SQL(" AND ").join(self.parts or [sql.SQL("true")]), self.params


Box = tuple[float, float, float, float]


def lonlat_boxes(box: Box) -> list[Box]:
    """A lon/lat box as boxes that do not cross the antimeridian: one, or (west > east, as
    OGC API - Features allows for a box across it) the parts east and west of it."""
    west, south, east, north = box
    if west <= east:
        return [box]
    return [(west, south, 180.0, north), (-180.0, south, east, north)]


def contains(term: str) -> str:
    """An ILIKE pattern for text holding ``term``; its wildcards are escaped so that they
    match themselves."""
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def in_box(box: Box, srid: int = 4326) -> tuple[sql.Composable, dict[str, object]]:
    """``t.geom`` intersecting a box given in ``srid`` (lon/lat ones may cross the
    antimeridian), and its parameters. One ``ST_Intersects`` per part: the index finds the
    candidates (its && compares float4-rounded boxes), the exact test settles them, and the
    planner estimates the match from the column's statistics."""
    parts = lonlat_boxes(box) if srid in (4326, 4490) else [box]
    clauses, params = [], {}
    for i, part in enumerate(parts):
        names = [f"box{i}_{k}" for k in range(4)]
        shape: sql.Composable = sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, {})").format(
            *map(sql.Placeholder, names), sql.Literal(srid))
        if srid != 4326:
            shape = sql.SQL("ST_Transform({}, 4326)").format(shape)
        clauses.append(sql.SQL("ST_Intersects(t.geom, {})").format(shape))
        params.update(zip(names, part, strict=True))
    return sql.SQL("(") + sql.SQL(" OR ").join(clauses) + sql.SQL(")"), params

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

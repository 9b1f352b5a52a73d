"""CQL2 (parsed by the ``cql2`` library into CQL2-JSON) to parameterized PostgreSQL.

Properties must be the layer's queryables; every literal is converted to its property's
type here and bound as a parameter, so a malformed or ill-typed filter is a clear error
before any SQL runs, and no value ever becomes SQL text.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import cql2
from psycopg import sql

from layers.catalog import PG_TYPES, Layer
from layers.errors import Invalid

GEOMETRY = "geometry"
SYSTEM_TIMES = ("_produced_at", "_ingested_at", "_updated_at")
_COMPARE = {"=": "=", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_SPATIAL = {"s_intersects": "ST_Intersects", "s_equals": "ST_Equals",
            "s_disjoint": "ST_Disjoint", "s_touches": "ST_Touches", "s_within": "ST_Within",
            "s_overlaps": "ST_Overlaps", "s_crosses": "ST_Crosses", "s_contains": "ST_Contains"}


class FilterError(Invalid):
    """The filter cannot be run; the message says why."""


def queryables(layer: Layer) -> dict[str, str]:
    """Queryable name -> dictionary type (``geometry`` for the geometry)."""
    out = {f.name: f.type for f in layer.fields}
    out.update({name: "datetime" for name in SYSTEM_TIMES})
    out[GEOMETRY] = "geometry"
    return out


def parse(text: str, lang: str) -> dict[str, Any]:
    """CQL2 text or JSON to the CQL2-JSON tree."""
    try:
        if lang == "cql2-text":
            return cql2.parse_text(text).to_json()
        if lang == "cql2-json":
            return cql2.parse_json(text).to_json()
    except Exception as exc:  # the parser's own errors carry the position
        raise FilterError(f"filter is not valid {lang}: {str(exc).strip()}") from exc
    raise FilterError(f"filter-lang {lang!r} is not supported; use cql2-text or cql2-json")


class _Translator:
    def __init__(self, types: dict[str, str], prefix: str) -> None:
        self.types = types
        self.prefix = prefix
        self.params: dict[str, object] = {}

    def bind(self, value: object, pg_type: str | None = None) -> sql.Composable:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        ph = sql.Placeholder(name)
        return ph if pg_type is None else sql.SQL("{}::{}").format(ph, sql.SQL(pg_type))

    def prop(self, node: Any) -> tuple[sql.Composable, str]:
        if not (isinstance(node, dict) and set(node) == {"property"}):
            raise FilterError(f"expected a property, got {json.dumps(node)}")
        name = node["property"]
        kind = self.types.get(name)
        if kind is None:
            raise FilterError(f"unknown property {name!r}; see the collection's queryables")
        if kind == "geometry":
            return sql.SQL("t.geom"), kind
        return sql.SQL("t.") + sql.Identifier(name), kind

    def literal(self, value: Any, kind: str, name: str) -> sql.Composable:
        """A value made of the property's type, or a clear error."""
        try:
            if isinstance(value, dict) and "timestamp" in value:
                value = _when(value["timestamp"])
            elif isinstance(value, dict) and "date" in value:
                value = date.fromisoformat(value["date"])
            if kind == "integer":
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError
                value = int(float(value))
            elif kind in ("number", "decimal"):
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
            elif kind == "boolean":
                if not isinstance(value, bool):
                    raise ValueError
            elif kind == "string":
                if not isinstance(value, str):
                    raise ValueError
            elif kind in ("datetime", "date"):
                if isinstance(value, str):
                    value = _when(value)
                if not isinstance(value, date):
                    raise ValueError
            else:
                raise ValueError
        except (TypeError, ValueError) as exc:
            raise FilterError(f"{json.dumps(value, default=str)} is not a value of "
                              f"{name!r} ({kind})") from exc
        return self.bind(value, PG_TYPES.get(kind))

    def expr(self, node: Any) -> sql.Composable:
        if isinstance(node, bool):
            return sql.SQL("TRUE" if node else "FALSE")
        if not isinstance(node, dict) or "op" not in node:
            raise FilterError(f"expected a predicate, got {json.dumps(node)}")
        op, args = node["op"], node.get("args", [])
        if op in ("and", "or"):
            return sql.SQL("(") + sql.SQL(f" {op.upper()} ").join(
                self.expr(a) for a in args) + sql.SQL(")")
        if op == "not":
            return sql.SQL("NOT ({})").format(self.expr(args[0]))
        if op == "isNull":
            column, _ = self.prop(args[0])
            return sql.SQL("{} IS NULL").format(column)
        if op in _COMPARE:
            left, right = args
            if isinstance(right, dict) and "property" in right and not (
                    isinstance(left, dict) and "property" in left):
                left, right = right, left  # 3 < height reads as height > 3
                op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)
            column, kind = self.prop(left)
            if isinstance(right, dict) and "property" in right:
                other, other_kind = self.prop(right)
                if other_kind != kind:
                    raise FilterError(f"cannot compare {kind} with {other_kind}")
                return sql.SQL("{} {} {}").format(column, sql.SQL(_COMPARE[op]), other)
            name = left["property"]
            return sql.SQL("{} {} {}").format(column, sql.SQL(_COMPARE[op]),
                                              self.literal(right, kind, name))
        if op == "like":
            column, kind = self.prop(args[0])
            if kind != "string" or not isinstance(args[1], str):
                raise FilterError("LIKE compares a string property with a pattern")
            return sql.SQL("{} LIKE {}").format(column, self.bind(args[1]))
        if op == "between":
            column, kind = self.prop(args[0])
            name = args[0]["property"]
            return sql.SQL("{} BETWEEN {} AND {}").format(
                column, self.literal(args[1], kind, name), self.literal(args[2], kind, name))
        if op == "in":
            column, kind = self.prop(args[0])
            if not isinstance(args[1], list) or not args[1]:
                raise FilterError("IN needs a non-empty list")
            name = args[0]["property"]
            return sql.SQL("{} IN ({})").format(column, sql.SQL(", ").join(
                self.literal(v, kind, name) for v in args[1]))
        if op in _SPATIAL:
            return self.spatial(op, args)
        if op.startswith("t_"):
            return self.temporal(op, args)
        raise FilterError(f"operator {op!r} is not supported")

    def spatial(self, op: str, args: list) -> sql.Composable:
        a, b = args
        if isinstance(b, dict) and "property" in b:
            a, b = b, a
            # Swapping the operands of within/contains swaps their meaning.
            op = {"s_within": "s_contains", "s_contains": "s_within"}.get(op, op)
        column, kind = self.prop(a)
        if kind != "geometry":
            raise FilterError(f"{op} needs the geometry property, got {a['property']!r}")
        if isinstance(b, dict) and "bbox" in b:
            box = b["bbox"]
            if len(box) == 6:
                box = [box[0], box[1], box[3], box[4]]
            if len(box) != 4:
                raise FilterError("BBOX needs 4 (or 6) numbers")
            shape = sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 4326)").format(
                *(self.bind(float(v)) for v in box))
        elif isinstance(b, dict) and "type" in b:
            shape = sql.SQL("ST_SetSRID(ST_GeomFromGeoJSON({}), 4326)").format(
                self.bind(json.dumps(b)))
        else:
            raise FilterError(f"{op} needs a geometry or BBOX literal")
        return sql.SQL("{}({}, {})").format(sql.SQL(_SPATIAL[op]), column, shape)

    def temporal(self, op: str, args: list) -> sql.Composable:
        column, kind = self.prop(args[0])
        if kind not in ("datetime", "date"):
            raise FilterError(f"{op} needs a date or time property, got "
                              f"{args[0]['property']!r}")
        name, value = args[0]["property"], args[1]
        if isinstance(value, dict) and "interval" in value:
            start, end = value["interval"]
            lo = None if start == ".." else self.literal({"timestamp": _text(start)}, kind, name)
            hi = None if end == ".." else self.literal({"timestamp": _text(end)}, kind, name)
            if op == "t_intersects":
                parts = [sql.SQL("{} >= {}").format(column, lo) if lo else None,
                         sql.SQL("{} <= {}").format(column, hi) if hi else None]
            elif op == "t_during":
                parts = [sql.SQL("{} > {}").format(column, lo) if lo else None,
                         sql.SQL("{} < {}").format(column, hi) if hi else None]
            elif op == "t_disjoint":
                inside = [sql.SQL("{} >= {}").format(column, lo) if lo else None,
                          sql.SQL("{} <= {}").format(column, hi) if hi else None]
                kept = [p for p in inside if p is not None] or [sql.SQL("TRUE")]
                return sql.SQL("{} IS NOT NULL AND NOT ({})").format(
                    column, sql.SQL(" AND ").join(kept))
            else:
                raise FilterError(f"{op} with an interval is not supported")
            kept = [p for p in parts if p is not None] or [sql.SQL("{} IS NOT NULL").format(
                column)]
            return sql.SQL("(") + sql.SQL(" AND ").join(kept) + sql.SQL(")")
        operators = {"t_after": ">", "t_before": "<", "t_equals": "=", "t_intersects": "=",
                     "t_disjoint": "<>"}
        if op not in operators:
            raise FilterError(f"{op} is not supported for instants")
        return sql.SQL("{} {} {}").format(column, sql.SQL(operators[op]),
                                          self.literal(value, kind, name))


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("timestamp") or value.get("date") or ""
    return str(value)


def _when(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def to_sql(tree: dict[str, Any], layer: Layer,
           prefix: str = "f") -> tuple[sql.Composable, dict[str, object]]:
    """A WHERE clause for the layer's table (alias ``t``) and its parameters, named
    ``prefix`` + a number so that two filters can share one statement."""
    translator = _Translator(queryables(layer), prefix)
    clause = translator.expr(tree)
    return clause, translator.params

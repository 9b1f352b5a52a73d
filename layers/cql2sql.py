"""CQL2 (parsed by the ``cql2`` library into CQL2-JSON) to parameterized PostgreSQL.

Properties must be the layer's queryables; every literal is converted to its property's
type here and bound as a parameter, so a malformed or ill-typed filter is a clear error
before any SQL runs, and no value ever becomes SQL text.

A filter's cost is bounded before it is parsed: at most ``MAX_CHARS`` characters and
``MAX_DEPTH`` levels of nesting (in either encoding: the parser recurses, and a deep
enough filter would take the process down), and at most ``MAX_VERTICES`` vertices in its
geometries; more is ``TooCostly``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import cql2
import shapely
from psycopg import sql

from layers.catalog import PG_TYPES, Layer
from layers.errors import Invalid, TooCostly
from layers.where import lonlat_boxes

GEOMETRY = "geometry"
INT64 = (-(2 ** 63), 2 ** 63 - 1)
SYSTEM_TIMES = ("_produced_at", "_ingested_at", "_updated_at")
_COMPARE = {"=": "=", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_SPATIAL = {"s_intersects": "ST_Intersects", "s_equals": "ST_Equals",
            "s_disjoint": "ST_Disjoint", "s_touches": "ST_Touches", "s_within": "ST_Within",
            "s_overlaps": "ST_Overlaps", "s_crosses": "ST_Crosses", "s_contains": "ST_Contains"}


# S_DWITHIN's units, in metres, and the farthest it looks.
_UNITS = {"meters": 1.0, "metres": 1.0, "m": 1.0, "kilometers": 1000.0, "kilometres": 1000.0,
          "km": 1000.0, "feet": 0.3048, "ft": 0.3048, "miles": 1609.344,
          "nautical miles": 1852.0}
MAX_DISTANCE_M = 100_000.0


@dataclass(frozen=True)
class FilterCrs:
    """The CRS of a filter's geometry literals (``filter-crs``)."""

    srid: int = 4326
    lat_first: bool = False


LONLAT = FilterCrs()


class FilterError(Invalid):
    """The filter cannot be run; the message says why."""


MAX_CHARS = 32_000
MAX_DEPTH = 20
MAX_VERTICES = 1_000


def _depth(text: str) -> int:
    """How deep brackets nest in ``text``, outside quoted strings (CQL2 text quotes with
    ', doubling it to escape; JSON with ", escaping with a backslash)."""
    deepest = depth = 0
    quote: str | None = None
    escaped = False
    for ch in text:
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def _vertices(node: Any) -> int:
    """Vertices in the geometry literals of a CQL2-JSON tree."""
    count, stack = 0, [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if "coordinates" in n:
                count += _positions(n["coordinates"])
            else:
                stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return count


def _positions(coords: Any) -> int:
    if isinstance(coords, list) and coords and all(isinstance(c, int | float) for c in coords):
        return 1
    return sum(_positions(c) for c in coords) if isinstance(coords, list) else 0


def check_cost(text: str, what: str = "filter") -> None:
    """TooCostly unless ``text`` is within the bounds a filter may have."""
    if len(text) > MAX_CHARS:
        raise TooCostly(f"{what} is {len(text)} characters long; at most {MAX_CHARS} are "
                        "taken (a long list of values or a detailed shape: simplify it)")
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise TooCostly(f"{what} nests {depth} levels deep; at most {MAX_DEPTH} are taken")


def queryables(layer: Layer) -> dict[str, str]:
    """Queryable name -> dictionary type (``geometry`` for the geometry)."""
    out = {f.name: f.type for f in layer.fields}
    out.update({name: "datetime" for name in SYSTEM_TIMES})
    out[GEOMETRY] = "geometry"
    return out


def _quote_underscored(text: str) -> str:
    """Quote the names that start with ``_`` (``_produced_at``, as the queryables list them):
    CQL2 text allows them unquoted, the parser only quoted. Text in quotes is left alone."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":  # a string or a quoted name, with doubled quotes inside
            j = i + 1
            while j < n and not (text[j] == c and (j + 1 >= n or text[j + 1] != c)):
                j += 2 if text[j] == c else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif c == "_" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append(f'"{text[i:j]}"')
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse(text: str, lang: str) -> dict[str, Any]:
    """CQL2 text or JSON to the CQL2-JSON tree, within the bounds of ``check_cost``."""
    if lang not in ("cql2-text", "cql2-json"):
        raise FilterError(f"filter-lang {lang!r} is not supported; use cql2-text or "
                          "cql2-json")
    check_cost(text)
    try:
        if lang == "cql2-text":
            tree = cql2.parse_text(_quote_underscored(text)).to_json()
        else:
            tree = cql2.parse_json(text).to_json()
    except Exception as exc:  # the parser's own errors carry the position
        raise FilterError(f"filter is not valid {lang}: {str(exc).strip()}") from exc
    vertices = _vertices(tree)
    if vertices > MAX_VERTICES:
        raise TooCostly(f"filter's geometries have {vertices} vertices; at most "
                        f"{MAX_VERTICES} are taken (simplify the shape)")
    return tree


def text_of(tree: dict[str, Any]) -> str:
    """CQL2-JSON as CQL2 text (what a restriction keeps), written by the ``cql2`` library."""
    return cql2.Expr(tree).to_text()


class _Translator:
    def __init__(self, types: dict[str, str], prefix: str,
                 columns: dict[str, sql.Composable] | None = None,
                 crs: FilterCrs = LONLAT) -> None:
        self.types = types
        self.prefix = prefix
        self.columns = columns or {}
        self.crs = crs
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
        if name in self.columns:
            return self.columns[name], kind
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
                if isinstance(value, bool):
                    raise ValueError
                if not isinstance(value, int):
                    number = float(value)
                    if not math.isfinite(number) or number != int(number):
                        raise ValueError
                    value = int(number)
                if not INT64[0] <= value <= INT64[1]:
                    raise ValueError
            elif kind in ("number", "decimal"):
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError
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
        if op in _SPATIAL or str(op).lower() in ("s_dwithin", "dwithin"):
            return self.spatial(str(op).lower(), args)
        if op.startswith("t_"):
            return self.temporal(op, args)
        raise FilterError(f"operator {op!r} is not supported")

    def shape(self, op: str, b: Any) -> sql.Composable:
        """A geometry or BBOX literal, in the filter's CRS, as lon/lat SQL."""
        if isinstance(b, dict) and "bbox" in b:
            box = b["bbox"]
            if len(box) == 6:
                box = [box[0], box[1], box[3], box[4]]
            if len(box) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                        and math.isfinite(v) for v in box):
                raise FilterError("BBOX needs 4 (or 6) finite numbers")
            if self.crs.lat_first:
                box = [box[1], box[0], box[3], box[2]]
            if box[1] > box[3]:
                raise FilterError("BBOX has its south above its north")
            lonlat = self.crs.srid != 3857
            parts = [self.to_lonlat(sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, {})").format(
                *(self.bind(float(v)) for v in part), sql.Literal(self.crs.srid)))
                for part in (lonlat_boxes(tuple(box)) if lonlat else [tuple(box)])]
            # West above east: the box across the antimeridian, as its two parts.
            return parts[0] if len(parts) == 1 else sql.SQL("ST_Collect({}, {})").format(*parts)
        if isinstance(b, dict) and "type" in b:
            try:
                shapely.geometry.shape(b)
            except (AttributeError, KeyError, TypeError, ValueError, IndexError,
                    shapely.errors.GEOSException) as exc:
                raise FilterError(f"{op}: the geometry is not GeoJSON ({exc})") from exc
            geom: sql.Composable = sql.SQL("ST_SetSRID(ST_GeomFromGeoJSON({}), {})").format(
                self.bind(json.dumps(b)), sql.Literal(self.crs.srid))
            if self.crs.lat_first:
                geom = sql.SQL("ST_FlipCoordinates({})").format(geom)
            return self.to_lonlat(geom)
        raise FilterError(f"{op} needs a geometry or BBOX literal")

    def to_lonlat(self, geom: sql.Composable) -> sql.Composable:
        if self.crs.srid == 4326:
            return geom
        if self.crs.srid == 4490:  # the same lon/lat, to the millimetre
            return sql.SQL("ST_SetSRID({}, 4326)").format(geom)
        return sql.SQL("ST_Transform({}, 4326)").format(geom)

    def spatial(self, op: str, args: list) -> sql.Composable:
        if op in ("s_dwithin", "dwithin"):
            return self.dwithin(args)
        a, b = args
        if isinstance(b, dict) and "property" in b:
            a, b = b, a
            # Swapping the operands of within/contains swaps their meaning.
            op = {"s_within": "s_contains", "s_contains": "s_within"}.get(op, op)
        column, kind = self.prop(a)
        if kind != "geometry":
            raise FilterError(f"{op} needs the geometry property, got {a['property']!r}")
        return sql.SQL("{}({}, {})").format(sql.SQL(_SPATIAL[op]), column, self.shape(op, b))

    def dwithin(self, args: list) -> sql.Composable:
        """S_DWITHIN(geometry, shape, distance, units): within a distance on the ellipsoid."""
        if len(args) not in (3, 4):
            raise FilterError("S_DWITHIN takes a geometry property, a geometry, a distance "
                              "and its units")
        a, b, distance = args[:3]
        if isinstance(b, dict) and "property" in b:
            a, b = b, a
        column, kind = self.prop(a)
        if kind != "geometry":
            raise FilterError("S_DWITHIN needs the geometry property")
        unit = args[3] if len(args) == 4 else "meters"
        unit = unit.get("property", unit) if isinstance(unit, dict) else unit
        factor = _UNITS.get(str(unit).lower())
        if factor is None:
            raise FilterError(f"S_DWITHIN: unknown units {unit!r}; use one of "
                              + ", ".join(_UNITS))
        if isinstance(distance, bool) or not isinstance(distance, int | float) \
                or not math.isfinite(distance) or distance < 0:
            raise FilterError("S_DWITHIN: the distance is a number, 0 or more")
        metres = float(distance) * factor
        if metres > MAX_DISTANCE_M:
            raise TooCostly(f"S_DWITHIN: at most {MAX_DISTANCE_M // 1000:.0f} km")
        shape = self.shape("S_DWITHIN", b)
        # The index finds candidates in a box grown by the distance (in degrees, at the
        # worst latitude the shape reaches), and in that box moved a turn east and west, for
        # a box across the antimeridian; the ellipsoid settles them.
        grow = sql.SQL("{m} / 111320.0 / greatest(cos(radians(least(89.0, greatest("
                       "abs(ST_YMin({s})), abs(ST_YMax({s}))) + {m} / 111320.0))), 0.01)"
                       ).format(m=self.bind(metres), s=shape)
        box = sql.SQL("ST_Expand({}, {})").format(shape, grow)
        return sql.SQL("(({c} && {b} OR {c} && ST_Translate({b}, 360, 0)"
                       " OR {c} && ST_Translate({b}, -360, 0))"
                       " AND ST_DWithin({c}::geography, {s}::geography, {m}))").format(
                           c=column, b=box, s=shape, m=self.bind(metres))
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


def to_sql(tree: dict[str, Any], layer: Layer | None, prefix: str = "f", *,
           types: dict[str, str] | None = None,
           columns: dict[str, sql.Composable] | None = None, crs: FilterCrs = LONLAT
           ) -> tuple[sql.Composable, dict[str, object]]:
    """A WHERE clause for the layer's table (alias ``t``) and its parameters, named
    ``prefix`` + a number so that two filters can share one statement. Another table's
    queryables are given as ``types`` (name -> dictionary type) and ``columns`` (name ->
    its SQL)."""
    if types is None:
        assert layer is not None
        types = queryables(layer)
    translator = _Translator(types, prefix, columns, crs)
    try:
        clause = translator.expr(tree)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        if isinstance(exc, FilterError):
            raise
        # A tree of the wrong shape: an operator with too few or too many arguments, a
        # non-numeric box, a list where a value belongs.
        raise FilterError(f"filter is malformed: {_shape_error(exc)}") from exc
    return clause, translator.params


def _shape_error(exc: Exception) -> str:
    if isinstance(exc, ValueError) and "unpack" in str(exc):
        return "an operator has the wrong number of arguments"
    if isinstance(exc, KeyError | IndexError):
        return "an operator lacks an argument"
    return "an argument is not of the kind its operator takes"

"""MapLibre style expressions read for one image: at its zoom, for the features' values.

A style's values are expressions of the zoom and of each feature's properties. An image is
drawn at one zoom, so the zoom is folded in here, leaving what depends on the feature; that
part becomes Mapnik rules: ``cases`` splits a value into (condition, constant) pairs, the
conditions as Mapnik filter expressions, so categories (``match``), classes (``step``) and
ramps (``interpolate`` on a field) draw as the viewer draws them. The labels Skia draws
(``mapimages.labels``) evaluate the rest per feature instead (``evaluate`` with its
properties).
"""

from __future__ import annotations

import math
from typing import Any

# Comparisons, in MapLibre's and Mapnik's spelling.
_COMPARE = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# MapLibre geometry types, as Mapnik names them.
_GEOMETRY = {"Point": "point", "LineString": "linestring", "Polygon": "polygon"}
# The most rules one value splits into (a ramp on a field is cut into this many classes).
MOST_CASES = 64
RAMP_STEPS = 8


# The expression operators this reading knows; a list led by anything else is a value
# (a font stack, a dash pattern, an offset).
OPERATORS = frozenset({
    "get", "has", "geometry-type", "id", "properties", "feature-state", "zoom", "literal",
    "interpolate", "interpolate-hcl", "interpolate-lab", "step", "coalesce", "case", "match",
    "all", "any", "none", "!", "+", "*", "-", "/", "min", "max", "to-string", "string",
    "to-number", "number", "to-color", "to-boolean", "boolean", "concat", "upcase",
    "downcase", "rgb", "rgba", "format", "in", "!in", "!has", *_COMPARE})


def constant(v: Any) -> Any:
    """``v`` marked as a value where it is a list that is not an expression."""
    if isinstance(v, list) and not (v and isinstance(v[0], str) and v[0] in OPERATORS):
        return ["literal", v]
    return v


class Unsupported(ValueError):
    """An expression this reading does not know; the style layer is not drawn."""


class _Feature(Exception):
    """Raised while folding: the value depends on the feature."""


def fold(e: Any, zoom: float) -> Any:
    """``e`` with every part that depends only on the zoom evaluated; a part that reads
    the feature stays an expression."""
    try:
        return evaluate(e, zoom)
    except _Feature:
        pass
    if not isinstance(e, list) or not e or not isinstance(e[0], str):
        return e
    op = e[0]
    if op in ("interpolate", "interpolate-hcl", "interpolate-lab") and e[2] == ["zoom"]:
        # A ramp over the zoom whose outputs read the feature: the two stops around it.
        stops = e[3:]
        value = _interpolate_outputs(stops, zoom)
        return fold(value, zoom)
    if op == "step" and e[1] == ["zoom"]:
        return fold(_step_output(e, zoom), zoom)
    if op == "literal" or op not in OPERATORS:
        return e
    if op == "match":  # its labels are values, not expressions
        return [op, fold(e[1], zoom), *(x if i % 2 == 0 else fold(x, zoom)
                                        for i, x in enumerate(e[2:-1])), fold(e[-1], zoom)]
    return [op, *(fold(x, zoom) for x in e[1:])]


def evaluate(e: Any, zoom: float, props: dict[str, Any] | None = None) -> Any:
    """The value of ``e`` at ``zoom`` for a feature of properties ``props`` (its geometry's
    type as ``$type``); without them, raises ``_Feature`` if it reads the feature."""
    if not isinstance(e, list):
        return e
    if not e or not isinstance(e[0], str) or e[0] not in OPERATORS:
        return e  # an array value
    op, args = e[0], e[1:]
    if op in ("get", "has") and isinstance(args[0], str) and args[0].startswith("_"):
        # OneMap's own tile properties (``_count`` of a cell): an image's rows are the
        # features themselves, one each
        return None if op == "get" else False
    if op in _FEATURE:
        if props is None:
            raise _Feature
        return _feature(op, args, props)
    if op == "zoom":
        return zoom
    if op == "literal":
        return args[0]
    if op in ("interpolate", "interpolate-hcl", "interpolate-lab"):
        x = evaluate(args[1], zoom, props)
        return _interpolate(args[0], float(x), [evaluate(v, zoom, props) for v in args[2:]])
    if op == "step":
        x = evaluate(args[0], zoom, props)
        out = evaluate(args[1], zoom, props)
        for stop, value in zip(args[2::2], args[3::2], strict=False):
            if x >= stop:
                out = evaluate(value, zoom, props)
        return out
    if op == "coalesce":
        for a in args:
            v = evaluate(a, zoom, props)
            if v is not None:
                return v
        return None
    if op == "case":
        for cond, value in zip(args[:-1:2], args[1::2], strict=False):
            if evaluate(cond, zoom, props):
                return evaluate(value, zoom, props)
        return evaluate(args[-1], zoom, props)
    if op == "match":
        x = evaluate(args[0], zoom, props)
        for labels, value in zip(args[1:-1:2], args[2::2], strict=False):
            if x in (labels if isinstance(labels, list) else [labels]):
                return evaluate(value, zoom, props)
        return evaluate(args[-1], zoom, props)
    if op in _COMPARE:
        a, b = evaluate(args[0], zoom, props), evaluate(args[1], zoom, props)
        return _compare(op, a, b)
    if op == "all":
        return all(evaluate(a, zoom, props) for a in args)
    if op == "any":
        return any(evaluate(a, zoom, props) for a in args)
    if op == "none":
        return not any(evaluate(a, zoom, props) for a in args)
    if op == "format":
        return "".join(str(evaluate(a, zoom, props)) for a in args if not isinstance(a, dict))
    if op == "!":
        return not evaluate(args[0], zoom, props)
    if op in ("+", "*"):
        vals = [float(evaluate(a, zoom, props)) for a in args]
        return sum(vals) if op == "+" else math.prod(vals)
    if op == "-":
        vals = [float(evaluate(a, zoom, props)) for a in args]
        return -vals[0] if len(vals) == 1 else vals[0] - vals[1]
    if op == "/":
        return float(evaluate(args[0], zoom, props)) / float(evaluate(args[1], zoom, props))
    if op in ("min", "max"):
        vals = [float(evaluate(a, zoom, props)) for a in args]
        return min(vals) if op == "min" else max(vals)
    if op in ("to-string", "string"):
        return str(evaluate(args[0], zoom, props))
    if op in ("to-number", "number"):
        return float(evaluate(args[0], zoom, props))
    if op in ("to-color", "to-boolean", "boolean"):
        return evaluate(args[0], zoom, props)
    if op == "concat":
        return "".join(str(evaluate(a, zoom, props)) for a in args)
    if op in ("upcase", "downcase"):
        s = str(evaluate(args[0], zoom, props))
        return s.upper() if op == "upcase" else s.lower()
    if op in ("rgb", "rgba"):
        vals = [evaluate(a, zoom, props) for a in args]
        return f"rgba({vals[0]:g},{vals[1]:g},{vals[2]:g},{vals[3] if len(vals) > 3 else 1:g})"
    raise Unsupported(f"the expression {op!r}")


_FEATURE = frozenset({"get", "has", "!has", "geometry-type", "id", "properties",
                      "feature-state"})


def _feature(op: str, args: list[Any], props: dict[str, Any]) -> Any:
    if op == "geometry-type":
        return props.get("$type")
    if op == "id":
        return props.get("$id")
    if op == "properties":
        return {k: v for k, v in props.items() if not k.startswith("$")}
    if op == "feature-state":
        return None
    if len(args) != 1 or not isinstance(args[0], str):
        raise Unsupported(f"the expression {op!r} of an object")
    if op == "get":
        return props.get(args[0])
    found = props.get(args[0]) is not None
    return found if op == "has" else not found


class PerFeature:
    """A style layer's values at one zoom (folded): those that depend on the feature
    apart (``dynamic``) from those that do not (``fixed``), and ``at`` a feature all of
    them; ``reads``: the fields the dynamic ones read (features that agree on them get
    the same values), None if they read the feature otherwise."""

    def __init__(self, values: dict[str, Any], zoom: float) -> None:
        self.zoom = zoom
        self.dynamic = {k: v for k, v in values.items() if isinstance(v, list) and v
                        and isinstance(v[0], str) and v[0] in OPERATORS}
        self.fixed = {k: v for k, v in values.items() if k not in self.dynamic}
        read = [fields_read(v) for v in self.dynamic.values()]
        self.reads = None if None in read else tuple(sorted(set().union(*read)))

    def at(self, feature: dict[str, Any]) -> dict[str, Any]:
        if not self.dynamic:
            return self.fixed
        return {**self.fixed, **{k: evaluate(v, self.zoom, feature)
                                 for k, v in self.dynamic.items()}}


def fields_read(e: Any) -> frozenset[str] | None:
    """The feature's fields ``e`` reads (by ``get``, ``has``, ``!has``, ``geometry-type``
    as ``$type``): its value is the same for features that agree on them. None if it
    reads the feature otherwise (its id, all its properties)."""
    if not isinstance(e, list) or not e or not isinstance(e[0], str) or e[0] == "literal":
        return frozenset()
    op = e[0]
    if op == "geometry-type":
        return frozenset({"$type"})
    if op in ("get", "has", "!has"):
        if len(e) != 2 or not isinstance(e[1], str):
            return None
        return frozenset({e[1]})
    if op in _FEATURE:
        return None
    out: set[str] = set()
    for i, x in enumerate(e[1:], 1):
        if op == "match" and 2 <= i < len(e) - 1 and i % 2 == 0:
            continue  # a match's labels are values, not expressions
        found = fields_read(x)
        if found is None:
            return None
        out |= found
    return frozenset(out)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if a is None or b is None:
        return False
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _curve(kind: list[Any], x: float, x0: float, x1: float) -> float:
    """How far ``x`` is from ``x0`` to ``x1`` (0..1) on the interpolation's curve."""
    if x1 == x0:
        return 0.0
    t = (x - x0) / (x1 - x0)
    if kind and kind[0] == "exponential" and kind[1] != 1:
        base = float(kind[1])
        return (base ** (x - x0) - 1) / (base ** (x1 - x0) - 1)
    return t  # linear, and cubic-bezier read as linear


def _interpolate(kind: list[Any], x: float, stops: list[Any]) -> Any:
    inputs, outputs = stops[::2], stops[1::2]
    if x <= inputs[0]:
        return outputs[0]
    if x >= inputs[-1]:
        return outputs[-1]
    for i in range(len(inputs) - 1):
        if inputs[i] <= x <= inputs[i + 1]:
            t = _curve(kind, x, float(inputs[i]), float(inputs[i + 1]))
            return _mix(outputs[i], outputs[i + 1], t)
    return outputs[-1]


def _interpolate_outputs(stops: list[Any], zoom: float) -> Any:
    inputs, outputs = stops[::2], stops[1::2]
    best = outputs[0]
    for i, x in enumerate(inputs):
        if zoom >= x:
            best = outputs[i]
    return best


def _step_output(e: list[Any], zoom: float) -> Any:
    out = e[2]
    for stop, value in zip(e[3::2], e[4::2], strict=False):
        if zoom >= stop:
            out = value
    return out


def _mix(a: Any, b: Any, t: float) -> Any:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + (b - a) * t
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [_mix(x, y, t) for x, y in zip(a, b, strict=True)]
    ca, cb = rgba(a), rgba(b)
    if ca is not None and cb is not None:
        m = [x + (y - x) * t for x, y in zip(ca, cb, strict=True)]
        return f"rgba({m[0]:.0f},{m[1]:.0f},{m[2]:.0f},{m[3]:.3f})"
    return a if t < 0.5 else b


def rgba(colour: Any) -> tuple[float, float, float, float] | None:
    """A CSS hex or rgb()/rgba() colour's channels (0-255, alpha 0-1); None for others."""
    if not isinstance(colour, str):
        return None
    c = colour.strip().lower()
    if c.startswith("#"):
        h = c[1:]
        if len(h) in (3, 4):
            h = "".join(ch * 2 for ch in h)
        if len(h) not in (6, 8):
            return None
        try:
            vals = [int(h[i:i + 2], 16) for i in range(0, len(h), 2)]
        except ValueError:
            return None
        return (vals[0], vals[1], vals[2], vals[3] / 255 if len(vals) == 4 else 1.0)
    if c.startswith(("rgb(", "rgba(")) and c.endswith(")"):
        parts = [p.strip() for p in c[c.index("(") + 1:-1].split(",")]
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            return None
        if len(nums) in (3, 4):
            return (nums[0], nums[1], nums[2], nums[3] if len(nums) == 4 else 1.0)
    return None


# ---- what depends on the feature, as Mapnik conditions --------------------------------


def _name(field: Any) -> str:
    if not isinstance(field, str) or not field or any(c in field for c in "[]'\\"):
        raise Unsupported(f"the field name {field!r}")
    return f"[{field}]"


def literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return f"{v:g}" if isinstance(v, float) else str(v)
    if v is None:
        return "null"
    s = str(v).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{s}'"


def _operand(e: Any) -> str:
    if isinstance(e, list) and len(e) == 2 and e[0] == "get":
        return _name(e[1])
    if isinstance(e, list) and e == ["geometry-type"]:
        return "[mapnik::geometry_type]"
    if isinstance(e, list):
        raise Unsupported(f"the operand {e!r}")
    return literal(e)


def condition(f: Any, zoom: float) -> str | None:
    """A MapLibre filter (expression or legacy form) as a Mapnik filter; None when it holds
    for every feature, ``"false"`` when for none."""
    f = fold(f, zoom)
    if f is True or f is None:
        return None
    if f is False:
        return "false"
    if not isinstance(f, list) or not f:
        raise Unsupported(f"the filter {f!r}")
    op, args = f[0], f[1:]
    if op in ("all", "any"):
        parts = [condition(a, zoom) for a in args]
        if op == "all":
            if "false" in parts:
                return "false"
            parts = [p for p in parts if p is not None]
            return " and ".join(f"({p})" for p in parts) if parts else None
        if None in parts:
            return None
        parts = [p for p in parts if p != "false"]
        return " or ".join(f"({p})" for p in parts) if parts else "false"
    if op == "none":
        inner = condition(["any", *args], zoom)
        return "false" if inner is None else None if inner == "false" else f"not ({inner})"
    if op == "!":
        inner = condition(args[0], zoom)
        return "false" if inner is None else None if inner == "false" else f"not ({inner})"
    if op in ("has", "!has"):
        key = args[0][1] if isinstance(args[0], list) and args[0][:1] == ["get"] else args[0]
        return f"{_name(key)} {'!=' if op == 'has' else '='} null"
    if op in _COMPARE:
        a, b = args[0], args[1]
        if isinstance(a, str) and not isinstance(b, list):  # the legacy form: a key
            a = ["geometry-type"] if a == "$type" else ["get", a]
        if a == ["geometry-type"] and b in _GEOMETRY:
            return f"[mapnik::geometry_type] {_COMPARE[op]} {_GEOMETRY[b]}"
        return f"{_operand(a)} {_COMPARE[op]} {_operand(b)}"
    if op in ("in", "!in") and args and isinstance(args[0], str):  # legacy
        key = ["geometry-type"] if args[0] == "$type" else ["get", args[0]]
        values = args[1:]
        inner = " or ".join(f"{_operand(key)} = {literal(_GEOMETRY.get(v, v))}"
                            if key != ["geometry-type"]
                            else f"[mapnik::geometry_type] = {_GEOMETRY.get(v, 'collection')}"
                            for v in values) or "false"
        return f"not ({inner})" if op == "!in" else inner
    if op == "in" and len(args) == 2 and isinstance(args[1], list) \
            and args[1][:1] == ["literal"]:
        key = _operand(args[0])
        return " or ".join(f"{key} = {literal(v)}" for v in args[1][1]) or "false"
    if op == "match":
        key = _operand(args[0])
        out: list[str] = []
        rest: list[str] = []
        for labels, value in zip(args[1:-1:2], args[2::2], strict=False):
            labels = labels if isinstance(labels, list) else [labels]
            test = " or ".join(f"{key} = {literal(v)}" for v in labels)
            if value is True:
                out.append(f"({test})")
            rest.append(f"({test})")
        if args[-1] is True:
            others = " or ".join(rest)
            out.append(f"not ({others})" if others else "true")
        return " or ".join(out) if out else "false"
    if op == "case":
        raise Unsupported("a case expression as a filter")
    raise Unsupported(f"the filter {op!r}")


def cases(value: Any, zoom: float) -> list[tuple[str | None, Any]]:
    """``value`` at ``zoom`` as (condition, constant) pairs that cover every feature: one
    pair ``(None, v)`` when it does not depend on the feature."""
    v = fold(value, zoom)
    if not isinstance(v, list) or not v or not isinstance(v[0], str) \
            or v[0] not in OPERATORS or v[0] == "literal":
        return [(None, v[1] if isinstance(v, list) and v[:1] == ["literal"] else v)]
    op, args = v[0], v[1:]
    out: list[tuple[str | None, Any]] = []
    if op == "match":
        key = _operand(args[0])
        seen: list[str] = []
        for labels, result in zip(args[1:-1:2], args[2::2], strict=False):
            labels = labels if isinstance(labels, list) else [labels]
            test = " or ".join(f"{key} = {literal(x)}" for x in labels)
            out += _within(test, cases(result, zoom))
            seen.append(f"({test})")
        out += _within(f"not ({' or '.join(seen)})" if seen else None, cases(args[-1], zoom))
    elif op == "step":
        key = _operand(args[0])
        bounds = args[2::2]
        outputs = [args[1], *args[3::2]]
        for i, result in enumerate(outputs):
            parts = ([f"{key} >= {literal(bounds[i - 1])}"] if i > 0 else []) + \
                    ([f"{key} < {literal(bounds[i])}"] if i < len(bounds) else [])
            if i == 0:  # the first class takes the features without a value too
                parts = [f"{parts[0]} or {key} = null"] if parts else []
            test = " and ".join(f"({p})" for p in parts) or None
            out += _within(test, cases(result, zoom))
    elif op in ("interpolate", "interpolate-hcl", "interpolate-lab"):
        out += _ramp(args, zoom)
    elif op == "case":
        prior: list[str] = []
        for cond, result in zip(args[:-1:2], args[1::2], strict=False):
            test = condition(cond, zoom)
            if test == "false":
                continue
            guard = " and ".join([f"not ({p})" for p in prior] + ([f"({test})"] if test
                                                                    else []))
            out += _within(guard or None, cases(result, zoom))
            if test is None:
                return _checked(out)
            prior.append(test)
        guard = " and ".join(f"not ({p})" for p in prior) or None
        out += _within(guard, cases(args[-1], zoom))
    elif op == "coalesce":
        prior = []
        for a in args:
            if isinstance(a, list) and len(a) == 2 and a[0] == "get":
                guard = " and ".join([f"{p} = null" for p in prior]
                                     + [f"{_name(a[1])} != null"])
                out.append((guard, ["get", a[1]]))
                prior.append(_name(a[1]))
            else:
                guard = " and ".join(f"{p} = null" for p in prior) or None
                out += _within(guard, cases(a, zoom))
                return _checked(out)
    elif op == "get":
        out.append((None, v))  # the feature's value itself (a label's text)
    elif op in ("to-string", "string") and isinstance(args[0], list) \
            and args[0][:1] == ["get"]:
        out.append((None, args[0]))
    else:
        raise Unsupported(f"the value {op!r} of a feature")
    return _checked(out)


def _ramp(args: list[Any], zoom: float) -> list[tuple[str | None, Any]]:
    """An interpolation over a feature's number, as classes between its stops, each drawn
    with the ramp's value at its middle."""
    kind, key = args[0], _operand(args[1])
    stops = args[2:]
    inputs, outputs = [float(x) for x in stops[::2]], [evaluate(x, zoom) for x in stops[1::2]]
    out: list[tuple[str | None, Any]] = [
        (f"{key} < {literal(inputs[0])} or {key} = null", outputs[0])]
    for i in range(len(inputs) - 1):
        lo, hi = inputs[i], inputs[i + 1]
        n = max(1, min(RAMP_STEPS, MOST_CASES // max(1, len(inputs))))
        for k in range(n):
            a, b = lo + (hi - lo) * k / n, lo + (hi - lo) * (k + 1) / n
            mid = _interpolate(kind, (a + b) / 2, [x for pair in zip(inputs, outputs,
                                                                    strict=True)
                                                   for x in pair])
            out.append((f"{key} >= {literal(a)} and {key} < {literal(b)}", mid))
    out.append((f"{key} >= {literal(inputs[-1])}", outputs[-1]))
    return out


def _within(test: str | None, inner: list[tuple[str | None, Any]]
            ) -> list[tuple[str | None, Any]]:
    out = []
    for cond, v in inner:
        both = [p for p in (test, cond) if p]
        out.append((" and ".join(f"({p})" for p in both) if both else None, v))
    return out


def _checked(out: list[tuple[str | None, Any]]) -> list[tuple[str | None, Any]]:
    if len(out) > MOST_CASES:
        raise Unsupported(f"a value of more than {MOST_CASES} cases")
    return out

"""A layer's legend, read from the same style that draws it: one entry per style layer,
and per category or class where a colour is chosen by a field (``match``, ``step``,
``interpolate`` on ``["get", field]``), named by the field."""

from __future__ import annotations

from typing import Any

from layers.catalog import Layer

COLOUR = {"fill": "fill-color", "line": "line-color", "circle": "circle-color",
          "symbol": "text-color", "fill-extrusion": "fill-extrusion-color",
          "heatmap": "heatmap-color"}
SYMBOL = {"fill": "polygon", "fill-extrusion": "polygon", "line": "line", "circle": "point",
          "symbol": "label", "heatmap": "point"}


def _field(expr: Any) -> str | None:
    if isinstance(expr, list) and len(expr) == 2 and expr[0] == "get":
        return expr[1]
    return None


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _swatches(value: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """(field, [{label, colour}]) for a colour chosen by a field; (None, [one]) else."""
    if isinstance(value, str):
        return None, [{"colour": value}]
    if not isinstance(value, list) or not value:
        return None, []
    op = value[0]
    if op == "match" and len(value) >= 4 and _field(value[1]):
        pairs = value[2:-1]
        items = []
        for labels, colour in zip(pairs[::2], pairs[1::2], strict=False):
            for label in labels if isinstance(labels, list) else [labels]:
                items.append({"label": _fmt(label), "value": label, "colour": colour})
        return _field(value[1]), [*items, {"label": "other", "colour": value[-1]}]
    if op == "step" and len(value) >= 3 and _field(value[1]):
        stops = value[3:]
        bounds = stops[::2]
        outs = [value[2], *stops[1::2]]
        items = []
        for i, colour in enumerate(outs):
            low = bounds[i - 1] if i > 0 else None
            high = bounds[i] if i < len(bounds) else None
            label = (f"< {_fmt(high)}" if low is None else f"≥ {_fmt(low)}" if high is None
                     else f"{_fmt(low)} – < {_fmt(high)}")
            items.append({"label": label, "min": low, "max": high, "colour": colour})
        return _field(value[1]), items
    if op == "interpolate" and len(value) >= 5 and _field(value[2]):
        stops = value[3:]
        return _field(value[2]), [{"label": _fmt(v), "value": v, "colour": c}
                                  for v, c in zip(stops[::2], stops[1::2], strict=False)]
    return None, []


def legend(layer: Layer, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``entries``: the layer's style layers as served to the caller (``style_layers``)."""
    out = []
    for entry in entries:
        kind = entry.get("type")
        if kind not in COLOUR or entry.get("id", "").endswith("-small"):
            continue  # the specks of too-small shapes are texture, not a legend entry
        if kind == "symbol" and "icon-image" not in (entry.get("layout") or {}):
            continue  # labels name features; they are not a legend entry
        field, items = _swatches((entry.get("paint") or {}).get(COLOUR[kind]))
        if kind == "line" and out and out[-1]["symbol"] == "polygon" \
                and out[-1]["items"] == items:
            continue  # the outline of the fill above it: one entry
        out.append({"id": entry["id"], "symbol": SYMBOL[kind],
                    **({"field": field} if field else {}),
                    "items": items or [{"colour": None}],
                    **({"minzoom": entry["minzoom"]} if "minzoom" in entry else {}),
                    **({"maxzoom": entry["maxzoom"]} if "maxzoom" in entry else {})})
    return {"layer": layer.id, "title": layer.title, "entries": out}

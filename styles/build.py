"""MapLibre style documents for a set of layers, from each layer's style in the catalog
(``styles.store``) or its default look.

A layer's default look follows its geometry, in a colour of its own (the same in every
style it appears in): points as circles sized by how many features a cell stands for,
lines by zoom, polygons filled and outlined. Whatever the style, a caller is never shown
what its limits hide: a paint or layout value that reads a field the caller may not see
(or sees masked) falls back to the value the expression gives without it, so neither the
map nor the style document nor the legend tells a hidden field's values.
"""

from __future__ import annotations

import zlib
from typing import Any

from layers.catalog import Layer
from layers.grids import fit_zoom

PALETTE = ["#e6550d", "#3182bd", "#31a354", "#756bb1", "#de2d26", "#636363", "#d6616b",
           "#8c6d31", "#17becf", "#bcbd22", "#e377c2", "#1f77b4"]
SOURCE = "onemap"
BACKGROUND = "#f4f1ea"
# The font stacks OneMap serves (scripts/map_assets.py): Noto Sans, with Noto Sans CJK SC
# for every Chinese character.
FONT = "Noto Sans Regular"
FONT_BOLD = "Noto Sans Bold"
# A field that names its feature, in the order a default label looks for one.
NAME_FIELDS = ("name", "name_zh", "name_fi", "name_en", "title", "label", "mc", "名称")
# Where a style document's glyphs and icons are, relative to OneMap's base URL.
GLYPHS = "/fonts/{fontstack}/{range}.pbf"
SPRITE = "/sprites/onemap"
# What a document says when it is made to be checked, not served.
CHECK_BASE = "https://onemap.invalid"


def colour_of(layer_id: str) -> str:
    """The layer's own colour, stable across styles and restarts."""
    return PALETTE[zlib.crc32(layer_id.encode()) % len(PALETTE)]


def _circles(layer_id: str, colour: str) -> dict[str, Any]:
    """Points, and the cells that stand for points too close to tell apart."""
    return {"id": layer_id, "type": "circle",
            "filter": ["==", ["geometry-type"], "Point"], "paint": {
                "circle-color": colour,
                "circle-radius": ["interpolate", ["linear"],
                                  ["coalesce", ["get", "_count"], 1], 1, 3.5, 100, 9],
                "circle-stroke-color": "#ffffff", "circle-stroke-width": 1}}


def _specks(layer_id: str, colour: str) -> dict[str, Any]:
    """Lines and shapes too small to draw at this zoom: a faint texture, not markers."""
    return {"id": layer_id, "type": "circle",
            "filter": ["==", ["geometry-type"], "Point"], "paint": {
                "circle-color": colour, "circle-opacity": 0.6,
                "circle-radius": ["interpolate", ["linear"],
                                  ["coalesce", ["get", "_count"], 1], 1, 1, 50, 2.5]}}


def name_field(layer: Layer) -> str | None:
    """The field that names the layer's features, if it has one."""
    names = {f.name for f in layer.fields if f.type == "string"}
    return next((n for n in NAME_FIELDS if n in names), None)


def _label(layer_id: str, field: str, kind: str) -> dict[str, Any]:
    """Labels from a field: along lines, under points, inside polygons."""
    layout: dict[str, Any] = {"text-field": ["get", field], "text-font": [FONT],
                              "text-size": 12 if kind == "Polygon" else 11,
                              "text-max-width": 8}
    if kind == "LineString":
        layout |= {"symbol-placement": "line", "text-rotation-alignment": "map"}
    elif kind == "Point":
        layout |= {"text-offset": [0, 0.8], "text-anchor": "top", "text-optional": True}
    return {"id": f"{layer_id}-label", "type": "symbol",
            "filter": ["has", field], "layout": layout,
            "paint": {"text-color": "#333333", "text-halo-color": "#ffffff",
                      "text-halo-width": 1.2}}


def default_layers(layer: Layer) -> list[dict[str, Any]]:
    """The layer's default look, made from its geometry type, with labels from a field that
    names its features."""
    colour = colour_of(layer.id)
    kind = (layer.geometry_type or "").removeprefix("Multi")
    if kind == "Point":
        drawn = [_circles(layer.id, colour)]
    elif kind == "LineString":
        drawn = [{"id": layer.id, "type": "line", "paint": {
            "line-color": colour,
            "line-width": ["interpolate", ["linear"], ["zoom"], 10, 0.5, 16, 3]}},
            _specks(f"{layer.id}-small", colour)]
    else:
        kind = "Polygon"
        drawn = [
            {"id": f"{layer.id}-fill", "type": "fill",
             "paint": {"fill-color": colour, "fill-opacity": 0.35}},
            {"id": f"{layer.id}-outline", "type": "line",
             "paint": {"line-color": colour, "line-width": 1}},
            _specks(f"{layer.id}-small", colour),
        ]
    field = name_field(layer)
    return drawn + ([_label(layer.id, field, kind)] if field else [])


def assets(base: str) -> dict[str, str]:
    """A style document's glyphs and sprite at OneMap ``base``."""
    return {"glyphs": base + GLYPHS, "sprite": base + SPRITE}


def fields_read(expr: Any) -> set[str]:
    """The feature properties an expression reads (``["get", name]``, ``["has", name]``)."""
    if not isinstance(expr, list) or not expr:
        return set()
    found = {expr[1]} if expr[0] in ("get", "has") and len(expr) == 2 \
        and isinstance(expr[1], str) else set()
    for part in expr[1:]:
        found |= fields_read(part)
    return found


def _without(expr: Any) -> Any:
    """What an expression gives when its input field is unknown: a match's or case's
    fallback, a step's first output, an interpolation's first output; else None."""
    if isinstance(expr, list) and expr:
        op = expr[0]
        if op in ("match", "case") and len(expr) >= 3:
            return expr[-1]
        if op == "step" and len(expr) >= 3:
            return expr[2]
        if op == "interpolate" and len(expr) >= 5:
            return expr[4]
    return None


def drawable(entries: list[dict[str, Any]], usable: set[str]) -> list[dict[str, Any]]:
    """``entries`` with every paint and layout value that reads a field outside ``usable``
    (the caller's visible, unmasked fields; ``_``-fields are OneMap's own) replaced."""
    out = []
    for entry in entries:
        entry = dict(entry)
        for part in ("paint", "layout"):
            props = dict(entry.get(part) or {})
            for name, value in list(props.items()):
                if any(not f.startswith("_") and f not in usable for f in fields_read(value)):
                    fallback = _without(value)
                    if fallback is None or fields_read(fallback) - usable:
                        del props[name]
                    else:
                        props[name] = fallback
            if part in entry:
                entry[part] = props
        out.append(entry)
    return out


def style_layers(layer: Layer, looks: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The layer's MapLibre layers with their source, as ``layer`` (as the caller sees it)
    may be drawn."""
    entries = looks.get(layer.id) or default_layers(layer)
    usable = {f.name for f in layer.fields}
    return [{**e, "source": SOURCE, "source-layer": layer.id}
            for e in drawable(entries, usable)]


def frame(style: dict[str, Any], layers: list[Layer]) -> None:
    """Centres ``style`` on the layers' extent, at the zoom that shows it whole."""
    extents = [ly.extent for ly in layers if ly.extent]
    if extents:
        e = (min(x[0] for x in extents), min(x[1] for x in extents),
             max(x[2] for x in extents), max(x[3] for x in extents))
        style["center"] = [(e[0] + e[2]) / 2, (e[1] + e[3]) / 2]
        style["zoom"] = fit_zoom(e, min(ly.minzoom for ly in layers),
                                 max(ly.maxzoom for ly in layers))
        style.setdefault("metadata", {})["onemap:bounds"] = list(e)


def style_doc(layers: list[Layer], tilejson_url: str,
              looks: dict[str, list[dict[str, Any]]],
              links: dict[str, str] | None = None) -> dict[str, Any]:
    """A MapLibre style (v8) showing ``layers`` from one vector source; ``looks`` holds the
    stored styles by layer id (a layer missing from it gets its default look); ``links``
    the glyphs and sprite URLs (``assets``)."""
    style: dict[str, Any] = {
        "version": 8,
        "name": ", ".join(ly.title for ly in layers),
        **(links or assets(CHECK_BASE)),
        "sources": {SOURCE: {"type": "vector", "url": tilejson_url}},
        "layers": [{"id": "background", "type": "background",
                    "paint": {"background-color": BACKGROUND}}],
        "metadata": {"onemap:layers": [ly.id for ly in layers]},
    }
    frame(style, layers)
    for layer in layers:
        style["layers"] += style_layers(layer, looks)
    return style

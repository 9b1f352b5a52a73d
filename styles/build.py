"""MapLibre style documents for a set of layers.

A layer looks as its geometry type suggests, in a colour of its own, unless a file
``styles/<layer id>.json`` gives its MapLibre layers (``source`` and ``source-layer``
are filled in here).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from layers.catalog import Layer
from layers.grids import fit_zoom

PALETTE = ["#e6550d", "#3182bd", "#31a354", "#756bb1", "#de2d26", "#636363", "#d6616b",
           "#8c6d31"]
SOURCE = "onemap"


def _custom(layer: Layer) -> list[dict[str, Any]] | None:
    entry = resources.files("styles").joinpath(f"{layer.id}.json")
    if not entry.is_file():
        return None
    return json.loads(entry.read_text(encoding="utf-8"))


def _circles(base: dict[str, Any], layer_id: str, colour: str) -> dict[str, Any]:
    """Points, and the cells that stand for points too close to tell apart."""
    return {**base, "id": layer_id, "type": "circle",
            "filter": ["==", ["geometry-type"], "Point"], "paint": {
                "circle-color": colour,
                "circle-radius": ["interpolate", ["linear"],
                                  ["coalesce", ["get", "_count"], 1], 1, 3.5, 100, 9],
                "circle-stroke-color": "#ffffff", "circle-stroke-width": 1}}


def _specks(base: dict[str, Any], layer_id: str, colour: str) -> dict[str, Any]:
    """Lines and shapes too small to draw at this zoom: a faint texture, not markers."""
    return {**base, "id": layer_id, "type": "circle",
            "filter": ["==", ["geometry-type"], "Point"], "paint": {
                "circle-color": colour, "circle-opacity": 0.6,
                "circle-radius": ["interpolate", ["linear"],
                                  ["coalesce", ["get", "_count"], 1], 1, 1, 50, 2.5]}}


def _default(layer: Layer, colour: str) -> list[dict[str, Any]]:
    kind = (layer.geometry_type or "").removeprefix("Multi")
    base = {"source": SOURCE, "source-layer": layer.id}
    if kind == "Point":
        return [_circles(base, layer.id, colour)]
    if kind == "LineString":
        return [{**base, "id": layer.id, "type": "line", "paint": {
            "line-color": colour,
            "line-width": ["interpolate", ["linear"], ["zoom"], 10, 0.5, 16, 3]}},
            _specks(base, f"{layer.id}-small", colour)]
    return [
        {**base, "id": f"{layer.id}-fill", "type": "fill",
         "paint": {"fill-color": colour, "fill-opacity": 0.35}},
        {**base, "id": f"{layer.id}-outline", "type": "line",
         "paint": {"line-color": colour, "line-width": 1}},
        _specks(base, f"{layer.id}-small", colour),
    ]


def style_layers(layer: Layer, index: int) -> list[dict[str, Any]]:
    custom = _custom(layer)
    if custom is None:
        return _default(layer, PALETTE[index % len(PALETTE)])
    return [{**entry, "source": SOURCE, "source-layer": layer.id} for entry in custom]


def build_style(layers: list[Layer], tilejson_url: str) -> dict[str, Any]:
    """A MapLibre style (v8) showing ``layers`` from one vector source."""
    extents = [ly.extent for ly in layers if ly.extent]
    style: dict[str, Any] = {
        "version": 8,
        "name": ", ".join(ly.title for ly in layers),
        "sources": {SOURCE: {"type": "vector", "url": tilejson_url}},
        "layers": [{"id": "background", "type": "background",
                    "paint": {"background-color": "#f4f1ea"}}],
        "metadata": {"onemap:layers": [ly.id for ly in layers]},
    }
    if extents:
        e = (min(x[0] for x in extents), min(x[1] for x in extents),
             max(x[2] for x in extents), max(x[3] for x in extents))
        style["center"] = [(e[0] + e[2]) / 2, (e[1] + e[3]) / 2]
        style["zoom"] = fit_zoom(e, min(ly.minzoom for ly in layers),
                                 max(ly.maxzoom for ly in layers))
    for i, layer in enumerate(layers):
        style["layers"] += style_layers(layer, i)
    return style

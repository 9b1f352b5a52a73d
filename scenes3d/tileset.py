"""The tileset of a 3D scene: a quadtree over the Web Mercator tiles that hold features.

Each feature belongs to the one tile at the scene's zoom that holds the centre of its box,
so no building is drawn twice. Those tiles are the leaves, with content; their parents up
the quadtree carry only bounds and a geometric error, so a viewer loads the buildings near
the camera and skips the rest. The quadtree is cut four zooms above the leaves into
external tilesets, which a viewer fetches only where it looks, so no one document lists a
whole city. Bounds are each tile's features' own extent and height, measured under the
caller's limits: the tileset reveals nothing the tiles would not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mercantile

from scenes3d.mesh import Frame

EQUATOR_M = 40_075_016.686
# A parent's error: an eighth of its width. At a screen-space error of 16 (CesiumJS's
# default) a zoom-15 parent at 40° N opens its buildings from about 5 km away.
ERROR_SHARE = 1 / 8
SPLIT = 4  # external tilesets this many zooms above the content tiles


@dataclass(frozen=True)
class Cell:
    """A leaf: a tile at the scene's zoom holding ``count`` features."""

    x: int
    y: int
    count: int
    west: float
    south: float
    east: float
    north: float
    top: float  # the highest roof, metres


def origin(z: int, x: int, y: int) -> Frame:
    """The local frame a content tile's vertices are written in: its centre, height 0."""
    b = mercantile.bounds(x, y, z)
    return Frame.at((b.west + b.east) / 2, (b.south + b.north) / 2)


def _region(cells: list[Cell]) -> list[float]:
    return [math.radians(min(c.west for c in cells)), math.radians(min(c.south for c in cells)),
            math.radians(max(c.east for c in cells)), math.radians(max(c.north for c in cells)),
            0.0, max(c.top for c in cells)]


def _error(z: int, cells: list[Cell]) -> float:
    lat = math.radians((min(c.south for c in cells) + max(c.north for c in cells)) / 2)
    return round(EQUATOR_M * math.cos(lat) / 2**z * ERROR_SHARE, 2)


Nodes = dict[tuple[int, int], tuple[dict, list[Cell]]]


def _climb(nodes: Nodes, z: int, top: int) -> Nodes:
    """Nodes at zoom ``z`` gathered under their parents, up to zoom ``top``; or until one
    is left when ``top`` is None (always at least one level)."""
    start = z
    while z > 0 and (z > top if top is not None else len(nodes) > 1 or z == start):
        z -= 1
        parents: Nodes = {}
        for (x, y), (node, inside) in sorted(nodes.items()):
            parent = parents.setdefault((x // 2, y // 2), ({"children": []}, []))
            parent[0]["children"].append(node)
            parent[1].extend(inside)
        for node, inside in parents.values():
            node.update({"boundingVolume": {"region": _region(inside)},
                         "geometricError": _error(z, inside), "refine": "ADD"})
        nodes = parents
    return nodes


def _document(nodes: Nodes, extent: tuple[float, float, float, float] | None) -> dict:
    if nodes:
        ((root, _),) = nodes.values()
        error = root["geometricError"] * 2
    else:  # nothing the caller may see: a valid, empty tileset over the layer's extent
        w, s, e, n = extent or (0.0, 0.0, 0.0, 0.0)
        root = {"boundingVolume": {"region": [math.radians(w), math.radians(s),
                                              math.radians(e), math.radians(n), 0.0, 0.0]},
                "geometricError": 0.0, "refine": "ADD"}
        error = 0.0
    return {"asset": {"version": "1.1", "generator": "OneMap"},
            "geometricError": error, "root": root}


def split_zoom(zoom: int) -> int:
    """The zoom of the external tilesets: each holds at most 16 x 16 content tiles, so no
    tileset grows with the city (one listing every tile would run to megabytes)."""
    return max(zoom - SPLIT, 0)


def tileset(parts: list[Cell], zoom: int, extent: tuple[float, float, float, float] | None,
            ) -> dict:
    """The scene's root tileset: a quadtree over ``parts``, the tiles at the split zoom
    that hold features, each pointing to its external tileset (``{z}/{x}/{y}.json``).
    URIs are relative, so a viewer sends whatever query the root's own URL had (an
    embedding key) with every request."""
    z = split_zoom(zoom)
    nodes: Nodes = {(c.x, c.y): ({
        "boundingVolume": {"region": _region([c])}, "geometricError": _error(z, [c]),
        "refine": "ADD", "content": {"uri": f"{z}/{c.x}/{c.y}.json"}}, [c]) for c in parts}
    return _document(_climb(nodes, z, None), extent)


def part(cells: list[Cell], zoom: int) -> dict:
    """The external tileset of one tile at the split zoom: its content tiles (binary
    glTF, each in its own east-north-up frame) under a quadtree up to that tile."""
    nodes: Nodes = {(c.x, c.y): ({
        "boundingVolume": {"region": _region([c])}, "geometricError": 0.0,
        "refine": "ADD", "transform": origin(zoom, c.x, c.y).matrix(),
        "content": {"uri": f"../../{zoom}/{c.x}/{c.y}.glb"}}, [c]) for c in cells}
    return _document(_climb(nodes, zoom, split_zoom(zoom)), None)

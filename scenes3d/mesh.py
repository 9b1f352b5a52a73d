"""Footprints extruded to their heights, as triangles in a tile's local frame.

The frame is east-north-up in metres around the tile's origin on the ellipsoid (height 0),
so float32 positions keep millimetres; the tileset carries the matrix back to Earth-
centred coordinates. Vertices go through pyproj's geodetic to geocentric conversion, so
nothing here assumes a flat Earth. Roofs are constrained Delaunay triangulations (holes
kept); walls are one quad per ring edge. Floors are left out: nothing sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer

# lon, lat, ellipsoidal height (EPSG:4979) to Earth-centred, Earth-fixed (EPSG:4978).
_TO_ECEF = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)


@dataclass(frozen=True)
class Frame:
    """East-north-up at a point: ``enu = rotation @ (ecef - origin)``."""

    origin: np.ndarray  # (3,) ECEF metres
    rotation: np.ndarray  # (3, 3), rows east, north, up

    @classmethod
    def at(cls, lon: float, lat: float) -> Frame:
        lam, phi = np.radians(lon), np.radians(lat)
        east = [-np.sin(lam), np.cos(lam), 0.0]
        north = [-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)]
        up = [np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]
        return cls(np.array(_TO_ECEF.transform(lon, lat, 0.0)), np.array([east, north, up]))

    def matrix(self) -> list[float]:
        """Local east-north-up to ECEF, column-major as 3D Tiles' ``transform`` wants."""
        m = np.eye(4)
        m[:3, :3] = self.rotation.T
        m[:3, 3] = self.origin
        return [float(v) for v in m.T.ravel()]

    def local(self, lonlath: np.ndarray) -> np.ndarray:
        x, y, z = _TO_ECEF.transform(lonlath[:, 0], lonlath[:, 1], lonlath[:, 2])
        return (np.column_stack([x, y, z]) - self.origin) @ self.rotation.T


@dataclass
class Mesh:
    positions: np.ndarray  # (n, 3) float32 east-north-up metres; each three a triangle,
    # counter-clockwise seen from outside (no shared vertices: faces are flat-shaded)
    feature_ids: np.ndarray  # (n,) the feature each vertex belongs to


def _ccw(tri: np.ndarray) -> np.ndarray:
    """Triangles (k, 3, 2) turned counter-clockwise seen from above."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    out = tri.copy()
    out[cross < 0] = tri[cross < 0][:, [0, 2, 1]]
    return out


def _walls(ring: np.ndarray, top: float, hole: bool) -> np.ndarray:
    """Quads along a ring as triangles (k, 3, 3) lon/lat/height, facing outwards."""
    ring = ring[:-1] if len(ring) > 1 and np.array_equal(ring[0], ring[-1]) else ring
    a = ring
    b = np.roll(ring, -1, axis=0)
    # An exterior ring counter-clockwise has the outside on its right: walk it that way.
    area2 = np.sum(a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1])
    if (area2 < 0) != hole:
        a, b = b, a
    z0, z1 = np.zeros((len(a), 1)), np.full((len(a), 1), top)
    a0, b0 = np.hstack([a, z0]), np.hstack([b, z0])
    a1, b1 = np.hstack([a, z1]), np.hstack([b, z1])
    return np.concatenate([np.stack([a0, b0, b1], 1), np.stack([a0, b1, a1], 1)])


def extrude(footprints: list[shapely.Geometry], heights: list[float], frame: Frame) -> Mesh:
    """One mesh for the features of a tile; vertex ``feature_ids`` index ``footprints``."""
    tris: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    for i, (geom, top) in enumerate(zip(footprints, heights, strict=True)):
        for poly in shapely.get_parts(geom):
            if not isinstance(poly, shapely.Polygon) or poly.is_empty:
                continue
            roof = shapely.get_parts(shapely.constrained_delaunay_triangles(poly))
            flat = np.array([shapely.get_coordinates(t)[:3] for t in roof]).reshape(-1, 3, 2)
            parts = [np.concatenate([_ccw(flat), np.full((len(flat), 3, 1), top)], axis=2)]
            parts.append(_walls(shapely.get_coordinates(poly.exterior), top, hole=False))
            parts += [_walls(shapely.get_coordinates(r), top, hole=True)
                      for r in poly.interiors]
            block = np.concatenate(parts)
            tris.append(block)
            owners.append(np.full(len(block) * 3, i, dtype=np.uint32))
    if not tris:
        return Mesh(np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.uint32))
    corners = np.concatenate(tris).reshape(-1, 3)
    return Mesh(frame.local(corners).astype(np.float32), np.concatenate(owners))

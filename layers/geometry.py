"""Geometry checks: repair what has one clear repair, reject the rest with a reason."""

from __future__ import annotations

import numpy as np
import shapely

_DIM = {"Point": 0, "MultiPoint": 0, "LineString": 1, "MultiLineString": 1, "LinearRing": 1,
        "Polygon": 2, "MultiPolygon": 2}


def _dimension(g: shapely.Geometry) -> int:
    return _DIM.get(g.geom_type, -1)


def _keep_dimension(repaired: shapely.Geometry, dim: int) -> shapely.Geometry | None:
    """From make_valid's output keep the parts of the original dimension, if any."""
    if _dimension(repaired) == dim:
        return repaired
    if repaired.geom_type == "GeometryCollection":
        parts = [p for p in shapely.get_parts(repaired) if _dimension(p) == dim]
        if parts:
            return shapely.union_all(parts)
    return None


def check(geoms: np.ndarray) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Checks lon/lat geometries in place of position.

    Returns the geometries (None where rejected) and (index, action, reason) per problem.
    """
    issues: list[tuple[int, str, str]] = []
    out = geoms.copy()
    missing = shapely.is_missing(out)
    empty = np.zeros(len(out), dtype=bool)
    empty[~missing] = shapely.is_empty(out[~missing])
    for i in np.flatnonzero(missing | empty):
        issues.append((int(i), "rejected", "no geometry" if missing[i] else "empty geometry"))
        out[i] = None
    present = np.flatnonzero(~(missing | empty))
    if len(present) == 0:
        return out, issues
    bounds = shapely.bounds(out[present])
    finite = np.isfinite(bounds).all(axis=1)
    in_range = (finite & (bounds[:, 0] >= -180) & (bounds[:, 2] <= 180)
                & (bounds[:, 1] >= -90) & (bounds[:, 3] <= 90))
    for j in np.flatnonzero(~in_range):
        i = int(present[j])
        issues.append((i, "rejected", "coordinates outside longitude/latitude range "
                                      "(wrong --source-crs?)"))
        out[i] = None
    present = present[in_range]
    valid = shapely.is_valid(out[present])
    for j in np.flatnonzero(~valid):
        i = int(present[j])
        reason = shapely.is_valid_reason(out[i])
        fixed = _keep_dimension(shapely.make_valid(out[i]), _dimension(out[i]))
        if fixed is None or fixed.is_empty:
            issues.append((i, "rejected", f"invalid geometry with no clear repair: {reason}"))
            out[i] = None
        else:
            issues.append((i, "repaired", f"invalid geometry repaired: {reason}"))
            out[i] = fixed
    issues.sort()
    return out, issues

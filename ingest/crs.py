"""Source CRS to OneMap's longitude/latitude storage, including GCJ-02 web-map data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import prcoords
import pyproj
from pyproj.exceptions import CRSError

from ingest.errors import IngestError

GCJ02 = "GCJ02"
CGCS2000 = pyproj.CRS.from_epsg(4490)
WGS84 = pyproj.CRS.from_epsg(4326)

Coords = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SourceCrs:
    label: str  # as recorded in the catalog's source_crs
    catalog_crs: str  # the reference frame the layer is kept in: EPSG:4490 or EPSG:4326
    to_lonlat: Coords | None  # None: already lon/lat in storage axis order


def is_cgcs2000(crs: pyproj.CRS) -> bool:
    geodetic = crs.geodetic_crs
    return geodetic is not None and geodetic.datum.name.startswith("China 2000")


def _gcj02_to_wgs84(xy: np.ndarray) -> np.ndarray:
    out = np.empty_like(xy)
    for i, (lon, lat) in enumerate(xy):
        # The iterative inverse: about a centimetre of residual, not the 1-2 m of one step.
        c = prcoords.gcj_wgs_bored(prcoords.Coords(lat, lon))
        out[i] = (c.lon, c.lat)
    return out


def resolve(source: str, declared: str | None, in_file: str | None) -> SourceCrs:
    """The CRS to read with: the one the caller declared, else the file's."""
    name = declared or in_file
    if name is None:
        raise IngestError(source, "the file has no coordinate reference system; pass --source-crs")
    if name.replace("-", "").upper() in {GCJ02, "GCJ02", "EPSG:GCJ02"}:
        return SourceCrs(GCJ02, "EPSG:4326", _gcj02_to_wgs84)
    try:
        crs = pyproj.CRS.from_user_input(name)
    except CRSError as exc:
        raise IngestError(source, f"unknown coordinate reference system {name!r}") from exc
    label = crs.to_string()
    if crs.is_geographic and is_cgcs2000(crs):
        # CGCS2000 and WGS84 agree to centimetres: coordinates stay, the frame is recorded.
        target, catalog = CGCS2000, "EPSG:4490"
    else:
        target, catalog = WGS84, "EPSG:4326"
    if crs.equals(target, ignore_axis_order=True):
        return SourceCrs(label, catalog, None)
    transformer = pyproj.Transformer.from_crs(crs, target, always_xy=True)

    def to_lonlat(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1], errcheck=False)
        return np.column_stack([x, y])

    return SourceCrs(label, catalog, to_lonlat)

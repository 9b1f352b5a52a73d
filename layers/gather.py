"""Nearest-neighbour tiles from lon/lat COGs without a warper.

OneMap's COGs are in longitude/latitude and both grids it serves are cylindrical (Web
Mercator, and CGCS2000Quad in lon/lat): a tile column maps to one source column and a tile
row to one source row. So a nearest-neighbour tile is a windowed read of the right overview
followed by a gather of those rows and columns: the same pixels GDAL's warper picks, without
setting up a warp per tile, which is most of the cost of a tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from morecantile import TileMatrixSet
from pyproj import CRS, Transformer
from rasterio.io import DatasetReader
from rasterio.windows import Window

# A tile pixel this much finer than an overview's still reads that overview: GDAL's rule,
# so the pixels match those of a warped read.
OVERSAMPLING = 1.0


@dataclass(frozen=True)
class Cells:
    """Where a tile's pixel centres fall, in the source's lon/lat."""

    lons: np.ndarray  # one per column
    lats: np.ndarray  # one per row
    res: float  # the finer of the tile's pixel sizes, in degrees


@cache
def _frame(tms_id: str, tms_wkt: str, crs_wkt: str) -> Transformer | None:
    """Grid to source transformer, or None when the mapping is not separable (the source
    is not lon/lat, or the grid is neither lon/lat nor Web Mercator)."""
    grid_crs, crs = CRS.from_wkt(tms_wkt), CRS.from_wkt(crs_wkt)
    if not crs.is_geographic or not (grid_crs.is_geographic or grid_crs.to_epsg() == 3857):
        return None
    return Transformer.from_crs(grid_crs, crs, always_xy=True)


def cells(tms: TileMatrixSet, x: int, y: int, z: int, crs: CRS,
          size: int) -> Cells | None:
    """The tile's pixel centres in ``crs``; None if they do not fall on rows and columns."""
    tr = _frame(tms.id, tms.crs.to_wkt(), crs.to_wkt())
    if tr is None:
        return None
    b = tms.xy_bounds(x, y, z)
    step = (np.arange(size) + 0.5) / size
    xs = b.left + step * (b.right - b.left)
    ys = b.top - step * (b.top - b.bottom)
    lons, _ = tr.transform(xs, np.full(size, (b.top + b.bottom) / 2))
    _, lats = tr.transform(np.full(size, (b.left + b.right) / 2), ys)
    lons, lats = np.asarray(lons), np.asarray(lats)
    res = min(abs(lons[-1] - lons[0]), abs(lats[0] - lats[-1])) / max(size - 1, 1)
    return Cells(lons, lats, res)


def level(base: DatasetReader, res: float) -> int:
    """The overview to read (0 = full resolution): the coarsest not coarser than ``res``."""
    best = 0
    for i, factor in enumerate(base.overviews(1), start=1):
        if base.res[0] * factor <= res * OVERSAMPLING:
            best = i
    return best


def read(open_level: Callable[[int], DatasetReader], c: Cells,
         indexes: Sequence[int]) -> np.ma.MaskedArray | None:
    """The tile's pixels of one COG (``open_level(n)`` opens overview n), masked where the
    COG has no data; None if the tile misses it."""
    base = open_level(0)
    ds = open_level(level(base, c.res)) if base.overviews(1) else base
    west, north = ds.transform.c, ds.transform.f
    cols = np.floor((c.lons - west) / ds.transform.a).astype(np.int64)
    rows = np.floor((c.lats - north) / ds.transform.e).astype(np.int64)
    col_in = (cols >= 0) & (cols < ds.width)
    row_in = (rows >= 0) & (rows < ds.height)
    if not col_in.any() or not row_in.any():
        return None
    c0, c1 = cols[col_in].min(), cols[col_in].max()
    r0, r1 = rows[row_in].min(), rows[row_in].max()
    window = Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1)
    data = ds.read(list(indexes), window=window)
    valid = ds.dataset_mask(window=window) > 0
    ci = np.clip(cols - c0, 0, c1 - c0)
    ri = np.clip(rows - r0, 0, r1 - r0)
    out = data[:, ri[:, None], ci[None, :]]
    keep = valid[ri[:, None], ci[None, :]] & row_in[:, None] & col_in[None, :]
    return np.ma.MaskedArray(out, mask=np.broadcast_to(~keep, out.shape).copy())

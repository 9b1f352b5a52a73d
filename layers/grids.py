"""The tile matrix sets OneMap serves: Web Mercator, the CGCS2000 geographic quad, and (for
rasters) OGC's WorldCRS84Quad, the lon/lat grid generic OGC API clients look for first.

CGCS2000Quad is WorldCRS84Quad's layout (2 × 1 tiles at matrix 0, 0.703125° per pixel)
on EPSG:4490, the frame of Tianditu's ``_c`` services; its matrix n is their level n + 1.
"""

from __future__ import annotations

import math
from functools import cache

import morecantile
from morecantile import TileMatrixSet
from pyproj import CRS

from layers.errors import OutOfRange

WEB_MERCATOR = "WebMercatorQuad"
CGCS2000 = "CGCS2000Quad"
WORLD_CRS84 = "WorldCRS84Quad"
GRIDS = (WEB_MERCATOR, CGCS2000, WORLD_CRS84)
MAX_ZOOM = 24
# Capabilities and tileset documents list matrices up to this zoom (deeper ones are served).
MAX_LISTED_ZOOM = 22


@cache
def grid(name: str) -> TileMatrixSet | None:
    if name in (WEB_MERCATOR, WORLD_CRS84):
        return morecantile.tms.get(name)
    if name == CGCS2000:
        crs = CRS.from_epsg(4490)
        return TileMatrixSet.custom(
            [-180, -90, 180, 90], crs, matrix_scale=[2, 1], id=CGCS2000,
            title="CGCS2000 geographic quad (EPSG:4490)", minzoom=0, maxzoom=MAX_ZOOM,
            ordered_axes=["Lat", "Lon"], geographic_crs=crs)
    return None


def matrix_size(tms: TileMatrixSet, z: int) -> tuple[int, int]:
    m = tms.matrix(z)
    return m.matrixWidth, m.matrixHeight


def limits(tms: TileMatrixSet, extent: tuple[float, float, float, float] | None, minzoom: int,
           maxzoom: int) -> list[tuple[int, int, int, int, int]]:
    """Per matrix, the rows and columns that hold data: (z, min row, max row, min col,
    max col). Clients that read them ask for nothing else."""
    if not extent:
        return []
    w, s, e, n = extent
    out = []
    for z in range(minzoom, maxzoom + 1):
        ul, lr = tms.tile(w, n, z), tms.tile(e, s, z)
        out.append((z, ul.y, lr.y, ul.x, lr.x))
    return out


def fit_zoom(bounds: tuple[float, float, float, float] | list[float] | None, minzoom: int = 0,
             maxzoom: int = 22, width: int = 1024, height: int = 768) -> int:
    """The deepest Web Mercator zoom at which ``bounds`` (lon/lat) fits a view of
    ``width`` x ``height`` pixels, within ``minzoom``..``maxzoom``: where a map of the layer
    opens. A single point opens at ``maxzoom``, capped at 17."""
    top = min(maxzoom, 17)
    if not bounds:
        return max(minzoom, min(top, 2))
    west, south, east, north = bounds
    span_x = (east - west) % 360 or (360.0 if east != west else 0.0)

    def y(lat: float) -> float:  # 0 at the top of the world, 1 at its bottom
        lat = max(-85.0511, min(85.0511, lat))
        return (1 - math.log(math.tan(math.radians(lat)) + 1 / math.cos(math.radians(lat)))
                / math.pi) / 2

    span_y = abs(y(south) - y(north))
    zooms = [top]
    if span_x > 0:
        zooms.append(math.log2(width * 360 / (256 * span_x)))
    if span_y > 0:
        zooms.append(math.log2(height / (256 * span_y)))
    return int(max(minzoom, min(top, math.floor(min(zooms)))))


def check_tile(zi: int, xi: int, yi: int, width: int, height: int, where: str = "") -> None:
    """Refuse a tile address outside its zoom's ``width`` x ``height`` matrix."""
    if not 0 <= xi < width:
        raise OutOfRange(f"tile {zi}/{xi}/{yi} does not exist{where}: x runs 0..{width - 1}",
                         "column")
    if not 0 <= yi < height:
        raise OutOfRange(f"tile {zi}/{xi}/{yi} does not exist{where}: y runs 0..{height - 1}",
                         "row")

"""The tile matrix sets OneMap serves: Web Mercator, and the CGCS2000 geographic quad.

CGCS2000Quad is WorldCRS84Quad's layout (2 × 1 tiles at matrix 0, 0.703125° per pixel)
on EPSG:4490, the frame of Tianditu's ``_c`` services; its matrix n is their level n + 1.
"""

from __future__ import annotations

from functools import cache

import morecantile
from morecantile import TileMatrixSet
from pyproj import CRS

WEB_MERCATOR = "WebMercatorQuad"
CGCS2000 = "CGCS2000Quad"
GRIDS = (WEB_MERCATOR, CGCS2000)
MAX_ZOOM = 24
# Capabilities and tileset documents list matrices up to this zoom (deeper ones are served).
MAX_LISTED_ZOOM = 22


@cache
def grid(name: str) -> TileMatrixSet | None:
    if name == WEB_MERCATOR:
        return morecantile.tms.get(WEB_MERCATOR)
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

"""From a raster tile's pixels to image bytes: bands, rescale, colormap, elevation encodings,
the caller's area, and the encoder. No HTTP here: the endpoints and WMTS share it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import imagecodecs
import numpy as np
from pyproj import Transformer
from rasterio.features import geometry_mask
from rio_tiler.colormap import apply_cmap, cmap
from rio_tiler.models import ImageData
from shapely import MultiPolygon, Polygon
from shapely.geometry import mapping
from shapely.ops import transform as reproject

FORMATS = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
           "webp": "image/webp"}
ALGORITHMS = ("hillshade", "terrainrgb")
COLORMAPS = frozenset(cmap.list())
# Encoder effort, chosen on the sample imagery against GDAL's defaults: PNG with zlib 6 and
# the "sub" filter is 1.5-2x faster for 5-12% more bytes; WebP method 1 at quality 90 is 2x
# faster than method 4 at the same PSNR for about 20% more bytes.
PNG_LEVEL, PNG_FILTER = 6, imagecodecs.PNG.FILTER.SUB
WEBP_QUALITY, WEBP_METHOD = 90, 1
JPEG_QUALITY = 90
# Metres per degree of latitude on the ellipsoid, near enough for shading.
METRES_PER_DEGREE = 111_320.0


class RenderError(ValueError):
    """A rendering option that does not fit the layer (a client error)."""


@dataclass(frozen=True)
class Style:
    """How to draw: every option a client may set, already checked against the layer."""

    indexes: tuple[int, ...]
    rescale: tuple[tuple[float, float], ...] | None = None
    colormap: str | None = None
    algorithm: str | None = None
    azimuth: float = 315.0
    altitude: float = 45.0
    exaggeration: float = 1.0

    @property
    def buffer(self) -> int:
        return 1 if self.algorithm == "hillshade" else 0

    @property
    def key(self) -> str:
        return repr(self)


def style_for(meta: dict, *, bidx: Sequence[int] | None = None,
              rescale: Sequence[tuple[float, float]] | None = None,
              colormap: str | None = None, algorithm: str | None = None,
              azimuth: float = 315.0, altitude: float = 45.0,
              exaggeration: float = 1.0) -> Style:
    """The style a request asks for, with the layer's defaults where it is silent."""
    bands = meta.get("bands", [])
    if algorithm is not None:
        if algorithm not in ALGORITHMS:
            raise RenderError(f"algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if not meta.get("elevation"):
            raise RenderError(f"algorithm {algorithm!r} needs an elevation layer")
        if bidx and len(bidx) != 1:
            raise RenderError(f"algorithm {algorithm!r} reads one band")
        return Style(tuple(bidx or (1,)), None, None, algorithm, azimuth, altitude,
                     exaggeration)
    indexes = tuple(bidx) if bidx else tuple(meta.get("default_bands") or (1,))
    for i in indexes:
        if not 1 <= i <= len(bands):
            raise RenderError(f"band {i} does not exist: the layer has bands 1..{len(bands)}")
    if len(indexes) not in (1, 3):
        raise RenderError("choose 1 band (grey or a colormap) or 3 (red, green, blue)")
    if colormap is not None:
        if colormap not in COLORMAPS:
            raise RenderError(f"colormap {colormap!r} is unknown; e.g. viridis, terrain, gray")
        if len(indexes) != 1:
            raise RenderError("a colormap colours one band")
    if rescale is None and any(bands[i - 1]["type"] != "uint8" for i in indexes):
        stats = meta.get("stats", [])
        key = ("min", "max") if meta.get("elevation") else ("p2", "p98")
        rescale = [(stats[i - 1][key[0]] or 0.0, stats[i - 1][key[1]] or 1.0)
                   for i in indexes]
    if rescale is not None:
        if len(rescale) == 1:
            rescale = list(rescale) * len(indexes)
        if len(rescale) != len(indexes):
            raise RenderError(f"rescale gives {len(rescale)} ranges for {len(indexes)} bands")
    return Style(indexes, tuple(tuple(r) for r in rescale) if rescale else None, colormap)


def apply_area(img: ImageData, area: Polygon | MultiPolygon | None) -> bool:
    """Mask pixels outside the caller's area (given in lon/lat); False if none is left."""
    if area is None:
        return True
    to_tile = Transformer.from_crs("EPSG:4326", img.crs, always_xy=True)
    shape = reproject(to_tile.transform, area)
    outside = geometry_mask([mapping(shape)], out_shape=(img.height, img.width),
                            transform=img.transform, all_touched=False)
    img.array.mask = np.ma.getmaskarray(img.array) | outside[np.newaxis, :, :]
    return not bool(np.ma.getmaskarray(img.array).all())


def terrain_rgb(heights: np.ma.MaskedArray) -> np.ndarray:
    """Mapbox Terrain-RGB: height = -10000 + (R * 65536 + G * 256 + B) * 0.1."""
    v = np.clip(np.round((heights.filled(0).astype("float64") + 10000.0) * 10.0), 0,
                256 ** 3 - 1).astype("uint32")
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255]).astype("uint8")


def hillshade(heights: np.ndarray, dx: float, dy: float, azimuth: float, altitude: float,
              exaggeration: float) -> np.ndarray:
    """Lambertian shade of a height grid with pixel sizes dx, dy in metres, 0..255."""
    gy, gx = np.gradient(heights.astype("float64") * exaggeration, dy, dx)
    slope = np.pi / 2.0 - np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = math.radians(360.0 - azimuth + 90.0), math.radians(altitude)
    shade = (math.sin(alt) * np.sin(slope)
             + math.cos(alt) * np.cos(slope) * np.cos(az - np.pi / 2.0 - aspect))
    return np.clip(shade * 255.0, 0, 255).astype("uint8")


def _pixel_metres(img: ImageData) -> tuple[float, float]:
    """Ground size of the tile's pixels at its centre, for shading."""
    t = img.transform
    b = img.bounds
    to_lonlat = Transformer.from_crs(img.crs, "EPSG:4326", always_xy=True)
    lon0, lat0 = to_lonlat.transform(b[0], (b[1] + b[3]) / 2)
    lon1, lat1 = to_lonlat.transform(b[0] + t.a, (b[1] + b[3]) / 2 - t.e)
    dx = abs(lon1 - lon0) * METRES_PER_DEGREE * math.cos(math.radians(lat0))
    dy = abs(lat1 - lat0) * METRES_PER_DEGREE
    return max(dx, 1e-6), max(dy, 1e-6)


def encode(data: np.ndarray, alpha: np.ndarray | None, fmt: str) -> bytes:
    """8-bit bands (1 grey, 3 RGB) and an alpha plane to image bytes, straight from numpy
    with libpng / libwebp / libjpeg (no GDAL dataset per tile)."""
    planes = list(data)
    if fmt == "webp" and len(planes) == 1:
        planes *= 3
    if fmt not in ("jpg", "jpeg") and alpha is not None:
        planes.append(alpha)
    pixels = np.ascontiguousarray(np.stack(planes, axis=-1))
    if fmt == "png":
        return imagecodecs.png_encode(pixels, level=PNG_LEVEL, filter=PNG_FILTER)
    if fmt == "webp":
        return imagecodecs.webp_encode(pixels, level=WEBP_QUALITY, method=WEBP_METHOD,
                                       lossless=False)
    return imagecodecs.jpeg8_encode(pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                                    level=JPEG_QUALITY)


def _alpha(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 0, 255).astype("uint8")


def render(img: ImageData, style: Style, fmt: str) -> bytes:
    """Encode a tile (read with ``style.buffer`` pixels around it) in ``fmt``."""
    return encode(*pixels(img, style), fmt)


def pixels(img: ImageData, style: Style) -> tuple[np.ndarray, np.ndarray]:
    """The 8-bit bands (1 grey or 3 RGB) and alpha plane that ``style`` draws of ``img``."""
    if style.algorithm == "hillshade":
        dx, dy = _pixel_metres(img)
        heights = img.array[0]
        shaded = hillshade(heights.filled(float(heights.mean()) if heights.count() else 0.0),
                           dx, dy, style.azimuth, style.altitude, style.exaggeration)
        mask = np.ma.getmaskarray(heights)
        b = style.buffer
        if b:
            shaded, mask = shaded[b:-b, b:-b], mask[b:-b, b:-b]
        return shaded[np.newaxis], _alpha(mask)
    if style.algorithm == "terrainrgb":
        return terrain_rgb(img.array[0]), _alpha(np.ma.getmaskarray(img.array[0]))
    if style.rescale:
        img = img.rescale(in_range=style.rescale)
    # 8-bit here: style_for gives every non-8-bit band a rescale.
    data, alpha = img.array.data, img.mask
    if style.colormap:
        data, colours = apply_cmap(data, cmap.get(style.colormap))
        alpha = np.where(alpha > 0, colours, 0).astype("uint8")
    return data, alpha

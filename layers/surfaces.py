"""Analysis of raster layers: statistics of a band over zones, heights along a line.

Pixels are read from a raster layer's newest time slice with rasterio, at full resolution
(a zone larger than ``MAX_PIXELS`` is read from an overview, and says so), only where the
caller may see them: a caller limited to an area gets nothing of the pixels outside it,
as its image tiles do. Where a slice's scenes overlap, the first scene's pixels count
(as the tiles show it). No HTTP here."""

from __future__ import annotations

import math
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import Geod, Transformer
from rasterio.features import geometry_mask, shapes
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape

from layers.errors import Invalid
from layers.rasters import RasterSource, Scene
from layers.render import apply_area

MAX_PIXELS = 16_000_000  # of one zone, read at full resolution; more comes from overviews
GEOD = Geod(ellps="WGS84")


def _scenes(source: RasterSource) -> list[Scene]:
    when = source.pick()
    return source.slice(when) if when is not None else []


def _to(crs: Any) -> Transformer:
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def zone_stats(source: RasterSource, zones: Sequence[shapely.Geometry], band: int,
               area: shapely.Geometry | None) -> list[dict[str, Any]]:
    """For each zone (lon/lat), the band's count, min, max, mean, sum and standard deviation
    over the valid pixels whose centres lie inside it (and inside ``area``)."""
    if not 1 <= band <= max(source.band_count, 1):
        raise Invalid(f"band: {source.layer.id} has bands 1..{source.band_count}")
    scenes = _scenes(source)
    out = []
    for zone in zones:
        if area is not None:
            zone = zone.intersection(area)
        values: list[np.ndarray] = []
        done = shapely.Polygon()
        level = 0
        for scene in scenes:
            part = zone.difference(done) if not done.is_empty else zone
            done = done.union(box(*scene.bounds))
            if part.is_empty:
                continue
            got, lvl = _pixels_in(source.store.uri(scene.path), part, band)
            level = max(level, lvl)
            if got is not None:
                values.append(got)
        v = np.concatenate(values) if values else np.zeros(0)
        stats: dict[str, Any] = {"count": int(v.size)}
        if v.size:
            stats |= {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
                      "sum": float(v.sum()), "std": float(v.std())}
        else:
            stats |= dict.fromkeys(("min", "max", "mean", "sum", "std"))
        stats["overview"] = level
        out.append(stats)
    return out


def _pixels_in(uri: str, zone: shapely.Geometry, band: int) -> tuple[np.ndarray | None, int]:
    """The valid values of ``band`` at pixels whose centres are inside ``zone`` (lon/lat),
    and the overview level read (0: full resolution)."""
    with rasterio.open(uri) as ds:
        shape = _moved(_to(ds.crs), zone) if ds.crs.to_epsg() != 4326 else zone
        b = shape.bounds
        inv = ~ds.transform
        c0, r0 = inv @ (b[0], b[3])
        c1, r1 = inv @ (b[2], b[1])
        col0, row0 = max(0, math.floor(min(c0, c1))), max(0, math.floor(min(r0, r1)))
        col1 = min(ds.width, math.ceil(max(c0, c1)))
        row1 = min(ds.height, math.ceil(max(r0, r1)))
        if col0 >= col1 or row0 >= row1:
            return None, 0
        win = Window(col0, row0, col1 - col0, row1 - row0)
        factor, level = 1, 0
        while win.width * win.height / factor ** 2 > MAX_PIXELS:
            factor, level = factor * 2, level + 1
        out_shape = (max(1, int(win.height) // factor), max(1, int(win.width) // factor))
        data = ds.read(band, window=win, out_shape=out_shape, masked=True)
        t = ds.window_transform(win) @ rasterio.Affine.scale(win.width / out_shape[1],
                                                             win.height / out_shape[0])
        inside = geometry_mask([mapping(shape)], out_shape=out_shape, transform=t,
                               invert=True)
        ok = inside & ~np.ma.getmaskarray(data)
        return np.asarray(data.data[ok], dtype="float64"), level


def along(line: shapely.LineString, samples: int) -> tuple[list[tuple[float, float]],
                                                            list[float]]:
    """``samples`` points spaced equally along a lon/lat line on the ellipsoid (its ends
    included), and their distances from its start in metres."""
    coords = list(line.coords)
    lons = [c[0] for c in coords]
    lats = [c[1] for c in coords]
    az, _, seg = GEOD.inv(lons[:-1], lats[:-1], lons[1:], lats[1:])
    seg = np.atleast_1d(seg)
    az = np.atleast_1d(az)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = float(cum[-1])
    points, dists = [], []
    for k in range(samples):
        d = total * k / (samples - 1)
        i = min(int(np.searchsorted(cum, d, side="right")) - 1, len(seg) - 1)
        i = max(i, 0)
        lon, lat, _ = GEOD.fwd(lons[i], lats[i], az[i], d - cum[i])
        points.append((float(lon), float(lat)))
        dists.append(d)
    return points, dists


def heights(source: RasterSource, points: Sequence[tuple[float, float]], band: int,
            area: shapely.Geometry | None) -> list[float | None]:
    """The band's value at each lon/lat point (the pixel holding it), None where no scene
    has data or outside ``area``."""
    out: list[float | None] = [None] * len(points)
    allowed = [area is None or area.covers(shapely.Point(p)) for p in points]
    for scene in _scenes(source):
        b = scene.bounds
        todo = [i for i, v in enumerate(out) if v is None and allowed[i]
                and b[0] <= points[i][0] <= b[2] and b[1] <= points[i][1] <= b[3]]
        if not todo:
            break
        with rasterio.open(source.store.uri(scene.path)) as ds:
            t = _to(ds.crs)
            xy = [t.transform(*points[i]) for i in todo]
            for i, v in zip(todo, ds.sample(xy, indexes=band, masked=True), strict=True):
                if not np.ma.getmaskarray(v).any() and math.isfinite(float(v[0])):
                    out[i] = float(v[0])
    return out


MAX_VIEW_PIXELS = 2_000  # a viewshed's grid is at most this many pixels across
CURVATURE = 0.85714  # GDAL's default: the earth's curvature less the air's refraction (1/7)


def _moved(t: Transformer, geom: shapely.Geometry) -> shapely.Geometry:
    """A shape's coordinates through a pyproj transformer."""
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def local_crs(lon: float, lat: float) -> str:
    """The UTM zone holding a point: metres for a viewshed around it."""
    zone = min(60, int((lon + 180) // 6) + 1)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def viewshed(source: RasterSource, lon: float, lat: float, observer_m: float,
             target_m: float, radius_m: float, area: shapely.Geometry | None
             ) -> dict[str, Any]:
    """What can be seen from ``observer_m`` above the ground at a point, out to
    ``radius_m``: the elevation read around it in its UTM zone, at the model's resolution
    (coarser where the circle would hold more than ``MAX_VIEW_PIXELS`` across), and GDAL's
    viewshed (``gdal_viewshed``, with the curvature and refraction of its default). The
    visible cells as one lon/lat shape, their area and that of the circle they lie in."""
    scenes = _scenes(source)
    if not scenes:
        raise Invalid(f"{source.layer.id} has no heights")
    with rasterio.open(source.store.uri(scenes[0].path)) as ds:
        res = ds.res if ds.crs.is_projected else (
            ds.res[0] * 111_320.0 * math.cos(math.radians(lat)), ds.res[1] * 111_320.0)
    pixel = max(min(res), 2 * radius_m / MAX_VIEW_PIXELS)
    crs = local_crs(lon, lat)
    x, y = _to(crs).transform(lon, lat)
    n = int(math.ceil(radius_m / pixel)) * 2 + 1
    half = n * pixel / 2
    bbox = (x - half, y - half, x + half, y + half)
    img = source.part(bbox, crs, n, n, scenes, indexes=[1])
    if img is None or not apply_area(img, area):
        raise Invalid("no heights around that point that this caller may see")
    heights = img.array[0]
    if np.ma.getmaskarray(heights)[n // 2, n // 2]:
        raise Invalid("point: the elevation layer has no height there")
    nodata = -32768.0
    with tempfile.TemporaryDirectory(prefix="onemap-view-") as tmp:
        src, dst = Path(tmp) / "dem.tif", Path(tmp) / "view.tif"
        profile = {"driver": "GTiff", "width": n, "height": n, "count": 1,
                   "dtype": "float32", "crs": crs, "nodata": nodata,
                   "transform": from_origin(bbox[0], bbox[3], pixel, pixel)}
        with rasterio.open(src, "w", **profile) as out:
            out.write(heights.filled(nodata).astype("float32"), 1)
        done = subprocess.run(
            ["gdal_viewshed", "-q", "-ox", repr(x), "-oy", repr(y), "-oz", repr(observer_m),
             "-tz", repr(target_m), "-md", repr(radius_m), "-cc", repr(CURVATURE),
             "-vv", "1", "-iv", "0", "-ov", "0", "-a_nodata", "255", str(src), str(dst)],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"gdal_viewshed failed: {done.stderr.strip()[:500]}")
        with rasterio.open(dst) as view:
            seen = view.read(1)
            transform = view.transform
    seen = (seen == 1) & ~np.ma.getmaskarray(heights)
    parts = [shape(g) for g, v in shapes(seen.astype("uint8"), mask=seen,
                                                           transform=transform) if v == 1]
    visible = shapely.union_all(parts) if parts else shapely.Polygon()
    back = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return {"geometry": mapping(_moved(back, visible)),
            "visible_m2": float(seen.sum()) * pixel * pixel,
            "circle_m2": math.pi * radius_m ** 2, "pixel_m": pixel, "crs": crs}

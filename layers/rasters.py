"""Raster layers: the store their COGs live in, their scenes and time slices, and a reader.

A raster layer is a mosaic of scenes, each a Cloud-Optimized GeoTIFF in lon/lat, grouped
into time slices by acquisition time. The reader follows rio-tiler's shape (``tile``,
``point``) and reads with it; open datasets are kept per thread because a scene's file never
changes (a new ingest writes a new file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import rasterio
from morecantile import TileMatrixSet
from psycopg import AsyncConnection, sql
from rasterio import shutil as rio_shutil
from rasterio.io import DatasetReader
from rio_tiler.errors import EmptyMosaicError, TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from rio_tiler.mosaic import mosaic_reader

from layers import gather, restrict
from layers.catalog import Layer
from layers.restrict import Restriction
from layers.where import Where, in_box

# Enough for every scene a worker thread touches in a burst; each handle is small.
OPEN_PER_THREAD = 64


class RasterStore:
    """Where COGs are kept: a local folder or a GDAL virtual path such as ``/vsis3/...``.

    A file is written beside its final place and moved there whole, so a failed ingest
    leaves nothing half-written where readers look."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.remote = root.startswith("/vsi")

    def uri(self, path: str) -> str:
        return f"{self.root}/{path}"

    @contextlib.contextmanager
    def staging(self) -> Iterator[str]:
        """A local folder for a file being made; removed with whatever is left in it."""
        if self.remote:
            folder = tempfile.mkdtemp(prefix="onemap-")
        else:
            os.makedirs(self.root, exist_ok=True)
            folder = tempfile.mkdtemp(prefix=".staging-", dir=self.root)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def put(self, local: str, layer_id: str) -> str:
        """Move a finished file into the store; returns its path inside the store."""
        path = f"{layer_id}/{uuid.uuid4().hex}.tif"
        if self.remote:
            rio_shutil.copyfiles(local, self.uri(path))
        else:
            os.makedirs(os.path.dirname(self.uri(path)), exist_ok=True)
            os.replace(local, self.uri(path))
        return path

    def remove(self, path: str) -> None:
        with contextlib.suppress(OSError, rasterio.errors.RasterioIOError):
            if self.remote:
                rio_shutil.delete(self.uri(path))
            else:
                os.remove(self.uri(path))


@dataclass(frozen=True)
class Scene:
    id: int
    name: str
    acquired_at: datetime
    path: str
    bounds: tuple[float, float, float, float]


SELECT_SCENES = """
SELECT id, name, acquired_at, path, bounds FROM onemap.scenes
WHERE layer_id = %s AND valid_to IS NULL ORDER BY acquired_at DESC, name"""


async def fetch_scenes(conn: AsyncConnection, layer_id: str) -> list[Scene]:
    cur = await conn.execute(SELECT_SCENES, (layer_id,))
    return [Scene(r[0], r[1], r[2], r[3], tuple(r[4])) for r in await cur.fetchall()]


# A raster layer's features are its scenes: each footprint with when it was taken and its
# size, so a features client reads the mosaic's index (its pixels are served as tiles).
_SCENES = sql.SQL(
    "(SELECT id, name, acquired_at, width, height, resolution, source_crs, footprint AS geom"
    " FROM onemap.scenes WHERE layer_id = %(layer)s AND valid_to IS NULL) t")
_FOOTPRINT = sql.SQL(
    "json_build_object('type', 'Feature', 'id', t.id,"
    " 'geometry', ST_AsGeoJSON(ST_ForcePolygonCCW({geom}), 9)::json,"
    " 'properties', json_build_object("
    " 'name', t.name, 'acquired_at', t.acquired_at, 'width', t.width, 'height', t.height,"
    " 'resolution', t.resolution, 'source_crs', t.source_crs))::text")


async def footprints(conn: AsyncConnection, layer: Layer, r: Restriction, *, limit: int,
                     offset: int = 0, bbox: tuple[float, float, float, float] | None = None,
                     start: datetime | None = None, end: datetime | None = None,
                     scene: int | None = None) -> tuple[list[str], int]:
    """A page of the layer's scenes as GeoJSON features (footprints cut to the caller's area
    where its limit clips), newest first, and how many match."""
    w = Where()
    area = replace(r, filter=None)  # a raster has no fields for a row filter to test
    limit_sql, params = restrict.rows(layer, area)
    if limit_sql is not None:
        w.add(limit_sql, **params)
    if bbox is not None:
        clause, box_params = in_box(bbox)
        w.add(clause, **box_params)
    w.when(start, "t.acquired_at >= %(start)s", "start")
    w.when(end, "t.acquired_at <= %(end)s", "end")
    w.when(scene, "t.id = %(scene)s", "scene")
    where, params = w.build()
    params["layer"] = layer.id
    if area.clip and area.area_id is not None:
        params["_area"] = area.area_id
    cur = await conn.execute(sql.SQL(
        "SELECT {feature} FROM {scenes} WHERE {where} ORDER BY t.acquired_at DESC, t.name"
        " LIMIT %(limit)s OFFSET %(offset)s").format(
            feature=_FOOTPRINT.format(geom=restrict.clipped(sql.SQL("t.geom"), area)),
            scenes=_SCENES, where=where), {**params, "limit": limit, "offset": offset})
    rows = [row[0] for row in await cur.fetchall()]
    if offset == 0 and len(rows) < limit:
        return rows, len(rows)
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
        _SCENES, where), params)
    row = await cur.fetchone()
    return rows, int(row[0]) if row else 0


_local = threading.local()


def _dataset(uri: str, level: int = 0) -> DatasetReader:
    """An open dataset (overview ``level``, 0 for full resolution) for this thread:
    rasterio handles are not shared between threads."""
    cached: OrderedDict[tuple[str, int], DatasetReader] = (getattr(_local, "open", None)
                                                           or OrderedDict())
    _local.open = cached
    ds = cached.get((uri, level))
    if ds is None:
        ds = rasterio.open(uri, **({"overview_level": level - 1} if level else {}))
        cached[(uri, level)] = ds
        if len(cached) > OPEN_PER_THREAD:
            cached.popitem(last=False)[1].close()
    else:
        cached.move_to_end((uri, level))
    return ds


class RasterSource:
    """One raster layer at one version: its scenes, time slices and band metadata."""

    def __init__(self, layer: Layer, version: int, scenes: list[Scene],
                 store: RasterStore) -> None:
        self.layer = layer
        self.version = version
        self.scenes = scenes
        self.store = store
        self.meta: dict[str, Any] = layer.raster or {}
        self.times = sorted({s.acquired_at for s in scenes}, reverse=True)

    @property
    def _resampling(self) -> dict[str, str]:
        method = "bilinear" if self.elevation else "nearest"
        return {"resampling_method": method, "reproject_method": method}

    @property
    def band_count(self) -> int:
        return len(self.meta.get("bands", []))

    @property
    def elevation(self) -> bool:
        return bool(self.meta.get("elevation"))

    def pick(self, start: datetime | None = None,
             end: datetime | None = None) -> datetime | None:
        """The time slice to show: the newest at or before ``end`` (and not before
        ``start``); with neither, the newest."""
        for t in self.times:
            if (end is None or t <= end) and (start is None or t >= start):
                return t
        return None

    def slice(self, when: datetime | None) -> list[Scene]:
        return [s for s in self.scenes if s.acquired_at == when]

    def _reader(self, scene: Scene, tms: TileMatrixSet | None = None) -> Reader:
        uri = self.store.uri(scene.path)
        return Reader(uri, dataset=_dataset(uri), **({"tms": tms} if tms else {}))

    def tile(self, tms: TileMatrixSet, x: int, y: int, z: int, scenes: Sequence[Scene],
             indexes: Sequence[int] | None = None, buffer: float | None = None,
             tilesize: int = 256) -> ImageData | None:
        """The scenes' pixels in a tile, first scene on top; None where none has data.

        Imagery is read nearest-neighbour, so a tile's pixels are the scene's own; heights
        are interpolated, so shading and terrain have no steps."""
        bbox = tms.bounds(x, y, z)
        hit = [s for s in scenes if s.bounds[0] < bbox.right and s.bounds[2] > bbox.left
               and s.bounds[1] < bbox.top and s.bounds[3] > bbox.bottom]
        if not hit:
            return None
        if not self.elevation and not buffer:
            return self._gather(tms, x, y, z, hit, indexes, tilesize)
        return self._warped(tms, x, y, z, hit, indexes, tilesize, buffer)

    def _warped(self, tms: TileMatrixSet, x: int, y: int, z: int, scenes: Sequence[Scene],
                indexes: Sequence[int] | None, tilesize: int,
                buffer: float | None = None) -> ImageData | None:
        """rio-tiler's mosaic of warped reads: any resampling, any grid."""
        def read(scene: Scene, *args: Any, **kwargs: Any) -> ImageData:
            return self._reader(scene, tms).tile(*args, **kwargs)

        try:
            img, _ = mosaic_reader(scenes, read, x, y, z, indexes=indexes, buffer=buffer,
                                   tilesize=tilesize, threads=0, **self._resampling)
        except (EmptyMosaicError, TileOutsideBounds):
            return None
        return img

    def _gather(self, tms: TileMatrixSet, x: int, y: int, z: int, scenes: Sequence[Scene],
                indexes: Sequence[int] | None, tilesize: int) -> ImageData | None:
        """Nearest-neighbour mosaic without a warper (see layers.gather); rio-tiler's
        warped read where the grid does not map row by row onto the scenes."""
        out: np.ma.MaskedArray | None = None
        for scene in scenes:
            uri = self.store.uri(scene.path)
            base = _dataset(uri)
            c = gather.cells(tms, x, y, z, base.crs, tilesize)
            if c is None:
                return self._warped(tms, x, y, z, scenes, indexes, tilesize)
            part = gather.read(lambda n, u=uri: _dataset(u, n), c,
                               indexes or range(1, base.count + 1))
            if part is None:
                continue
            if out is None:
                out = part
            else:
                empty = np.ma.getmaskarray(out)
                out = np.ma.MaskedArray(np.where(empty, part.data, out.data),
                                        mask=empty & np.ma.getmaskarray(part))
            if not np.ma.getmaskarray(out).any():
                break
        if out is None or np.ma.getmaskarray(out).all():
            return None
        return ImageData(out, bounds=tms.xy_bounds(x, y, z), crs=tms.rasterio_crs)

    def part(self, bbox: tuple[float, float, float, float], crs: Any, width: int, height: int,
             scenes: Sequence[Scene], indexes: Sequence[int] | None = None
             ) -> ImageData | None:
        """The scenes' pixels in a box of any CRS (a map image's), first scene on top;
        None where none has data."""
        def read(scene: Scene, *args: Any, **kwargs: Any) -> ImageData:
            return self._reader(scene).part(*args, **kwargs)

        try:
            img, _ = mosaic_reader(list(scenes), read, bbox, dst_crs=crs, bounds_crs=crs,
                                   width=width, height=height, max_size=None,
                                   indexes=indexes, threads=0, **self._resampling)
        except (EmptyMosaicError, TileOutsideBounds):
            return None
        return img

    def point(self, lon: float, lat: float, scenes: Sequence[Scene],
              indexes: Sequence[int] | None = None) -> tuple[Scene, list[float | None]] | None:
        """The first scene's values at a lon/lat, None where masked; None if no scene has
        data there."""
        for scene in scenes:
            b = scene.bounds
            if not (b[0] <= lon <= b[2] and b[1] <= lat <= b[3]):
                continue
            try:
                pt = self._reader(scene).point(lon, lat, indexes=indexes)
            except TileOutsideBounds:
                continue
            data = np.ma.MaskedArray(pt.array)
            if np.ma.getmaskarray(data).all():
                continue
            return scene, [None if m else float(v)
                           for v, m in zip(data.data, np.ma.getmaskarray(data), strict=True)]
        return None


class RasterRegistry:
    """Sources by layer id, rebuilt when the layer's version moves."""

    def __init__(self, store: RasterStore) -> None:
        self.store = store
        self._sources: dict[str, RasterSource] = {}

    async def source(self, conn: AsyncConnection, layer: Layer) -> RasterSource:
        found = self._sources.get(layer.id)
        if found is None or found.version != layer.version:
            found = RasterSource(layer, layer.version, await fetch_scenes(conn, layer.id),
                                 self.store)
            self._sources[layer.id] = found
        return found

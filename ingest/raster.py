"""Raster ingest: any GDAL-readable raster becomes a lon/lat COG scene of a raster layer.

Open and check (rasterio) -> warp to lon/lat and write a COG (rio-cogeo) in a staging
folder -> validate it -> move it into the store and record the scene and the catalog in one
transaction. A failure anywhere leaves the layer and the store as they were.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyproj
import rasterio
from psycopg.types.json import Jsonb
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from ingest import crs as crsmod
from ingest.errors import IngestError
from ingest.meta import check_target
from layers import writer
from layers.catalog import get_layer, write_layer
from layers.db import database_url
from layers.errors import StoreFull
from layers.meta import LayerMeta
from layers.rasters import RasterStore
from layers.report import log_ingest
from onemap.settings import Settings

log = logging.getLogger("onemap.ingest")

COMPRESSIONS = ("auto", "webp", "jpeg", "deflate", "lerc_deflate")
# Lossy imagery codecs keep this much: visually lossless for aerial photos.
QUALITY = 90
# Statistics are read from an overview no larger than this on a side.
STATS_SIZE = 1024


@dataclass
class RasterReport:
    layer: str
    source: str
    version: int = 0
    acquired_at: datetime | None = None
    replaced: int = 0  # scenes of the same name and time it closed (kept as history)
    scenes: int = 0  # current scenes of the layer afterwards
    issues: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"read": 1, "inserted": 1, "replaced": self.replaced, "scenes": self.scenes}

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "source": self.source, "version": self.version,
                "acquired_at": self.acquired_at.isoformat() if self.acquired_at else None,
                **self.counts(), "issues": self.issues}

    def summary(self) -> str:
        when = self.acquired_at.isoformat() if self.acquired_at else "?"
        return (f"{self.layer} v{self.version}: scene of {when} added"
                + (f", {self.replaced} replaced" if self.replaced else "")
                + f"; {self.scenes} current scene(s)")


def _acquired(src: rasterio.DatasetReader, given: datetime | None, path: str) -> datetime:
    """The scene's time: as given, else the TIFF's DATETIME tag, else the file's mtime."""
    if given is not None:
        return given if given.tzinfo else given.replace(tzinfo=UTC)
    stamp = src.tags().get("TIFFTAG_DATETIME")
    if stamp:
        try:
            return datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            log.info("%s: TIFFTAG_DATETIME %r is not a time; using the file's", path, stamp)
    return datetime.fromtimestamp(os.path.getmtime(path), UTC) if os.path.exists(path) \
        else datetime.now(UTC)


def _profile(src: rasterio.DatasetReader, compress: str, elevation: bool) -> dict[str, Any]:
    """A codec suited to the data: lossy for 8-bit RGB imagery, lossless otherwise."""
    rgb = src.count == 3 and src.dtypes[0] == "uint8" and not elevation
    if compress == "auto":
        compress = "webp" if rgb else "deflate"
    if compress in ("webp", "jpeg") and not (src.count in (1, 3) and src.dtypes[0] == "uint8"):
        raise ValueError(f"{compress} needs 8-bit data with 1 or 3 bands; this has "
                         f"{src.count} band(s) of {src.dtypes[0]}")
    profile = dict(cog_profiles.get(compress))
    profile.update(blockxsize=256, blockysize=256)
    if compress in ("webp", "jpeg"):
        profile["quality"] = QUALITY
    if compress == "deflate":
        profile["predictor"] = 3 if np.dtype(src.dtypes[0]).kind == "f" else 2
    if compress == "lerc_deflate":
        profile["max_z_error"] = 0
    return profile


def _stats(path: str) -> list[dict[str, float | None]]:
    with rasterio.open(path) as ds:
        scale = max(1, max(ds.width, ds.height) // STATS_SIZE)
        data = ds.read(out_shape=(ds.count, max(1, ds.height // scale),
                                  max(1, ds.width // scale)), masked=True)
    out = []
    for band in data:
        valid = band.compressed()
        if valid.dtype.kind == "f":  # NaN or infinite cells are no values, declared or not
            valid = valid[np.isfinite(valid)]
        if valid.size == 0:
            out.append({"min": None, "max": None, "p2": None, "p98": None})
            continue
        p2, p98 = np.percentile(valid, [2, 98])
        out.append({"min": float(valid.min()), "max": float(valid.max()),
                    "p2": float(p2), "p98": float(p98)})
    return out


@dataclass(frozen=True)
class _Cog:
    local: str
    crs: str
    source_crs: str
    bounds: tuple[float, float, float, float]
    width: int
    height: int
    resolution: tuple[float, float]
    bands: list[dict[str, Any]]
    stats: list[dict[str, float | None]]


def _make_cog(src: rasterio.DatasetReader, label: str, folder: str, source_crs: str | None,
              nodata: float | None, compress: str, elevation: bool,
              progress: bool) -> _Cog:
    crs = crsmod.resolve(label, source_crs, src.crs.to_wkt() if src.crs else None)
    if src.transform.is_identity and not src.gcps[0]:
        raise IngestError(label, "the raster has no georeferencing (no geotransform or "
                                 "ground control points)")
    if crs.label == crsmod.GCJ02:
        raise IngestError(label, "GCJ-02 rasters are not supported: warp them to WGS84 first")
    source = pyproj.CRS.from_user_input(crs.label)
    in_crs = rasterio.crs.CRS.from_wkt(source.to_wkt())
    frame = "EPSG:4490" if crsmod.is_cgcs2000(source) else "EPSG:4326"
    src_nodata = nodata if nodata is not None else src.nodata
    resampling = Resampling.bilinear
    out = os.path.join(folder, "scene.tif")
    vrt_options: dict[str, Any] = {"crs": frame, "resampling": resampling, "src_crs": in_crs}
    if src_nodata is not None:
        vrt_options.update(src_nodata=src_nodata, nodata=src_nodata)
    else:
        vrt_options["add_alpha"] = True
    profile = _profile(src, compress, elevation)
    with WarpedVRT(src, **vrt_options) as vrt:
        cog_translate(vrt, out, profile, add_mask=src_nodata is None and compress != "jpeg",
                      overview_resampling="bilinear" if elevation else "average",
                      in_memory=False, quiet=not progress, use_cog_driver=False,
                      indexes=list(range(1, src.count + 1)))
    valid, errors, _ = cog_validate(out, quiet=True)
    if not valid:
        raise IngestError(label, f"the COG made from it is not valid: {'; '.join(errors)}")
    with rasterio.open(out) as cog:
        b = cog.bounds
        bands = [{"name": f"b{i}", "type": cog.dtypes[i - 1],
                  "description": src.descriptions[i - 1] or _colour(src, i),
                  "nodata": json_number(cog.nodata)} for i in range(1, cog.count + 1)]
        meta = (cog.width, cog.height, (abs(cog.res[0]), abs(cog.res[1])))
    return _Cog(out, frame, crs.label, (b.left, b.bottom, b.right, b.top), *meta,
                bands, _stats(out))


def json_number(value: float | None) -> float | str | None:
    """A number as JSON can hold it: NaN and the infinities (common no-data values of float
    rasters) as the strings GDAL writes them as, "nan", "inf" and "-inf"."""
    if value is None or np.isfinite(value):
        return value
    return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")


def _colour(src: rasterio.DatasetReader, i: int) -> str | None:
    ci = src.colorinterp[i - 1]
    return None if ci in (ColorInterp.gray, ColorInterp.undefined) else ci.name


def _default_bands(count: int, given: list[int] | None) -> list[int]:
    if given:
        if any(not 1 <= b <= count for b in given):
            raise ValueError(f"--bands {given} names a band outside 1..{count}")
        return given
    return [1, 2, 3] if count >= 3 else [1]


def ingest_raster(
    path: str | os.PathLike[str],
    layer_id: str,
    *,
    settings: Settings | None = None,
    time: datetime | None = None,
    source_crs: str | None = None,
    nodata: float | None = None,
    elevation: bool = False,
    bands: list[int] | None = None,
    compress: str = "auto",
    meta: LayerMeta | None = None,
    progress: bool | None = None,
) -> RasterReport:
    """Add one raster file as a scene of ``layer_id``; raises IngestError, leaving the layer
    and the store as they were."""
    settings = settings or Settings.from_env()
    meta = meta or LayerMeta()
    path = str(path)
    label = Path(path).name
    report = RasterReport(layer=layer_id, source=label)
    check_target(label, layer_id, meta, settings.levels)
    if compress not in COMPRESSIONS:
        raise IngestError(label, f"compression {compress!r} is not one of "
                                 + ", ".join(COMPRESSIONS))
    if not path.startswith("/vsi") and not os.path.exists(path):
        raise IngestError(label, f"file not found: {path}")
    url = database_url(settings)
    store = RasterStore(settings.raster_root)
    show = sys.stderr.isatty() if progress is None else progress
    started = datetime.now(UTC)
    try:
        try:
            src = rasterio.open(path)
        except RasterioError as exc:
            raise IngestError(label, f"not a raster GDAL can read: {exc}") from exc
        with src, store.staging() as folder:
            report.acquired_at = _acquired(src, time, path)
            try:
                cog = _make_cog(src, label, folder, source_crs, nodata, compress, elevation,
                                show)
                default = _default_bands(src.count, bands) if bands else None
            except (RasterioError, ValueError) as exc:
                if _no_space(exc, store):
                    raise _full(store, exc) from exc
                raise IngestError(label, f"cannot be read whole, layer unchanged: {exc}") \
                    from exc
            log.info("%s: COG of %d x %d px, %d band(s) made", layer_id, cog.width,
                     cog.height, len(cog.bands))
            _record(url, store, layer_id, cog, report, meta, settings, elevation, default,
                    label)
    except IngestError as exc:
        log_ingest(url, report, started, exc.reason)
        raise
    except StoreFull as exc:
        log_ingest(url, report, started, str(exc))
        raise
    except psycopg.OperationalError:
        raise  # the database is away: nothing to log it in
    except (psycopg.Error, OSError) as exc:
        if _no_space(exc, store):
            log_ingest(url, report, started, str(exc))
            raise _full(store, exc) from exc
        log_ingest(url, report, started, str(exc))
        raise IngestError(label, f"ingest failed, layer unchanged: {exc}") from exc
    log_ingest(url, report, started, None)
    log.info("%s", report.summary())
    return report


def _no_space(exc: BaseException, store: RasterStore | None = None) -> bool:
    """Whether the error is a full disk, however GDAL or the OS words it (GDAL's own
    "Write failed" says no more, so a local store's free space is asked too)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen).lower()
        if "no space left" in text or "disk quota" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    if store is not None and "write failed" in str(exc).lower() \
            and not store.root.startswith("/vsi"):
        try:
            return shutil.disk_usage(store.root).free < FULL_BELOW
        except OSError:
            return False
    return False


# A store with less free room than this, after a failed write, is full.
FULL_BELOW = 16 * 1024 * 1024


def _full(store: RasterStore, exc: BaseException) -> StoreFull:
    return StoreFull(f"the raster store {store.root} has no room left ({exc}); nothing was "
                     "kept and the layer is unchanged: free space and ingest again")


def _record(url: str, store: RasterStore, layer_id: str, cog: _Cog, report: RasterReport,
            meta: LayerMeta, settings: Settings, elevation: bool, default: list[int] | None,
            label: str) -> None:
    """Move the COG into the store and record it; the file goes again if the commit fails."""
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        writer.lock(conn, layer_id)
        old = get_layer(conn, layer_id)
        if old is not None and old.kind != "raster":
            raise IngestError(label, f"layer {layer_id!r} is a {old.kind} layer")
        if old is not None and old.raster:
            had = [(b["type"]) for b in old.raster["bands"]]
            if had != [b["type"] for b in cog.bands]:
                raise IngestError(label, f"its bands ({len(cog.bands)} of "
                                         f"{cog.bands[0]['type']}) differ from the layer's "
                                         f"({len(had)} of {had[0]}): scenes of one layer "
                                         "must share their bands")
        if old is None:  # the scene refers to its layer: the entry comes first
            conn.execute("INSERT INTO onemap.layers (id, kind, title) VALUES (%s, 'raster', %s)",
                         (layer_id, layer_id))
        path = store.put(cog.local, layer_id)
        try:
            cur = conn.execute(
                "UPDATE onemap.scenes SET valid_to = now() WHERE layer_id = %s"
                " AND acquired_at = %s AND name = %s AND valid_to IS NULL",
                (layer_id, report.acquired_at, label))
            report.replaced = cur.rowcount
            w, s, e, n = cog.bounds
            conn.execute(
                "INSERT INTO onemap.scenes (layer_id, name, acquired_at, path, crs, source_crs,"
                " bounds, footprint, width, height, resolution, produced_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, ST_MakeEnvelope(%s, %s, %s, %s, 4326),"
                " %s, %s, %s, %s)",
                (layer_id, label, report.acquired_at, path, cog.crs, cog.source_crs,
                 list(cog.bounds), w, s, e, n, cog.width, cog.height, list(cog.resolution),
                 report.acquired_at))
            _write_catalog(conn, layer_id, old, cog, meta, settings, elevation, default,
                           label, report)
            conn.commit()
        except BaseException:
            store.remove(path)
            raise


def _write_catalog(conn: psycopg.Connection, layer_id: str, old: Any, cog: _Cog,
                   meta: LayerMeta, settings: Settings, elevation: bool, default: list[int] | None,
                   label: str, report: RasterReport) -> None:
    row = conn.execute(
        "SELECT count(*), min(bounds[1]), min(bounds[2]), max(bounds[3]), max(bounds[4]),"
        " array_agg(DISTINCT acquired_at ORDER BY acquired_at),"
        " min(resolution[1]), min(resolution[2]), max(acquired_at)"
        " FROM onemap.scenes WHERE layer_id = %s AND valid_to IS NULL", (layer_id,)).fetchone()
    report.scenes = int(row[0])
    raster = {
        "bands": cog.bands,
        "elevation": elevation or bool(old and old.raster and old.raster.get("elevation")),
        "stats": (_merge_stats(old.raster["stats"], cog.stats) if old and old.raster
                  else cog.stats),
        # As asked, else as the layer had, else true colour order of the first three.
        "default_bands": default or (old.raster.get("default_bands") if old and old.raster
                                     else None) or _default_bands(len(cog.bands), None),
        "resolution": [row[6], row[7]],
        "times": [t.isoformat() for t in row[5]],
    }
    values = {
        "kind": "raster",
        **meta.catalog_values(old, layer_id, settings.default_level, role="base",
                              update_cycle="yearly"),
        "crs": cog.crs, "source_crs": cog.source_crs, "source": label,
        "fields": Jsonb([{"name": b["name"], "type": b["type"], "length": None,
                          "nullable": True, "key": False, "source_name": b["name"]}
                         for b in cog.bands]),
        "feature_count": report.scenes,
        "extent": [row[1], row[2], row[3], row[4]],
        "produced_at": row[8],
        "raster": Jsonb(raster),
        "version": (old.version if old else 0) + 1,
        "schema_version": (old.schema_version if old else 0) + (0 if old else 1),
        "minzoom": 0,
        "maxzoom": _maxzoom(cog.resolution[0]),
    }
    write_layer(conn, layer_id, values, new=False)
    report.version = int(values["version"])


def _merge_stats(old: list[dict], new: list[dict]) -> list[dict]:
    """Layer-wide statistics: the widest range any scene has."""
    out = []
    for a, b in zip(old, new, strict=True):
        merged = {}
        for k, pick in (("min", min), ("max", max), ("p2", min), ("p98", max)):
            vals = [v for v in (a.get(k), b.get(k)) if v is not None]
            merged[k] = pick(vals) if vals else None
        out.append(merged)
    return out


def _maxzoom(degrees_per_pixel: float) -> int:
    """The Web Mercator zoom whose pixels are about as fine as the data's, plus two."""
    metres = degrees_per_pixel * 111_320
    z = int(np.ceil(np.log2(156_543.03 / metres)))
    return max(0, min(24, z + 2))

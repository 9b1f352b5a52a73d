"""Vector ingest: stream a file in batches into a layer, in one transaction, with history.

Read (pyogrio, Arrow batches) -> to lon/lat (pyproj) -> check geometry (shapely) ->
COPY into a staging table -> the layer's writer merges it (layers.bulk: history, overview,
dictionary, catalog version).
Any failure rolls the whole ingest back, so the layer keeps its previous version.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyogrio.raw import open_arrow
from tqdm import tqdm

from ingest import crs as crsmod
from ingest.errors import IngestError
from ingest.meta import check_target
from layers import bulk, store, writer
from layers.catalog import SYSTEM_COLUMNS, Field, get_layer
from layers.db import database_url
from layers.geometry import check
from layers.meta import LayerMeta
from layers.report import IngestReport, Issue, log_ingest
from onemap.settings import Settings

log = logging.getLogger("onemap.ingest")

# GDAL's CSV driver finds point coordinates in columns with these names.
CSV_OPTIONS = {
    "X_POSSIBLE_NAMES": "lon,lng,long,longitude,x,经度",
    "Y_POSSIBLE_NAMES": "lat,latitude,y,纬度",
    "KEEP_GEOM_COLUMNS": "NO",
    "AUTODETECT_TYPE": "YES",
}


@dataclass
class _Plan:
    """The source resolved: its fields as columns, its CRS, where key and times come from."""

    label: str
    fields: list[Field]
    column_of: dict[str, str]  # source field -> column
    geom_col: str
    fid_col: str | None
    key: tuple[str, ...]
    produced_field: str | None
    produced_default: datetime | None
    crs: crsmod.SourceCrs
    total: int | None
    lengths: dict[str, int] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set)


# The dictionary types a caller may give a field, as Arrow holds them.
ARROW_TYPES = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(),
               "boolean": pa.bool_(), "date": pa.date32(),
               "datetime": pa.timestamp("us", "UTC")}


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".csv.gz", ".tsv"))


def _dict_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "number"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_timestamp(t):
        return "datetime"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time"
    return "string"


def _column_names(names: Sequence[str]) -> dict[str, str]:
    """Source field -> column: system names and leading underscores get a ``src`` prefix."""
    out: dict[str, str] = {}
    taken = set(SYSTEM_COLUMNS)
    for name in names:
        col = f"src{name}" if name.startswith("_") or name in taken else name
        while len(col.encode()) > 63:
            col = col[:-1]
        base, i = col, 1
        while col in taken:
            i += 1
            col = f"{base[:60]}_{i}"
        taken.add(col)
        out[name] = col
    return out


def _plan(path: str, label: str, schema: pa.Schema, meta: dict[str, Any], info: dict[str, Any],
          key: str | None, produced_field: str | None, source_crs: str | None,
          types: dict[str, str] | None = None) -> _Plan:
    geom_col = next((f.name for f in schema
                     if (f.metadata or {}).get(b"ARROW:extension:name") == b"geoarrow.wkb"),
                    None)
    if geom_col is None:
        raise IngestError(label, "the layer has no geometry column")
    fid_col = meta.get("fid_column") or None
    if fid_col not in schema.names:
        fid_col = None
    src_fields = [f for f in schema if f.name not in {geom_col, fid_col}]
    names = [f.name for f in src_fields]
    keys = tuple(k.strip() for k in key.split(",")) if key else ()
    for k in keys:
        if k not in names:
            raise IngestError(label, f"key field {k!r} is not in the file; its fields are: "
                                     + ", ".join(names))
    if produced_field and produced_field not in names:
        raise IngestError(label, f"produced-time field {produced_field!r} is not in the file;"
                                 " its fields are: " + ", ".join(names))
    types = types or {}
    unknown = sorted(set(types) - set(names))
    if unknown:
        raise IngestError(label, f"no field {unknown[0]!r} to give a type; its fields are: "
                                 + ", ".join(names))
    cols = _column_names(names)
    fields = [Field(name=cols[f.name], type=types.get(f.name) or _dict_type(f.type),
                    key=f.name in keys,
                    nullable=len(keys) != 1 or f.name not in keys, source_name=f.name)
              for f in src_fields]
    default_crs = "EPSG:4326" if _is_csv(path) else None
    resolved = crsmod.resolve(label, source_crs, meta.get("crs") or default_crs)
    produced_default = None
    if not produced_field and os.path.exists(path):
        produced_default = datetime.fromtimestamp(os.path.getmtime(path), UTC)
    total = info.get("features")
    return _Plan(label=label, fields=fields, column_of=cols, geom_col=geom_col, fid_col=fid_col,
                 key=keys, produced_field=produced_field, produced_default=produced_default,
                 crs=resolved, total=total if total and total > 0 else None)


def _as_type(col: pa.ChunkedArray | pa.Array, t: str, label: str, name: str) -> pa.Array:
    """The column as its dictionary type says (a type the caller gave may differ from the
    source's); IngestError naming the field when its values are not of that type."""
    if t == "string" or t not in ARROW_TYPES or col.type == ARROW_TYPES[t]:
        return _as_text(col, t)
    try:
        return pc.cast(col, ARROW_TYPES[t])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise IngestError(label, f"field {name!r} is not all {t}: {exc}") from None


def _as_text(col: pa.ChunkedArray | pa.Array, t: str) -> pa.Array:
    if t == "string" and not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        try:
            return pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
    return col


def _convert(plan: _Plan, batch: pa.RecordBatch, first: int,
             report: IngestReport) -> pa.Table | None:
    """One source batch -> rows for COPY; problems go into the report."""
    n = batch.num_rows
    wkb = batch.column(plan.geom_col).to_numpy(zero_copy_only=False)
    geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    geoms = shapely.force_2d(geoms)
    if plan.crs.to_lonlat is not None:
        geoms = shapely.transform(geoms, plan.crs.to_lonlat)
    geoms, problems = check(geoms)

    if plan.key:
        ids = _key_values(batch, plan.key)
    elif plan.fid_col:
        ids = pc.cast(batch.column(plan.fid_col), pa.string()).to_pylist()
    else:
        ids = [str(first + i + 1) for i in range(n)]
    keep = ~shapely.is_missing(geoms)
    if plan.key:
        for i, v in enumerate(ids):
            # A feature already rejected for its geometry is reported once.
            if keep[i] and (v is None or v == ""):
                problems.append((i, "rejected", "no value in key field "
                                 + " or ".join(repr(k) for k in plan.key)))
                keep[i] = False
    for i, action, reason in sorted(problems):
        report.issues.append(Issue(first + i + 1, ids[i], action, reason))
    if not keep.any():
        return None

    idx = pa.array(np.flatnonzero(keep))
    kept = batch.take(idx)
    if plan.produced_field:
        raw = kept.column(plan.produced_field).to_pandas()
        parsed = pd.to_datetime(raw, errors="coerce", utc=True)
        produced = pa.array(parsed, pa.timestamp("us", "UTC"))
    else:
        produced = pa.array([plan.produced_default] * len(idx), pa.timestamp("us", "UTC"))
    columns: dict[str, pa.Array] = {
        "_n": pa.array(np.flatnonzero(keep) + first + 1, pa.int64()),
        "_fid": pa.array([ids[i] for i in np.flatnonzero(keep)], pa.string()),
        "_produced_at": produced,
        "geom": pa.array(shapely.to_wkb(geoms[keep], hex=True), pa.string()),
    }
    for f in plan.fields:
        col = _as_type(kept.column(f.source_name), f.type, plan.label, f.source_name)
        columns[f.name] = col
        if col.null_count:
            plan.nulls.add(f.name)
        if f.type == "string" and len(col):
            longest = pc.max(pc.utf8_length(col)).as_py()
            if longest and longest > plan.lengths.get(f.name, 0):
                plan.lengths[f.name] = longest
    return pa.table(columns)


def _key_values(batch: pa.RecordBatch, keys: tuple[str, ...]) -> list[str | None]:
    """The key as text; a composite key joins its parts with '/', empty parts as ''."""
    parts = [pc.cast(batch.column(k), pa.string()).to_pylist() for k in keys]
    if len(parts) == 1:
        return parts[0]
    return [None if all(v in (None, "") for v in row) else "/".join(v or "" for v in row)
            for row in zip(*parts, strict=True)]


def _csv_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def _open(path: str, label: str, source_layer: str | None, where: str | None,
          batch_size: int, types: dict[str, str] | None = None):
    options = dict(CSV_OPTIONS) if _is_csv(path) else {}
    guessed: dict[str, str] = {}
    try:
        if source_layer is not None:
            available = [str(name) for name, _ in pyogrio.list_layers(path)]
            if source_layer not in available:
                raise IngestError(label, f"no layer {source_layer!r}; layers are: "
                                         + ", ".join(available))
        info = pyogrio.read_info(path, layer=source_layer, **options)
        if options and types:
            # Told, not guessed: GDAL's guesses stand for the other columns, but the CSV is
            # read as text (a phone number keeps its leading zero) and cast from there.
            guessed = {str(n): _numpy_type(str(t))
                       for n, t in zip(info["fields"], info["dtypes"], strict=True)}
            options["AUTODETECT_TYPE"] = "NO"
        ctx = open_arrow(path, layer=source_layer, where=where, batch_size=batch_size,
                         return_fids=True, use_pyarrow=True, **options)
    except (DataSourceError, DataLayerError) as exc:
        raise IngestError(label, f"cannot be read as vector data: {exc}") from exc
    except pyogrio.errors.FieldError as exc:
        raise IngestError(label, f"bad --where filter: {exc}") from exc
    return info, ctx, guessed


def _numpy_type(dtype: str) -> str:
    """A dictionary type for the NumPy type GDAL guessed for a column."""
    if dtype.startswith(("int", "uint")):
        return "integer"
    if dtype.startswith("float"):
        return "number"
    if dtype == "bool":
        return "boolean"
    if dtype == "datetime64[D]":
        return "date"
    if dtype.startswith("datetime64"):
        return "datetime"
    return "string"


def ingest_vector(
    path: str | os.PathLike[str],
    layer_id: str,
    *,
    settings: Settings | None = None,
    source_layer: str | None = None,
    source_crs: str | None = None,
    key: str | None = None,
    where: str | None = None,
    produced_field: str | None = None,
    meta: LayerMeta | None = None,
    progress: bool | None = None,
    field_types: dict[str, str] | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> IngestReport:
    """Load one vector source into ``layer_id``; raises IngestError, leaving the layer as it was.

    ``field_types``: source field -> dictionary type, where the caller knows better than the
    file (a phone number is text). ``on_progress(read, total)`` is told after each batch."""
    settings = settings or Settings.from_env()
    meta = meta or LayerMeta()
    path = str(path)
    label = Path(path).name + (f" (layer {source_layer})" if source_layer else "")
    report = IngestReport(layer=layer_id, source=label)
    check_target(label, layer_id, meta, settings.levels)
    bad = sorted(t for t in (field_types or {}).values() if t not in ARROW_TYPES)
    if bad:
        raise IngestError(label, f"field type {bad[0]!r} is not one of "
                                 + ", ".join(ARROW_TYPES))
    if not path.startswith("/vsi") and not os.path.exists(path):
        raise IngestError(label, f"file not found: {path}")
    url = database_url(settings)
    started = datetime.now(UTC)
    try:
        info, ctx, guessed = _open(path, label, source_layer, where,
                                   settings.ingest_batch_size, field_types)
        with ctx as (arrow_meta, reader):
            plan = _plan(path, label, reader.schema, arrow_meta, info, key, produced_field,
                         source_crs, guessed | (field_types or {}))
            report = _run(url, layer_id, plan, reader, report, meta, progress, settings,
                          on_progress)
    except IngestError as exc:
        log_ingest(url, report, started, exc.reason)
        raise
    except (psycopg.Error, pa.ArrowException, OSError, ValueError) as exc:
        log_ingest(url, report, started, str(exc))
        raise IngestError(label, f"ingest failed, layer unchanged: {exc}") from exc
    log_ingest(url, report, started, None)
    return report


def _batches(reader: Any, label: str):
    """The reader's batches, with GDAL's warnings about the data sent to the log."""
    it = iter(reader)
    while True:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batch = next(it, None)
        for w in caught:
            log.info("%s: %s", label, w.message)
        if batch is None:
            return
        yield batch


def _run(url: str, layer_id: str, plan: _Plan, reader: Any, report: IngestReport,
         meta: LayerMeta, progress: bool | None, settings: Settings,
         on_progress: Callable[[int, int | None], None] | None = None) -> IngestReport:
    show = sys.stderr.isatty() if progress is None else progress
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        writer.lock(conn, layer_id)
        old = get_layer(conn, layer_id)
        if old is not None and old.kind != "vector":
            raise IngestError(plan.label, f"layer {layer_id!r} is a {old.kind} layer")
        columns = store.create_staging(conn, plan.fields)
        bar = tqdm(total=plan.total, unit=" features", disable=not show, desc=layer_id)
        read = 0
        with conn.cursor().copy(store.copy_statement(columns)) as copy:
            for batch in _batches(reader, plan.label):
                rows = _convert(plan, batch, read, report)
                read += batch.num_rows
                if rows is not None:
                    copy.write(_csv_bytes(rows))
                bar.update(batch.num_rows)
                log.info("%s: %d features read", layer_id, read)
                if on_progress is not None:
                    on_progress(read, plan.total)
        bar.close()
        report.read = read
        for n, key_value, first in store.staging_duplicates(conn):
            report.issues.append(Issue(n, key_value, "rejected",
                                       f"duplicate key {key_value!r}, first at feature {first}"))
        report.issues.sort(key=lambda i: i.feature)
        if read == 0:
            raise IngestError(plan.label, "the source has no features"
                                          + (" matching --where" if plan.total else ""))
        if report.rejected == read:
            raise IngestError(plan.label, f"every feature was rejected; first: "
                                          f"{report.issues[0].reason}")
        staged = bulk.Staged(
            source=plan.label, fields=plan.fields,
            key_field=",".join(plan.column_of[k] for k in plan.key) or None,
            crs=plan.crs.catalog_crs, source_crs=plan.crs.label,
            produced_at=plan.produced_default, lengths=plan.lengths, nulls=plan.nulls)
        counts, report.version = bulk.write(conn, layer_id, old, staged, meta,
                                            detail_zoom=settings.detail_zoom,
                                            default_level=settings.default_level,
                                            max_detail_features=settings.max_detail_features)
        report.inserted, report.changed = counts["inserted"], counts["changed"]
        report.unchanged, report.closed = counts["unchanged"], counts["closed"]
        conn.commit()
    log.info("%s", report.summary())
    return report

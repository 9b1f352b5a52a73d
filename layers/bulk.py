"""A whole source merged into a layer, whoever read it.

The vector ingest copies a file's rows into the staging table (``store.create_staging``); the
registry inserts its entities there straight from its own tables. From there one path writes
them: the table made or widened to the incoming dictionary, the history merged
(``store.merge``), indexes and statistics, the overview, the data dictionary and the catalog
version. The caller holds the layer's lock (``writer.lock``) and commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from layers import overviews, store
from layers.catalog import NOTES, Field, Layer, table_of, write_layer
from layers.errors import Invalid
from layers.meta import LayerMeta

log = logging.getLogger("onemap.ingest")


@dataclass
class Staged:
    """What is in the staging table and what the catalog is to say of its source."""

    source: str  # where the rows came from, for the catalog: a file name, "registry: …"
    fields: list[Field]  # the source's fields, as staging's columns
    key_field: str | None  # the key's columns, joined by ','
    crs: str  # the CRS the catalog names for the layer
    source_crs: str | None
    produced_at: datetime | None = None  # the source's own time, where rows carry none
    lengths: dict[str, int] = field(default_factory=dict)  # longest text per field
    nulls: set[str] = field(default_factory=set)  # fields with an empty value


def measure(conn: psycopg.Connection, staged: Staged) -> None:
    """Find the longest texts and the empty fields in staging, for a source that did not
    measure them while it was read."""
    if not staged.fields:
        return
    parts = []
    for f in staged.fields:
        col = sql.Identifier(f.name)
        parts.append(sql.SQL("bool_or({} IS NULL)").format(col))
        parts.append(sql.SQL("max(char_length({}::text))").format(col)
                     if f.type == "string" else sql.SQL("NULL::int"))
    row = conn.execute(sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(parts), store.STAGING)).fetchone()
    assert row is not None  # an aggregate always has its row
    for i, f in enumerate(staged.fields):
        has_null, longest = row[2 * i], row[2 * i + 1]
        if has_null:
            staged.nulls.add(f.name)
        if longest:
            staged.lengths[f.name] = max(int(longest), staged.lengths.get(f.name, 0))


def geometry_type(types: Sequence[str]) -> str | None:
    """The catalog's geometry type for the shapes a layer holds."""
    names = {t.removeprefix("ST_") for t in types}
    if not names:
        return None
    if len(names) == 1:
        return names.pop()
    families = {n.removeprefix("Multi") for n in names}
    return f"Multi{families.pop()}" if len(families) == 1 else "Geometry"


def dictionary(old: Layer | None, staged: Staged,
               notes: dict[str, dict[str, str]] | None = None) -> list[Field]:
    """The layer's data dictionary after this write: the incoming fields as measured, with
    the classifications, titles, units and descriptions already given (``notes`` names new
    ones, by field), and every earlier field (history holds them)."""
    fields = [Field(name=f.name, type=f.type, length=staged.lengths.get(f.name) if
                    f.type == "string" else None,
                    nullable=f.name in staged.nulls and not f.key, key=f.key,
                    source_name=f.source_name) for f in staged.fields]
    if old:
        levels = {f.name: f.level for f in old.fields}
        fields = [replace(f, level=levels.get(f.name)) for f in fields]
        incoming = {f.name for f in fields}
        fields += [Field(f.name, f.type, f.length, True, False, f.source_name, f.level)
                   for f in old.fields if f.name not in incoming]
        known = {f.name: f for f in old.fields}
        fields = [replace(f, **{n: getattr(known[f.name], n) for n in NOTES})
                  if f.name in known else f for f in fields]
    return annotate(fields, notes)


def annotate(fields: list[Field], notes: dict[str, dict[str, str]] | None) -> list[Field]:
    """``fields`` with the titles, units and descriptions in ``notes`` (an empty one
    clears); Invalid for a field that is not there or a note that is not one."""
    notes = notes or {}
    names = {f.name for f in fields}
    unknown = sorted(set(notes) - names)
    if unknown:
        raise Invalid(f"no field {unknown[0]!r} to describe; the fields are "
                      + ", ".join(f.name for f in fields))
    for name, said in notes.items():
        bad = sorted(set(said) - set(NOTES))
        if bad:
            raise Invalid(f"field {name!r}: {bad[0]!r} is not one of " + ", ".join(NOTES))
    return [replace(f, **{k: (v.strip() or None) if isinstance(v, str) else None
                          for k, v in notes.get(f.name, {}).items()}) for f in fields]


def write(conn: psycopg.Connection, layer_id: str, old: Layer | None, staged: Staged,
          meta: LayerMeta, *, detail_zoom: int, default_level: str,
          max_detail_features: int = 10_000) -> tuple[dict[str, int], int]:
    """Merge staging into the layer; returns the counts (inserted, changed, unchanged,
    closed) and the layer's catalog version after it. A changed layer's detail zoom is the
    lowest from ``detail_zoom`` whose densest tile holds at most ``max_detail_features``."""
    fields = dictionary(old, staged, meta.notes())
    new_table = not store.table_exists(conn, layer_id)
    if new_table:
        store.create_table(conn, layer_id, fields)
        schema_changed = True
    else:
        types, schema_changed = store.add_or_widen_columns(conn, layer_id, fields)
        fields = [replace(f, type=types[f.name]) for f in fields]
    counts = store.merge(conn, layer_id, staged.fields)
    if new_table:
        store.create_indexes(conn, layer_id)
    conn.execute(sql.SQL("ANALYZE {}").format(table_of(layer_id)))
    data_changed = bool(counts["inserted"] or counts["changed"] or counts["closed"])
    zoom = old.detail_zoom if old and old.detail_zoom is not None else detail_zoom
    if data_changed or new_table:
        zoom = overviews.choose_detail_zoom(conn, layer_id, detail_zoom, max_detail_features)
        cells = overviews.build(conn, layer_id, zoom)
        log.info("%s: overview of %d cells below zoom %d", layer_id, cells, zoom)
    # Tile sources hold the detail zoom: a new one makes them reload, as a new schema does.
    schema_changed = schema_changed or (old is not None and old.detail_zoom != zoom)
    version = _catalog(conn, layer_id, old, staged, meta, fields, schema_changed or old is None,
                       data_changed, zoom, default_level)
    return counts, version


def _catalog(conn: psycopg.Connection, layer_id: str, old: Layer | None, staged: Staged,
             meta: LayerMeta, fields: list[Field], schema_changed: bool, data_changed: bool,
             detail_zoom: int, default_level: str) -> int:
    stats = store.layer_stats(conn, layer_id)
    values = {
        **meta.catalog_values(old, layer_id, default_level, role="thematic",
                              update_cycle="irregular"),
        "crs": staged.crs, "source_crs": staged.source_crs, "source": staged.source,
        "geometry_type": geometry_type(stats["geometry_types"]),
        "key_field": staged.key_field,
        "fields": Jsonb([f.as_dict() for f in fields]),
        "feature_count": stats["feature_count"], "extent": stats["extent"],
        "produced_at": staged.produced_at, "detail_zoom": detail_zoom,
    }
    meta_changed = old is None or any(
        values[k] != getattr(old, k) for k in ("title", "role", "department", "update_cycle",
                                               "sharing_type", "level", "crs", "key_field"))
    bump = data_changed or schema_changed or meta_changed
    values["version"] = (old.version if old else 0) + (1 if bump else 0)
    values["schema_version"] = (old.schema_version if old else 0) + (1 if schema_changed else 0)
    write_layer(conn, layer_id, values, new=old is None)
    return int(values["version"])

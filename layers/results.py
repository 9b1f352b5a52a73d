"""A process's result kept as a layer of its own, for results too large to hand back as
one document: written by the layers' writer (lock, staging, merge, overview, dictionary,
version) as any ingest is, so it is served as tiles, features and images at once.

A result layer belongs to the caller's department, is classified at the highest level of
the process's inputs, is shared with no one (its department reads it, rule 4), and is
withdrawn, as any layer can be, once its time is up (``expire``): served to no one since.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from layers import bulk, store, writer
from layers.catalog import Field, Layer, get_layer
from layers.errors import Invalid
from layers.manage import change
from layers.meta import LayerMeta

CRS = "EPSG:4326"


def _type(values: list[Any]) -> str:
    seen = {type(v) for v in values if v is not None}
    if seen <= {bool} and seen:
        return "boolean"
    if seen <= {int} and seen:
        return "integer"
    if seen <= {int, float} and seen:
        return "number"
    return "string"


def _value(v: Any, kind: str) -> Any:
    if v is None or kind != "string" or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def dictionary(features: list[dict[str, Any]]) -> list[Field]:
    """The result's fields, in first-seen order, typed by the values they hold."""
    names: dict[str, list[Any]] = {}
    for f in features:
        for k, v in (f.get("properties") or {}).items():
            names.setdefault(k, []).append(v)
    fields = []
    for name, values in names.items():
        # The layers' own columns start with "_"; PostgreSQL names hold 63 bytes.
        if not name or name.startswith("_") or len(name.encode()) > 63:
            raise Invalid(f"a result's field {name!r} cannot be a layer's field name")
        fields.append(Field(name, _type(values)))
    return fields


def write(url: str, layer_id: str, result: dict[str, Any], meta: LayerMeta,
          expires_at: datetime, *, detail_zoom: int, default_level: str) -> Layer:
    """The result's features as a new layer ``layer_id``, kept until ``expires_at``."""
    features = [f for f in result.get("features") or () if f.get("geometry")]
    if not features:
        raise Invalid("the result has no shapes to keep as a layer")
    fields = dictionary(features)
    kinds = {f.name: f.type for f in fields}
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        writer.lock(conn, layer_id)
        if get_layer(conn, layer_id) is not None:
            raise Invalid(f"layer {layer_id!r} exists already")
        columns = store.create_staging(conn, fields)
        rows = [(n, str(n), json.dumps(f["geometry"]),
                 *[_value((f.get("properties") or {}).get(c.name), kinds[c.name])
                   for c in fields]) for n, f in enumerate(features, 1)]
        conn.cursor().executemany(sql.SQL(
            "INSERT INTO {s} ({cols}) VALUES (%s, %s, now(),"
            " ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326){more})").format(
            s=store.STAGING, cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            more=sql.SQL("").join(sql.SQL(", %s") for _ in fields)), rows)
        staged = bulk.Staged(source=meta.description or "analysis", fields=fields,
                             key_field=None, crs=CRS, source_crs=CRS)
        bulk.measure(conn, staged)
        bulk.write(conn, layer_id, None, staged, meta, detail_zoom=detail_zoom,
                   default_level=default_level)
        conn.execute("UPDATE onemap.layers SET expires_at = %s WHERE id = %s",
                     (expires_at, layer_id))
        layer = get_layer(conn, layer_id)
        conn.commit()
    assert layer is not None
    return layer


def expire(url: str, levels: tuple[str, ...], *, lock_timeout_ms: int,
           statement_ms: int) -> list[str]:
    """Withdraw the result layers whose time is up; their ids."""
    with psycopg.connect(url, autocommit=True) as conn:
        due = [r[0] for r in conn.execute(
            "SELECT id FROM onemap.layers WHERE expires_at <= %s AND withdrawn_at IS NULL",
            (datetime.now(UTC),)).fetchall()]
    for layer_id in due:
        change(url, layer_id, levels, withdrawn=True, by="expiry",
               lock_timeout_ms=lock_timeout_ms, statement_ms=statement_ms)
    return due

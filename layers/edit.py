"""Single-feature edits with the ingest's rules and history.

A create, replace, update or delete closes the feature's current version (if any) and adds
the next one in one transaction, under the same per-layer lock as ingest; nothing is
destroyed, and ``as-of`` still reads every past state. ``expected`` is the row id the
editor last saw (its ETag): if the feature moved on since, the edit is refused (412).
The catalog's version, count and extent and the low-zoom overview follow in the same
transaction.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import psycopg
import shapely
from psycopg import sql

from layers import db, overviews, writer
from layers.catalog import PG_TYPES, Layer, table_of
from layers.errors import Conflict, Invalid, NotFound, Stale
from layers.geometry import check


class EditError(Invalid):
    """The edit breaks a rule of the layer (its dictionary, geometry type or key)."""


@dataclass(frozen=True)
class Edited:
    fid: str
    rid: int | None  # the new version's row id; None after a delete
    version: int


def _value(name: str, kind: str, value: Any) -> Any:
    """A JSON value as the dictionary type, or an error naming the property."""
    if value is None:
        return None
    try:
        if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
            if not -(2 ** 63) <= value < 2 ** 63:
                raise EditError(f"property {name!r} is beyond a 64-bit integer: {value}")
            return value
        if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise EditError(f"property {name!r} must be a finite number, got {value!r}")
            return float(value)
        if kind == "decimal" and not isinstance(value, bool):
            return Decimal(str(value))
        if kind == "boolean" and isinstance(value, bool):
            return value
        if kind == "string" and isinstance(value, str | int | float):
            return str(value)
        if kind in ("datetime", "date", "time") and isinstance(value, str):
            parse = {"datetime": datetime, "date": date, "time": time}[kind]
            return parse.fromisoformat(value.replace("Z", "+00:00"))
    except EditError:
        raise
    except (ValueError, InvalidOperation, OverflowError):
        pass
    raise EditError(f"property {name!r} must be a {kind}, got {value!r}")


def geometry_types(declared: str | None) -> tuple[str, ...] | None:
    """The shapes a layer of this declared type takes; None: any (a mixed or empty layer).
    A Multi layer takes single parts too, as an ingest of mixed parts declares it."""
    if declared is None or declared in ("Geometry", "GeometryCollection"):
        return None
    if declared.startswith("Multi"):
        return (declared.removeprefix("Multi"), declared)
    return (declared,)


def _geometry(feature: dict[str, Any], layer: Layer) -> shapely.Geometry:
    raw = feature.get("geometry")
    if raw is None:
        raise EditError("the feature has no geometry")
    try:
        geom = shapely.geometry.shape(raw)
    except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.GEOSException) \
            as exc:
        raise EditError(f"geometry is not GeoJSON: {exc}") from exc
    allowed = geometry_types(layer.geometry_type)
    if allowed is not None and geom.geom_type not in allowed:
        raise EditError(f"geometry is a {geom.geom_type}; layer {layer.id!r} holds "
                        f"{' or '.join(allowed)}")
    fixed, issues = check(np.array([shapely.force_2d(geom)], dtype=object))
    if fixed[0] is None:
        raise EditError(f"geometry rejected: {issues[0][2]}")
    if allowed is not None and fixed[0].geom_type not in allowed:
        raise EditError(f"geometry, once repaired, is a {fixed[0].geom_type}; layer "
                        f"{layer.id!r} holds {' or '.join(allowed)}")
    return fixed[0]


def _properties(layer: Layer, props: Any, whole: bool) -> dict[str, Any]:
    """Checked properties; ``whole``: they replace the feature, so not-null fields must be
    there."""
    if not isinstance(props, dict):
        raise EditError("properties must be a JSON object")
    types = {f.name: f.type for f in layer.fields}
    unknown = sorted(set(props) - set(types))
    if unknown:
        raise EditError(f"unknown properties {unknown}; the layer's fields are "
                        f"{sorted(types)}")
    out = {name: _value(name, types[name], v) for name, v in props.items()}
    if whole:
        missing = [f.name for f in layer.fields if not f.nullable and out.get(f.name) is None]
        if missing:
            raise EditError(f"properties {missing} may not be empty (see the data dictionary)")
    return out


def _key_of(layer: Layer, props: dict[str, Any]) -> str | None:
    keys = [k for k in (layer.key_field or "").split(",") if k]
    if not keys:
        return None
    values = ["" if props.get(k) is None else str(props[k]) for k in keys]
    if all(v == "" for v in values):
        raise EditError(f"the key {', '.join(keys)} needs a value")
    return "/".join(values)


def _current(conn: psycopg.Connection, layer: Layer, fid: str) -> dict[str, Any] | None:
    names = [f.name for f in layer.fields]
    cols = sql.SQL("").join(sql.SQL(", ") + sql.Identifier(n) for n in names)
    row = conn.execute(sql.SQL(
        "SELECT _rid, _version, _ingested_at, _produced_at, ST_AsBinary(geom){cols}"
        " FROM {t} WHERE _fid = %s AND _valid_to IS NULL FOR UPDATE").format(
        cols=cols, t=table_of(layer.id)), (fid,)).fetchone()
    if row is None:
        return None
    return {"rid": row[0], "version": row[1], "ingested_at": row[2], "produced_at": row[3],
            "geom": shapely.from_wkb(bytes(row[4])),
            "properties": dict(zip(names, row[5:], strict=True))}


def _close(conn: psycopg.Connection, layer: Layer, current: dict[str, Any] | None
           ) -> list:
    """Ends the current version, if any; returns its overview entry, to be taken out."""
    if current is None:
        return []
    removed = [_overview_entry(conn, layer.id, current["rid"])]
    conn.execute(sql.SQL("UPDATE {} SET _valid_to = now() WHERE _rid = %s").format(
        table_of(layer.id)), (current["rid"],))
    return removed


def _overview_entry(conn: psycopg.Connection, layer_id: str,
                    rid: int) -> tuple[int, float, float, float]:
    row = conn.execute(sql.SQL(
        "SELECT (ST_XMin(_geom_3857) + ST_XMax(_geom_3857)) / 2,"
        " (ST_YMin(_geom_3857) + ST_YMax(_geom_3857)) / 2,"
        " greatest(ST_XMax(_geom_3857) - ST_XMin(_geom_3857),"
        "  ST_YMax(_geom_3857) - ST_YMin(_geom_3857)) FROM {t} WHERE _rid = %s").format(
        t=table_of(layer_id)), (rid,)).fetchone()
    assert row is not None
    return rid, float(row[0]), float(row[1]), float(row[2])


def _insert(conn: psycopg.Connection, layer: Layer, fid: str, version: int,
            ingested_at: datetime | None, geom: shapely.Geometry,
            props: dict[str, Any]) -> int:
    names = [f.name for f in layer.fields]
    values = [props.get(n) for n in names]
    cols = sql.SQL("").join(sql.SQL(", ") + sql.Identifier(n) for n in names)
    typed = sql.SQL("").join(sql.SQL(", %s::{} AS {}").format(
        sql.SQL(PG_TYPES[f.type]), sql.Identifier(f.name)) for f in layer.fields)
    row_expr = (sql.SQL("ROW({})").format(sql.SQL(", ").join(
        sql.SQL("v.") + sql.Identifier(n) for n in names)) if names else sql.SQL("ROW()"))
    # The same content hash as an ingest's, so a later ingest of equal data is no change.
    row = conn.execute(sql.SQL(
        "INSERT INTO {t} (_fid, _version, _valid_from, _produced_at, _ingested_at, _updated_at,"
        " _hash, geom{cols})"
        " SELECT v._fid, v._version, now(), now(), coalesce(v._ingested_at, now()), now(),"
        "  {hash}, v.geom{vcols}"
        " FROM (SELECT %s::text AS _fid, %s::int AS _version, %s::timestamptz AS _ingested_at,"
        "  ST_SetSRID(ST_GeomFromWKB(%s), 4326) AS geom{typed}) v RETURNING _rid"
    ).format(t=table_of(layer.id), cols=cols,
             hash=writer.content_hash(row_expr, sql.SQL("v.geom")),
             vcols=sql.SQL("").join(sql.SQL(", v.") + sql.Identifier(n) for n in names),
             typed=typed),
        [fid, version, ingested_at, shapely.to_wkb(geom), *values]).fetchone()
    assert row is not None
    return int(row[0])


def _finish(conn: psycopg.Connection, layer: Layer, detail_zoom: int, delta: int,
            removed: list[tuple[int, float, float, float]],
            added: list[tuple[int, float, float, float]]) -> int:
    """Catalog and overview follow the edit; returns the layer's new version."""
    zoom = layer.detail_zoom if layer.detail_zoom is not None else detail_zoom
    overviews.apply_change(conn, layer.id, zoom, removed, added)
    extent = None
    if added:
        row = conn.execute(sql.SQL(
            "SELECT ST_XMin(g), ST_YMin(g), ST_XMax(g), ST_YMax(g) FROM"
            " (SELECT geom AS g FROM {t} WHERE _rid = %s) s").format(t=table_of(layer.id)),
            (added[0][0],)).fetchone()
        extent = list(row) if row else None
    # The extent grows to hold new shapes; it is not shrunk, which would need a full scan.
    row = conn.execute(
        "UPDATE onemap.layers SET version = version + 1, feature_count = feature_count"
        " + %(delta)s, extent = CASE WHEN %(e)s::float8[] IS NULL THEN extent"
        "  WHEN extent IS NULL THEN %(e)s ELSE ARRAY[least(extent[1], (%(e)s)[1]),"
        "  least(extent[2], (%(e)s)[2]), greatest(extent[3], (%(e)s)[3]),"
        "  greatest(extent[4], (%(e)s)[4])] END,"
        " updated_at = now() WHERE id = %(id)s RETURNING version",
        {"delta": delta, "e": extent, "id": layer.id}).fetchone()
    assert row is not None
    return int(row[0])


def save(url: str, layer: Layer, detail_zoom: int, fid: str | None,
         feature: dict[str, Any] | None, *, create: bool = False, merge: bool = False,
         expected: int | None = None, lock_timeout_ms: int | None = None,
         statement_ms: int | None = None,
         abandoned: Callable[[], bool] | None = None) -> Edited:
    """Create (``create``), replace, update (``merge``: only the properties and geometry
    given change) or delete (``feature`` None) one feature; runs in its own transaction.

    ``lock_timeout_ms``: how long to wait for a layer another change is writing;
    ``statement_ms``: each statement's budget; ``abandoned``: asked just before the commit,
    true rolls the edit back (its client has gone)."""
    options = f"-c statement_timeout={statement_ms}" if statement_ms else ""
    with psycopg.connect(url, options=options, **db.CONNECT) as conn:
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        if statement_ms:  # in the transaction too: a pooler may not pass start-up options
            conn.execute("SELECT set_config('statement_timeout', %s, true)",
                         (f"{statement_ms}ms",))
        writer.lock(conn, layer.id, lock_timeout_ms)
        props: dict[str, Any] = {}
        geom = None
        if feature is not None:
            if not isinstance(feature, dict) or feature.get("type", "Feature") != "Feature":
                raise EditError("the body must be a GeoJSON Feature")
            props = _properties(layer, feature.get("properties") or {}, whole=not merge)
            if not merge or feature.get("geometry") is not None:
                geom = _geometry(feature, layer)
        if create:
            key = _key_of(layer, props)
            given = feature.get("id") if feature else None
            if key is not None and given is not None and str(given) != key:
                raise EditError(f"id {given!r} is not the key's value {key!r}")
            fid = key or (str(given) if given is not None else uuid.uuid4().hex)
        assert fid is not None
        current = _current(conn, layer, fid)
        if create and current is not None:
            raise Conflict(f"feature {fid!r} exists; replace or update it")
        if not create and current is None:
            raise NotFound(f"no feature {fid!r} in collection {layer.id!r}")
        if current is not None and expected is not None and current["rid"] != expected:
            raise Stale(f"feature {fid!r} changed since it was read (ETag \"r{expected}\" "
                            f"is now \"r{current['rid']}\"); read it again")
        if feature is None:
            version = _finish(conn, layer, detail_zoom, -1, _close(conn, layer, current), [])
            writer.commit(conn, abandoned)
            return Edited(fid, None, version)
        if merge:
            assert current is not None
            props = {**current["properties"], **props}
            geom = geom if geom is not None else current["geom"]
        elif current is not None:
            # A replacement that leaves out the key keeps it: the id names the feature.
            for k in (layer.key_field or "").split(","):
                if k and k not in props:
                    props[k] = current["properties"].get(k)
        key = _key_of(layer, props)
        if not create and key is not None and key != fid:
            raise EditError(f"the key's value {key!r} is not the feature's id {fid!r}; "
                            "a key is not changed by an edit")
        if current is not None and props == current["properties"] \
                and shapely.equals_exact(geom, current["geom"], 0):
            # Nothing changed: no new version, as an ingest leaves an unchanged feature be.
            writer.commit(conn, abandoned)
            return Edited(fid, current["rid"], layer.version)
        removed = _close(conn, layer, current)
        rid = _insert(conn, layer, fid, (current["version"] + 1) if current else 1,
                      current["ingested_at"] if current else None, geom, props)
        version = _finish(conn, layer, detail_zoom, 0 if current else 1, removed,
                          [_overview_entry(conn, layer.id, rid)])
        writer.commit(conn, abandoned)
        return Edited(fid, rid, version)

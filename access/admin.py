"""Administering access: departments, principals, keys, areas, grants, classification.

One implementation for the CLI (``onemap auth``) and the admin API. Every change is
checked before it is written, takes effect on the next request of every server (the
access version moves), and is written to the audit log in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from access.audit import Entry, write
from access.credentials import new_key
from layers import cql2sql
from layers.catalog import LAYER_ID, fetch_layers, table_of
from layers.errors import Conflict, Invalid, NotFound
from layers.restrict import MASKS

PUBLIC = "public"  # grant target: everyone, anonymous callers included


def to_json(value: Any) -> Any:
    """``json.dumps`` default for what admin operations return: times as ISO 8601, and
    never a secret's hash."""
    if isinstance(value, datetime):
        return value.isoformat()
    return None if isinstance(value, bytes | memoryview) else str(value)


class AdminError(Invalid):
    """The change cannot be made; the message says why."""


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for the audit log."""

    name: str
    principal_id: int | None = None
    department: str | None = None


async def _audit(conn: AsyncConnection, actor: Actor, what: str, layers: list[str],
                 detail: dict[str, Any]) -> None:
    await write(conn, [Entry(
        at=datetime.now().astimezone(), principal_id=actor.principal_id, principal=actor.name,
        department=actor.department, key_id=None, action="admin", method=what, path="",
        layers=layers, detail=detail, status=200)])


# For the other changes to access that are audited the same way (access/sharing.py).
record = _audit


async def _one(conn: AsyncConnection, query: str | sql.Composable,
               params: Any = None) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _all(conn: AsyncConnection, query: str | sql.Composable,
               params: Any = None) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _level(levels: tuple[str, ...], level: str | None, what: str) -> None:
    if level is not None and level not in levels:
        raise AdminError(f"{what} {level!r} is not one of {', '.join(levels)}")


async def create_department(conn: AsyncConnection, actor: Actor, levels: tuple[str, ...], *,
                            id: str, name: str, parent: str | None = None,
                            max_level: str = "internal",
                            area_id: int | None = None) -> dict[str, Any]:
    _level(levels, max_level, "level")
    try:
        async with conn.transaction():
            row = await _one(conn, "INSERT INTO onemap.departments (id, name, parent_id,"
                             " max_level, area_id) VALUES (%s, %s, %s, %s, %s) RETURNING *",
                             (id, name, parent, max_level, area_id))
            await _audit(conn, actor, "create department", [], {"department": id})
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"department {id!r} exists") from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        raise AdminError(f"no parent department {parent!r} or area {area_id}") from exc
    except psycopg.errors.CheckViolation as exc:
        raise AdminError(f"department id {id!r}: use a-z, 0-9, - and _") from exc
    assert row is not None
    return row


async def create_principal(conn: AsyncConnection, actor: Actor, *, name: str, kind: str,
                           department: str, subject: str | None = None,
                           admin: bool = False, publisher: bool = False) -> dict[str, Any]:
    if kind not in ("user", "service"):
        raise AdminError(f"kind {kind!r} is not user or service")
    try:
        async with conn.transaction():
            row = await _one(conn, "INSERT INTO onemap.principals (name, kind, department_id,"
                             " subject, admin, publisher) VALUES (%s, %s, %s, %s, %s, %s)"
                             " RETURNING *", (name, kind, department, subject, admin, publisher))
            await _audit(conn, actor, "create principal", [],
                         {"principal": name, "department": department, "admin": admin,
                          "publisher": publisher})
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"a principal named {name!r} or with subject {subject!r} exists") from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        raise AdminError(f"no department {department!r}") from exc
    assert row is not None
    return row


async def _principal_id(conn: AsyncConnection, name: str) -> int:
    row = await _one(conn, "SELECT id FROM onemap.principals WHERE name = %s", (name,))
    if row is None:
        raise NotFound(f"no principal {name!r}")
    return int(row["id"])


async def create_key(conn: AsyncConnection, actor: Actor, *, principal: str,
                     kind: str = "api", origins: list[str] | None = None,
                     layers: list[str] | None = None, expires_at: datetime | None = None,
                     rate_limit: int | None = None, note: str | None = None) -> dict[str, Any]:
    """A new key; the returned ``key`` is shown this once and never stored."""
    if kind not in ("api", "embed"):
        raise AdminError(f"key kind {kind!r} is not api or embed")
    if kind == "embed" and not origins:
        raise AdminError("an embedding key needs the origins it may be used from")
    if expires_at is not None and expires_at.tzinfo is None:
        raise AdminError("expiry needs a time zone, e.g. 2027-01-01T00:00:00+08:00")
    principal_id = await _principal_id(conn, principal)
    if kind == "embed":
        row = await _one(conn, "SELECT admin FROM onemap.principals WHERE id = %s",
                         (principal_id,))
        if row is not None and row["admin"]:
            raise AdminError(f"{principal!r} is an administrator: embedding keys are read-only "
                             "and public, so none is issued for an administrator; make a "
                             "service principal with read grants for the embedding")
    key_id, key, secret_hash = new_key()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO onemap.keys (id, principal_id, kind, secret_hash, note, origins,"
            " layers, rate_limit, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (key_id, principal_id, kind, secret_hash, note, origins or [], layers,
             rate_limit, expires_at))
        await _audit(conn, actor, "create key", list(layers or []),
                     {"key": key_id, "principal": principal, "kind": kind,
                      "origins": origins or [], "expires_at": str(expires_at or "")})
    return {"id": key_id, "key": key, "principal": principal, "kind": kind,
            "origins": origins or [], "layers": layers, "expires_at": expires_at}


async def revoke_key(conn: AsyncConnection, actor: Actor, key_id: str) -> None:
    async with conn.transaction():
        cur = await conn.execute("UPDATE onemap.keys SET revoked_at = now() WHERE id = %s"
                                 " AND revoked_at IS NULL", (key_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no live key {key_id!r}")
        await _audit(conn, actor, "revoke key", [], {"key": key_id})


async def create_area(conn: AsyncConnection, actor: Actor, *, name: str,
                      geojson: dict[str, Any] | None = None,
                      from_layer: str | None = None, feature: str | None = None) -> int:
    """An area from a GeoJSON (multi)polygon in lon/lat, or a feature of a layer (a
    district of the boundaries layer)."""
    async with conn.transaction():
        if geojson is not None:
            try:
                row = await _one(conn, (
                    "INSERT INTO onemap.areas (name, geom) SELECT %s,"
                    " ST_Multi(ST_CollectionExtract(ST_MakeValid("
                    "  ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)), 3)) RETURNING id"),
                    (name, json.dumps(geojson.get("geometry", geojson))))
            except psycopg.Error as exc:
                raise AdminError(f"area {name!r} is not a GeoJSON polygon: "
                                 f"{exc.diag.message_primary}") from exc
        elif from_layer is not None and feature is not None:
            if not LAYER_ID.match(from_layer):
                raise NotFound(f"no layer {from_layer!r}")
            row = await _one(conn, sql.SQL(
                "INSERT INTO onemap.areas (name, geom) SELECT %s,"
                " ST_Multi(ST_CollectionExtract(ST_MakeValid(geom), 3)) FROM {t}"
                " WHERE _fid = %s AND _valid_to IS NULL RETURNING id").format(
                    t=table_of(from_layer)), (name, feature))
            if row is None:
                raise NotFound(f"no feature {feature!r} in layer {from_layer!r}")
        else:
            raise AdminError("an area needs a GeoJSON polygon or a layer and feature")
        if row is None:
            raise AdminError(f"area {name!r} is empty")
        await _audit(conn, actor, "create area", [from_layer] if from_layer else [],
                     {"area": name, "feature": feature})
    return int(row["id"])


async def grant(conn: AsyncConnection, actor: Actor, levels: tuple[str, ...], *, to: str,
                layers: str, read: bool = True, publish: bool = False, admin: bool = False,
                max_level: str | None = None, hidden: list[str] | None = None,
                masked: dict[str, str] | None = None, area_id: int | None = None,
                area_mode: str = "intersect", filter: str | None = None) -> dict[str, Any]:
    """A grant to a principal (by name), a department (``department:<id>``, reaching its
    sub-departments) or everyone (``public``) on layers matching a pattern."""
    _level(levels, max_level, "max level")
    masked = masked or {}
    bad = [how for how in masked.values() if how not in MASKS]
    if bad:
        raise AdminError(f"mask {bad[0]!r} is not one of {', '.join(MASKS)}")
    if area_mode not in ("intersect", "clip"):
        raise AdminError(f"area mode {area_mode!r} is not intersect or clip")
    if to == PUBLIC and (publish or admin):
        raise AdminError("everyone may be given read access only")
    principal_id, department_id = None, None
    if to.startswith("department:"):
        department_id = to.removeprefix("department:")
    elif to != PUBLIC:
        principal_id = await _principal_id(conn, to)
    await _check_fields(conn, layers, hidden or [], masked, filter)
    try:
        async with conn.transaction():
            row = await _one(conn, (
                "INSERT INTO onemap.grants (principal_id, department_id, layer_pattern,"
                " can_read, can_publish, can_admin, max_level, hidden_fields, masked_fields,"
                " area_id, area_mode, filter) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *"),
                (principal_id, department_id, layers, read, publish, admin, max_level,
                 hidden or [], Jsonb(masked), area_id, area_mode, filter))
            assert row is not None
            await _audit(conn, actor, "grant", [layers], {
                "grant": row["id"], "to": to, "read": read, "publish": publish,
                "admin": admin, "max_level": max_level, "hidden": hidden or [],
                "masked": masked, "area": area_id, "area_mode": area_mode, "filter": filter})
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound(f"no department {department_id!r} or area {area_id}") from exc
    return row


async def _check_fields(conn: AsyncConnection, pattern: str, hidden: list[str],
                        masked: dict[str, str], filter: str | None) -> None:
    """A grant on one named layer must name its real fields, and its filter must run."""
    if filter is not None:
        try:
            tree = cql2sql.parse(filter, "cql2-text")
        except cql2sql.FilterError as exc:
            raise AdminError(str(exc)) from exc
    if not LAYER_ID.match(pattern):
        return  # a pattern: checked against each layer as it is read (failing closed)
    found = await fetch_layers(conn, ids=[pattern])
    if not found:
        raise NotFound(f"no layer {pattern!r}")
    names = {f.name for f in found[0].fields}
    unknown = sorted((set(hidden) | set(masked)) - names)
    if unknown:
        raise AdminError(f"layer {pattern!r} has no fields {unknown}")
    if filter is not None:
        try:
            cql2sql.to_sql(tree, found[0])
        except cql2sql.FilterError as exc:
            raise AdminError(f"filter: {exc}") from exc


async def revoke_grant(conn: AsyncConnection, actor: Actor, grant_id: int) -> None:
    async with conn.transaction():
        row = await _one(conn, "DELETE FROM onemap.grants WHERE id = %s RETURNING *",
                         (grant_id,))
        if row is None:
            raise NotFound(f"no grant {grant_id}")
        await _audit(conn, actor, "revoke grant", [row["layer_pattern"]], {"grant": grant_id})


async def classify(conn: AsyncConnection, actor: Actor, levels: tuple[str, ...], *,
                   layer: str, level: str | None = None,
                   fields: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Set a layer's level and its fields' levels (None: the layer's own)."""
    _level(levels, level, "level")
    for name, lv in (fields or {}).items():
        _level(levels, lv, f"level of field {name!r}")
    found = await fetch_layers(conn, ids=[layer]) if LAYER_ID.match(layer) else []
    if not found:
        raise NotFound(f"no layer {layer!r}")
    current = found[0]
    unknown = sorted(set(fields or {}) - {f.name for f in current.fields})
    if unknown:
        raise AdminError(f"layer {layer!r} has no fields {unknown}")
    dictionary = [{**f.as_dict(), "level": (fields or {}).get(f.name, f.level)}
                  for f in current.fields]
    async with conn.transaction():
        await conn.execute("UPDATE onemap.layers SET level = %s, fields = %s,"
                           " updated_at = now() WHERE id = %s",
                           (level or current.level, Jsonb(dictionary), layer))
        await _audit(conn, actor, "classify", [layer],
                     {"level": level or current.level, "fields": fields or {}})
    return {"layer": layer, "level": level or current.level, "fields": fields or {}}


async def listing(conn: AsyncConnection, what: str) -> list[dict[str, Any]]:
    """Departments, principals, keys (never their secrets) or grants."""
    queries = {
        "departments": "SELECT * FROM onemap.departments ORDER BY id",
        "principals": "SELECT * FROM onemap.principals ORDER BY id",
        "keys": ("SELECT k.id, p.name AS principal, k.kind, k.note, k.origins, k.layers,"
                 " k.rate_limit, k.expires_at, k.revoked_at, k.created_at FROM onemap.keys k"
                 " JOIN onemap.principals p ON p.id = k.principal_id ORDER BY k.created_at"),
        "grants": ("SELECT g.*, p.name AS principal FROM onemap.grants g"
                   " LEFT JOIN onemap.principals p ON p.id = g.principal_id ORDER BY g.id"),
        "areas": "SELECT id, name, ST_AsText(ST_Envelope(geom)) AS envelope"
                 " FROM onemap.areas ORDER BY id",
    }
    if what not in queries:
        raise NotFound(f"nothing to list called {what!r}")
    return await _all(conn, queries[what])


async def audit(conn: AsyncConnection, *, principal: str | None = None,
                layer: str | None = None, action: str | None = None,
                since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest audit rows first, filtered."""
    clauses, params = [sql.SQL("true")], {"limit": limit}
    for name, value, clause in (
            ("principal", principal, "principal = %(principal)s"),
            ("layer", layer, "%(layer)s = ANY(layers)"),
            ("action", action, "action = %(action)s"),
            ("since", since, "at >= %(since)s")):
        if value is not None:
            clauses.append(sql.SQL(clause))
            params[name] = value
    return await _all(conn, sql.SQL(
        "SELECT * FROM onemap.audit WHERE {} ORDER BY id DESC LIMIT %(limit)s").format(
        sql.SQL(" AND ").join(clauses)), params)

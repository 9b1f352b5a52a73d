"""The nodes of a federation as this node keeps them (``onemap.nodes``), the tokens a city
issues for joining, and the catalog records harvested from districts."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from layers.errors import Conflict, Forbidden, Invalid, NotFound

NODE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
TOKEN_PREFIX = "omj_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NODE_NAME.match(name):
        raise Invalid(f"node name {name!r}: lower-case letters, digits and _ (a letter first,"
                      " at most 31)")
    return name


def check_url(url: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", url):
        raise Invalid(f"node url {url!r} is not an http(s) URL")
    return url.rstrip("/")


async def issue_token(conn: AsyncConnection, hours: float) -> str:
    """A one-time token for one district to join; only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    await conn.execute("INSERT INTO onemap.node_tokens (hash, expires_at) VALUES"
                       " (%s, now() + make_interval(secs => %s))", (_hash(token), hours * 3600))
    return token


def jurisdiction_of(doc: Any) -> BaseGeometry | None:
    """A boundary given as GeoJSON (a geometry, a Feature or a FeatureCollection), lon/lat."""
    if doc is None:
        return None
    try:
        if doc.get("type") == "FeatureCollection":
            from shapely.ops import unary_union
            geom = unary_union([shape(f["geometry"]) for f in doc["features"]])
        elif doc.get("type") == "Feature":
            geom = shape(doc["geometry"])
        else:
            geom = shape(doc)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise Invalid(f"jurisdiction: not a GeoJSON polygon ({exc})") from None
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
        raise Invalid(f"jurisdiction: a polygon is needed, not {geom.geom_type}")
    return geom


async def admit(conn: AsyncConnection, token: str, name: str, url: str, public_key: str,
                jurisdiction: BaseGeometry | None) -> None:
    """A district joins with the token the city issued (once, before it expires)."""
    check_name(name)
    url = check_url(url)
    if "BEGIN PUBLIC KEY" not in public_key:
        raise Invalid("public_key: a PEM public key is needed")
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE onemap.node_tokens SET used_by = %s, used_at = now() WHERE hash = %s"
            " AND used_by IS NULL AND expires_at > now() RETURNING hash", (name, _hash(token)))
        if await cur.fetchone() is None:
            raise Forbidden("the join token is unknown, used or expired: ask the city's"
                            " administrator for a new one")
        cur = await conn.execute(
            "INSERT INTO onemap.nodes (name, role, url, public_key, jurisdiction)"
            " VALUES (%s, 'district', %s, %s, ST_Multi(ST_GeomFromText(%s, 4490)))"
            " ON CONFLICT (name) DO NOTHING RETURNING name",
            (name, url, public_key, jurisdiction.wkt if jurisdiction is not None else None))
        if await cur.fetchone() is None:
            raise Conflict(f"a node named {name!r} is already a member; remove it first")


async def remember(conn: AsyncConnection, name: str, role: str, url: str,
                   public_key: str) -> None:
    """The node this one joined (a district keeps its city)."""
    await conn.execute(
        "INSERT INTO onemap.nodes (name, role, url, public_key) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, url = EXCLUDED.url,"
        " public_key = EXCLUDED.public_key", (check_name(name), role, check_url(url),
                                              public_key))


async def remove(conn: AsyncConnection, name: str) -> None:
    """The node is gone: its harvested records with it, at once."""
    cur = await conn.execute("DELETE FROM onemap.nodes WHERE name = %s RETURNING name", (name,))
    if await cur.fetchone() is None:
        raise NotFound(f"no node {name!r}")


async def listing(conn: AsyncConnection) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT name, role, url, joined_at, health, checked_at, harvested_at,"
            " harvest_error, records, ST_AsGeoJSON(jurisdiction, 7)::json AS jurisdiction,"
            " extract(epoch FROM now() - harvested_at) AS lag_seconds"
            " FROM onemap.nodes ORDER BY name")
        return list(await cur.fetchall())


async def harvest_state(conn: AsyncConnection, name: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT name, url, harvest_etag FROM onemap.nodes WHERE name = %s",
                          (name,))
        return await cur.fetchone()


def _when(value: Any, fallback: str) -> str:
    try:
        return datetime.fromisoformat(str(value)).isoformat()
    except ValueError:
        return fallback


async def store_records(conn: AsyncConnection, node: str, records: list[dict[str, Any]],
                        etag: str | None) -> int:
    """The node's catalog as harvested now: records added, changed and gone in one
    transaction."""
    rows = []
    for r in records:
        p = r.get("properties") or {}
        layer = str(r.get("id", ""))
        if not re.match(r"^[a-z][a-z0-9_]{0,62}$", layer):
            continue  # not one of a node's layers
        now = p.get("updated") or p.get("created") or "1970-01-01T00:00:00+00:00"
        box = r.get("bbox")
        if box is None and r.get("geometry"):
            xs = [c[0] for c in r["geometry"]["coordinates"][0]]
            ys = [c[1] for c in r["geometry"]["coordinates"][0]]
            box = [min(xs), min(ys), max(xs), max(ys)]
        rows.append((node, layer, str(p.get("onemap:kind") or "vector"),
                     str(p.get("title") or layer), p.get("description"),
                     p.get("onemap:department"), [str(k) for k in p.get("keywords") or ()],
                     str(p.get("onemap:updateCycle") or "irregular"),
                     str(p.get("onemap:sharingType") or "unconditional"),
                     str(p.get("onemap:role") or "thematic"),
                     str(p.get("onemap:level") or "public"),
                     int(p.get("onemap:featureCount") or 0), box,
                     int(p.get("onemap:version") or 0), _when(p.get("created"), now),
                     _when(now, now), json.dumps(r)))
    async with conn.transaction():
        await conn.execute("DELETE FROM onemap.remote_records WHERE node = %s"
                           " AND NOT layer = ANY(%s)", (node, [r[1] for r in rows]))
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO onemap.remote_records (node, layer, kind, title, description,"
                " department, keywords, update_cycle, sharing_type, role, level,"
                " feature_count, extent, version, created_at, updated_at, record)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (node, layer) DO UPDATE SET kind = EXCLUDED.kind,"
                " title = EXCLUDED.title, description = EXCLUDED.description,"
                " department = EXCLUDED.department, keywords = EXCLUDED.keywords,"
                " update_cycle = EXCLUDED.update_cycle, sharing_type = EXCLUDED.sharing_type,"
                " role = EXCLUDED.role, level = EXCLUDED.level,"
                " feature_count = EXCLUDED.feature_count, extent = EXCLUDED.extent,"
                " version = EXCLUDED.version, created_at = EXCLUDED.created_at,"
                " updated_at = EXCLUDED.updated_at, record = EXCLUDED.record,"
                " harvested_at = now()", rows)
        await conn.execute(
            "UPDATE onemap.nodes SET harvested_at = now(), harvest_etag = %s,"
            " harvest_error = NULL, health = 'up', checked_at = now(), records = %s"
            " WHERE name = %s", (etag, len(rows), node))
    return len(rows)


async def harvest_unchanged(conn: AsyncConnection, node: str) -> None:
    await conn.execute("UPDATE onemap.nodes SET harvested_at = now(), harvest_error = NULL,"
                       " health = 'up', checked_at = now() WHERE name = %s", (node,))


async def harvest_failed(conn: AsyncConnection, node: str, error: str) -> None:
    """The harvest failed: the node's records stay as last harvested."""
    await conn.execute("UPDATE onemap.nodes SET harvest_error = %s, health = 'down',"
                       " checked_at = now() WHERE name = %s", (error[:500], node))


async def remote_records(conn: AsyncConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Harvested records by their id here (``node:layer``), with their node's URL."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT r.id, r.node, r.layer, r.level, r.record, n.url FROM onemap.remote_records r"
            " JOIN onemap.nodes n ON n.name = r.node WHERE r.id = ANY(%s)", (ids,))
        return {r["id"]: r for r in await cur.fetchall()}


async def record_levels(conn: AsyncConnection) -> list[tuple[str, str, str]]:
    """Every harvested record's id, level and sharing type: what rule 13 decides on."""
    cur = await conn.execute("SELECT id, level, sharing_type FROM onemap.remote_records")
    return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

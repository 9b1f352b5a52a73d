"""Sharing on request (``onemap.share_requests``): a department asks for another's layer with
a purpose, the owner approves, making an ordinary grant with the limits it chooses (masks,
hidden fields, area, filter), or refuses with a reason; the asker may withdraw a pending
request. Who may ask and decide is ``policy.py`` (rules 11 and 12); every step is audited.
Also what an owner sees about its layers: who reads them (from the audit log) and the
grants given on them and received by its department.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from access import admin
from access.admin import Actor
from access.admin import record as _audit
from layers.errors import Conflict, Invalid, NotFound

MAX_PURPOSE = 2000


async def _rows(conn: AsyncConnection, query: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def get(conn: AsyncConnection, request_id: int) -> dict[str, Any]:
    rows = await _rows(conn, "SELECT * FROM onemap.share_requests WHERE id = %s", (request_id,))
    if not rows:
        raise NotFound(f"no request {request_id}")
    return rows[0]


async def ask(conn: AsyncConnection, actor: Actor, layer_id: str, department: str,
              purpose: str) -> dict[str, Any]:
    purpose = (purpose or "").strip()
    if not purpose:
        raise Invalid("say what the layer is for (purpose)")
    if len(purpose) > MAX_PURPOSE:
        raise Invalid(f"the purpose is longer than {MAX_PURPOSE} characters")
    try:
        async with conn.transaction():
            rows = await _rows(conn, (
                "INSERT INTO onemap.share_requests (layer_id, department_id, requested_by,"
                " purpose) VALUES (%s, %s, %s, %s) RETURNING *"),
                (layer_id, department, actor.name, purpose))
            await _audit(conn, actor, "ask for layer", [layer_id],
                         {"request": rows[0]["id"], "department": department,
                          "purpose": purpose})
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"your department has asked for {layer_id!r} already; the owner has "
                       "not decided yet") from exc
    return rows[0]


async def decide(conn: AsyncConnection, actor: Actor, levels: tuple[str, ...],
                 request_id: int, *, approve: bool, reason: str | None = None,
                 hidden: list[str] | None = None, masked: dict[str, str] | None = None,
                 area_id: int | None = None, area_mode: str = "intersect",
                 filter: str | None = None) -> dict[str, Any]:
    """Approve (a grant to the asking department on the layer, with these limits) or
    refuse a pending request."""
    async with conn.transaction():
        found = await _rows(conn, "SELECT * FROM onemap.share_requests WHERE id = %s"
                                  " FOR UPDATE", (request_id,))
        if not found:
            raise NotFound(f"no request {request_id}")
        req = found[0]
        if req["state"] != "pending":
            raise Conflict(f"request {request_id} is {req['state']} already")
        grant_id = None
        if approve:
            try:
                made = await admin.grant(
                    conn, actor, levels, to=f"department:{req['department_id']}",
                    layers=req["layer_id"], hidden=hidden, masked=masked, area_id=area_id,
                    area_mode=area_mode, filter=filter)
            except admin.AdminError as exc:
                raise Invalid(str(exc)) from exc
            grant_id = made["id"]
        rows = await _rows(conn, (
            "UPDATE onemap.share_requests SET state = %s, decided_by = %s, decided_at = now(),"
            " reason = %s, grant_id = %s WHERE id = %s RETURNING *"),
            ("approved" if approve else "refused", actor.name, (reason or "").strip() or None,
             grant_id, request_id))
        await _audit(conn, actor, "approve request" if approve else "refuse request",
                     [req["layer_id"]], {"request": request_id, "grant": grant_id,
                                         "department": req["department_id"],
                                         "reason": reason})
    return rows[0]


async def withdraw(conn: AsyncConnection, actor: Actor, request_id: int,
                   department: str | None) -> dict[str, Any]:
    """The asking department takes back its pending request."""
    async with conn.transaction():
        rows = await _rows(conn, (
            "UPDATE onemap.share_requests SET state = 'withdrawn', decided_by = %s,"
            " decided_at = now() WHERE id = %s AND state = 'pending'"
            " AND (department_id = %s OR %s IS NULL) RETURNING *"),
            (actor.name, request_id, department, department))
        if not rows:
            raise Conflict(f"request {request_id} is not a pending request of yours")
        await _audit(conn, actor, "withdraw request", [rows[0]["layer_id"]],
                     {"request": request_id})
    return rows[0]


async def requests(conn: AsyncConnection, department: str | None) -> dict[str, list]:
    """Requests for the department's layers and by it (None: all, for administrators)."""
    base = ("SELECT r.*, l.title AS layer_title, l.department AS owner FROM"
            " onemap.share_requests r JOIN onemap.layers l ON l.id = r.layer_id")
    if department is None:
        every = await _rows(conn, base + " ORDER BY r.created_at DESC LIMIT 500", ())
        return {"incoming": every, "outgoing": []}
    incoming = await _rows(conn, base + " WHERE l.department = %s"
                                        " ORDER BY r.state <> 'pending', r.created_at DESC"
                                        " LIMIT 500", (department,))
    outgoing = await _rows(conn, base + " WHERE r.department_id = %s"
                                        " ORDER BY r.created_at DESC LIMIT 500", (department,))
    return {"incoming": incoming, "outgoing": outgoing}


async def readers(conn: AsyncConnection, layer_ids: list[str], days: int = 30
                  ) -> list[dict[str, Any]]:
    """Who read these layers lately: by layer, principal and department, with counts."""
    if not layer_ids:
        return []
    return await _rows(conn, (
        "SELECT l AS layer, a.principal, a.department, count(*) AS requests,"
        " sum(coalesce(a.features, 0))::bigint AS features, max(a.at) AS last"
        " FROM onemap.audit a, unnest(a.layers) l"
        " WHERE a.layers && %s AND l = ANY(%s) AND a.at > now() - %s"
        " AND a.method IN ('GET', 'HEAD') AND a.status < 400"
        " GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC LIMIT 1000"),
        (layer_ids, layer_ids, timedelta(days=days)))


async def grants(conn: AsyncConnection, layer_ids: list[str], department: str | None
                 ) -> dict[str, list]:
    """Grants on these layers (given) and to the department (received)."""
    given = await _rows(conn, (
        "SELECT g.*, p.name AS principal FROM onemap.grants g LEFT JOIN onemap.principals p"
        " ON p.id = g.principal_id WHERE g.layer_pattern = ANY(%s) ORDER BY g.id"),
        (layer_ids,))
    received = await _rows(conn, (
        "SELECT g.* FROM onemap.grants g WHERE g.department_id = %s ORDER BY g.id"),
        (department,)) if department else []
    return {"given": given, "received": received}


async def audit_of(conn: AsyncConnection, layer_ids: list[str], limit: int = 100
                   ) -> list[dict[str, Any]]:
    """The newest audit rows about these layers."""
    if not layer_ids:
        return []
    return await _rows(conn, (
        "SELECT at, principal, department, action, method, path, layers, features, status,"
        " detail - 'query' AS detail FROM onemap.audit WHERE layers && %s"
        " ORDER BY at DESC LIMIT %s"), (layer_ids, limit))

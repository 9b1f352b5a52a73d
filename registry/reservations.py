"""Slot reservations: a department claims a slot for a planned front; the carrier's owner
approves or refuses. A live claim (requested or approved) makes the slot taken in lookups,
and a slot has at most one (the database's unique index decides races)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from layers.errors import Conflict, Forbidden, NotFound

# A requested claim lapses when it is not approved within this many hours; a department
# holds at most this many requested claims at once (ONEMAP_CLAIM_HOURS, ONEMAP_MAX_CLAIMS).
CLAIM_HOURS = 72
MAX_CLAIMS = 20
# A department's reservations, asked (department = it) and waiting for it (owner = it),
# waiting ones first; a NULL department: all of them (an administrator).
LIST = ("SELECT r.id, r.carrier, r.slot, r.department, r.status, r.model, r.note,"
        " r.requested_at, r.decided_at, r.decided_by, c.owner,"
        " r.department = %(dept)s AS mine, c.owner = %(dept)s AS to_decide"
        " FROM registry.reservations r LEFT JOIN registry.carriers c ON c.code = r.carrier"
        " WHERE %(dept)s::text IS NULL OR r.department = %(dept)s OR c.owner = %(dept)s"
        " ORDER BY r.status <> 'requested', r.requested_at DESC LIMIT 500")
EXPIRE = ("UPDATE registry.reservations SET status = 'expired', decided_at = now()"
          " WHERE status = 'requested' AND requested_at < now() - make_interval(hours => %s)")


def expire(conn: psycopg.Connection, hours: float = CLAIM_HOURS) -> int:
    """Claims not approved in time lapse: their slots are free again."""
    return conn.execute(EXPIRE, (hours,)).rowcount


def reserve(conn: psycopg.Connection, carrier: str, slot: int, department: str,
            model: str | None = None, note: str | None = None, *,
            max_claims: int = MAX_CLAIMS, claim_hours: float = CLAIM_HOURS) -> int:
    """The department claims the slot; Conflict when it is taken or the department already
    holds ``max_claims`` requested claims."""
    expire(conn, claim_hours)
    held = conn.execute("SELECT count(*) FROM registry.reservations WHERE department = %s"
                        " AND status = 'requested'", (department,)).fetchone()
    if held is not None and held[0] >= max_claims:
        raise Conflict(f"department {department!r} holds {held[0]} claims awaiting a "
                       f"decision, the most it may; withdraw one or wait for decisions")
    if conn.execute("SELECT 1 FROM registry.slots WHERE carrier = %s AND slot = %s",
                    (carrier, slot)).fetchone() is None:
        raise NotFound(f"carrier {carrier} has no slot {slot}")
    if conn.execute("SELECT 1 FROM registry.deployments WHERE carrier = %s AND slot = %s"
                    " AND valid_to IS NULL", (carrier, slot)).fetchone():
        raise Conflict(f"slot {slot} of {carrier} holds a front")
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO registry.reservations (carrier, slot, department, model, note)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (carrier, slot, department, model, note)).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        holder = conn.execute(
            "SELECT department FROM registry.reservations WHERE carrier = %s AND slot = %s"
            " AND status IN ('requested', 'approved')", (carrier, slot)).fetchone()
        raise Conflict(f"slot {slot} of {carrier} is already claimed by "
                               f"{holder[0] if holder else 'another department'}") from exc
    return int(row[0])


def decide(conn: psycopg.Connection, reservation: int, approve: bool, by: str,
           may_decide: Callable[[str | None], bool] | None = None, *,
           claim_hours: float = CLAIM_HOURS) -> str:
    """The carrier's owner approves or refuses a requested reservation; ``may_decide``
    (the policy's rule, given the carrier's owner) says whether ``by`` may. A claim that
    lapsed is no longer for deciding."""
    expire(conn, claim_hours)
    row = conn.execute(
        "SELECT r.status, c.owner FROM registry.reservations r JOIN registry.carriers c"
        " ON c.code = r.carrier WHERE r.id = %s", (reservation,)).fetchone()
    if row is None:
        raise NotFound(f"no reservation {reservation}")
    status, owner = row
    allowed = may_decide(owner) if may_decide is not None else owner == by
    if not allowed:
        raise Forbidden(f"only the carrier's owner ({owner or 'none recorded'}) decides")
    if status != "requested":
        raise Conflict(f"reservation {reservation} is already {status}")
    new = "approved" if approve else "refused"
    conn.execute("UPDATE registry.reservations SET status = %s, decided_at = now(),"
                 " decided_by = %s WHERE id = %s", (new, by, reservation))
    return new


def cancel(conn: psycopg.Connection, reservation: int, by: str) -> str:
    """The requesting department withdraws its own claim (requested or approved)."""
    row = conn.execute("SELECT status, department FROM registry.reservations WHERE id = %s",
                       (reservation,)).fetchone()
    if row is None:
        raise NotFound(f"no reservation {reservation}")
    status, department = row
    if department != by:
        raise Forbidden(f"only the requesting department ({department}) withdraws a claim")
    if status not in ("requested", "approved"):
        raise Conflict(f"reservation {reservation} is already {status}")
    conn.execute("UPDATE registry.reservations SET status = 'cancelled', decided_at = now(),"
                 " decided_by = %s WHERE id = %s", (by, reservation))
    return "cancelled"

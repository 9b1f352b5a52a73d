"""Slot reservations: a department claims a slot for a planned front; the carrier's owner
approves or refuses. A live claim (requested or approved) makes the slot taken in lookups,
and a slot has at most one (the database's unique index decides races)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from layers.errors import Conflict, Forbidden, NotFound


def reserve(conn: psycopg.Connection, carrier: str, slot: int, department: str,
            model: str | None = None, note: str | None = None) -> int:
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
           may_decide: Callable[[str | None], bool] | None = None) -> str:
    """The carrier's owner approves or refuses a requested reservation; ``may_decide``
    (the policy's rule, given the carrier's owner) says whether ``by`` may."""
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

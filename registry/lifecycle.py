"""The lifecycle ledger read back: the state of an entity, and its fronts, at any date."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

# What each event leaves the entity as; an inspection changes nothing.
AFTER = {"procurement": "planned", "installation": "in_service", "fault": "faulty",
         "repair": "in_service", "upgrade": "in_service", "replacement": "in_service",
         "retirement": "retired"}


def record(conn: psycopg.Connection, code: str, event: str, *, actual_at: datetime | None = None,
           planned_at: datetime | None = None, operator: str | None = None,
           note: str | None = None) -> int:
    """Append an event; the entity's current state follows when the event has happened."""
    if event not in (*AFTER, "inspection"):
        raise ValueError(f"event {event!r} is not one of {', '.join([*AFTER, 'inspection'])}")
    row = conn.execute(
        "INSERT INTO registry.events (code, event, planned_at, actual_at, operator, note)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (code, event, planned_at, actual_at, operator, note)).fetchone()
    if actual_at is not None and event in AFTER:
        now = state_at(conn, code, datetime.max.replace(tzinfo=actual_at.tzinfo))
        for table, col in (("carriers", "status"), ("fronts", "state")):
            conn.execute(psycopg.sql.SQL(
                "UPDATE {} SET {} = %s, updated_at = now() WHERE code = %s").format(
                    psycopg.sql.Identifier("registry", table), psycopg.sql.Identifier(col)),
                (now["state"], code))
    return int(row[0])


def state_at(conn: psycopg.Connection, code: str, when: datetime) -> dict[str, Any]:
    """The entity's state and (for a carrier) the fronts on it at ``when``, from the
    ledger and the deployments alone."""
    events = conn.execute(
        "SELECT event, actual_at FROM registry.events WHERE code = %s AND actual_at <= %s"
        " ORDER BY actual_at, id", (code, when)).fetchall()
    state = None
    last = None
    for event, at in events:
        if event in AFTER:
            state = AFTER[event]
        last = {"event": event, "at": at.isoformat()}
    fronts = [r[0] for r in conn.execute(
        "SELECT front FROM registry.deployments WHERE carrier = %s AND valid_from <= %s"
        " AND (valid_to IS NULL OR valid_to > %s) ORDER BY slot", (code, when, when))]
    return {"code": code, "at": when.isoformat(), "state": state or "unknown",
            "last_event": last, "fronts": fronts}


def events(conn: psycopg.Connection, code: str) -> list[dict[str, Any]]:
    """The entity's ledger, in the order things happened (planned-only events last)."""
    rows = conn.execute(
        "SELECT id, event, planned_at, actual_at, operator, note, recorded_at"
        " FROM registry.events WHERE code = %s ORDER BY actual_at NULLS LAST, planned_at, id",
        (code,)).fetchall()
    return [{"id": r[0], "event": r[1], "planned_at": _iso(r[2]), "actual_at": _iso(r[3]),
             "operator": r[4], "note": r[5], "recorded_at": _iso(r[6])} for r in rows]


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None

"""Versioned schema migrations: numbered SQL files, each applied once, in order."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

log = logging.getLogger("onemap.migrate")

# Any constant: serializes concurrent starters of the same database.
_LOCK_KEY = 0x0E4A9


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in (resources.files("layers") / "migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied. Needs an autocommit connection."""
    applied: list[str] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute("CREATE SCHEMA IF NOT EXISTS onemap")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS onemap.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM onemap.schema_migrations")}
        for version, name, text in _migrations():
            if version in done:
                continue
            log.info("migration %s", name)
            with conn.transaction():
                conn.execute(text)
                conn.execute(
                    "INSERT INTO onemap.schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
            applied.append(name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied

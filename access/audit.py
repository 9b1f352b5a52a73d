"""The audit log: every data access and every change to access, kept in the database.

Requests are recorded without waiting on the database: rows are queued and written in
batches about once a second (and before anyone reads the log), so auditing costs a
request almost nothing.

Whatever a request held is stored: text that PostgreSQL cannot keep (a NUL, a lone
surrogate) is written with the character escaped. A batch the database refuses for its
content is written row by row, so one bad row never blocks the others; a row refused on
its own is dropped, counted and logged. While the database is away rows wait in the queue
(at most ``MAX_QUEUE``; past that the oldest are dropped and counted). ``health()`` tells
``/healthz`` how the log is doing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger("onemap.audit")

COLUMNS = ("at", "principal_id", "principal", "department", "key_id", "action", "method",
           "path", "layers", "detail", "features", "status", "client")


@dataclass
class Entry:
    at: datetime
    principal_id: int | None
    principal: str
    department: str | None
    key_id: str | None
    action: str
    method: str
    path: str
    layers: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    features: int | None = None
    status: int = 200
    client: str | None = None  # the caller's address

    def row(self) -> tuple:
        return (self.at, self.principal_id, clean(self.principal), clean(self.department),
                clean(self.key_id), clean(self.action), clean(self.method), clean(self.path),
                [clean(x) for x in self.layers], Jsonb(clean(self.detail)), self.features,
                self.status, clean(self.client))


def clean(value: Any) -> Any:
    """``value`` with every string storable as PostgreSQL text and jsonb: NUL becomes
    ``\\0``, and characters UTF-8 cannot encode are escaped."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\\0")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {clean(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


_INSERT = sql.SQL("INSERT INTO onemap.audit ({}) VALUES ({})").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
    sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))


async def write(conn: AsyncConnection, entries: list[Entry]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT, [e.row() for e in entries])


def write_now(conn: psycopg.Connection, entry: Entry) -> None:
    """One entry written at once, by a process that serves no requests (a job worker)."""
    conn.execute(_INSERT, entry.row())


MAX_QUEUE = 100_000


class AuditLog:
    def __init__(self) -> None:
        self._queue: list[Entry] = []
        self._lock = asyncio.Lock()
        self.written = 0
        self.dropped = 0  # rows the database refused on their own, or past MAX_QUEUE
        self.failed_flushes = 0  # tries that found the database away
        self.last_error: str | None = None
        self.last_written_at: float | None = None

    def record(self, entry: Entry) -> None:
        self._queue.append(entry)
        if len(self._queue) > MAX_QUEUE:
            over = len(self._queue) - MAX_QUEUE
            del self._queue[:over]
            self.dropped += over

    def health(self) -> dict[str, Any]:
        return {"queued": len(self._queue), "written": self.written, "dropped": self.dropped,
                "failed_flushes": self.failed_flushes, "last_error": self.last_error,
                "ok": self.last_error is None}

    async def flush(self, pool: AsyncConnectionPool) -> None:
        async with self._lock:
            entries, self._queue = self._queue, []
            if not entries:
                return
            try:
                async with pool.connection() as conn:
                    await self._write(conn, entries)
            except (psycopg.OperationalError, PoolTimeout) as exc:
                # The database is away: kept for the next try, never dropped for a hiccup.
                self._queue[:0] = entries
                self.failed_flushes += 1
                self.last_error = f"database unreachable: {type(exc).__name__}"
                raise
            self.last_error = None
            self.last_written_at = time.time()

    async def _write(self, conn: AsyncConnection, entries: list[Entry]) -> None:
        try:
            async with conn.transaction():
                await write(conn, entries)
            self.written += len(entries)
            return
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            pass  # some row's content: write them one by one
        for entry in entries:
            try:
                async with conn.transaction():
                    await write(conn, [entry])
                self.written += 1
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                self.dropped += 1
                log.error("audit row for %s %s refused by the database (%s); dropped",
                          entry.method, clean(entry.path)[:200], type(exc).__name__)

    async def run(self, pool: AsyncConnectionPool, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush(pool)
            except Exception:
                log.exception("audit rows not yet written; retrying")

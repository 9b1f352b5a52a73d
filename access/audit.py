"""The audit log: every data access and every change to access, kept in the database.

Requests are recorded without waiting on the database: rows are queued and written in
batches about once a second (and before anyone reads the log), so auditing costs a
request almost nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("onemap.audit")

COLUMNS = ("at", "principal_id", "principal", "department", "key_id", "action", "method",
           "path", "layers", "detail", "features", "status")


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

    def row(self) -> tuple:
        return (self.at, self.principal_id, self.principal, self.department, self.key_id,
                self.action, self.method, self.path, self.layers, Jsonb(self.detail),
                self.features, self.status)


_INSERT = sql.SQL("INSERT INTO onemap.audit ({}) VALUES ({})").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
    sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))


async def write(conn: AsyncConnection, entries: list[Entry]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT, [e.row() for e in entries])


class AuditLog:
    def __init__(self) -> None:
        self._queue: list[Entry] = []
        self._lock = asyncio.Lock()

    def record(self, entry: Entry) -> None:
        self._queue.append(entry)

    async def flush(self, pool: AsyncConnectionPool) -> None:
        async with self._lock:
            entries, self._queue = self._queue, []
            if not entries:
                return
            try:
                async with pool.connection() as conn, conn.transaction():
                    await write(conn, entries)
            except Exception:
                # Kept for the next try: an audit row is never dropped for a hiccup.
                self._queue[:0] = entries
                raise

    async def run(self, pool: AsyncConnectionPool, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush(pool)
            except Exception:
                log.exception("audit rows not yet written; retrying")

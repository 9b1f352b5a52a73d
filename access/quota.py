"""Daily item quotas on base layers: base data is served, never handed out in bulk.

Counted per caller (a key, else a principal, else the client address for anonymous
callers) per UTC day. A caller's count starts from what the audit log says it was served
today, so a restart does not reset it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from psycopg import AsyncConnection


class BaseQuota:
    def __init__(self) -> None:
        self._day: date | None = None
        self._used: dict[str, int] = {}

    def _today(self) -> None:
        today = datetime.now(UTC).date()
        if today != self._day:
            self._day, self._used = today, {}

    async def used(self, conn: AsyncConnection, who: str, key_id: str | None,
                   principal: str | None, base_layers: list[str]) -> int:
        self._today()
        if who not in self._used:
            count = 0
            if key_id is not None or principal is not None:
                cur = await conn.execute(
                    "SELECT coalesce(sum(features), 0) FROM onemap.audit"
                    " WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
                    " AND action = 'features' AND layers && %s::text[]"
                    " AND (key_id = %s OR (%s::text IS NULL AND principal = %s))",
                    (base_layers, key_id, key_id, principal))
                row = await cur.fetchone()
                count = int(row[0]) if row else 0
            self._used[who] = count
        return self._used[who]

    def add(self, who: str, n: int) -> None:
        self._today()
        self._used[who] = self._used.get(who, 0) + n

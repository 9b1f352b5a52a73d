"""Daily item quotas on base layers: base data is served, never handed out in bulk.

Counted per caller (a key, else a principal, else the client address for anonymous
callers) per UTC day. A caller's count starts from what the audit log says it was served
today (anonymous callers by the address each audit row keeps), so a restart resets no one.
The limit itself is the policy's (``access/policy.py``, rule 7).
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
                   principal: str | None, base_layers: list[str],
                   client: str | None = None) -> int:
        """What ``who`` was served today: a key's, a principal's or (anonymous) an
        address's count, read back from the audit log the first time it is asked."""
        self._today()
        if who not in self._used:
            count = 0
            if key_id is not None or principal is not None or client is not None:
                cur = await conn.execute(
                    "SELECT coalesce(sum(features), 0) FROM onemap.audit"
                    " WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
                    " AND action = 'features' AND layers && %(layers)s::text[]"
                    " AND CASE WHEN %(key)s::text IS NOT NULL THEN key_id = %(key)s"
                    "  WHEN %(principal)s::text IS NOT NULL THEN principal = %(principal)s"
                    "  ELSE principal_id IS NULL AND client = %(client)s END",
                    {"layers": base_layers, "key": key_id, "principal": principal,
                     "client": client})
                row = await cur.fetchone()
                count = int(row[0]) if row else 0
            self._used[who] = count
        return self._used[who]

    def add(self, who: str, n: int) -> None:
        self._today()
        self._used[who] = self._used.get(who, 0) + n

"""Daily item quotas on base layers: base data is served, never handed out in bulk.

Counted per caller (a key, else a principal, else the client address for anonymous
callers) per UTC day, in PostgreSQL (``onemap.quota_used``), so every server process
counts one quota. A caller's count starts from what the audit log says it was served today
(anonymous callers by the address each audit row keeps), so neither a restart nor a lost
count resets anyone. The limit itself is the policy's (``access/policy.py``, rule 7).
"""

from __future__ import annotations

from psycopg import AsyncConnection


class BaseQuota:
    async def used(self, conn: AsyncConnection, who: str, key_id: str | None,
                   principal: str | None, base_layers: list[str],
                   client: str | None = None) -> int:
        """What ``who`` was served today: a key's, a principal's or (anonymous) an
        address's count, read back from the audit log the first time it is asked."""
        cur = await conn.execute("SELECT used FROM onemap.quota_used WHERE who = %s"
                                 " AND day = (now() AT TIME ZONE 'UTC')::date", (who,))
        row = await cur.fetchone()
        if row is not None:
            return int(row[0])
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
            found = await cur.fetchone()
            count = int(found[0]) if found else 0
        cur = await conn.execute(
            "INSERT INTO onemap.quota_used (who, day, used) VALUES (%s,"
            " (now() AT TIME ZONE 'UTC')::date, %s) ON CONFLICT (who, day)"
            " DO UPDATE SET used = onemap.quota_used.used RETURNING used", (who, count))
        return int((await cur.fetchone())[0])

    async def add(self, conn: AsyncConnection, who: str, n: int) -> None:
        await conn.execute(
            "INSERT INTO onemap.quota_used (who, day, used) VALUES (%s,"
            " (now() AT TIME ZONE 'UTC')::date, %s) ON CONFLICT (who, day)"
            " DO UPDATE SET used = onemap.quota_used.used + EXCLUDED.used", (who, n))

"""Requests per minute per key, one limit however many server processes serve the key.

The bucket lives in PostgreSQL (``onemap.rate_buckets``, refilled continuously). A
process takes tokens from it in small leases — about a second's worth of the key's rate,
at most ``MAX_LEASE`` — and spends them locally for at most ``LEASE_SECONDS``, so a busy
key costs one statement per lease rather than per request; a key limited to a few requests
a minute is asked of the database on each. Unused tokens of a lease lapse with it: the
limit is never exceeded by more than one lease per process, and never loosened.
"""

from __future__ import annotations

import time

from psycopg import AsyncConnection

MAX_LEASE = 50
LEASE_SECONDS = 1.0

# The bucket refilled to now (its available tokens: ``least(cap, tokens + elapsed *
# rate)``), then a lease of up to ``want`` whole tokens taken from it.
TAKE = """
INSERT INTO onemap.rate_buckets AS b (key, tokens, at, granted)
VALUES (%(key)s, %(cap)s - least(%(want)s, %(cap)s), clock_timestamp(),
        least(%(want)s, %(cap)s))
ON CONFLICT (key) DO UPDATE SET
  tokens = least(%(cap)s, b.tokens + extract(epoch FROM clock_timestamp() - b.at) * %(rate)s)
    - least(%(want)s, floor(least(%(cap)s,
        b.tokens + extract(epoch FROM clock_timestamp() - b.at) * %(rate)s))),
  granted = least(%(want)s, floor(least(%(cap)s,
        b.tokens + extract(epoch FROM clock_timestamp() - b.at) * %(rate)s))),
  at = clock_timestamp()
RETURNING granted"""


class RateLimiter:
    def __init__(self) -> None:
        self._leases: dict[str, tuple[int, float]] = {}  # key -> (tokens left, lapses at)

    async def check(self, conn: AsyncConnection, key: str, per_minute: int) -> float | None:
        """None if the request may go now, else seconds until it may."""
        if per_minute <= 0:
            return None
        now = time.monotonic()
        left, until = self._leases.get(key, (0, 0.0))
        if left >= 1 and now < until:
            self._leases[key] = (left - 1, until)
            return None
        rate = per_minute / 60.0
        want = max(1, min(MAX_LEASE, int(rate * LEASE_SECONDS)))
        cur = await conn.execute(TAKE, {"key": key, "cap": float(per_minute), "want": want,
                                        "rate": rate})
        granted = int((await cur.fetchone())[0])
        if granted < 1:
            self._leases.pop(key, None)
            return 1.0 / rate
        self._leases[key] = (granted - 1, now + LEASE_SECONDS)
        return None

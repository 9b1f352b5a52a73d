"""Reads on streaming replicas (``ONEMAP_DATABASE_REPLICA_URLS``), never stale.

A tile or a page of features is made on a replica, taken in turn, while the primary is
asked at the same moment for the layers' current versions (one indexed lookup); the answer
names the versions it was made from, so a replica behind any of its layers is seen at once
and the answer is made again on the primary. Writes, and every other read, stay on the
primary. A replica that fails (cannot connect, or its connection breaks) is left alone for
``REST_SECONDS`` while the primary serves; then it is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger("onemap.replicas")
T = TypeVar("T")
REST_SECONDS = 5.0
VERSIONS = "SELECT id, version FROM onemap.layers WHERE id = ANY(%s)"


class Replica:
    def __init__(self, url: str, pool: AsyncConnectionPool) -> None:
        self.url = url
        self.pool = pool
        self.down_until = 0.0
        self.served = 0
        self.behind = 0  # answers it gave for a version older than the primary's

    @property
    def up(self) -> bool:
        return time.monotonic() >= self.down_until


class Replicas:
    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self._turn = itertools.cycle(range(len(replicas))) if replicas else None

    def pick(self) -> Replica | None:
        if self._turn is None:
            return None
        for _ in range(len(self.replicas)):
            r = self.replicas[next(self._turn)]
            if r.up:
                return r
        return None

    async def close(self) -> None:
        for r in self.replicas:
            await r.pool.close()

    def health(self) -> list[dict[str, Any]]:
        return [{"up": r.up, "served": r.served, "behind": r.behind} for r in self.replicas]

    @contextlib.asynccontextmanager
    async def connection(self, replica: Replica, budget_ms: int) -> AsyncIterator[Any]:
        async with replica.pool.connection(timeout=1) as conn:
            await conn.execute("SELECT set_config('statement_timeout', %s, false)",
                               (f"{budget_ms}ms",))
            yield conn

    async def read(self, primary: Any, layer_ids: list[str], budget_ms: int,
                   make: Callable[[Any], Awaitable[T]],
                   versions_of: Callable[[T], dict[str, int]]) -> T:
        """``make(conn)`` on a replica whose versions of ``layer_ids`` (``versions_of`` its
        answer) are the primary's, else on ``primary``."""
        replica = self.pick()
        if replica is None:
            return await make(primary)
        try:
            async with self.connection(replica, budget_ms) as conn:
                # Both run to their end (the primary's connection is used again after).
                answer, current = await asyncio.gather(
                    make(conn), _versions(primary, layer_ids), return_exceptions=True)
            if isinstance(answer, BaseException):
                raise answer
        except psycopg.errors.QueryCanceled:
            raise  # the request's own budget: the primary would take as long
        except psycopg.errors.SerializationFailure:  # a conflict with the replay
            return await make(primary)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            replica.down_until = time.monotonic() + REST_SECONDS
            log.warning("replica %s left alone for %.0f s: %s", _safe(replica.url),
                        REST_SECONDS, type(exc).__name__)
            return await make(primary)
        if isinstance(current, BaseException):
            raise current  # the primary's own failure, not the replica's
        seen = versions_of(answer)
        if any(seen.get(i, -1) < v for i, v in current.items()):
            replica.behind += 1
            return await make(primary)
        replica.served += 1
        return answer


async def _versions(conn: Any, layer_ids: list[str]) -> dict[str, int]:
    cur = await conn.execute(VERSIONS, (layer_ids,))
    return {i: int(v) for i, v in await cur.fetchall()}


def _safe(url: str) -> str:
    """A replica's address for the log, without its password."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f"{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"


def open_replicas(urls: tuple[str, ...], options: str, size: int,
                  check: Callable[[Any], Awaitable[None]]) -> Replicas:
    pools = [AsyncConnectionPool(u, min_size=0, max_size=size, open=False, check=check,
                                 kwargs={"autocommit": True, "options": options,
                                         "connect_timeout": 2})
             for u in urls]
    return Replicas([Replica(u, p) for u, p in zip(urls, pools, strict=True)])


async def opened(replicas: Replicas) -> Replicas:
    for r in replicas.replicas:
        await r.pool.open(wait=False)  # a replica that is down does not hold up the start
    return replicas

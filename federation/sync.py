"""Keeping nodes in step: a city harvests its districts' catalogs (OGC API – Records, with
``If-None-Match``), on a schedule and when a district says it published; and every node
tells the nodes it knows when its catalog or its access changed (``notify``), so their
cascades ask again rather than wait for what they were told to age."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from federation import nodes
from federation.keys import HEADER, NodeKey

log = logging.getLogger("onemap.federation")
CHANNEL = "onemap_federation"  # "<node> <what>": a node's notice, heard by every process
HARVEST_TIMEOUT = 10.0  # seconds one node's harvest may take (it runs beside the others)
MAX_PAGES = 50
SIGNATURE = ("SELECT (SELECT version FROM onemap.access_state),"
             " (SELECT coalesce(sum(version), 0) || ':' || count(*) || ':'"
             " || coalesce(max(updated_at)::text, '') FROM onemap.layers)")


async def harvest(conn: AsyncConnection, key: NodeKey, me: str, node: str,
                  client: httpx.AsyncClient) -> str:
    """One district's catalog, fetched whole as this node sees it, unless unchanged since
    the last harvest; what happened, in a word or two."""
    state = await nodes.harvest_state(conn, node)
    if state is None:
        return "removed"
    url = f"{state['url']}/collections/catalog/items?limit=1000"
    headers = {HEADER: key.sign(me, node, {"sub": "catalog harvest"}),
               "Accept": "application/geo+json"}
    if state["harvest_etag"]:
        headers["If-None-Match"] = state["harvest_etag"]
    records: list[dict[str, Any]] = []
    etag = None
    try:
        for page in range(MAX_PAGES):
            r = await client.get(url, headers=headers)
            if r.status_code == 304 and page == 0:
                await nodes.harvest_unchanged(conn, node)
                return "unchanged"
            if r.status_code != 200:
                raise ValueError(f"{url} answered {r.status_code}: {r.text[:200]}")
            doc = r.json()
            etag = etag or r.headers.get("etag")
            records.extend(doc.get("features", []))
            url = next((ln["href"] for ln in doc.get("links", []) if ln.get("rel") == "next"),
                       None)
            headers.pop("If-None-Match", None)
            if url is None:
                break
    except (httpx.HTTPError, ValueError) as exc:
        await nodes.harvest_failed(conn, node, f"{type(exc).__name__}: {exc}")
        return f"failed: {exc}"
    n = await nodes.store_records(conn, node, records, etag)
    return f"{n} records"


async def harvest_all(pool: AsyncConnectionPool, key: NodeKey, me: str,
                      districts: list[str], client: httpx.AsyncClient) -> dict[str, str]:
    """Every district at once, each on its own connection and clock: one that fails or
    hangs holds up no other (nor the catalog, which serves what was harvested)."""

    async def one(node: str) -> str:
        try:
            async with pool.connection() as conn, conn.transaction():
                # One process harvests a node at a time; the others skip it.
                cur = await conn.execute(
                    "SELECT pg_try_advisory_xact_lock(hashtext('onemap harvest ' || %s))",
                    (node,))
                if not (await cur.fetchone())[0]:
                    return "being harvested elsewhere"
                return await asyncio.wait_for(harvest(conn, key, me, node, client),
                                              HARVEST_TIMEOUT)
        except TimeoutError:
            async with pool.connection() as conn:
                await nodes.harvest_failed(conn, node, f"no answer in {HARVEST_TIMEOUT:g} s")
            return "failed: timed out"

    found = await asyncio.gather(*(one(n) for n in districts), return_exceptions=True)
    return {n: (f if isinstance(f, str) else f"failed: {type(f).__name__}")
            for n, f in zip(districts, found, strict=True)}


async def tell(client: httpx.AsyncClient, key: NodeKey, me: str, node: str, url: str,
               what: str) -> None:
    r = await client.post(f"{url}/federation/notify", json={"what": what},
                          headers={HEADER: key.sign(me, node, {"sub": "notice"})})
    if r.status_code != 202:
        raise ValueError(f"{node} answered {r.status_code}: {r.text[:200]}")


class Sync:
    """This process's part: notices out when this node changed, harvests in (a city)."""

    def __init__(self, pool: AsyncConnectionPool, key: NodeKey, me: str, city: bool,
                 every: float, timeout: float) -> None:
        self.pool, self.key, self.me, self.city = pool, key, me, city
        self.every = every
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout * 2, connect=timeout))
        self._wanted = asyncio.Event()
        self.last: dict[str, str] = {}

    def soon(self) -> None:
        """Harvest now: a district said it published."""
        self._wanted.set()

    async def known(self) -> dict[str, dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT name, role, url FROM onemap.nodes")
            return {r[0]: {"role": r[1], "url": r[2]} for r in await cur.fetchall()}

    async def harvest_now(self) -> dict[str, str]:
        districts = [n for n, r in (await self.known()).items() if r["role"] == "district"]
        self.last = await harvest_all(self.pool, self.key, self.me, districts, self.client)
        return self.last

    async def _harvesting(self) -> None:
        while True:
            try:
                await self.harvest_now()
            except Exception as exc:  # the database away: next round
                log.warning("harvest failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), self.every)
            self._wanted.clear()

    async def _telling(self) -> None:
        seen: tuple | None = None
        while True:
            await asyncio.sleep(0.25)
            try:
                async with self.pool.connection() as conn:
                    now = await (await conn.execute(SIGNATURE)).fetchone()
            except Exception:  # the database away: the next look
                continue
            if seen is not None and now != seen:
                what = "catalog" if now[1] != seen[1] else "access"
                with contextlib.suppress(Exception):  # the database away: the next change
                    await asyncio.gather(*(self._tell(n, r["url"], what)
                                           for n, r in (await self.known()).items()))
            seen = now

    async def _tell(self, node: str, url: str, what: str) -> None:
        try:
            await tell(self.client, self.key, self.me, node, url, what)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("node %s was not told of a change: %s", node, exc)

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        tasks = [asyncio.create_task(self._telling())]
        if self.city:
            tasks.append(asyncio.create_task(self._harvesting()))
        try:
            yield self
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self.client.aclose()

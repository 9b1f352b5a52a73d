"""Asking another node for a caller, and keeping its answers: the cascade.

A request for ``/federation/{node}/{path}`` is asked of the node at ``{path}``, with an
assertion of who is asking (``keys.HEADER``), signed with this node's key; the node applies
its own grants to that caller and says, for each layer the answer read, its version and
the token of the caller's limits there (``keys.TOLD``). Answers are kept under
(node, path and query, what the node told), so two callers with the same limits share
them and callers with different limits never do; which of those a caller is, is what the
node last told about that caller for that part of the path (``told``), trusted for
``ttl`` seconds or until the node sends a notice (``heard``: a publish, a grant changed).
Misses for one key are asked once however many wait. When the node cannot be reached,
an answer kept for the caller is served with its age (``stale``); otherwise the failure
is quick (the node is not asked again for a few seconds).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx

from federation.keys import HEADER, LIFETIME, TOLD, NodeKey
from layers.errors import NodeTimeout, NodeUnreachable

# Headers of a node's answer that are passed on.
KEPT = ("content-type", "etag", "content-crs", "content-language", "onemap-tile-features",
        "link", "last-modified")
TEXTUAL = ("json", "xml", "html", "text/")
DOWN_SECONDS = 3.0  # a node that failed is not asked again for this long


def rebase(body: bytes, theirs: str, ours: str) -> bytes:
    """Links to the node's own URL made links to its cascade here."""
    pattern = re.escape(theirs.rstrip("/").encode()) + rb"(?=[/\"'?<\s]|$)"
    return re.sub(pattern, ours.rstrip("/").encode(), body)


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    cache: str = "miss"  # 'hit', 'miss', 'stale' or 'revalidated'
    age: float = 0.0  # seconds since the node last confirmed it (stale answers)


@dataclass
class _Told:
    value: str
    confirmed: float
    epoch: int


@dataclass
class Stats:
    counts: Counter = field(default_factory=Counter)
    upstream_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        asked = self.counts["asked"]
        return {**self.counts, "upstream_ms_mean": round(self.upstream_ms / asked, 1)
                if asked else None}


def fingerprint(claims: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(claims, sort_keys=True).encode()).hexdigest()[:16]


class Cascade:
    def __init__(self, me: str, my_url: str, key: NodeKey, timeout: float, ttl: float,
                 cache_bytes: int) -> None:
        self.me, self.my_url, self.key = me, my_url, key
        self.ttl, self.cache_bytes = ttl, cache_bytes
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))
        self._told: dict[tuple[str, str, str], _Told] = {}
        self._kept: OrderedDict[tuple[str, str, str], Answer] = OrderedDict()
        self._kept_bytes = 0
        self._epochs: Counter = Counter()
        self._down: dict[str, float] = {}
        self._flying: dict[tuple[str, str, str], asyncio.Future] = {}
        self._assertions: dict[tuple[str, str], tuple[str, float]] = {}
        self.stats: dict[str, Stats] = {}

    # ---- what nodes say ---------------------------------------------------------------

    def heard(self, node: str) -> None:
        """The node changed something (a publish, a grant): what it told is doubted."""
        self._epochs[node] += 1

    def down(self, node: str) -> bool:
        return self._down.get(node, 0.0) > time.monotonic()

    def assertion(self, node: str, claims: dict[str, Any]) -> str:
        fp = fingerprint(claims)
        made = self._assertions.get((node, fp))
        now = time.time()
        if made is None or now - made[1] > LIFETIME / 2:
            made = (self.key.sign(self.me, node, claims), now)
            if len(self._assertions) > 10_000:
                self._assertions.clear()
            self._assertions[(node, fp)] = made
        return made[0]

    # ---- asking -----------------------------------------------------------------------

    async def get(self, node: str, node_url: str, path: str, query: str,
                  claims: dict[str, Any], accept: str | None = None) -> Answer:
        """The node's answer to GET ``path?query`` for the caller ``claims`` describe."""
        stats = self.stats.setdefault(node, Stats())
        stats.counts["requests"] += 1
        fp = fingerprint(claims)
        target = path + (f"?{query}" if query else "")
        if accept:
            target += f"#accept={accept}"  # kept apart by what was asked for
        told_key = (node, fp, "/".join(path.strip("/").split("/")[:2]))
        told = self._told.get(told_key)
        now = time.monotonic()
        kept = self._kept.get((node, target, told.value)) if told else None
        if kept is not None:
            self._kept.move_to_end((node, target, told.value))
            if told.epoch == self._epochs[node] and now - told.confirmed < self.ttl:
                if self.down(node):  # still trusted, but say how old it is
                    stats.counts["stale"] += 1
                    return Answer(kept.status, kept.body, kept.headers, "stale",
                                  now - told.confirmed)
                stats.counts["hits"] += 1
                return Answer(kept.status, kept.body, kept.headers, "hit")
        if self.down(node):
            return self._stale_or_fail(node, kept, told, stats, None)
        flying = (node, target, told.value if told else fp)
        task = self._flying.get(flying)
        if task is None:
            # The asking is a task of its own: a caller that goes away (its request
            # cancelled) takes it from no one else waiting for the same answer.
            task = asyncio.ensure_future(self._ask(node, node_url, target, accept, claims,
                                                   told_key, kept, told, stats))
            self._flying[flying] = task
            task.add_done_callback(lambda t: self._landed(flying, t))
        else:
            stats.counts["collapsed"] += 1
        return await asyncio.shield(task)

    def _landed(self, key: tuple[str, str, str], task: asyncio.Future) -> None:
        if self._flying.get(key) is task:
            del self._flying[key]
        if not task.cancelled():
            task.exception()  # retrieved here: each waiter has it raised as well

    async def _ask(self, node: str, node_url: str, target: str, accept: str | None,
                   claims: dict[str, Any], told_key: tuple[str, str, str],
                   kept: Answer | None, told: _Told | None, stats: Stats) -> Answer:
        headers = {HEADER: self.assertion(node, claims), "Accept-Encoding": "gzip"}
        if accept:
            headers["Accept"] = accept
        if kept is not None and kept.headers.get("etag"):
            headers["If-None-Match"] = kept.headers["etag"]
        epoch = self._epochs[node]
        started = time.monotonic()
        path = target.split("#", 1)[0]
        try:
            r = await self.client.get(node_url.rstrip("/") + path, headers=headers)
        except httpx.TimeoutException:
            self._down[node] = time.monotonic() + DOWN_SECONDS
            return self._stale_or_fail(node, kept, told, stats, NodeTimeout(
                f"node {node!r} did not answer within {self.client.timeout.read:g} s"))
        except httpx.TransportError as exc:
            self._down[node] = time.monotonic() + DOWN_SECONDS
            return self._stale_or_fail(node, kept, told, stats, NodeUnreachable(
                f"node {node!r} cannot be reached ({type(exc).__name__})"))
        stats.counts["asked"] += 1
        stats.upstream_ms += (time.monotonic() - started) * 1000
        self._down.pop(node, None)
        value = r.headers.get(TOLD) or f"caller:{told_key[1]}"
        now = time.monotonic()
        if r.status_code == 304 and kept is not None:
            self._told[told_key] = _Told(value, now, epoch)
            self._keep((told_key[0], target, value), kept)
            stats.counts["revalidated"] += 1
            return Answer(kept.status, kept.body, kept.headers, "revalidated")
        if r.status_code >= 500:
            stats.counts["node_errors"] += 1
            if kept is not None:
                return self._stale_or_fail(node, kept, told, stats, None)
            raise NodeUnreachable(f"node {node!r} answered {r.status_code}: "
                                  f"{r.text[:300]}", retry_after=5)
        body = r.content
        kind = r.headers.get("content-type", "")
        if any(t in kind for t in TEXTUAL):
            body = rebase(body, node_url, f"{self.my_url}/federation/{node}")
        answer = Answer(r.status_code, body, {k: r.headers[k] for k in KEPT if k in r.headers})
        if r.status_code == 200:
            self._told[told_key] = _Told(value, now, epoch)
            self._keep((told_key[0], target, value), answer)
        else:  # refused, or not there for this caller: nothing of it is kept
            self._told.pop(told_key, None)
        return answer

    def _stale_or_fail(self, node: str, kept: Answer | None, told: _Told | None,
                       stats: Stats, error: Exception | None) -> Answer:
        if kept is not None and told is not None:
            stats.counts["stale"] += 1
            return Answer(kept.status, kept.body, kept.headers, "stale",
                          time.monotonic() - told.confirmed)
        stats.counts["failed"] += 1
        raise error or NodeUnreachable(
            f"node {node!r} is not answering just now; asked again in a few seconds",
            retry_after=DOWN_SECONDS)

    def _keep(self, key: tuple[str, str, str], answer: Answer) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self._kept_bytes -= len(old.body)
        if len(answer.body) > self.cache_bytes // 8:
            return
        self._kept[key] = answer
        self._kept_bytes += len(answer.body)
        while self._kept_bytes > self.cache_bytes and self._kept:
            _, dropped = self._kept.popitem(last=False)
            self._kept_bytes -= len(dropped.body)

    async def close(self) -> None:
        await self.client.aclose()


async def search_nodes(cascade: Cascade, nodes: dict[str, str], query: str,
                       claims: dict[str, dict[str, Any]], timeout: float
                       ) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The catalog search ``query`` asked of every node at once, live, for the caller:
    by node, its status (``ok``, ``timeout``, ``unreachable`` or ``error``, with the time
    it took) and the records it returned. A node that is slow costs ``timeout`` at most,
    and holds up no other."""

    async def one(node: str, url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        started = time.monotonic()
        status: dict[str, Any] = {"node": node}
        records: list[dict[str, Any]] = []
        try:
            r = await asyncio.wait_for(cascade.client.get(
                f"{url}/collections/catalog/items?{query}",
                headers={HEADER: cascade.assertion(node, claims[node]),
                         "Accept": "application/geo+json"}), timeout)
            if r.status_code == 200:
                records = list(r.json().get("features", []))
                status.update(status="ok", returned=len(records))
            else:
                status.update(status="error", detail=f"answered {r.status_code}")
        except (TimeoutError, httpx.TimeoutException):
            status["status"] = "timeout"
        except (httpx.HTTPError, ValueError) as exc:
            status.update(status="unreachable", detail=type(exc).__name__)
        status["ms"] = round((time.monotonic() - started) * 1000, 1)
        return status, records

    found = await asyncio.gather(*(one(n, u) for n, u in nodes.items()))
    return dict(zip(nodes, found, strict=True))

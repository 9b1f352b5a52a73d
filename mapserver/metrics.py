"""``/metrics`` in Prometheus's text format (the Prometheus client library): requests and
their latency per route family, the tile cache's hits and misses, the database pool's use
and the time connections were held, and the audit queue.

With several server processes (``ONEMAP_WORKERS``), ``onemap serve`` gives them one
``PROMETHEUS_MULTIPROC_DIR`` and each scrape adds up every process's figures, whichever
process answers it. Families are a fixed list (the first path segment), so a client
cannot grow the label set. The endpoint carries no caller's data; keep it off the public
side of the proxy (docker/nginx.conf does).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

from onemap.logs import REQUEST_ID

FAMILIES = frozenset({
    "tiles", "collections", "wms", "wmts", "basemaps", "styles", "processes", "jobs",
    "federation", "records", "catalog", "layers", "registry", "scenes3d", "rasters",
    "admin", "login", "portal", "api", "conformance", "glyphs", "sprites", "healthz",
    "livez", "readyz", "static", "vendor", "edits", "uploads", "images", "map"})

REQUESTS = Counter("onemap_requests", "HTTP requests answered", ["family", "status"])
LATENCY = Histogram("onemap_request_seconds", "Time to answer, by route family", ["family"],
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10,
                             30))
CACHE = Counter("onemap_tile_cache", "Tile cache lookups", ["result"])
POOL = Gauge("onemap_db_pool_connections", "Database pool connections", ["state"],
             multiprocess_mode="livesum")
WAITING = Gauge("onemap_db_pool_waiting", "Requests waiting for a database connection",
                multiprocess_mode="livesum")
DB_TIME = Counter("onemap_db_connection_seconds",
                  "Time database connections were held by requests")
AUDIT = Gauge("onemap_audit_queue", "Audit rows waiting to be written",
              multiprocess_mode="livesum")
AUDIT_DROPPED = Counter("onemap_audit_dropped", "Audit rows dropped (queue over its bound)")


def family(path: str) -> str:
    first = path.lstrip("/").split("/", 1)[0] or "root"
    return first if first in FAMILIES or first == "root" else "other"


def observe(path: str, status: int, seconds: float) -> None:
    f = family(path)
    REQUESTS.labels(f, str(status)).inc()
    LATENCY.labels(f).observe(seconds)


class Sampler:
    """Reads the process's own state into the gauges and counters (at most each second):
    the cache's and the pool's figures are kept by them, not by every request."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._at = 0.0

    def _delta(self, name: str, now: float) -> float:
        before = self._seen.get(name, 0.0)
        self._seen[name] = now
        return max(0.0, now - before)

    def sample(self, state: Any, now_please: bool = False) -> None:
        now = time.monotonic()
        if now - self._at < 1.0 and not now_please:
            return
        self._at = now
        cache = getattr(state, "cache", None)
        if cache is not None:
            CACHE.labels("hit").inc(self._delta("hits", float(cache.hits)))
            CACHE.labels("miss").inc(self._delta("misses", float(cache.misses)))
        stats = state.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        POOL.labels("open").set(size)
        POOL.labels("idle").set(idle)
        POOL.labels("busy").set(max(0, size - idle))
        WAITING.set(stats.get("requests_waiting", 0))
        DB_TIME.inc(self._delta("usage", stats.get("usage_ms", 0) / 1000.0))
        audit = state.audit.health()
        AUDIT.set(audit.get("queued", 0))
        AUDIT_DROPPED.inc(self._delta("dropped", float(audit.get("dropped", 0))))


SAMPLER = Sampler()


async def endpoint(request: Request) -> Response:
    from mapserver.deps import app_state

    SAMPLER.sample(app_state(request), now_please=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, media_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class Observe:
    """Outermost: every answer counted and timed by route family, and given a request id
    (the client's ``X-Request-Id`` when it is a sane one, else a new one), which the
    response carries back and every log line of the request names."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                      if k == b"x-request-id"), "")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex[:16]
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            observe(scope["path"], status, time.perf_counter() - started)
            app = scope.get("app")
            if app is not None and hasattr(app.state, "onemap"):
                SAMPLER.sample(app.state.onemap)
            REQUEST_ID.reset(token)

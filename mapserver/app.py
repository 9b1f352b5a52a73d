"""The application factory: one Starlette app, its pool opened for its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from access.audit import AuditLog
from access.credentials import OidcClient, OidcVerifier
from access.directory import Directory, Watch
from access.policy import Caps
from access.quota import BaseQuota
from access.ratelimit import RateLimiter
from federation.cascade import Cascade
from federation.keys import NodeKey
from federation.sync import CHANNEL as FEDERATION
from federation.sync import Sync
from layers import db as db_setup
from layers.db import direct_url, prepare
from layers.errors import DomainError
from layers.rasters import RasterRegistry, RasterStore
from layers.registry import SourceRegistry
from mapimages.draw import Images
from mapserver import (
    admin,
    assets,
    basemaps,
    catalog,
    edits,
    features,
    federation,
    images,
    metrics,
    ogctiles,
    openapi,
    portal,
    processes,
    publish,
    rasters,
    records,
    redact,
    registry,
    scenes3d,
    signin,
    tiles,
    wms,
    wmts,
)
from mapserver.auth import AccessMiddleware
from mapserver.cache import TileCache
from mapserver.deps import STATIC, AppState, app_state
from mapserver.errors import http_error, known_error, problem, server_error
from mapserver.guard import Guard
from mapserver.html import wants_html
from mapserver.replicas import open_replicas, opened
from onemap.settings import Settings

log = logging.getLogger("onemap.http")
# Serving runs many short queries at once: parallel workers would only compete for cores.
SESSION = "-c max_parallel_workers_per_gather=0"


async def check_alive(conn: Any) -> None:
    """The pool's liveness check, without a round trip: an idle connection in good order
    has nothing to read, so one whose socket is readable has heard from its server (a
    shutdown notice, or the end of the connection) and gets the full check, which fails
    and makes the pool replace it."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


async def healthz(request: Request) -> Response:
    """Up when the database answers; the audit log's state is shown, and a log that cannot
    write makes the service unhealthy: no access may go unrecorded for long."""
    state = app_state(request)
    audit = state.audit.health()
    try:
        async with state.pool.connection(timeout=5) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure to reach the database means unhealthy
        log.warning("health check failed: %s", type(exc).__name__)
        return problem(503, None, "database unreachable")
    shown = {"audit": audit, "access": state.watch.health() if state.watch else {
        "notices": False, **state.directory.health()}}
    if state.replicas is not None:
        shown["replicas"] = state.replicas.health()
    if not audit["ok"]:
        return JSONResponse({"status": "degraded", **shown}, status_code=503)
    return JSONResponse({"status": "ok", **shown})


async def livez(request: Request) -> Response:
    """Alive: the process answers (a supervisor restarts it when this fails)."""
    return JSONResponse({"status": "alive"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    """Ready for traffic: the database answers (a balancer sends nothing here while this
    says 503). A stopping server closes its socket first and finishes what is in flight."""
    state = app_state(request)
    try:
        async with state.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure to reach the database means not ready
        log.warning("readiness check failed: %s", type(exc).__name__)
        return problem(503, None, "database unreachable")
    return JSONResponse({"status": "ready"}, headers={"Cache-Control": "no-store"})


async def root(request: Request) -> Response:
    """The OGC API landing page for clients that ask for JSON, the viewer for browsers."""
    if not wants_html(request):
        return features.landing(request)
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    redact.install()  # before uvicorn or OneMap logs a request line

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = prepare(settings)
        pool = AsyncConnectionPool(url, min_size=settings.pool_min, max_size=settings.pool_max,
                                   kwargs={"autocommit": True, **db_setup.CONNECT,
                                           "options": (
                                       f"{SESSION} -c statement_timeout="
                                       f"{settings.budget_ms('tiles')}")},
                                   # A connection that died with a database restart is
                                   # found before a request is given it.
                                   check=check_alive,
                                   open=False)
        await pool.open(wait=True)
        replicas = await opened(open_replicas(
            settings.database_replica_urls, f"{SESSION} -c statement_timeout="
            f"{settings.budget_ms('tiles')}", settings.pool_max, check_alive))
        oidc = (OidcVerifier(settings.oidc_issuer, settings.oidc_audience,
                             settings.oidc_jwks_url) if settings.oidc_issuer else None)
        audit = AuditLog()
        app.state.onemap = AppState(settings, pool, SourceRegistry(settings.detail_zoom),
                                    TileCache(settings.tile_cache_mb * 1024 * 1024),
                                    Directory(settings.levels, Caps(
                                        settings.base_max_items, settings.base_max_offset,
                                        settings.base_daily_items)), audit, RateLimiter(), oidc,
                                    BaseQuota(),
                                    RasterRegistry(RasterStore(settings.raster_root)))
        if settings.oidc_issuer and (settings.oidc_client_id or settings.oidc_audience):
            app.state.onemap.login = OidcClient(
                settings.oidc_issuer, settings.oidc_client_id or settings.oidc_audience or "",
                settings.oidc_client_secret, settings.oidc_jwks_url)
        app.state.onemap.images = Images(direct_url(settings), settings.map_assets / "icons",
                                         settings.budget_images_ms, settings.image_workers)
        writer = asyncio.create_task(audit.run(pool))
        watching = contextlib.AsyncExitStack()
        state = app.state.onemap
        state.replicas = replicas if replicas.replicas else None
        state.node_key = NodeKey.load(settings.data_dir / "node.key")
        state.cascade = Cascade(settings.node_name, settings.node_url, state.node_key,
                                settings.federation_timeout, settings.federation_ttl,
                                settings.federation_cache_mb * 1024 * 1024)
        state.sync = await watching.enter_async_context(Sync(
            pool, state.node_key, settings.node_name, settings.node_role == "city",
            settings.harvest_seconds,
            settings.federation_timeout).running())
        if settings.access_notices:
            state.watch = await watching.enter_async_context(
                Watch(state.directory, direct_url(settings), also={
                    FEDERATION: lambda payload: federation.heard(state, payload)}).running())
        try:
            yield
        finally:
            await watching.aclose()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await audit.flush(pool)
            await state.cascade.close()
            await replicas.close()
            await pool.close()
            app.state.onemap.images.close()

    routes = [
        # Tiles are most of the requests: matched first (no other route starts /tiles/).
        *tiles.routes,
        *rasters.routes,
        *images.routes,
        Route("/", root),
        Route("/healthz", healthz),
        Route("/livez", livez),
        Route("/readyz", readyz),
        Route("/metrics", metrics.endpoint),
        Route("/api", openapi.api),
        *records.routes,  # before the features' /collections/{id} routes
        *edits.routes,
        *features.routes,
        *admin.routes,
        *registry.routes,
        *scenes3d.routes,
        *wmts.routes,
        *wms.routes,
        *ogctiles.routes,
        *signin.routes,
        *federation.routes,
        *processes.routes,
        *publish.routes,
        *portal.routes,  # POST /layers before the catalog's GET /layers
        *catalog.routes,
        *assets.routes,
        *basemaps.routes,
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    if settings.cesium_dir is not None:
        routes.append(Mount("/vendor/cesium", StaticFiles(directory=str(settings.cesium_dir)),
                            name="cesium"))
    middleware = [
        Middleware(metrics.Observe),
        Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                   allow_methods=["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"],
                   allow_headers=["Authorization", "Content-Type", "If-Match",
                                  "If-None-Match"],
                   expose_headers=["ETag", "Location", "OneMap-Tile-Features",
                                   "OneMap-Cache", "Retry-After", "X-Request-Id"]),
        Middleware(GZipMiddleware, minimum_size=500),
        Middleware(AccessMiddleware),
        Middleware(Guard),  # inside the access path, so a refused request is audited
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, DomainError: known_error,
                                         psycopg.Error: known_error, Exception: server_error})

"""What every endpoint shares: settings, pool, sources, access and the audit note."""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import anyio
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from access.audit import AuditLog
from access.credentials import OidcClient, OidcVerifier
from access.directory import Directory, Watch
from access.policy import Access, LayerAccess
from access.quota import BaseQuota
from access.ratelimit import RateLimiter
from access.sessions import SessionCache
from layers.catalog import LAYER_ID, Layer, fetch_layers
from layers.errors import Invalid
from layers.rasters import RasterRegistry
from layers.registry import SourceRegistry
from mapimages.draw import Images
from mapserver.cache import TileCache
from onemap.settings import Settings

STATIC = resources.files("mapserver") / "static"


@dataclass
class AppState:
    settings: Settings
    pool: AsyncConnectionPool
    registry: SourceRegistry
    cache: TileCache
    directory: Directory
    audit: AuditLog
    limiter: RateLimiter
    oidc: OidcVerifier | None
    quota: BaseQuota
    rasters: RasterRegistry
    # Access changes heard as notices; None: every request reads the access version.
    watch: Watch | None = None
    # Draws map images (WMS, image tiles) in worker processes of its own.
    images: Images | None = None
    # Browser sign-in with the OpenID Connect issuer (None: API keys only), and the
    # sessions seen lately.
    login: OidcClient | None = None
    sessions: SessionCache = field(default_factory=SessionCache)
    # The federation: this node's key, its cascade of other nodes, its harvests and
    # notices (federation/).
    node_key: Any = None
    cascade: Any = None
    sync: Any = None
    # Areas by id in lon/lat, for masking raster tiles; areas are never edited.
    areas: dict[int, Any] = field(default_factory=dict)
    # Streaming replicas that tiles and feature pages are read from (mapserver/replicas.py).
    replicas: Any = None


def app_state(request: Request) -> AppState:
    return request.app.state.onemap


# Writes run in worker threads of their own, a few at a time: a write waiting on a layer's
# lock never takes a thread that a read (a raster tile, a 3D tile) needs.
WRITES = anyio.CapacityLimiter(4)

# The budget each pooled connection was last given, so it is set only when it changes.
_BUDGETS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def db(request: Request, kind: str) -> AsyncIterator[Any]:
    """A pooled connection whose statements have this kind of request's time budget
    (``Settings.budget_ms``); past it PostgreSQL cancels the statement (a 503)."""
    async with budgeted(app_state(request), kind) as conn:
        yield conn


@contextlib.asynccontextmanager
async def budgeted(state: AppState, kind: str) -> AsyncIterator[Any]:
    """``db`` for code that has the app's state but no request (the access middleware)."""
    ms = state.settings.budget_ms(kind)
    if state.settings.database_pooling == "transaction":
        # Behind a transaction pooler a connection's settings do not last: the request is
        # one transaction, its budget set for that transaction alone.
        async with state.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT set_config('statement_timeout', %s, true)",
                               (f"{ms}ms",))
            yield conn
        return
    async with state.pool.connection() as conn:
        if _BUDGETS.get(conn) != ms:
            await conn.execute("SELECT set_config('statement_timeout', %s, false)",
                               (f"{ms}ms",))
            _BUDGETS[conn] = ms
        yield conn


def access(request: Request) -> Access:
    """Set for every request by mapserver.auth; there is no other way to it."""
    return request.state.access


def layer_access(request: Request, layer: Layer) -> LayerAccess | None:
    """What the caller may do with the layer; None: for the caller it does not exist."""
    found = access(request).layer(layer)
    return found if found is not None and found.read else None


def note(request: Request, layers: list[str], features: int | None = None,
         **detail: object) -> None:
    """What this request touched, for its audit row."""
    request.state.audit = {"layers": layers, "features": features, "detail": detail}


async def readable_layer(request: Request, conn: Any, layer_id: str, kinds: tuple[str, ...],
                         what: str) -> tuple[Layer, LayerAccess]:
    """The layer in a path with the caller's access; a missing one, one of another kind and
    one the caller may not read are the same 404."""
    note(request, [layer_id])
    found = await fetch_layers(conn, ids=[layer_id]) if LAYER_ID.match(layer_id) else []
    a = layer_access(request, found[0]) if found else None
    if not found or a is None or found[0].kind not in kinds:
        raise HTTPException(404, f"no {what} {layer_id!r}")
    return found[0], a


def page(name: str) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint serving one of the static HTML pages at a path of its own."""
    async def endpoint(request: Request) -> Response:
        return FileResponse(str(STATIC / name), media_type="text/html")

    return endpoint


# A JSON body deeper than this is refused: GeoJSON needs six levels, a grant's body three.
MAX_JSON_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes, what: str = "the body") -> Any:
    """JSON from a client: no NaN or Infinity, no NUL in a string, at most
    ``MAX_JSON_DEPTH`` deep; anything else is an Invalid naming what is wrong."""
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise Invalid(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:  # also UnicodeDecodeError
        raise Invalid(f"{what} is not JSON: {exc}") from exc
    stack: list[tuple[Any, int, str]] = [(doc, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise Invalid(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, str):
            if "\x00" in node:
                raise Invalid(f"{what} holds a NUL character at {where or 'the top'}")
        elif isinstance(node, dict):
            for k, v in node.items():
                if "\x00" in k:
                    raise Invalid(f"{what} holds a NUL character in a name at {where or 'the top'}")
                stack.append((v, depth + 1, f"{where}/{k}"))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}/{i}") for i, v in enumerate(node))
    return doc


async def json_body(request: Request) -> dict[str, Any]:
    """A request's JSON object body (empty: {}); anything else is a 400."""
    body = parse_json(await request.body() or b"{}")
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body

"""The one authorization path: every request is authenticated, limited and audited here.

Credentials, in order: ``Authorization: Bearer om_...`` (a OneMap key), ``Authorization:
Bearer <JWT>`` (from the configured OpenID Connect issuer), ``?key=`` (embedding keys only,
since map libraries cannot send headers; checked against the key's origins), the
``onemap_session`` cookie of a browser signed in at ``/login`` (its changes carry the
session's CSRF token). No credential, or a session that ended, is the anonymous principal.
The endpoints then ask ``request.state.access`` about each layer.
"""

from __future__ import annotations

import hmac
import time
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import anyio
import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from access.audit import Entry
from access.credentials import PREFIX, CredentialError
from access.directory import Key
from access.policy import ANONYMOUS, Access, Principal
from access.sessions import Session, find_session
from federation.keys import HEADER as ASSERTION
from federation.keys import TOLD, TOLD_MAX, issuer_of, verify
from mapserver.deps import budgeted
from mapserver.errors import problem
from mapserver.guard import gone

SESSION_COOKIE = "onemap_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION = "onemap.session"  # the scope's key for the session a request came with
# Served to anyone, about no layer: nothing to authorize or audit.
OPEN_PREFIXES = ("/static/", "/vendor/", "/healthz", "/livez", "/readyz", "/metrics",
                 "/favicon.ico")
# Methods that read; a POST to one of READ_POSTS is a lookup with a body, not a change.
READ_METHODS = ("GET", "HEAD", "OPTIONS")
# A node's notice changes nothing here but what this node trusts of that node's answers.
READ_POSTS = ("/registry/reuse", "/federation/notify")


def is_write(method: str, path: str) -> bool:
    # Running an analysis process reads layers and changes nothing.
    reads = path in READ_POSTS or (path.startswith("/processes/")
                                   and path.endswith("/execution"))
    return method not in READ_METHODS and not (method == "POST" and reads)


class Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def _origin(request: Request) -> str | None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return origin
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return None


def _check_embed(request: Request, key: Key) -> None:
    origin = _origin(request)
    if origin is None or not any(fnmatchcase(origin, o) for o in key.origins):
        raise Refused(403, "this key may not be used from this origin")


async def authenticate(request: Request, state: Any) -> tuple[Principal, Key | None]:
    assertion = request.headers.get(ASSERTION)
    if assertion is not None:
        # Another node asks for one of its callers (rule 13): signed with that node's key.
        node = issuer_of(assertion)
        known = state.directory.nodes.get(node)
        if known is None:
            raise CredentialError(f"node {node!r} is not a member of this federation")
        claims = verify(assertion, known["public_key"], node, state.settings.node_name)
        return state.directory.federated(node, claims), None
    header = request.headers.get("authorization")
    url_key = request.query_params.get("key")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Refused(401, "use Authorization: Bearer <key or token>")
        if token.startswith(PREFIX):
            principal, key = state.directory.by_key(token)
            if key.kind == "embed":
                _check_embed(request, key)
            return principal, key
        if state.oidc is None:
            raise CredentialError("tokens are not accepted: no OpenID Connect issuer is set")
        claims = await anyio.to_thread.run_sync(state.oidc.verify, token)
        return state.directory.by_subject(str(claims["sub"])), None
    if url_key is not None:
        principal, key = state.directory.by_key(url_key)
        if key.kind != "embed":
            raise Refused(401, "only embedding keys may be sent in a URL; send API keys in "
                               "the Authorization header")
        _check_embed(request, key)
        return principal, key
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        session = await _session(state, token)
        if session is not None:
            try:
                principal = state.directory.principal(session.principal_id)
            except CredentialError:  # disabled since it signed in
                return ANONYMOUS, None
            request.scope[SESSION] = session
            return principal, None
    # No credential, or a session that has ended: the public's view.
    return ANONYMOUS, None


async def _session(state: Any, token: str) -> Session | None:
    known, session = state.sessions.get(token)
    if not known:
        try:
            async with state.pool.connection() as conn:
                session = await find_session(conn, token)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise Refused(503, "the database is not reachable just now; try again shortly",
                          {"Retry-After": "5"}) from exc
        state.sessions.put(token, session)
    return session


def _csrf_refusal(request: Request, session: Session) -> str | None:
    """A change made with a session cookie carries the session's CSRF token in
    ``X-CSRF-Token`` (or, from a plain form, as ``csrf`` in the query), and comes from
    OneMap's own pages when the browser says where it comes from."""
    given = request.headers.get(CSRF_HEADER) or request.query_params.get("csrf") or ""
    if not hmac.compare_digest(given.encode(), session.csrf.encode()):
        return (f"a change made from a signed-in browser carries its CSRF token in "
                f"{CSRF_HEADER}: reload the page")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin != own:
            return f"a change from {origin} is refused here"
    return None


def _action(path: str) -> str:
    head = path.strip("/").split("/", 1)[0]
    return {"tiles": "tiles", "collections": "features", "styles": "styles",
            "layers": "catalog", "admin": "admin", "3dtiles": "3d", "api": "meta",
            "conformance": "meta", "": "meta"}.get(head, head)


def _preflight(scope: Scope) -> bool:
    """A browser's CORS preflight, which carries no credential; a plain OPTIONS is asked as
    the caller (what it may do there)."""
    return scope["method"] == "OPTIONS" and any(
        k == b"access-control-request-method" for k, _ in scope.get("headers", ()))


async def _refresh(state: Any) -> None:
    """The access version read now, and everything again if it moved."""
    try:
        async with state.pool.connection() as conn:
            if await state.directory.refresh(conn):
                state.registry.clear()  # layers may have been reclassified
    except (psycopg.OperationalError, PoolTimeout) as exc:
        # Outside the app's error handlers: say it here, as they would.
        raise Refused(503, "the database is not reachable just now; try again shortly",
                      {"Retry-After": "5"}) from exc


class AccessMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PREFIXES) \
                or _preflight(scope):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.onemap
        request = Request(scope)
        started = time.monotonic()
        principal, key = ANONYMOUS, None
        try:
            if state.watch is None or not state.watch.current():
                await _refresh(state)
            principal, key = await authenticate(request, state)
            session = scope.get(SESSION)
            # Signing in makes a session rather than use one: /login checks its origin.
            if session is not None and is_write(scope["method"], scope["path"]) \
                    and not scope["path"].startswith("/login/"):
                why = _csrf_refusal(request, session)
                if why is not None:
                    raise Refused(403, why)
            # Rule 0, before any endpoint: an anonymous writer is told by the endpoint.
            if is_write(scope["method"], scope["path"]) and not principal.anonymous \
                    and not state.directory.policy.may_write(principal):
                raise Refused(403, "embedding keys are read-only: they never change "
                                   "anything, whoever they belong to")
            limit = key.rate_limit if key and key.rate_limit is not None else (
                state.settings.key_rate_limit)
            wait = None
            if key and limit > 0:
                async with budgeted(state, "items") as conn:
                    wait = await state.limiter.check(conn, key.id, limit)
            if wait is not None:
                raise Refused(429, f"rate limit of {limit} requests per minute reached",
                              {"Retry-After": str(max(1, round(wait)))})
        except (CredentialError, Refused) as exc:
            refused = exc if isinstance(exc, Refused) else Refused(
                401, str(exc), {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            response = problem(refused.status, None, refused.detail)
            response.headers.update(refused.headers)
            await response(scope, receive, send)
            self._audit(state, scope, principal, key, refused.status, started)
            return
        scope.setdefault("state", {})["access"] = Access(principal, state.directory.policy)

        status = 500

        told = scope["state"]["access"].told

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if principal.node is not None and 0 < len(told) <= TOLD_MAX:
                    message["headers"] = [*message.get("headers", ()), (
                        TOLD.lower().encode(),
                        ",".join(f"{k}={v}" for k, v in sorted(told.items())).encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if is_write(scope["method"], scope["path"]):
                # A change here may have moved the access version: the next request
                # reads it rather than wait for the notice.
                state.directory.doubt()
            # 499: the client went away before the answer, and its work was stopped.
            self._audit(state, scope, principal, key, 499 if gone(scope) else status,
                        started)

    @staticmethod
    def _audit(state: Any, scope: Scope, principal: Principal, key: Key | None, status: int,
               started: float) -> None:
        note = scope.get("state", {}).get("audit", {})
        detail = dict(note.get("detail", {}))
        query = [(k, v) for k, v in Request(scope).query_params.multi_items() if k != "key"]
        if query:
            detail["query"] = dict(query)
        detail["ms"] = round((time.monotonic() - started) * 1000, 1)
        state.audit.record(Entry(
            at=datetime.now(UTC), principal_id=principal.id, principal=principal.name,
            department=principal.department, key_id=key.id if key else None,
            action=_action(scope["path"]), method=scope["method"], path=scope["path"],
            layers=list(note.get("layers", [])), detail=detail,
            features=note.get("features"), status=status,
            client=scope["client"][0] if scope.get("client") else None))

"""Signing in from a browser: ``/login`` (a page), ``/login/oidc`` and ``/login/callback``
(OpenID Connect's authorization code with PKCE against the configured issuer),
``/login/key`` (an API key, for installations without an issuer), ``/logout`` and
``/session`` (who this browser is, and the CSRF token its pages send with changes).

The session is a cookie (``HttpOnly``, ``SameSite=Lax``, ``Secure`` over HTTPS) naming a row
of ``onemap.sessions`` (``access/sessions.py``); ``mapserver/auth.py`` reads it like any
credential, so every page and every request from it sees what the principal may see.
Signing out ends the row: the cookie is worth nothing from then on.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlencode

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from access.credentials import CredentialError
from access.sessions import end_session, open_session, start_login, take_login
from layers.errors import Invalid
from mapserver.auth import CSRF_HEADER, SESSION, SESSION_COOKIE
from mapserver.deps import access, app_state, db
from mapserver.html import TEMPLATES
from mapserver.ogc import base

LOGIN_COOKIE = "onemap_login"
MAX_NEXT = 2000


def _next(raw: str | None) -> str:
    """Where to go after signing in: a path of this site only (never another site)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw \
            or len(raw) > MAX_NEXT or any(ord(c) < 32 for c in raw):
        return "/"
    return raw


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    state = app_state(request)
    a = access(request)
    next_url = _next(request.query_params.get("next"))
    return TEMPLATES.TemplateResponse(request, "login.html", {
        "title": "Sign in", "crumbs": [], "base": base(request), "json_url": "/session",
        "oidc": state.login is not None, "next": next_url, "error": error,
        "signed_in": None if a.principal.anonymous else a.principal},
        status_code=status, headers={"Cache-Control": "no-store"})


async def login(request: Request) -> Response:
    return _login_page(request)


async def login_oidc(request: Request) -> Response:
    state = app_state(request)
    if state.login is None:
        raise Invalid("no OpenID Connect issuer is configured here: sign in with an API key")
    next_url = _next(request.query_params.get("next"))
    async with db(request, "admin") as conn:
        login_state, challenge, nonce = await start_login(conn, next_url)
    url = await anyio.to_thread.run_sync(state.login.authorize_url,
                                         f"{base(request)}/login/callback", login_state,
                                         challenge, nonce)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(LOGIN_COOKIE, login_state, max_age=600, path="/login",
                        httponly=True, samesite="lax", secure=_secure(request))
    return response


def _signed_in(request: Request, token: str, next_url: str) -> Response:
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(
        app_state(request).settings.session_hours * 3600), path="/", httponly=True,
        samesite="lax", secure=_secure(request))
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    response.headers["Cache-Control"] = "no-store"
    return response


async def callback(request: Request) -> Response:
    state = app_state(request)
    q = request.query_params
    if state.login is None:
        raise Invalid("no OpenID Connect issuer is configured here")
    if q.get("error"):
        return _login_page(request, f"the sign-in service said: {q['error'][:200]}", 401)
    code, login_state = q.get("code"), q.get("state")
    if not code or not login_state:
        raise Invalid("the sign-in answer has no code or state")
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not hmac.compare_digest(cookie.encode(), login_state.encode()):
        return _login_page(request, "this sign-in was not started in this browser; try "
                                    "again", 401)
    async with db(request, "admin") as conn:
        found = await take_login(conn, login_state)
    if found is None:
        return _login_page(request, "this sign-in lapsed or was used already; try again", 401)
    verifier, nonce, next_url = found
    try:
        claims = await anyio.to_thread.run_sync(
            state.login.exchange, code, verifier, f"{base(request)}/login/callback", nonce)
        principal = state.directory.by_subject(str(claims["sub"]))
    except CredentialError as exc:
        return _login_page(request, f"sign-in refused: {exc}", 401)
    async with db(request, "admin") as conn:
        token, _ = await open_session(conn, principal.id, "oidc", state.settings.session_hours)
    return _signed_in(request, token, next_url)


async def login_key(request: Request) -> Response:
    state = app_state(request)
    origin = request.headers.get("origin")
    if origin and origin != "null" and origin != f"{request.url.scheme}://{request.url.netloc}":
        return _login_page(request, f"a sign-in from {origin} is refused here", 403)
    form = await request.form(max_files=0, max_fields=4)
    raw = form.get("key")
    next_url = _next(form.get("next") if isinstance(form.get("next"), str) else None)
    if not isinstance(raw, str) or not raw.strip():
        return _login_page(request, "enter your API key", 400)
    try:
        principal, key = state.directory.by_key(raw.strip())
    except CredentialError as exc:
        return _login_page(request, f"that key was refused: {exc}", 401)
    if key.kind != "api":
        return _login_page(request, "an embedding key does not sign in: use an API key", 401)
    async with db(request, "admin") as conn:
        token, _ = await open_session(conn, principal.id, "key", state.settings.session_hours)
    return _signed_in(request, token, next_url)


async def logout(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token and request.scope.get(SESSION) is not None:
        async with db(request, "admin") as conn:
            await end_session(conn, token)
        app_state(request).sessions.drop(token)
    if "text/html" in request.headers.get("accept", ""):
        response: Response = RedirectResponse("/", status_code=303)
    else:
        response = JSONResponse({"signed_in": False})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=_secure(request))
    response.headers["Cache-Control"] = "no-store"
    return response


async def session(request: Request) -> Response:
    """Who this browser is signed in as, what it may do, and its CSRF token."""
    state = app_state(request)
    a = access(request)
    p = a.principal
    s = request.scope.get(SESSION)
    doc: dict = {"signed_in": not p.anonymous, "oidc": state.login is not None,
                 "login": f"/login?{urlencode({'next': '/'})}"}
    if not p.anonymous:
        doc |= {"principal": p.name, "kind": p.kind, "department": p.department,
                "departments": list(p.departments), "clearance": p.max_level,
                "admin": a.administers, "publisher": p.publisher or a.administers,
                "embedded": p.embedded}
    if s is not None:
        doc |= {"via": s.via, "expires_at": s.expires_at.isoformat(), "csrf": s.csrf,
                "csrf_header": CSRF_HEADER}
    return JSONResponse(doc, headers={"Cache-Control": "private, no-store"})


routes = [
    Route("/login", login),
    Route("/login/oidc", login_oidc),
    Route("/login/callback", callback),
    Route("/login/key", login_key, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/session", session),
]

"""The one place errors become HTTP: RFC 9457 problem JSON; no stack trace reaches a client.

Domain errors (``layers/errors.py``) carry no status; each class maps to one here. The
database's own refusals of a budget (a statement or lock timeout) and a lost database are
503 with ``Retry-After``: nothing was changed, try again. WMTS picks its OWS exception
code by class too (``OutOfRange`` is ``TileOutOfRange``).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from layers import errors

log = logging.getLogger("onemap.http")


TITLES = {s.value: s.phrase for s in HTTPStatus} | {413: "Content Too Large"}

# Most specific first: a subclass is found before its base.
STATUS: tuple[tuple[type[errors.DomainError], int], ...] = (
    (errors.Stale, 412),
    (errors.TooLarge, 413),
    (errors.Invalid, 400),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.TooCostly, 400),
    (errors.QuotaExceeded, 429),
    (errors.NodeTimeout, 504),
    (errors.NodeUnreachable, 502),
    (errors.Unavailable, 503),
)
# How long a client should wait after a spent budget or a lost database.
RETRY_AFTER = 5


def problem(status: int, title: str | None = None, detail: str | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": title or TITLES.get(status, "Error"),
            "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type="application/problem+json",
                        headers=headers)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an error the product knows, or None for a bug."""
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, errors.DomainError):
        return next(s for cls, s in STATUS if isinstance(exc, cls))
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return 503
    if isinstance(exc, psycopg.OperationalError | psycopg.errors.AdminShutdown):
        return 503
    return None


def _detail(exc: BaseException) -> tuple[str, dict[str, str]]:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return ("the request ran out of its time budget and was stopped; narrow it "
                "(smaller area, simpler filter) or try again later"), {
            "Retry-After": str(RETRY_AFTER)}
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return ("the layer is being written by another change; nothing was changed, try "
                "again shortly"), {"Retry-After": str(RETRY_AFTER)}
    if isinstance(exc, psycopg.Error):
        return "the database is not reachable just now; try again shortly", {
            "Retry-After": str(RETRY_AFTER)}
    headers = {}
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    elif isinstance(exc, errors.Unavailable):
        headers["Retry-After"] = str(RETRY_AFTER)
    return str(exc), headers


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, None,
                   exc.detail if exc.detail and exc.detail not in TITLES.values() else None,
                   dict(exc.headers or {}))


async def known_error(request: Request, exc: Exception) -> JSONResponse:
    """A domain error, or the database refusing a budget: its status and its words."""
    status = status_of(exc)
    if status is None:
        return await server_error(request, exc)
    if isinstance(exc, psycopg.Error):
        log.warning("%s on %s: %s", type(exc).__name__, request.url.path,
                    str(exc).splitlines()[0] if str(exc) else "")
    detail, headers = _detail(exc)
    return problem(status, None, detail, headers)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("error serving %s", request.url.path)
    return problem(500, None, "the error was logged")

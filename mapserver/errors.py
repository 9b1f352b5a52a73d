"""Errors as RFC 9457 problem JSON; no stack trace ever reaches a client."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("onemap.http")


TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
          413: "Content Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
          503: "Service Unavailable"}


def problem(status: int, title: str | None = None, detail: str | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": title or TITLES.get(status, "Error"),
            "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, None,
                   exc.detail if exc.detail and exc.detail not in TITLES.values() else None)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("error serving %s", request.url.path)
    return problem(500, None, "the error was logged")

"""Errors as RFC 9457 problem JSON; no stack trace ever reaches a client."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("onemap.http")


def problem(status: int, title: str, detail: str | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    titles = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
              413: "Content Too Large", 429: "Too Many Requests"}
    return problem(exc.status_code, titles.get(exc.status_code, "Error"),
                   exc.detail if exc.detail and exc.detail not in titles.values() else None)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("error serving %s", request.url.path)
    return problem(500, "Internal Server Error", "the error was logged")

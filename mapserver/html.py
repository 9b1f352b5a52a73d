"""HTML beside JSON: every OGC API resource a browser opens (``f=html`` or an ``Accept``
naming it) is a page, and every JSON answer links its page as ``rel=alternate``."""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from mapserver.ogc import base, query_without_key

TEMPLATES = Jinja2Templates(directory=str(resources.files("mapserver") / "templates"))


def wants_html(request: Request) -> bool:
    """HTML for ``f=html`` or a client that names it (browsers always do); JSON otherwise,
    which is what API clients sending ``*/*`` expect."""
    f = request.query_params.get("f")
    if f is not None:
        if f not in ("json", "html"):
            raise HTTPException(400, f"f={f!r} is not a format here; use json or html")
        return f == "html"
    return "text/html" in request.headers.get("accept", "")


def page(request: Request, template: str, title: str, crumbs: list[tuple[str, str]],
         **context: object) -> Response:
    return TEMPLATES.TemplateResponse(request, template, {
        "title": title, "crumbs": crumbs, "base": base(request),
        "json_url": _url(request, "json"), **context})


def _url(request: Request, f: str) -> str:
    params = query_without_key(request)
    params["f"] = f
    return f"{base(request)}{request.url.path}?{urlencode(params)}"


def alternate(request: Request) -> dict[str, str]:
    """The link from a JSON answer to the same resource as a page."""
    return {"rel": "alternate", "type": "text/html", "title": "this document as HTML",
            "href": _url(request, "html")}


def listing(request: Request, title: str, crumbs: list[tuple[str, str]], *,
            description: str = "", columns: list[str], rows: list[list[object]],
            links: tuple[tuple[str, str], ...] = (), geojson: bool = False) -> Response:
    """A page that shows a document as a table: each row's first cell may be a (text, href)
    pair; ``links`` are (title, href); with ``geojson`` the JSON is drawn on a map too."""
    return page(request, "listing.html", title, crumbs, description=description,
                columns=columns, rows=rows, links=list(links), geojson=geojson)

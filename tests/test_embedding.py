"""Embedding a map in another system's page: MapLibre GL JS given only a style URL with an
embedding key, in a headless Chromium, on a page of another origin."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from access import admin
from access.admin import Actor
from tests.conftest import ensure_departments, free_port

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="{onemap}/static/vendor/maplibre-gl.css">
<script src="{onemap}/static/vendor/maplibre-gl.js"></script>
<style>html, body, #map {{ margin: 0; width: 100%; height: 100%; }}</style></head>
<body><div id="map"></div><script>
const options = {options};
const token = {token};
if (token) {{
  options.transformRequest = (url) => ({{url, headers: {{Authorization: "Bearer " + token}}}});
}}
const map = new maplibregl.Map(Object.assign({{container: "map", fadeDuration: 0}}, options));
window.failures = [];
map.on("error", (e) => window.failures.push(String(e.error && e.error.message)));
map.on("idle", () => {{
  window.drawn = map.queryRenderedFeatures().filter((f) => f.source === "onemap").length;
}});
</script></body></html>"""


def page_for(onemap: str, style: str, center: tuple[float, float] | None = None,
             zoom: float | None = None, token: str | None = None) -> str:
    """A business system's page: MapLibre GL JS given a style URL (and a view), nothing
    else; ``token``: an API key sent as a header, as a signed-in page does."""
    options: dict = {"style": style}
    if center is not None:
        options |= {"center": list(center), "zoom": zoom}
    return PAGE.format(onemap=onemap, options=json.dumps(options), token=json.dumps(token))


@pytest.fixture(scope="module")
def embed_key(settings, sample_layers) -> tuple[str, str]:
    """An embedding key for the roads, and the one origin it may be used from."""
    ensure_departments(settings, {"embed-dept": "A business system's department"})
    origin = f"http://127.0.0.1:{free_port()}"

    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            a = Actor("test")
            await admin.create_principal(conn, a, name="embed-system", kind="service",
                                         department="embed-dept")
            made = await admin.create_key(conn, a, principal="embed-system", kind="embed",
                                          origins=[origin], layers=["roads"])
            return made["key"]

    return asyncio.run(make()), origin


def test_key_rides_from_style_to_tilejson_to_tiles(http, embed_key):
    key, origin = embed_key
    head = {"Origin": origin}
    style = http.get("/styles/roads/style.json", params={"key": key}, headers=head)
    assert style.status_code == 200, style.text
    assert style.headers["cache-control"].startswith("private")
    tilejson_url = style.json()["sources"]["onemap"]["url"]
    assert parse_qs(urlsplit(tilejson_url).query)["key"] == [key]
    tj = http.get(tilejson_url, headers=head)
    assert tj.status_code == 200 and tj.headers["cache-control"].startswith("private")
    template = tj.json()["tiles"][0]
    assert parse_qs(urlsplit(template).query)["key"] == [key]
    # Without a key nothing is added; an API key never rides along (it is refused in URLs).
    assert "key=" not in http.get("/styles/roads/style.json").text
    # The key holds for the roads only, from its origin only.
    assert http.get("/styles/roads/style.json", params={"key": key}).status_code == 403
    assert http.get("/styles/lamps/style.json", params={"key": key},
                    headers=head).status_code == 404


def _draw(onemap: str, key: str, at: str | None) -> dict:
    """The page with only the style URL, served from ``at`` (the key's origin or another)."""
    from playwright.sync_api import sync_playwright

    assert shutil.which("chromium"), "make test installs Chromium from the system's packages"
    html = page_for(onemap, f"{onemap}/styles/roads/style.json?key={key}")
    with served_page(html, urlsplit(at).port if at else None) as page_url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            statuses: list[int] = []
            page.on("response", lambda r: statuses.append(r.status)
                    if ".mvt" in r.url else None)
            page.goto(page_url)
            page.wait_for_function("window.drawn !== undefined || window.failures.length",
                                   timeout=30_000)
            page.wait_for_timeout(300)
            return {"drawn": page.evaluate("window.drawn || 0"),
                    "failures": page.evaluate("window.failures"), "tiles": statuses}
        finally:
            browser.close()


@contextlib.contextmanager
def served_page(html: str, port: int | None = None) -> Iterator[str]:
    """Another system's web server, on an origin of its own, serving one page."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port or free_port()), Page)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


def test_maplibre_on_another_origin_draws_from_the_style_url_alone(server, embed_key):
    key, origin = embed_key
    shown = _draw(server, key, origin)
    assert shown["failures"] == [] and shown["drawn"] > 0, shown
    assert shown["tiles"] and set(shown["tiles"]) == {200}, shown


def test_the_same_page_on_a_wrong_origin_shows_nothing(server, embed_key):
    key, _ = embed_key
    shown = _draw(server, key, None)
    assert shown["drawn"] == 0 and shown["failures"], shown

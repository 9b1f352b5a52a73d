"""Signing in from a browser: OpenID Connect's authorization code with PKCE against the test
issuer, or an API key; the session cookie's flags; CSRF and origin checks on changes; and
signing out ending access at once. Over real HTTP, and in headless Chromium."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest

from layers.meta import LayerMeta
from tests.conftest import SAMPLES, ingest_vector

DEPT = "si-dept"


@pytest.fixture(scope="module")
def people(settings) -> dict[str, str]:
    """A user known to the issuer by subject, an API key of hers and an embedding key."""
    from access import admin
    from access.admin import Actor

    async def create() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            actor = Actor("test")
            await admin.create_department(conn, actor, settings.levels, id=DEPT, name="Survey")
            await admin.create_principal(conn, actor, name="si_alice", kind="user",
                                         department=DEPT, subject="alice-sub", publisher=True)
            api = (await admin.create_key(conn, actor, principal="si_alice"))["key"]
            embed = (await admin.create_key(conn, actor, principal="si_alice",
                                            kind="embed", origins=["http://x"]))["key"]
            return {"api": api, "embed": embed}

    keys = asyncio.run(create())
    ingest_vector(SAMPLES / "beijing-districts-cgcs2000.geojson", "si_private", key="gb",
                  settings=settings, meta=LayerMeta(department=DEPT, level="internal",
                                                    sharing_type="not_shared"))
    return keys


def sign_in_oidc(server: str, username: str, next_url: str = "/layers") -> httpx.Client:
    """A browser's round trip through the issuer; the client holds the cookies."""
    client = httpx.Client(base_url=server, timeout=30)
    start = client.get("/login/oidc", params={"next": next_url})
    assert start.status_code == 303, start.text
    authorize = start.headers["location"]
    q = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["response_type"] == "code" and q["state"] and q["nonce"]
    login_cookie = start.headers["set-cookie"]
    assert "HttpOnly" in login_cookie and "Path=/login" in login_cookie
    issuer = f"{urlsplit(authorize).scheme}://{urlsplit(authorize).netloc}"
    answer = httpx.post(f"{issuer}/authorize", data={**q, "username": username})
    assert answer.status_code == 302
    back = urlsplit(answer.headers["location"])
    done = client.get(f"{back.path}?{back.query}")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == next_url
    client.last_set_cookie = done.headers.get("set-cookie", "")
    return client


def test_oidc_sign_in_gives_a_session_that_sees_and_changes_as_its_principal(server, people):
    anonymous = httpx.get(f"{server}/layers").json()["layers"]
    assert "si_private" not in {ly["id"] for ly in anonymous}
    browser = sign_in_oidc(server, "alice-sub")
    cookie = browser.last_set_cookie
    assert cookie.startswith("onemap_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the HTTPS test
    me = browser.get("/session").json()
    assert me["signed_in"] and me["principal"] == "si_alice" and me["department"] == DEPT
    assert me["via"] == "oidc" and me["publisher"] and len(me["csrf"]) > 20
    assert "si_private" in {ly["id"] for ly in browser.get("/layers").json()["layers"]}
    assert browser.get("/collections/si_private/items?limit=1").status_code == 200
    # A change without the CSRF token is refused, with it (from this site) it is made.
    style = {"layers": [{"id": "x", "type": "fill", "paint": {"fill-color": "#123456"}}]}
    refused = browser.put("/styles/si_private", json=style)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    made = browser.put("/styles/si_private", json=style,
                       headers={"X-CSRF-Token": me["csrf"]})
    assert made.status_code == 200, made.text
    elsewhere = browser.put("/styles/si_private", json=style, headers={
        "X-CSRF-Token": me["csrf"], "Origin": "http://evil.example"})
    assert elsewhere.status_code == 403
    # Signing out ends the session at once: the same cookie is the public's from now on.
    token = browser.cookies["onemap_session"]
    assert browser.post("/logout").status_code == 403  # without the token: not even this
    out = browser.post("/logout", headers={"X-CSRF-Token": me["csrf"]})
    assert out.status_code == 200 and 'onemap_session=""' in out.headers["set-cookie"]
    replay = httpx.get(f"{server}/layers", cookies={"onemap_session": token}).json()
    assert "si_private" not in {ly["id"] for ly in replay["layers"]}
    assert not httpx.get(f"{server}/session",
                         cookies={"onemap_session": token}).json()["signed_in"]
    assert httpx.delete(f"{server}/styles/si_private",
                        cookies={"onemap_session": token}).status_code == 404  # gone for it


def test_a_sign_in_answer_is_good_once_and_only_in_the_browser_that_asked(server, people):
    client = httpx.Client(base_url=server, timeout=30)
    start = client.get("/login/oidc")
    q = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
    issuer = re.match(r"https?://[^/]+", start.headers["location"]).group(0)
    answer = httpx.post(f"{issuer}/authorize", data={**q, "username": "alice-sub"})
    back = urlsplit(answer.headers["location"])
    # Another browser (without the login cookie) cannot take the answer.
    stolen = httpx.get(f"{server}{back.path}?{back.query}")
    assert stolen.status_code == 401 and "not started in this browser" in stolen.text
    assert client.get(f"{back.path}?{back.query}").status_code == 303
    again = client.get(f"{back.path}?{back.query}")
    assert again.status_code == 401  # the login cookie is spent, the state used up
    # A subject OneMap does not know signs nobody in.
    unknown = sign_in_attempt(server, "mallory-sub")
    assert unknown.status_code == 401 and "sign-in refused" in unknown.text
    # Going on after sign-in stays on this site.
    off_site = sign_in_oidc(server, "alice-sub", next_url="/")
    assert off_site.get("/login/oidc", params={"next": "//evil.example/x"}).status_code == 303


def sign_in_attempt(server: str, username: str) -> httpx.Response:
    client = httpx.Client(base_url=server, timeout=30)
    start = client.get("/login/oidc")
    q = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
    issuer = re.match(r"https?://[^/]+", start.headers["location"]).group(0)
    back = urlsplit(httpx.post(f"{issuer}/authorize",
                               data={**q, "username": username}).headers["location"])
    return client.get(f"{back.path}?{back.query}")


def test_an_api_key_signs_in_where_there_is_no_issuer_and_https_makes_the_cookie_secure(
        server, people):
    client = httpx.Client(base_url=server, timeout=30)
    r = client.post("/login/key", data={"key": people["api"], "next": "/layers?f=html"},
                    headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 303 and r.headers["location"] == "/layers?f=html"
    cookie = r.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    token = re.match(r"onemap_session=([^;]+)", cookie).group(1)
    me = httpx.get(f"{server}/session", cookies={"onemap_session": token}).json()
    assert me["principal"] == "si_alice" and me["via"] == "key"
    assert people["api"] not in cookie  # the key itself never goes to the browser
    bad = client.post("/login/key", data={"key": "om_nope_nope"})
    assert bad.status_code == 401 and "refused" in bad.text
    embed = client.post("/login/key", data={"key": people["embed"]})
    assert embed.status_code == 401 and "embedding key" in embed.text
    cross = client.post("/login/key", data={"key": people["api"]},
                        headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403


def test_the_viewer_signs_in_through_the_city_issuer_and_out_again(server, people, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.test_basemaps import _browser, _idle

    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(f"{server}/")
            _idle(page)
            assert page.locator("li[data-layer=si_private]").count() == 0
            assert "Public view" in page.locator("#who").inner_text()
            page.click("#signin")
            page.wait_for_selector("#oidc")
            page.screenshot(path=str(tmp_path / "login.png"))
            page.click("#oidc")
            page.fill("#username", "alice-sub")
            page.click("#go")
            page.wait_for_url(f"{server}/")
            _idle(page)
            page.wait_for_selector("#signout")
            assert "si_alice" in page.locator("#who").inner_text()
            assert page.locator("li[data-layer=si_private]").count() == 1
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["onemap_session"]["httpOnly"]
            assert page.evaluate("document.cookie").find("onemap_session") < 0
            page.screenshot(path=str(tmp_path / "signed-in.png"))
            page.click("#signout")
            page.wait_for_selector("#signin")
            _idle(page)
            assert page.locator("li[data-layer=si_private]").count() == 0
        finally:
            browser.close()

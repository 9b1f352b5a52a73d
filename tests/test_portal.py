"""Managing layers and sharing them on request, over real HTTP as departments would: edit the
entry and dictionary, reclassify within clearance, withdraw (served to no one, nothing
deleted) and restore; ask for another department's layer, the owner approving with a mask
or refusing; owners see who reads their layers; and the department portal in Chromium,
from sign-in through publishing to sharing."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from layers.meta import LayerMeta
from tests.conftest import SAMPLES, ingest_vector
from tests.test_publish import principals, sample_uploads


@pytest.fixture(scope="module")
def keys(settings) -> dict[str, str]:
    made = principals(settings, {"pt_roads": ("pt-roads", True), "pt_roads2": ("pt-roads", False),
                                 "pt_water": ("pt-water", False)})
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE onemap.principals SET subject = name WHERE name LIKE 'pt\\_%'")
    ingest_vector(SAMPLES / "beijing-districts-cgcs2000.geojson", "pt_districts", key="gb",
                  settings=settings, meta=LayerMeta(department="pt-roads", level="internal",
                                                    sharing_type="conditional"))
    return made


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return sample_uploads(tmp_path_factory.mktemp("uploads"))


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_owners_edit_reclassify_withdraw_and_restore_their_layer(server, keys):
    r = httpx.patch(f"{server}/layers/pt_districts", headers=h(keys["pt_roads"]), json={
        "title": "Districts", "keywords": ["boundaries"],
        "fields": {"name": {"title": "District name", "description": "official"}}})
    assert r.status_code == 200, r.text
    got = httpx.get(f"{server}/layers/pt_districts", headers=h(keys["pt_roads2"])).json()
    assert got["title"] == "Districts" and got["keywords"] == ["boundaries"]
    name = next(f for f in got["fields"] if f["name"] == "name")
    assert (name["title"], name["description"]) == ("District name", "official")
    # Other departments cannot manage it (for them it does not exist), nor above clearance.
    assert httpx.patch(f"{server}/layers/pt_districts", headers=h(keys["pt_water"]),
                       json={"title": "x"}).status_code == 404
    above = httpx.patch(f"{server}/layers/pt_districts", headers=h(keys["pt_roads"]),
                        json={"level": "secret"})
    assert above.status_code == 403 and "clearance" in above.json()["detail"]
    bad = httpx.patch(f"{server}/layers/pt_districts", headers=h(keys["pt_roads"]),
                      json={"fields": {"nope": {"title": "x"}}})
    assert bad.status_code == 400 and "'nope'" in bad.json()["detail"]
    # Withdrawn: served to no one, not even its owners; the portal still lists it.
    features = got["feature_count"]
    w = httpx.post(f"{server}/layers/pt_districts/withdraw", headers=h(keys["pt_roads"]))
    assert w.status_code == 200 and w.json()["withdrawn_at"]
    for path in ("/layers/pt_districts", "/collections/pt_districts/items",
                 "/tiles/pt_districts/WebMercatorQuad/8/210/97.mvt"):
        assert httpx.get(f"{server}{path}", headers=h(keys["pt_roads"])).status_code == 404, path
    mine = httpx.get(f"{server}/portal/overview", headers=h(keys["pt_roads"])).json()
    assert [ly["withdrawn_at"] is not None for ly in mine["layers"]
            if ly["id"] == "pt_districts"] == [True]
    back = httpx.post(f"{server}/layers/pt_districts/restore", headers=h(keys["pt_roads"]))
    assert back.status_code == 200 and "withdrawn_at" not in back.json()
    again = httpx.get(f"{server}/layers/pt_districts", headers=h(keys["pt_roads"])).json()
    assert again["feature_count"] == features  # nothing was deleted


def test_a_department_asks_and_the_owner_approves_with_a_mask_or_refuses(server, keys):
    water, roads = h(keys["pt_water"]), h(keys["pt_roads"])
    assert httpx.get(f"{server}/collections/pt_districts/items", headers=water
                     ).status_code == 404
    offered = httpx.get(f"{server}/requestable", headers=water).json()["layers"]
    entry = next(ly for ly in offered if ly["id"] == "pt_districts")
    assert "extent" not in entry and {f["name"] for f in entry["fields"]} >= {"name"}
    assert httpx.get(f"{server}/requestable").status_code == 401
    empty = httpx.post(f"{server}/requests", headers=water, json={"layer": "pt_districts"})
    assert empty.status_code == 400 and "purpose" in empty.json()["detail"]
    asked = httpx.post(f"{server}/requests", headers=water,
                       json={"layer": "pt_districts", "purpose": "flood planning"})
    assert asked.status_code == 201, asked.text
    rid = asked.json()["id"]
    twice = httpx.post(f"{server}/requests", headers=water,
                       json={"layer": "pt_districts", "purpose": "again"})
    assert twice.status_code == 409
    # The asker cannot decide its own request; the owner sees it and approves, masked.
    assert httpx.post(f"{server}/requests/{rid}/decision", headers=water,
                      json={"approve": True}).status_code == 404
    incoming = httpx.get(f"{server}/requests", headers=roads).json()["incoming"]
    assert [r["state"] for r in incoming if r["id"] == rid] == ["pending"]
    ok = httpx.post(f"{server}/requests/{rid}/decision", headers=roads,
                    json={"approve": True, "masked": {"name": "middle"}})
    assert ok.status_code == 200 and ok.json()["state"] == "approved" and ok.json()["grant_id"]
    time.sleep(0.3)  # the access version moved: the next request reads it
    items = httpx.get(f"{server}/collections/pt_districts/items?limit=50", headers=water)
    assert items.status_code == 200, items.text
    names = [f["properties"]["name"] for f in items.json()["features"]]
    clear = [f["properties"]["name"] for f in httpx.get(
        f"{server}/collections/pt_districts/items?limit=50", headers=roads).json()["features"]]
    assert names and all("*" in n for n in names) and not any("*" in n for n in clear)
    assert httpx.get(f"{server}/requests", headers=water).json()["outgoing"][0]["state"] \
        == "approved"
    # Readers are seen by the owner.
    readers = next(ly for ly in httpx.get(f"{server}/portal/overview", headers=roads).json()[
        "layers"] if ly["id"] == "pt_districts")["readers"]
    assert any(r["principal"] == "pt_water" for r in readers)
    # A refusal says why, and both sides see it.
    rid2 = httpx.post(f"{server}/requests", headers=h(keys["pt_water"]), json={
        "layer": "pt_districts", "purpose": "second copy"}).json()["id"]
    no = httpx.post(f"{server}/requests/{rid2}/decision", headers=roads,
                    json={"approve": False, "reason": "you have it already"})
    assert no.json()["state"] == "refused"
    out = httpx.get(f"{server}/requests", headers=water).json()["outgoing"]
    assert {"refused": "you have it already"}.items() <= {
        r["state"]: r["reason"] for r in out if r["id"] == rid2}.items()


def test_reservations_are_listed_for_their_departments(server, keys):
    assert httpx.get(f"{server}/registry/reservations").status_code == 401
    r = httpx.get(f"{server}/registry/reservations", headers=h(keys["pt_roads"]))
    assert r.status_code == 200 and isinstance(r.json()["reservations"], list)



def _sign_in(page, server: str, subject: str) -> None:
    """Through the portal's sign-in link and the city issuer's page, back to the portal."""
    page.goto(f"{server}/portal")
    page.wait_for_selector("#signin")
    page.click("#signin")
    page.click("#oidc")
    page.fill("#username", subject)
    page.click("#go")
    page.wait_for_url(f"{server}/portal")
    page.wait_for_selector("#signout")


def _job_done(page, before: str | None = None) -> str:
    """The state of the portal's job once it has ended (another than ``before``)."""
    page.wait_for_function("([before]) => { const j = document.querySelector('#job');"
                           " return j.dataset.job && j.dataset.job !== before &&"
                           " ['successful', 'failed'].includes("
                           "document.querySelector('#job-state').textContent); }",
                           arg=[before or ""], timeout=60_000)
    return page.locator("#job-state").inner_text()


def test_departments_publish_and_share_in_the_portal(server, keys, settings, files, tmp_path):
    """A department signs in, uploads a GeoPackage (seeing its rejected feature) and a CSV
    whose phone numbers stay text, classifies the layer; a second department asks for it,
    the owner approves with a masked field, and the second sees masked values on the map
    and in the items; signing out ends its access."""
    import threading

    from playwright.sync_api import sync_playwright

    from jobs.worker import work
    from tests.test_basemaps import _browser, _idle

    stop = threading.Event()  # the in-process server has no worker of its own: one here
    worker = threading.Thread(target=work, args=(settings,), kwargs={"stop": stop},
                              daemon=True)
    worker.start()
    shots = tmp_path
    try:
        with sync_playwright() as pw:
            browser = _browser(pw)
            try:
                owner = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                _sign_in(owner, server, "pt_roads")
                owner.set_input_files("#file", str(files["parks"]))
                owner.fill("#layer-id", "pt_parks")
                owner.fill("#layer-title", "Parks")
                owner.select_option("#sharing", "conditional")
                owner.click("#publish-button")
                assert _job_done(owner) == "successful"
                assert "rejected" in owner.locator("li[data-issue='4']").inner_text()
                owner.wait_for_function("window.onemapPreview && window.onemapPreview.loaded()",
                                        timeout=30_000)
                owner.screenshot(path=str(shots / "portal-published.png"), full_page=True)
                # A CSV: its header becomes the field table; the phone is text.
                first = owner.evaluate("document.querySelector('#job').dataset.job")
                owner.set_input_files("#file", str(files["booths"]))
                owner.fill("#layer-id", "pt_booths")
                owner.select_option("#field-types tr[data-field=phone] select", "string")
                owner.fill("#field-types tr[data-field=phone] input[name=title]", "Phone")
                owner.click("#publish-button")
                assert _job_done(owner, first) == "successful"
                booths = httpx.get(f"{server}/collections/pt_booths/items",
                                   headers=h(keys["pt_roads"])).json()["features"]
                assert sorted(f["properties"]["phone"] for f in booths)[0] == "01062345670"
                # Classified: from internal to public (shared on request still).
                owner.wait_for_selector("select[data-level=pt_parks]")
                owner.select_option("select[data-level=pt_parks]", "public")
                owner.wait_for_timeout(800)
                assert httpx.get(f"{server}/layers/pt_parks", headers=h(keys["pt_roads"])
                                 ).json()["level"] == "public"

                asker = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                _sign_in(asker, server, "pt_water")
                asker.wait_for_selector("input[data-ask=pt_parks]")
                asker.fill("input[data-ask=pt_parks]", "park maintenance contracts")
                asker.click("button[data-ask-button=pt_parks]")
                asker.wait_for_selector("#outgoing td.state-pending")

                owner.reload()
                owner.wait_for_selector("#incoming select[data-mask=name]")
                owner.select_option("#incoming select[data-mask=name]", "middle")
                owner.screenshot(path=str(shots / "portal-request.png"), full_page=True)
                owner.click("#incoming button[data-approve]")
                owner.wait_for_selector("#incoming td.state-approved")

                asker.wait_for_timeout(500)
                asker.goto(f"{server}/collections/pt_parks/items?f=html")
                table = asker.locator("table").last.inner_text()
                assert "North park" not in table and "*" in table, table
                asker.screenshot(path=str(shots / "items-masked.png"), full_page=True)
                asker.goto(f"{server}/?layers=pt_parks")
                _idle(asker)
                asker.wait_for_selector("li[data-layer=pt_parks]")
                asker.evaluate("window.onemapMap.jumpTo({center: [116.305, 39.905], zoom: 14})")
                _idle(asker)
                box = asker.locator("#map").bounding_box()
                asker.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                asker.wait_for_selector(".popup", timeout=10_000)
                popup = asker.locator(".popup").inner_text()
                assert "North park" not in popup and "*" in popup, popup
                asker.screenshot(path=str(shots / "viewer-masked.png"))
                asker.click("#signout")
                asker.wait_for_selector("#signin")
                assert asker.context.request.get(
                    f"{server}/collections/pt_parks/items").status == 404
            finally:
                browser.close()
    finally:
        stop.set()
        worker.join(timeout=10)


def test_a_planner_reserves_a_pole_in_the_planner_and_its_owner_approves_in_the_portal(
        server, keys, settings, tmp_path):
    from playwright.sync_api import sync_playwright

    from registry import ledger
    from registry.publish import publish
    from tests.test_basemaps import _browser

    with psycopg.connect(settings.database_url) as c:
        pole = ledger.load(c, "carrier", "pt-poles.csv", [
            {"kind": "smart_pole", "lon": 26.3, "lat": 60.3, "owner": "pt-roads",
             "power_supply": "24h", "power_w": 100, "slots": "3-4:20",
             "built_at": "2021-05-01"}]).outcomes[0].code
        c.commit()
    publish(settings)
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            planner = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
            _sign_in(planner, server, "pt_water")
            planner.goto(f"{server}/planner#16/60.3/26.3")
            planner.wait_for_function("window.onemapPlanner && window.onemapPlanner.loaded()",
                                      timeout=30_000)
            xy = planner.evaluate("(() => { const p = window.onemapPlanner.project([26.3001,"
                                  " 60.3]); return [p.x, p.y]; })()")
            box = planner.locator("#map").bounding_box()
            planner.mouse.click(box["x"] + xy[0], box["y"] + xy[1])
            planner.wait_for_selector(f"button.reserve[data-carrier='{pole}']", timeout=15_000)
            planner.click(f"button.reserve[data-carrier='{pole}']")
            planner.wait_for_selector("span.reserved")
            planner.screenshot(path=str(tmp_path / "planner-reserved.png"))
            owner = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            _sign_in(owner, server, "pt_roads")
            owner.wait_for_selector("button[data-approve-reservation]")
            owner.click("button[data-approve-reservation]")
            owner.wait_for_selector("#reservation-table td.state-approved")
        finally:
            browser.close()
    mine = httpx.get(f"{server}/registry/reservations", headers=h(keys["pt_water"])).json()
    assert [(r["carrier"], r["status"]) for r in mine["reservations"]] == [(pole, "approved")]

"""The city's base maps as the demo makes them (scripts/demo_emap.py over the Helsinki
extract), their glyphs and sprites, and the viewer on them in a headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from urllib.parse import quote

import httpx
import imagecodecs
import mapbox_vector_tile
import numpy as np
import psycopg
import pytest

from access import admin
from access.admin import Actor
from ingest.raster import ingest_raster
from onemap.cli import main as cli
from styles.validate import problems
from tests.conftest import ROOT, SAMPLES, department_keys

PBF = SAMPLES / "helsinki-centre.osm.pbf"
EMAP_LAYERS = {"landcover", "buildings", "railways", "roads", "places", "pois"}


def _env(settings) -> dict[str, str]:
    return {**os.environ, "ONEMAP_DATABASE_URL": str(settings.database_url),
            "ONEMAP_DATA_DIR": str(settings.data_dir), "ONEMAP_DEFAULT_LEVEL": "public"}


@pytest.fixture(scope="module")
def city(settings, sample_layers) -> dict:
    """The demo's base maps: its e-map layers from the extract, the imagery, the maps."""
    ingest_raster(SAMPLES / "olinda-landsat7.tif", "bm_imagery", settings=settings,
                  time=datetime(2001, 8, 1), bands=[3, 2, 1])
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_emap.py"), str(PBF),
                           "--imagery", "bm_imagery"], env=_env(settings), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {}


def test_basemaps_are_listed_with_their_links(http, city):
    maps = {b["id"]: b for b in http.get("/basemaps").json()["basemaps"]}
    assert {"emap", "annotation", "imagery"} <= set(maps)
    assert set(maps["emap"]["layers"]) == EMAP_LAYERS
    assert maps["emap"]["kind"] == "vector" and maps["imagery"]["kind"] == "raster"
    # The annotation reads only the layers that have labels: no buildings, no rail.
    assert maps["annotation"]["kind"] == "labels"
    assert set(maps["annotation"]["layers"]) == {"landcover", "roads", "places", "pois"}
    rels = {link["rel"] for link in maps["emap"]["links"]}
    assert {"stylesheet", "tilejson", "item"} <= rels
    assert http.get("/basemaps/nope/style.json").status_code == 404
    assert http.get("/basemaps/emap").json()["version"] >= 1


def test_every_style_served_passes_the_style_specification(http, city):
    """Each base map, each layer's default look, and a style of many layers."""
    docs = [http.get(f"/basemaps/{b}/style.json").json()
            for b in ("emap", "annotation", "imagery")]
    vectors = [ly["id"] for ly in http.get("/layers").json()["layers"]
               if ly["kind"] == "vector" and ly["feature_count"]]
    docs += [http.get(f"/styles/{i}/style.json").json() for i in vectors]
    docs.append(http.get("/styles/" + ",".join(sorted(EMAP_LAYERS | {"districts", "lamps"}))
                         + "/style.json").json())
    found = problems(docs)
    assert all(not p for p in found), [(d["name"], p) for d, p in zip(docs, found,
                                                                       strict=True) if p]
    emap = docs[0]
    assert emap["glyphs"].endswith("/fonts/{fontstack}/{range}.pbf")
    assert emap["sprite"].endswith("/sprites/onemap")
    assert sum(1 for ly in emap["layers"] if ly["type"] == "symbol") >= 4
    # The annotation is the e-map's labels, laid over another base: no ground of its own.
    annotation = docs[1]
    assert {ly["type"] for ly in annotation["layers"]} == {"symbol"}
    assert [ly["id"] for ly in annotation["layers"]] == [
        ly["id"] for ly in emap["layers"] if ly["type"] == "symbol"]
    assert {s["type"] for s in docs[2]["sources"].values()} == {"raster"}


def test_emap_tiles_hold_every_emap_layer(http, city):
    tj = http.get("/basemaps/emap/tilejson.json").json()
    assert {v["id"] for v in tj["vector_layers"]} == EMAP_LAYERS
    assert "/basemaps/emap/{z}/{x}/{y}.mvt" in tj["tiles"][0]
    assert tj["attribution"] == "© OpenStreetMap contributors, ODbL"  # once
    # Esplanadi, central Helsinki, at z16: every layer the e-map draws there in one tile.
    r = http.get("/basemaps/emap/16/37309/18970.mvt")
    assert r.status_code == 200, r.text
    tile = mapbox_vector_tile.decode(r.content)
    assert EMAP_LAYERS - {"places"} <= set(tile)
    names = {f["properties"].get("name") for f in tile["roads"]["features"]}
    assert "Pohjoisesplanadi" in names
    assert len(r.content) < 500 * 1024
    # A tile takes only the fields the style reads (no OSM tag soup) ...
    assert {k for f in tile["roads"]["features"] for k in f["properties"]} <= {
        "name", "highway", "_id"}
    # ... and what the style draws at its zoom: no footway at z14, no POI below z16.
    low = mapbox_vector_tile.decode(http.get("/basemaps/emap/14/9327/4742.mvt").content)
    assert "pois" not in low
    assert not {f["properties"].get("highway") for f in low["roads"]["features"]} & {
        "footway", "path", "steps", "cycleway"}
    plain = mapbox_vector_tile.decode(http.get("/tiles/roads/14/9327/4742.mvt").content)
    assert "footway" in {f["properties"].get("highway") for f in plain["roads"]["features"]}
    # The imagery base map's tiles are its layer's newest slice.
    img = http.get("/basemaps/imagery/WebMercatorQuad/12/1650/2135.webp")
    assert img.status_code in (200, 204)
    assert http.get("/basemaps/imagery/12/1650/2135.mvt").status_code == 404


def test_emap_as_images_in_both_grids_as_tianditu_clients_ask(http, city):
    """The e-map drawn by the server, from the same style: WMTS in the ``_c`` grid
    (CGCS2000Quad, Tianditu's level 16 is its matrix 15), image tiles, and WMS."""
    from layers.grids import grid

    lon, lat = 24.9490, 60.1677  # Esplanadi
    t = grid("CGCS2000Quad").tile(lon, lat, 15)
    r = http.get("/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=basemap:emap"
                 f"&STYLE=default&TILEMATRIXSET=CGCS2000Quad&TILEMATRIX=15&TILEROW={t.y}"
                 f"&TILECOL={t.x}&FORMAT=image/png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    c = imagecodecs.png_decode(r.content)
    assert c.shape[:2] == (256, 256) and c[..., :3].std() > 10
    w = imagecodecs.png_decode(http.get("/basemaps/emap/WebMercatorQuad/16/37309/18970.png")
                               .content)
    assert w[..., :3].std() > 10
    colours = {tuple(v) for v in w[..., :3].reshape(-1, 3)}
    assert (0xF2, 0xEF, 0xE9) in colours or len(colours) > 50  # the map's paper, and more
    caps = http.get("/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities").text
    assert '<Layer queryable="0" opaque="1"><Name>basemap:emap</Name>' in caps
    m = http.get("/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=basemap:emap"
                 "&STYLES=&CRS=EPSG:4326&BBOX=60.164,24.935,60.179,24.9534&WIDTH=512"
                 "&HEIGHT=512&FORMAT=image/png")
    assert m.status_code == 200, m.text
    img = imagecodecs.png_decode(m.content)
    dark = (img[..., :3].astype(int).sum(axis=-1) < 250).sum()
    assert dark > 200, "labels are drawn"


def _classify(settings, layer: str, level: str) -> None:
    import asyncio

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            await admin.classify(conn, Actor("test"), settings.levels, layer=layer,
                                 level=level)
    asyncio.run(run())


def test_a_basemap_is_under_the_grants_of_its_layers(http, city, settings, tmp_path):
    """A base map over a layer the caller may not read does not exist for that caller."""

    keys = department_keys(settings, {"bm-planner": "bm-planning"})
    _classify(settings, "pois", "internal")
    try:
        listed = {b["id"] for b in http.get("/basemaps").json()["basemaps"]}
        assert "emap" not in listed and "annotation" not in listed and "imagery" in listed
        for path in ("/basemaps/emap", "/basemaps/emap/style.json",
                     "/basemaps/emap/tilejson.json", "/basemaps/emap/15/18654/9485.mvt"):
            r = http.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert r.json()["detail"] == "no base map 'emap'"
        signed = {"Authorization": f"Bearer {keys['bm-planner']}"}
        r = http.get("/basemaps/emap/style.json", headers=signed)
        assert r.status_code == 200
        assert r.headers["cache-control"].startswith("private")
    finally:
        _classify(settings, "pois", "public")


def test_basemap_cli_refuses_bad_definitions_by_name(settings, tmp_path, capsys, monkeypatch,
                                                      city):
    monkeypatch.setenv("ONEMAP_DATABASE_URL", settings.database_url)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "x", "type": "line", "source-layer": "nope"}]))
    assert cli(["basemap", "broken", "--style", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "'nope'" in err
    bad.write_text(json.dumps([{"id": "x", "type": "line", "source-layer": "roads",
                                "paint": {"line-width": "wide"}}]))
    assert cli(["basemap", "broken", "--style", str(bad)]) == 2
    assert "line-width" in capsys.readouterr().err
    assert cli(["basemap", "broken", "--imagery", "roads"]) == 2
    assert "not a raster layer" in capsys.readouterr().err
    assert cli(["basemap", "broken", "--labels-of", "imagery"]) == 2
    assert cli(["basemap", "emap", "--delete"]) == 2  # the annotation is made of it
    assert "annotation" in capsys.readouterr().err
    assert cli(["basemap"]) == 0
    assert "emap\tvector" in capsys.readouterr().out


def _glyph_ids(pbf: bytes) -> set[int]:
    """The code points of a glyph range (MapLibre's glyphs.proto, read field by field)."""
    def fields(buf: bytes):
        i = 0
        while i < len(buf):
            tag, i = _varint(buf, i)
            kind = tag & 7
            if kind == 0:
                value, i = _varint(buf, i)
            elif kind == 2:
                n, i = _varint(buf, i)
                value, i = buf[i:i + n], i + n
            else:
                raise AssertionError(f"wire type {kind}")
            yield tag >> 3, value
    ids = set()
    for number, stack in fields(pbf):
        assert number == 1
        for field, glyph in fields(stack):
            if field == 3:
                ids |= {v for f, v in fields(glyph) if f == 1}
    return ids


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def test_glyphs_cover_finnish_and_chinese_names(http):
    assert "Noto Sans Regular" in http.get("/fonts.json").json()
    stack = quote("Noto Sans Regular,Arial Unicode MS Regular")
    latin = http.get(f"/fonts/{stack}/0-255.pbf")
    assert latin.status_code == 200
    assert {ord(c) for c in "Pohjoisesplanadiäö"} <= _glyph_ids(latin.content)
    # 北京 (U+5317, U+4EAC): ranges 21248-21503 and 19968-20223.
    for start, char in ((21248, "北"), (19968, "京")):
        r = http.get(f"/fonts/{stack}/{start}-{start + 255}.pbf")
        assert ord(char) in _glyph_ids(r.content)
    assert r.headers["cache-control"] == "public, max-age=86400"
    # A range no font covers is empty, not an error; a bad range or stack is a 404.
    assert _glyph_ids(http.get(f"/fonts/{stack}/57344-57599.pbf").content) == set()
    assert http.get(f"/fonts/{stack}/0-99.pbf").status_code == 404
    missing = http.get("/fonts/Comic Sans/0-255.pbf")
    assert missing.status_code == 404 and "Noto Sans Regular" in missing.json()["detail"]


def test_sprite_holds_poi_and_device_icons(http):
    for suffix, ratio in (("", 1), ("@2x", 2)):
        index = http.get(f"/sprites/onemap{suffix}.json").json()
        png = imagecodecs.png_decode(http.get(f"/sprites/onemap{suffix}.png").content)
        assert {"restaurant", "cafe", "pole", "camera", "lamp"} <= set(index)
        for icon in index.values():
            assert icon["pixelRatio"] == ratio
            assert icon["x"] + icon["width"] <= png.shape[1]
            assert icon["y"] + icon["height"] <= png.shape[0]
        pole = index["pole"]
        cut = png[pole["y"]:pole["y"] + pole["height"], pole["x"]:pole["x"] + pole["width"]]
        assert cut[..., 3].mean() > 100  # drawn, not empty
    assert http.get("/sprites/other.png").status_code == 404


# --- the viewer, in a headless Chromium -------------------------------------------------

def _browser(pw):
    assert shutil.which("chromium"), "make test installs Chromium from the system's packages"
    return pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
        "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])


IDLE = """() => new Promise(done => {
  const map = window.onemapMap;
  if (map && map.loaded() && !map.isMoving()) return done(true);
  if (map) map.once('idle', () => done(true));
})"""


def _idle(page) -> None:
    page.wait_for_function("window.onemapMap !== undefined", timeout=30_000)
    page.wait_for_timeout(300)
    page.evaluate(IDLE)


def _map_pixels(page) -> np.ndarray:
    box = page.locator("#map").bounding_box()
    shot = page.screenshot(clip=box)
    return imagecodecs.png_decode(shot)[..., :3].astype(int)


def test_viewer_opens_on_the_emap_with_labels(server, city):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server}/?layers=")
            _idle(page)
            symbols = page.evaluate("""() => window.onemapMap.queryRenderedFeatures()
                .filter(f => f.layer.type === 'symbol').map(f => f.layer.id)""")
            assert {"base-place-label", "base-road-label"} <= set(symbols), set(symbols)
            pixels = _map_pixels(page)
            ground = np.array([0xf2, 0xef, 0xe9])
            drawn = (np.abs(pixels - ground).sum(axis=2) > 12).mean()
            assert drawn > 0.5, drawn
            # The permalink holds the base; the view is in the hash.
            assert "base=emap" in page.url and "#" in page.url

            # Choosing the imagery shows the imagery's tiles (and goes to where it is).
            tiles: list[int] = []
            page.on("response", lambda r: tiles.append(r.status)
                    if "/tiles/bm_imagery/" in r.url else None)
            page.click("text=Imagery")
            page.wait_for_timeout(500)
            _idle(page)
            assert tiles and all(s == 200 for s in tiles), tiles
            assert "base=imagery" in page.url
            pixels = _map_pixels(page)
            dark = np.array([0x1d, 0x2a, 0x33])
            assert (np.abs(pixels - dark).sum(axis=2) > 30).mean() > 0.3
            assert not errors, errors
        finally:
            browser.close()


def test_viewer_draws_chinese_district_names_in_the_cjk_font(server, city):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            glyphs: list[tuple[str, int]] = []
            page.on("response", lambda r: glyphs.append((r.url, r.status))
                    if "/fonts/" in r.url else None)
            page.goto(f"{server}/?base=none&layers=districts#8.6/40.15/116.35")
            _idle(page)
            names = page.evaluate("""() => window.onemapMap.queryRenderedFeatures()
                .filter(f => f.layer.id === 'districts-label').map(f => f.properties.name)""")
            assert "海淀区" in names or "朝阳区" in names, names
            # The CJK glyphs came from OneMap, not from a font of the browser.
            qu = f"/{0x533A // 256 * 256}-{0x533A // 256 * 256 + 255}.pbf"  # of every district
            cjk = [s for url, s in glyphs if url.endswith(qu)]
            assert cjk and all(s == 200 for s in cjk), glyphs
            # The legend of the layer shown, and the field titles in a popup.
            assert page.locator("li[data-layer=districts] .legend li").count() >= 1
        finally:
            browser.close()


def test_viewer_signs_in_with_a_key_and_sees_what_it_may(server, city, settings):
    """An API key entered once on the sign-in page: the layers it may read appear, the key
    itself stays out of the page's URL and storage (a session cookie holds the sign-in)."""

    from playwright.sync_api import sync_playwright

    keys = department_keys(settings, {"bm-viewer": "bm-planning"})
    _classify(settings, "places", "internal")
    try:
        with sync_playwright() as pw:
            browser = _browser(pw)
            try:
                page = browser.new_page(viewport={"width": 900, "height": 700})
                page.goto(f"{server}/")
                _idle(page)
                assert page.locator("li[data-layer=places]").count() == 0
                page.click("#signin")
                page.fill("input[name=key]", keys["bm-viewer"])
                page.click("form[action='/login/key'] button")
                page.wait_for_url(f"{server}/")
                _idle(page)
                page.wait_for_selector("#signout")
                assert page.locator("li[data-layer=places]").count() == 1
                assert "Signed in as bm-viewer" in page.locator("#who").inner_text()
                assert keys["bm-viewer"] not in page.url
                assert not page.evaluate("Object.keys(sessionStorage).length")
            finally:
                browser.close()
    finally:
        _classify(settings, "places", "public")
    assert httpx.get(f"{server}/healthz", timeout=10).status_code == 200


def test_embed_snippet_shows_the_map_on_another_origin(server, city, settings):
    """The MapLibre snippet /embed gives, pasted into a page of the key's origin, draws
    the e-map and the chosen layer through the embedding key alone."""
    import asyncio

    from playwright.sync_api import sync_playwright

    from tests.conftest import ensure_departments, free_port
    from tests.test_embedding import served_page

    ensure_departments(settings, {"bm-embed": "A business system"})
    origin = f"http://127.0.0.1:{free_port()}"

    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            a = Actor("test")
            await admin.create_principal(conn, a, name="bm-embed-system", kind="service",
                                         department="bm-embed")
            made = await admin.create_key(conn, a, principal="bm-embed-system", kind="embed",
                                          origins=[origin], layers=[*EMAP_LAYERS, "lamps"])
            return made["key"]
    key = asyncio.run(make())
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"{server}/embed")
            page.check("input[value=lamps]")
            page.fill("#key", key)
            snippet = page.locator("#maplibre").inner_text()
            assert f"/basemaps/emap/style.json?key={key}" in snippet
            assert f"/styles/lamps/style.json?key={key}" in snippet
            probe = """<script>map.on('idle', () => { window.drawn = map.queryRenderedFeatures()
              .map(f => f.sourceLayer); });
              map.on('error', e => { window.failed = String(e.error && e.error.message); });
              map.jumpTo({center: [24.944, 60.1705], zoom: 16});</script>"""
            html = f"<!doctype html><html><body>{snippet}{probe}</body></html>"
            with served_page(html, int(origin.rsplit(":", 1)[1])) as url:
                other = browser.new_page(viewport={"width": 800, "height": 600})
                other.goto(url)
                other.wait_for_function("window.drawn && window.drawn.includes('lamps')",
                                        timeout=30_000)
                drawn = set(other.evaluate("window.drawn"))
                assert {"roads", "buildings", "lamps"} <= drawn, drawn
        finally:
            browser.close()


def test_viewer_search_and_popup_titles(server, city, settings):
    """The search box finds a street through the items API and a layer by its title; a
    click shows the feature under its data dictionary's field titles."""
    from playwright.sync_api import sync_playwright

    from ingest.vector import ingest_vector
    from layers.meta import LayerMeta

    ingest_vector(SAMPLES / "beijing-districts-cgcs2000.geojson", "districts", key="gb",
                  settings=settings, meta=LayerMeta(field_titles={"name": "Name (名称)"}))
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(f"{server}/?base=emap&layers=roads,districts")
            _idle(page)
            page.fill("#search", "Mannerheimintie")
            page.wait_for_selector("#found li a", timeout=15_000)
            hits = page.locator("#found li").all_inner_texts()
            assert [h for h in hits if "Mannerheimintie" in h and "roads" in h.lower()] == [
                "Mannerheimintie roads"], hits  # each street once
            page.fill("#search", "district")  # the layer, by its title
            page.wait_for_function("document.querySelector('#found li .kind') &&"
                                   " document.querySelector('#found li .kind').innerText"
                                   " === 'layer'", timeout=15_000)
            page.click("#found li a")
            page.wait_for_timeout(1500)
            _idle(page)
            # The centre of the map is inside a district: its popup names the field.
            box = page.locator("#map").bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector(".popup", timeout=10_000)
            assert "Name (名称)" in page.locator(".popup").inner_text()
            assert "layers=roads%2Cdistricts" in page.url or "layers=roads,districts" in page.url
        finally:
            browser.close()


def test_a_click_outside_every_feature_says_which_district_it_is_in(server, city, settings,
                                                                   tmp_path):
    """Where no feature is drawn, a click asks the locate process which polygons of the
    areal layers hold the point, and shows them."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            # Central Beijing, with only Helsinki's roads shown: nothing drawn under the click.
            page.goto(f"{server}/?base=none&layers=roads#13/39.9087/116.3975")
            _idle(page)
            box = page.locator("#map").bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector(".popup[data-locate]", timeout=10_000)
            text = page.locator(".popup[data-locate]").inner_text()
            assert "39.9" in text and ("西城区" in text or "东城区" in text), text
            # From there: the nearest districts, then what lies within 500 m, drawn.
            popup = page.locator(".popup[data-locate]")
            popup.locator("select").select_option("districts")
            popup.locator("[data-nearest]").click()
            page.wait_for_function("document.querySelectorAll('.popup .result li').length"
                                   " === 5", timeout=10_000)
            first = popup.locator(".result li").first.inner_text()
            assert first.endswith(" 0 m") and ("西城区" in first or "东城区" in first), first
            popup.locator("[data-buffer]").click()
            page.wait_for_function("document.querySelector('.popup .result li')"
                                   ".textContent.includes('km²')", timeout=10_000)
            assert "0.78" in popup.locator(".result").inner_text()  # π × 500² m²
            page.wait_for_timeout(500)
            shot = tmp_path / "viewer-locate.png"
            page.screenshot(path=str(shot))
            # The buffer is drawn: its tinted fill just beside the click, not the page's.
            import imagecodecs

            img = imagecodecs.png_decode(shot.read_bytes())
            cx, cy = int(box["x"] + box["width"] / 2), int(box["y"] + box["height"] / 2)
            inside, outside = img[cy + 12, cx - 12, :3], img[cy + 120, cx - 300, :3]
            assert int(inside[2]) - int(inside[0]) > 15 > int(outside[2]) - int(outside[0]), (
                inside, outside)
        finally:
            browser.close()

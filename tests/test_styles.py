"""Each layer's style in the catalog: defaults, an owner restyling it over HTTP and from
the CLI, legends read from it, limits that a style never breaks, and the MapLibre style
specification's own validator on every style served."""

from __future__ import annotations

import asyncio
import json
import shutil

import geopandas as gpd
import httpx
import imagecodecs
import numpy as np
import psycopg
import pytest
from shapely.geometry import box

from access import admin
from access.admin import Actor
from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from onemap.cli import main as cli
from styles.validate import problems
from tests.conftest import department_keys

KINDS = {"park": "#2ca02c", "lake": "#1f77b4", "plaza": "#ff7f0e"}
STYLE = [
    {"id": "fill", "type": "fill", "paint": {
        "fill-color": ["match", ["get", "kind"], "park", KINDS["park"], "lake", KINDS["lake"],
                       "plaza", KINDS["plaza"], "#999999"],
        "fill-opacity": 1}},
    {"id": "edge", "type": "line", "minzoom": 12, "paint": {
        "line-color": ["step", ["get", "area"], "#cccccc", 1000, "#888888", 5000, "#333333"],
        "line-width": 1}},
]


@pytest.fixture(scope="module")
def parks(settings, tmp_path_factory) -> dict[str, str]:
    """A polygon layer owned by the parks department; keys for its publisher and for a
    reader who may not see the field the style colours by."""
    keys = department_keys(settings, {"parks-editor": "st-parks", "st-reader": "st-other"})
    rng = np.random.default_rng(3)
    x0, y0 = 24.93, 60.16
    shapes, kinds = [], []
    for i in range(60):  # a 6 x 10 grid of squares over about 2 x 1.5 km
        x, y = x0 + (i % 10) * 0.003, y0 + (i // 10) * 0.0022
        shapes.append(box(x, y, x + 0.0025, y + 0.0018))
        kinds.append(list(KINDS)[i % 3])
    path = tmp_path_factory.mktemp("styles") / "parks.geojson"
    gpd.GeoDataFrame({"pid": [f"p{i}" for i in range(60)], "kind": kinds,
                      "area": rng.integers(100, 9000, 60)}, geometry=shapes,
                     crs=4326).to_file(path)
    ingest_vector(path, "st_parks", key="pid", settings=settings,
                  meta=LayerMeta(department="st-parks", sharing_type="unconditional"))

    async def hide() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            await admin.grant(conn, Actor("test"), settings.levels, to="st-reader",
                              layers="st_parks", hidden=["kind"])

    asyncio.run(hide())
    return keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_style_served_passes_the_validator(http, sample_layers, parks):
    ids = ["districts", "lamps", "roads", "buildings"]
    served = [http.get(f"/styles/{i}/style.json").json() for i in ids]
    served.append(http.get(f"/styles/{','.join(ids)}/style.json").json())
    served.append(http.get("/styles/st_parks/style.json",
                           headers=_auth(parks["parks-editor"])).json())
    assert all(s["version"] == 8 for s in served)
    assert problems(served) == [[]] * len(served)
    # One colour per layer, the same wherever the layer is drawn.
    alone = {s["layers"][1]["source-layer"]: s["layers"][1]["paint"] for s in served[:4]}
    together: dict = {}
    for ly in served[4]["layers"][1:]:
        together.setdefault(ly["source-layer"], ly["paint"])
    assert alone == together
    assert len({json.dumps(p, sort_keys=True) for p in alone.values()}) == 4


def test_owner_restyles_and_legend_follows(http, parks):
    editor = _auth(parks["parks-editor"])
    r = http.put("/styles/st_parks", json={"layers": STYLE}, headers=editor)
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()["layers"]] == ["st_parks-fill", "st_parks-edge"]
    doc = http.get("/styles/st_parks/style.json", headers=editor).json()
    assert problems([doc]) == [[]]
    fill = next(ly for ly in doc["layers"] if ly["id"] == "st_parks-fill")
    assert fill["source"] == "onemap" and fill["source-layer"] == "st_parks"
    assert fill["paint"]["fill-color"] == STYLE[0]["paint"]["fill-color"]
    got = http.get("/styles/st_parks/legend.json", headers=editor).json()
    entry = {e["id"]: e for e in got["entries"]}
    assert entry["st_parks-fill"]["field"] == "kind"
    assert {i["label"]: i["colour"] for i in entry["st_parks-fill"]["items"]} == {
        **KINDS, "other": "#999999"}
    assert [i["label"] for i in entry["st_parks-edge"]["items"]] == [
        "< 1000", "1000 – < 5000", "≥ 5000"]
    assert entry["st_parks-edge"]["minzoom"] == 12
    # The layer's style in every document that shows it, beside other layers.
    both = http.get("/styles/st_parks,roads/style.json", headers=editor).json()
    assert any(ly["id"] == "st_parks-fill" for ly in both["layers"])


def test_limits_hold_in_styles_and_legends(http, parks):
    """A reader who may not see ``kind`` gets the style's fallback: neither the style nor
    the legend names a value of the hidden field."""
    http.put("/styles/st_parks", json={"layers": STYLE},
             headers=_auth(parks["parks-editor"])).raise_for_status()
    reader = _auth(parks["st-reader"])
    doc = http.get("/styles/st_parks/style.json", headers=reader)
    assert doc.status_code == 200 and doc.headers["cache-control"].startswith("private")
    assert '"park"' not in doc.text and '"kind"' not in doc.text
    fill = next(ly for ly in doc.json()["layers"] if ly["id"] == "st_parks-fill")
    assert fill["paint"]["fill-color"] == "#999999"
    assert problems([doc.json()]) == [[]]
    legend = http.get("/styles/st_parks/legend.json", headers=reader).text
    assert '"park"' not in legend and '"kind"' not in legend


def test_who_may_restyle(http, parks, sample_layers):
    body = {"layers": STYLE}
    assert http.put("/styles/st_parks", json=body).status_code == 401
    assert http.put("/styles/st_parks", json=body,
                    headers=_auth(parks["st-reader"])).status_code == 403
    # A layer the caller cannot see is missing, as everywhere.
    assert http.put("/styles/nope", json=body,
                    headers=_auth(parks["parks-editor"])).status_code == 404


@pytest.mark.parametrize("layers, says", [
    ([], "non-empty list"),
    ([{"id": "a", "type": "raster"}], "type 'raster'"),
    ([{"id": "a", "type": "fill"}, {"id": "a", "type": "line"}], "used twice"),
    ([{"id": "a", "type": "fill", "paint": {"fill-color": 12}}], "fill-color"),
    ([{"id": "a", "type": "symbol", "layout": {"text-field": ["get", "kind"],
                                               "text-font": "Noto Sans Regular"}}],
     "text-font"),
    ([{"id": "a", "type": "line", "paint": {"line-width": ["nonsense", 1]}}],
     "style layer 'st_parks-a'.paint.line-width"),
])
def test_bad_styles_are_refused_by_name(http, parks, layers, says):
    r = http.put("/styles/st_parks", json={"layers": layers},
                 headers=_auth(parks["parks-editor"]))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert says in r.json()["detail"]


def test_cli_sets_shows_and_resets(settings, parks, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ONEMAP_DATABASE_URL", settings.database_url)
    f = tmp_path / "style.json"
    f.write_text(json.dumps({"version": 8, "sources": {}, "layers": STYLE}))
    assert cli(["style", "st_parks", "--file", str(f)]) == 0
    assert "2 style layers" in capsys.readouterr().out
    assert cli(["style", "st_parks"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["paint"]["fill-color"] == STYLE[0]["paint"]["fill-color"]
    f.write_text('[{"id": "x", "type": "fill", "paint": {"fill-color": 3}}]')
    assert cli(["style", "st_parks", "--file", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "fill-color" in err
    assert cli(["style", "st_parks", "--reset"]) == 0
    assert "default look" in capsys.readouterr().out
    assert cli(["style", "nope"]) == 2


def test_restyled_layer_draws_in_its_colours(server, parks):
    """MapLibre in a headless Chromium draws the layer from its style document: the
    category colours cover the map where the squares are."""
    from playwright.sync_api import sync_playwright

    from tests.test_embedding import page_for, served_page

    httpx.put(f"{server}/styles/st_parks", json={"layers": STYLE}, timeout=30,
              headers=_auth(parks["parks-editor"])).raise_for_status()
    html = page_for(server, f"{server}/styles/st_parks/style.json", center=(24.944, 60.1655),
                    zoom=14, token=parks["parks-editor"])
    with served_page(html) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        try:
            page = browser.new_page(viewport={"width": 640, "height": 480})
            page.goto(url)
            page.wait_for_function("window.drawn !== undefined", timeout=30_000)
            shot = page.screenshot()
        finally:
            browser.close()
    pixels = imagecodecs.png_decode(shot)[..., :3].reshape(-1, 3)
    for colour in KINDS.values():
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        share = (np.abs(pixels.astype(int) - rgb).sum(axis=1) < 24).mean()
        assert share > 0.05, (colour, share)


def _categories(n: int) -> list[dict]:
    pairs = [v for i in range(n) for v in (f"kind-{i}", f"#{i % 0xFFFFFF:06x}")]
    return [{"id": "fill", "type": "fill", "paint": {
        "fill-color": ["match", ["get", "kind"], *pairs, "#999999"]}}]


def test_a_style_of_many_categories_is_kept_and_a_huge_one_refused(http, parks, settings,
                                                                  tmp_path, capsys,
                                                                  monkeypatch):
    editor = _auth(parks["parks-editor"])
    big = http.put("/styles/st_parks", json={"layers": _categories(1500)}, headers=editor)
    assert big.status_code == 200, big.text  # about 40 KB: more than a plain body may be
    huge = http.put("/styles/st_parks", json={"layers": _categories(12_000)}, headers=editor)
    assert huge.status_code == 413, huge.text
    monkeypatch.setenv("ONEMAP_DATABASE_URL", settings.database_url)
    f = tmp_path / "huge.json"
    f.write_text(json.dumps(_categories(12_000)))
    assert cli(["style", "st_parks", "--file", str(f)]) == 2
    assert "at most 256 KB" in capsys.readouterr().err


def test_legend_reads_a_ramp_as_its_stops():
    from styles.legend import legend
    from tests.test_policy import layer as a_layer

    got = legend(a_layer("ramp"), [{"id": "ramp", "type": "circle", "paint": {"circle-color": [
        "interpolate", ["linear"], ["get", "height"], 0, "#ffffcc", 50, "#fd8d3c",
        100.5, "#800026"]}}])
    assert got["entries"] == [{"id": "ramp", "symbol": "point", "field": "height", "items": [
        {"label": "0", "value": 0, "colour": "#ffffcc"},
        {"label": "50", "value": 50, "colour": "#fd8d3c"},
        {"label": "100.5", "value": 100.5, "colour": "#800026"}]}]

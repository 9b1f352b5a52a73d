"""OGC API – Features over real HTTP, checked against the database, and by real clients."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from urllib.parse import quote

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely
from owslib.ogcapi.features import Features
from shapely.geometry import Point, shape

from ingest.vector import ingest_vector
from mapserver.features import CONFORMANCE, MAX_LIMIT
from mapserver.ogctiles import CONFORMANCE as TILES
from mapserver.processes import CONFORMANCE as PROCESSES
from mapserver.records import CONFORMANCE as RECORDS

BBOX = (24.94, 60.165, 24.95, 60.172)


def db_ids(db, layer: str, bbox=None) -> set[str]:
    where = ""
    args: tuple = ()
    if bbox:
        where = " AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))"
        args = bbox
    return {r[0] for r in db.execute(
        f"SELECT _fid FROM onemap_data.{layer} WHERE _valid_to IS NULL{where}", args)}  # noqa: S608


def test_landing_page_is_negotiated(http, sample_layers):
    landing = http.get("/", params={"f": "json"}).json()
    rels = {ln["rel"]: ln["href"] for ln in landing["links"]}
    assert {"self", "service-desc", "conformance", "data"} <= set(rels)
    assert http.get("/", headers={"Accept": "application/json"}).json() == landing
    assert http.get("/", headers={"Accept": "*/*"}).json() == landing
    assert http.get("/", params={"f": "xml"}).status_code == 400  # one rule everywhere
    page = http.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.headers["content-type"].startswith("text/html")
    declared = http.get(rels["conformance"]).json()["conformsTo"]
    assert declared == CONFORMANCE + RECORDS + TILES + PROCESSES


def test_collections_describe_the_catalog(http, db, sample_layers):
    docs = {c["id"]: c for c in http.get("/collections").json()["collections"]}
    assert {"lamps", "roads", "buildings", "districts"} <= set(docs)
    lamps = http.get("/collections/lamps").json()
    assert lamps == docs["lamps"]
    extent = db.execute("SELECT extent FROM onemap.layers WHERE id = 'lamps'").fetchone()[0]
    assert lamps["extent"]["spatial"]["bbox"] == [extent]
    assert lamps["itemType"] == "feature"
    assert {ln["rel"] for ln in lamps["links"]} >= {"self", "items", "tilejson", "stylesheet"}


def test_paging_with_next_links_returns_every_feature_once(http, db, sample_layers):
    url, seen, pages = "/collections/lamps/items?limit=100", [], 0
    while url:
        page = http.get(url)
        assert page.headers["content-type"] == "application/geo+json"
        assert page.headers["content-crs"] == "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"
        doc = page.json()
        assert doc["numberMatched"] == 586 and doc["numberReturned"] == len(doc["features"])
        seen += [f["id"] for f in doc["features"]]
        url = next((ln["href"] for ln in doc["links"] if ln["rel"] == "next"), None)
        pages += 1
    assert pages == 6 and len(seen) == len(set(seen)) == 586
    assert set(seen) == db_ids(db, "lamps")


def test_features_match_the_database(http, db, sample_layers):
    doc = http.get("/collections/lamps/items", params={"limit": 1000}).json()
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT _fid, osm_id, highway, ST_AsText(geom), _version FROM onemap_data.lamps"
        " WHERE _valid_to IS NULL")}
    for f in doc["features"]:
        osm_id, highway, wkt, version = rows[f["id"]]
        assert f["properties"]["osm_id"] == osm_id and f["properties"]["highway"] == highway
        assert f["properties"]["_version"] == version and "_produced_at" in f["properties"]
        assert shape(f["geometry"]).equals_exact(shapely.from_wkt(wkt), 1e-9)


@pytest.mark.parametrize("limit, returned", [("1", 1), ("586", 586), (str(MAX_LIMIT * 10), 586)])
def test_limit_bounds(http, sample_layers, limit, returned):
    resp = http.get("/collections/lamps/items", params={"limit": limit})
    assert resp.status_code == 200 and resp.json()["numberReturned"] == returned


def test_bbox_filter(http, db, sample_layers):
    doc = http.get("/collections/lamps/items",
                   params={"bbox": ",".join(map(str, BBOX)), "limit": 1000}).json()
    ids = {f["id"] for f in doc["features"]}
    assert ids == db_ids(db, "lamps", BBOX) and 0 < len(ids) < 586
    assert doc["numberMatched"] == len(ids)


def test_datetime_filters_on_produced_time(http, tmp_path, settings):
    gpd.GeoDataFrame(
        {"code": ["a", "b", "c"],
         "surveyed": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z",
                                     "2025-01-01T00:00:00Z"])},
        geometry=[Point(24.94, 60.17)] * 3, crs=4326).to_file(tmp_path / "t.gpkg")
    ingest_vector(tmp_path / "t.gpkg", "surveys", key="code", produced_field="surveyed",
                  settings=settings)

    def ids(dt: str) -> list[str]:
        resp = http.get("/collections/surveys/items", params={"datetime": dt})
        assert resp.status_code == 200, resp.text
        return [f["id"] for f in resp.json()["features"]]

    assert ids("2024-06-01T00:00:00Z") == ["b"]
    assert ids("2024-03-01T00:00:00Z/2024-12-31T00:00:00Z") == ["b"]
    assert ids("../2024-06-01T00:00:00Z") == ["a", "b"]
    assert ids("2024-06-01T00:00:00Z/..") == ["b", "c"]
    assert ids("../..") == ["a", "b", "c"]


def test_as_of_and_single_items(http, tmp_path, settings):
    path = tmp_path / "v.geojson"
    gpd.GeoDataFrame({"code": ["k/1"], "state": ["planned"]}, geometry=[Point(24.94, 60.17)],
                     crs=4326).to_file(path)
    ingest_vector(path, "poles", key="code", settings=settings)
    time.sleep(0.05)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    gpd.GeoDataFrame({"code": ["k/1"], "state": ["built"]}, geometry=[Point(24.94, 60.17)],
                     crs=4326).to_file(path)
    ingest_vector(path, "poles", key="code", settings=settings)
    fid = quote("k/1", safe="")
    now = http.get(f"/collections/poles/items/{fid}").json()
    assert now["id"] == "k/1" and now["properties"]["state"] == "built"
    assert now["properties"]["_version"] == 2
    then = http.get(f"/collections/poles/items/{fid}", params={"as-of": between}).json()
    assert then["properties"]["state"] == "planned"
    past = http.get("/collections/poles/items", params={"as-of": between}).json()
    assert [f["properties"]["state"] for f in past["features"]] == ["planned"]
    assert {ln["rel"] for ln in now["links"]} == {"self", "alternate", "collection"}
    assert http.get(now["links"][0]["href"]).json()["id"] == "k/1"


@pytest.mark.parametrize("path, params, status, detail", [
    ("/collections/nosuch", {}, 404, "no collection 'nosuch'"),
    ("/collections/nosuch/items", {}, 404, "no collection 'nosuch'"),
    ("/collections/lamps/items/nosuch", {}, 404, "no feature 'nosuch'"),
    ("/collections/lamps/items", {"limit": "0"}, 400, "limit must be at least 1"),
    ("/collections/lamps/items", {"limit": "ten"}, 400, "limit must be an integer"),
    ("/collections/lamps/items", {"offset": "-1"}, 400, "offset must be at least 0"),
    ("/collections/lamps/items", {"bbox": "1,2,3"}, 400, "needs 4 (or 6) finite numbers"),
    ("/collections/lamps/items", {"bbox": "a,b,c,d"}, 400, "is not a list of numbers"),
    ("/collections/lamps/items", {"bbox": "0,50,10,40"}, 400, "lower-left, upper-right"),
    ("/collections/lamps/items", {"bbox": "0,0,1,nan"}, 400, "finite numbers"),
    ("/collections/lamps/items", {"datetime": "yesterday"}, 400, "is not RFC 3339"),
    ("/collections/lamps/items", {"datetime": "2024-02-01/2024-01-01"}, 400, "ends before"),
    ("/collections/lamps/items", {"as-of": "soon"}, 400, "is not RFC 3339"),
])
def test_bad_requests(http, sample_layers, path, params, status, detail):
    resp = http.get(path, params=params)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    assert detail in resp.json()["detail"] and "Traceback" not in resp.text


@pytest.mark.parametrize("name", ["limit", "offset", "bbox", "datetime", "as-of", "crs",
                                  "properties", "bbox-crs", "filter", "filter-lang"])
def test_sql_injection_in_every_parameter(http, db, sample_layers, name):
    for attack in ("1; DROP TABLE onemap.layers;--", "' OR '1'='1", "1) OR (1=1"):
        resp = http.get("/collections/lamps/items", params={name: attack})
        assert resp.status_code == 400, (name, attack)
    for path in ("/collections/lamps'--/items", "/collections/lamps/items/1' OR '1'='1"):
        assert http.get(path).status_code == 404
    assert db.execute("SELECT count(*) FROM onemap_data.lamps").fetchone()[0] >= 586


SIGNED_IN = {"/jobs", "/requests", "/requestable", "/portal/overview"}


def test_openapi_describes_the_real_routes(http, server, settings, sample_layers):
    """/api passes an OpenAPI 3 validator, lists every route the app serves with what it
    answers, and its plain GET routes answer as it says."""
    from openapi_spec_validator import validate

    from mapserver.app import create_app
    from mapserver.openapi import _routes

    doc = http.get("/api").json()
    assert doc["openapi"].startswith("3.0")
    validate(doc)
    served = {(path, method) for path, method, _ in _routes(create_app(settings).routes)}
    listed = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == listed and len(served) > 50
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            success = [c for c in op["responses"] if c.startswith(("2", "303"))]
            assert success, (path, method)
            for code in success:
                for media in op["responses"][code].get("content", {}).values():
                    assert media["schema"], (path, method)
        if "get" not in ops or any(p["in"] == "path" and p["name"] not in (
                "collectionId", "layers") for p in ops["get"]["parameters"]):
            continue
        if path.startswith(("/admin", "/registry", "/wmts", "/wms", "/collections/catalog",
                            "/login/", "/federation")):  # redirects of the browser's sign-in
            continue
        concrete = path.replace("{collectionId}", "lamps").replace("{layers}", "lamps")
        r = http.get(concrete)
        if path in SIGNED_IN:  # a department's own: anonymous callers are told to sign in
            assert r.status_code == 401, (path, r.text[:200])
            continue
        assert r.status_code == 200, (path, r.text[:200])


def test_gdal_ogr2ogr_copies_a_filtered_layer(server, db, sample_layers, tmp_path):
    url = f"OAPIF:{server}/"
    listing = subprocess.run(["ogrinfo", "-ro", "-so", url], capture_output=True, text=True,
                             check=True).stdout
    assert "street_lamps" not in listing and "lamps (title: lamps) (Point)" in listing
    out = tmp_path / "copy.gpkg"
    subprocess.run(["ogr2ogr", "-f", "GPKG", str(out), url, "lamps",
                    "-spat", *map(str, BBOX), "-where", "highway = 'street_lamp'"],
                   capture_output=True, text=True, check=True)
    copied = pyogrio.read_dataframe(out)
    rows = {r[0]: shapely.from_wkt(r[1]) for r in db.execute(
        "SELECT _fid, ST_AsText(geom) FROM onemap_data.lamps WHERE _valid_to IS NULL"
        " AND highway = 'street_lamp'"
        " AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))", BBOX)}
    assert sorted(copied["osm_id"]) == sorted(rows)
    for _, feat in copied.iterrows():
        assert feat.geometry.equals_exact(rows[feat["osm_id"]], 1e-9)


def test_owslib_reads_the_service(server, db, sample_layers):
    api = Features(server)
    assert set(CONFORMANCE) <= set(api.conformance()["conformsTo"])
    ids = [c["id"] for c in api.collections()["collections"]]
    assert "lamps" in ids
    page = api.collection_items("lamps", bbox=list(BBOX), limit=1000)
    assert {f["id"] for f in page["features"]} == db_ids(db, "lamps", BBOX)


EPSG = "http://www.opengis.net/def/crs/EPSG/0/"


def test_crs_output_and_axis_order(http, db, sample_layers):
    import pyproj

    base = http.get("/collections/lamps/items", params={"limit": 5}).json()["features"]
    to_3857 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    for uri, check in [
        (EPSG + "4326", lambda lon, lat, xy: xy == pytest.approx([lat, lon], abs=1e-9)),
        (EPSG + "4490", lambda lon, lat, xy: xy == pytest.approx([lat, lon], abs=1e-9)),
        (EPSG + "3857", lambda lon, lat, xy: xy == pytest.approx(to_3857.transform(lon, lat),
                                                                 abs=1e-3)),
    ]:
        resp = http.get("/collections/lamps/items", params={"limit": 5, "crs": uri})
        assert resp.headers["content-crs"] == f"<{uri}>"
        for before, after in zip(base, resp.json()["features"], strict=True):
            lon, lat = before["geometry"]["coordinates"]
            assert check(lon, lat, after["geometry"]["coordinates"]), uri
    one = http.get(f"/collections/lamps/items/{base[0]['id']}", params={"crs": "EPSG:4326"})
    assert one.json()["geometry"]["coordinates"] == pytest.approx(
        base[0]["geometry"]["coordinates"][::-1])
    assert one.headers["content-crs"] == f"<{EPSG}4326>"


def test_bbox_crs(http, db, sample_layers):
    import pyproj

    expected = db_ids(db, "lamps", BBOX)
    x0, y0, x1, y1 = BBOX

    def ids(bbox, crs):
        doc = http.get("/collections/lamps/items", params={
            "bbox": ",".join(map(str, bbox)), "bbox-crs": crs, "limit": 1000}).json()
        return {f["id"] for f in doc["features"]}

    assert ids((y0, x0, y1, x1), EPSG + "4326") == expected  # latitude first
    assert ids((y0, x0, y1, x1), EPSG + "4490") == expected
    to_3857 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    (mx0, my0), (mx1, my1) = to_3857.transform(x0, y0), to_3857.transform(x1, y1)
    assert ids((mx0, my0, mx1, my1), EPSG + "3857") == expected


@pytest.mark.parametrize("params, detail", [
    ({"crs": EPSG + "32650"}, "is not supported"),
    ({"crs": "nonsense"}, "is not supported"),
    ({"bbox-crs": EPSG + "2154", "bbox": "0,0,1,1"}, "is not supported"),
    # Longitude first where EPSG:4326 puts latitude first: latitude 116 cannot be.
    ({"bbox-crs": EPSG + "4326", "bbox": "116.3,39.8,116.5,40.0"}, "outside -180..180"),
])
def test_unsupported_or_misread_crs(http, sample_layers, params, detail):
    resp = http.get("/collections/lamps/items", params=params)
    assert resp.status_code == 400 and detail in resp.json()["detail"]


def test_collection_lists_its_crs(http, sample_layers):
    doc = http.get("/collections/districts").json()
    assert doc["storageCrs"] == "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    assert set(doc["crs"]) == {"http://www.opengis.net/def/crs/OGC/1.3/CRS84", EPSG + "4326",
                               EPSG + "4490", EPSG + "3857",
                               # the CGCS2000 Gauss-Kruger zones, 6- and 3-degree
                               *(f"{EPSG}{code}" for code in range(4491, 4555))}


def test_html_pages_for_people(http, db, sample_layers):
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.hrefs, self.rows = [], 0

        def handle_starttag(self, tag, attrs):
            if tag == "a":
                self.hrefs.append(dict(attrs)["href"])
            if tag == "tr":
                self.rows += 1

    def page(url, **kw):
        resp = http.get(url, **kw)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        parser = Links()
        parser.feed(resp.text)
        return resp.text, parser

    text, links = page("/collections", headers={"Accept": "text/html"})
    assert any(h.endswith("/collections/lamps?f=html") for h in links.hrefs)
    text, _ = page("/collections/buildings?f=html")
    assert "Data dictionary" in text and "osm_way_id" in text and 'class="map"' in text
    text, links = page("/collections/lamps/items?f=html&limit=5")
    assert links.rows == 6 and "5 of 586 features" in text  # header row + 5
    nxt = next(h for h in links.hrefs if "after=" in h)  # continues after the last id
    assert "f=html" in nxt and page(nxt)[1].rows == 6
    first = next(h for h in links.hrefs if "/items/" in h)
    text, _ = page(first)
    fid = first.split("/items/")[1].split("?")[0]
    osm_id = db.execute("SELECT osm_id FROM onemap_data.lamps WHERE _fid = %s"
                        " AND _valid_to IS NULL", (fid,)).fetchone()[0]
    assert f"<td>{osm_id}</td>" in text and "street_lamp" in text
    assert http.get("/collections", params={"f": "xml"}).status_code == 400


def test_properties_selects_what_each_feature_carries(http, sample_layers):
    doc = http.get("/collections/lamps/items", params={"properties": "osm_id,_version"}).json()
    assert all(set(f["properties"]) == {"osm_id", "_version"} for f in doc["features"])
    none = http.get("/collections/lamps/items", params={"properties": ""}).json()
    assert all(f["properties"] == {} for f in none["features"])
    bad = http.get("/collections/lamps/items", params={"properties": "osm_id,_hash"})
    assert bad.status_code == 400 and "unknown properties ['_hash']" in bad.json()["detail"]


@pytest.mark.parametrize("kind", ["points", "polygons"])
def test_bbox_edges_are_exact(http, tmp_path, settings, kind):
    """Index boxes are rounded to float4 (about 8e-6 degrees here): the answer must not be."""
    edge = 116.5
    inside, outside = edge - 1e-6, edge + 1e-6
    if kind == "points":
        geoms = [Point(inside, 39.9), Point(outside, 39.9)]
    else:
        geoms = [Point(inside, 39.9).buffer(1e-7), Point(outside, 39.9).buffer(1e-7)]
    layer = f"edge_{kind}"
    gpd.GeoDataFrame({"code": ["in", "out"]}, geometry=geoms, crs=4326).to_file(
        tmp_path / "edge.geojson")
    ingest_vector(tmp_path / "edge.geojson", layer, key="code", settings=settings)
    doc = http.get(f"/collections/{layer}/items", params={"bbox": f"116,39,{edge},40"}).json()
    assert [f["id"] for f in doc["features"]] == ["in"] and doc["numberMatched"] == 1


def test_base_layers_are_served_not_copied(http, tmp_path, settings):
    from layers.meta import LayerMeta

    n = settings.base_max_items + 5
    gpd.GeoDataFrame({"code": [f"e{i:05d}" for i in range(n)]},
                     geometry=[Point(116 + i * 1e-4, 39.9) for i in range(n)],
                     crs=4326).to_file(tmp_path / "emap.gpkg")
    ingest_vector(tmp_path / "emap.gpkg", "emap_poi", key="code", settings=settings,
                  meta=LayerMeta(role="base"))
    page = http.get("/collections/emap_poi/items", params={"limit": 10_000}).json()
    assert page["numberReturned"] == settings.base_max_items  # not 10,000
    last = settings.base_max_offset - 1
    edge = http.get("/collections/emap_poi/items", params={"offset": last, "limit": 10}).json()
    assert "next" not in {ln["rel"] for ln in edge["links"]}
    beyond = http.get("/collections/emap_poi/items",
                      params={"offset": settings.base_max_offset})
    assert beyond.status_code == 403 and "served, not copied" in beyond.json()["detail"]
    record = http.get("/collections/catalog/items/emap_poi").json()
    assert record["properties"]["onemap:role"] == "base"


def test_pages_continue_after_the_last_id_and_large_counts_are_estimated(
        http, db, sample_layers, monkeypatch):
    """A page's next link continues after its last id (a deep page costs what the first
    does); a match too large to count cheaply says the planner's estimate instead."""
    from layers import features as layer_features

    monkeypatch.setattr(layer_features, "COUNT_CAP", 100)
    flt = "highway <> 'motorway'"
    url, seen, pages = f"/collections/roads/items?limit=300&filter={flt}", [], 0
    first = http.get(url).json()
    assert "numberMatched" not in first and first["onemap:numberMatchedEstimate"] > 100
    while url:
        doc = http.get(url).json()
        seen += [f["id"] for f in doc["features"]]
        url = next((ln["href"] for ln in doc["links"] if ln["rel"] == "next"), None)
        assert url is None or ("after=" in url and "offset=" not in url), url
        pages += 1
    want = {r[0] for r in db.execute("SELECT _fid FROM onemap_data.roads WHERE _valid_to IS"
                                     " NULL"
                                     " AND highway <> 'motorway'")}
    assert len(seen) == len(set(seen)) and set(seen) == want and pages >= 3
    # Sorted pages go by offset; "after" is for the default order only.
    sorted_page = http.get("/collections/roads/items", params={"sortby": "-osm_id",
                                                                "limit": 10}).json()
    assert any("offset=10" in ln["href"] for ln in sorted_page["links"] if ln["rel"] == "next")
    r = http.get("/collections/roads/items", params={"sortby": "osm_id", "after": "x"})
    assert r.status_code == 400 and "after" in r.json()["detail"]
    # A smaller match is counted exactly.
    kind, n = db.execute("SELECT highway, count(*) FROM onemap_data.roads WHERE _valid_to IS"
                         " NULL GROUP BY highway HAVING count(*) BETWEEN 6 AND 100"
                         " ORDER BY 2 DESC LIMIT 1").fetchone()
    small = http.get("/collections/roads/items", params={"filter": f"highway = '{kind}'",
                                                          "limit": 5}).json()
    assert small["numberMatched"] == n and len(small["features"]) == 5

"""The standards as clients read them: each case is something a user of GDAL, QGIS, OWSLib
or a validator hit, checked over HTTP or through that client."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ingest.vector import ingest_vector
from tests.conftest import ROOT, SAMPLES


def _features(points: list[tuple[str, float, float]]) -> dict:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
         "properties": {"name": name, "rank": i}} for i, (name, x, y) in enumerate(points)]}


@pytest.fixture(scope="module")
def dateline(settings, tmp_path_factory) -> str:
    """Islands on both sides of the antimeridian, and one far from it."""
    src = tmp_path_factory.mktemp("conf") / "dateline.geojson"
    src.write_text(json.dumps(_features([("Taveuni", 179.9, -16.8), ("Rabi", -179.97, -16.5),
                                         ("Suva", 178.44, -18.14), ("Apia", -171.76, -13.83),
                                         ("Greenwich", 0.0, 51.48)])))
    ingest_vector(src, "dateline", key="name", settings=settings)
    return "dateline"


def _names(r) -> set[str]:
    assert r.status_code == 200, r.text
    return {f["properties"]["name"] for f in r.json()["features"]}


# 2. A bbox across the antimeridian (west > east), in items, the catalog and CQL2.
def test_a_bbox_across_the_antimeridian(http, dateline):
    across = "179.5,-17,-179.5,-16"
    assert _names(http.get("/collections/dateline/items", params={"bbox": across})) == {
        "Taveuni", "Rabi"}
    wide = "178,-19,-171,-13"
    assert _names(http.get("/collections/dateline/items", params={"bbox": wide})) == {
        "Taveuni", "Rabi", "Suva", "Apia"}
    # In EPSG:4326's own axis order (latitude first), the longitudes are the second pair.
    lat_first = http.get("/collections/dateline/items", params={
        "bbox": "-17,179.5,-16,-179.5",
        "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4326"})
    assert _names(lat_first) == {"Taveuni", "Rabi"}
    found = http.get("/collections/catalog/items", params={"bbox": across, "limit": 100})
    assert "dateline" in {f["id"] for f in found.json()["features"]}
    elsewhere = http.get("/collections/catalog/items", params={"bbox": "10,-80,11,-70"})
    assert "dateline" not in {f["id"] for f in elsewhere.json()["features"]}
    for lang, text in (("cql2-text", "S_INTERSECTS(geometry, BBOX(179.5,-17,-179.5,-16))"),
                       ("cql2-json", json.dumps({"op": "s_intersects", "args": [
                           {"property": "geometry"}, {"bbox": [179.5, -17, -179.5, -16]}]}))):
        r = http.get("/collections/dateline/items", params={"filter": text,
                                                             "filter-lang": lang})
        assert _names(r) == {"Taveuni", "Rabi"}, lang
    # South above north is no box at all.
    r = http.get("/collections/dateline/items", params={"bbox": "179.5,-16,-179.5,-17"})
    assert r.status_code == 400 and "bbox" in r.json()["detail"]


# 3. What the items and the catalog take, they do; anything else is a 400 naming it.
def test_items_sort_search_and_match_by_property(http, dateline):
    items = "/collections/dateline/items"
    assert _names(http.get(items, params={"name": "Suva"})) == {"Suva"}
    assert _names(http.get(items, params={"rank": "3"})) == {"Apia"}
    r = http.get(items, params={"rank": "three"})
    assert r.status_code == 400 and "rank" in r.json()["detail"]
    ranks = [f["properties"]["rank"] for f in http.get(items, params={"sortby": "-rank"}
                                                       ).json()["features"]]
    assert ranks == [4, 3, 2, 1, 0]
    by_name = http.get(items, params={"sortby": "+name"}).json()["features"]
    assert [f["properties"]["name"] for f in by_name] == sorted(
        f["properties"]["name"] for f in by_name)
    r = http.get(items, params={"sortby": "colour"})
    assert r.status_code == 400 and "sortable" in r.json()["detail"]
    assert _names(http.get(items, params={"ids": "Suva,Apia,Nowhere"})) == {"Suva", "Apia"}
    assert _names(http.get(items, params={"q": "ABI"})) == {"Rabi"}  # any case
    assert _names(http.get(items, params={"q": "abi,suv"})) == {"Rabi", "Suva"}
    assert _names(http.get(items, params={"q": "100%"})) == set()  # % is no wildcard
    for unknown in ("NAME", "sort", "colour"):
        r = http.get(items, params={unknown: "x"})
        assert r.status_code == 400 and repr(unknown) in r.json()["detail"], unknown
    # Together: a property, a filter and a sort.
    r = http.get(items, params={"filter": "rank < 4", "sortby": "-name", "rank": "1"})
    assert [f["properties"]["name"] for f in r.json()["features"]] == ["Rabi"]


def test_catalog_sorts_filters_and_refuses_what_it_does_not_take(http, dateline):
    search = "/collections/catalog/items"
    page = http.get(search, params={"sortby": "-id", "limit": 1000}).json()
    ids = [f["id"] for f in page["features"]]
    assert ids == sorted(ids, reverse=True) and "dateline" in ids
    got = http.get(search, params={"ids": "dateline,nowhere"}).json()
    assert [f["id"] for f in got["features"]] == ["dateline"] and got["numberMatched"] == 1
    got = http.get(search, params={"filter": "id = 'dateline' AND featureCount > 4"}).json()
    assert [f["id"] for f in got["features"]] == ["dateline"]
    assert http.get(search, params={"filter": "featureCount > 1000000000"}
                    ).json()["features"] == []
    r = http.get(search, params={"filter": "colour = 'red'"})
    assert r.status_code == 400 and "colour" in r.json()["detail"]
    assert "dateline" in {f["id"] for f in http.get(search, params={
        "type": "dataset", "limit": 1000}).json()["features"]}
    for unknown in ("sort", "NAME"):
        r = http.get(search, params={unknown: "x"})
        assert r.status_code == 400 and repr(unknown) in r.json()["detail"], unknown
    r = http.get(search, params={"sortby": "colour"})
    assert r.status_code == 400 and "sortable" in r.json()["detail"]


@pytest.fixture(scope="module")
def raster_layer(settings) -> str:
    from datetime import UTC, datetime

    from ingest.raster import ingest_raster
    from tests.conftest import SAMPLES

    ingest_raster(SAMPLES / "olinda-dem.tif", "conf_dem", settings=settings, elevation=True,
                  time=datetime(2000, 2, 11, tzinfo=UTC))
    return "conf_dem"


# 4. A raster layer is a collection whose items are its scenes (their footprints), so
# GDAL's OAPIF driver, which takes every collection for a feature collection, opens the
# service without an error; the pixels stay tiles.
def test_gdal_opens_the_features_service_cleanly(server, http, dateline, raster_layer):
    run = subprocess.run(["ogrinfo", "-ro", "-al", "-so", f"OAPIF:{server}/"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "ERROR" not in run.stderr, run.stderr
    assert f"Layer name: {raster_layer}" in run.stdout
    listed = run.stdout.split(f"Layer name: {raster_layer}", 1)[1].split("Layer name:", 1)[0]
    assert "Polygon" in listed and "Feature Count: 1" in listed, listed
    doc = http.get(f"/collections/{raster_layer}").json()
    assert doc["itemType"] == "feature" and doc["dataType"] == "map"
    page = http.get(f"/collections/{raster_layer}/items").json()
    (scene,) = page["features"]
    assert scene["properties"]["acquired_at"].startswith("2000-02-11")
    assert scene["geometry"]["type"] == "Polygon"
    one = http.get(f"/collections/{raster_layer}/items/{scene['id']}")
    assert one.status_code == 200 and one.json()["id"] == scene["id"]
    assert http.get(f"/collections/{raster_layer}/items/99999").status_code == 404
    assert http.get(f"/collections/{raster_layer}/items", params={
        "bbox": "10,10,11,11"}).json()["features"] == []
    r = http.get(f"/collections/{raster_layer}/items", params={"filter": "x = 1"})
    assert r.status_code == 400 and "'filter'" in r.json()["detail"]


# 5. Every JSON answer links its HTML, and every resource claimed in HTML is HTML.
HTML_PAGES = ["/conformance", "/collections", "/collections/dateline",
              "/collections/dateline/queryables", "/collections/dateline/items",
              "/collections/dateline/items/Suva", "/collections/catalog",
              "/collections/catalog/items", "/collections/catalog/items/dateline",
              "/collections/catalog/queryables", "/collections/catalog/sortables"]


@pytest.mark.parametrize("path", HTML_PAGES)
def test_json_links_its_html_and_html_is_served(http, dateline, path):
    doc = http.get(path, params={"f": "json"})
    assert doc.status_code == 200, doc.text
    assert not doc.headers["content-type"].startswith("text/html")
    alternates = [ln for ln in doc.json()["links"] if ln["rel"] == "alternate"]
    assert [ln["type"] for ln in alternates] == ["text/html"], doc.json()["links"]
    page = http.get(alternates[0]["href"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<h1>" in page.text and 'rel="alternate" type="application/json"' in page.text
    # A browser asking for the page by its Accept header gets it too.
    assert http.get(path, headers={"Accept": "text/html"}).headers[
        "content-type"].startswith("text/html")


def test_records_follow_the_records_standard(http, dateline):
    classes = http.get("/conformance").json()["conformsTo"]
    base = "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/"
    for c in ("record-core", "record-collection", "record-api", "sorting",
              "searchable-catalog", "json", "html"):
        assert base + c in classes, c
    assert base + "core" not in classes  # the draft's name
    record = http.get("/collections/catalog/items/dateline").json()
    assert record["conformsTo"] == [
        "http://www.opengis.net/spec/ogcapi-records-1/1.0/req/record-core"]
    assert record["properties"]["type"] == "dataset"
    assert {"vector", "Point"} <= set(record["properties"]["keywords"])
    queryables = http.get("/collections/catalog/queryables").json()
    assert {"id", "title", "type", "updated"} <= set(queryables["properties"])
    sortables = http.get("/collections/catalog/sortables").json()
    assert {"id", "title", "updated"} <= set(sortables["properties"])
    rels = {ln["rel"] for ln in http.get("/collections/catalog").json()["links"]}
    assert "http://www.opengis.net/def/rel/ogc/1.0/sortables" in rels


# 6. Names that start with "_", S_DWITHIN, and literals in another CRS.
def test_cql2_underscored_names_distance_and_filter_crs(http, dateline):
    items = "/collections/dateline/items"
    r = http.get(items, params={"filter": "_ingested_at > TIMESTAMP('2000-01-01T00:00:00Z')"
                                          " AND _produced_at < TIMESTAMP("
                                          "'2999-01-01T00:00:00Z')"})
    assert len(_names(r)) == 5
    assert _names(http.get(items, params={"filter": "name = '_version'"})) == set()
    # Suva is about 250 km from Taveuni; Rabi about 36 km, across the antimeridian.
    near = "S_DWITHIN(geometry, POINT(179.9 -16.8), 60, kilometers)"
    assert _names(http.get(items, params={"filter": near})) == {"Taveuni", "Rabi"}
    assert _names(http.get(items, params={"filter": "S_DWITHIN(geometry, POINT(179.9 -16.8),"
                                                    " 1000, meters)"})) == {"Taveuni"}
    too_far = http.get(items, params={"filter": "S_DWITHIN(geometry, POINT(0 0), 5000, km)"})
    assert too_far.status_code == 400 and "km" in too_far.json()["detail"]
    assert http.get(items, params={"filter": "S_DWITHIN(geometry, POINT(0 0), 5, parsecs)"}
                    ).status_code == 400
    # The same box around Greenwich in EPSG:4326's order (lat, lon) and in Web Mercator.
    for crs, box in (("http://www.opengis.net/def/crs/EPSG/0/4326", "BBOX(51,-1,52,1)"),
                     ("http://www.opengis.net/def/crs/EPSG/0/3857",
                      "BBOX(-111320,6621293,111320,6800125)"),
                     ("http://www.opengis.net/def/crs/OGC/1.3/CRS84", "BBOX(-1,51,1,52)")):
        r = http.get(items, params={"filter": f"S_INTERSECTS(geometry, {box})",
                                    "filter-crs": crs})
        assert _names(r) == {"Greenwich"}, crs
    lat_lon = http.get(items, params={"filter": "S_INTERSECTS(geometry, POINT(51.48 0))",
                                      "filter-crs": "EPSG:4326"})
    assert _names(lat_lon) == {"Greenwich"}


# 10. GeoJSON rings wind as RFC 7946 says: exterior counter-clockwise, holes clockwise.
def test_geojson_rings_are_counter_clockwise(http, sample_layers, raster_layer):
    import shapely.geometry

    checked = holes = 0
    for layer in ("buildings", "districts", raster_layer):
        page = http.get(f"/collections/{layer}/items", params={"limit": 500}).json()
        for f in page["features"]:
            shape = shapely.geometry.shape(f["geometry"])
            for poly in getattr(shape, "geoms", [shape]):
                if poly.geom_type != "Polygon":
                    continue
                assert poly.exterior.is_ccw, (layer, f["id"])
                for ring in poly.interiors:
                    assert not ring.is_ccw, (layer, f["id"])
                    holes += 1
                checked += 1
    assert checked > 400 and holes > 0


# 12. A raster collection says why it takes no feature: it changes by ingest.
def test_a_post_to_a_raster_collection_is_405(http, settings, raster_layer):
    from tests.conftest import department_keys

    key = department_keys(settings, {"conf_writer": "conf_dept"})["conf_writer"]
    r = http.post(f"/collections/{raster_layer}/items", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/geo+json"},
        content=json.dumps({"type": "Feature", "geometry": None, "properties": {}}))
    assert r.status_code == 405 and "ingest" in r.json()["detail"]
    assert r.headers["Allow"] == "GET, HEAD, OPTIONS"


# 13. Maps open where the data is; links name what they point at.
def test_maps_open_on_the_data_and_links_say_what_they_are(http, sample_layers, raster_layer):
    helsinki = http.get("/tiles/lamps/tilejson.json").json()
    beijing = http.get("/tiles/districts/tilejson.json").json()
    assert helsinki["center"][2] >= 13 and beijing["center"][2] <= 9, (helsinki, beijing)
    style = http.get("/styles/districts/style.json").json()
    assert style["zoom"] == beijing["center"][2]
    lon, lat = style["center"]
    assert 115.4 < lon < 117.6 and 39.4 < lat < 41.1
    links = http.get("/collections/lamps").json()["links"]
    assert not [ln for ln in links if ln["rel"] == "item"]  # tile templates live in tilesets
    described = next(ln for ln in links if ln["rel"] == "describedby")
    assert described["type"] == "application/schema+json"
    schema = http.get(described["href"]).json()
    assert schema["properties"]["osm_id"]["type"] == "string"
    assert schema["properties"]["geometry"]["x-ogc-role"] == "primary-geometry"
    cgcs = http.get(f"/tiles/{raster_layer}/CGCS2000Quad/tilejson.json").json()
    assert cgcs["crs"].endswith("4490") and "not Web Mercator" in cgcs["description"]
    assert "crs" not in http.get(f"/tiles/{raster_layer}/WebMercatorQuad/tilejson.json").json()


# 9. WMTS as the OGC schema and OWSLib read it.
def _wmts_schema():
    from lxml import etree

    from tests.conftest import SCHEMAS

    return etree.XMLSchema(etree.parse(str(
        SCHEMAS / "ogc" / "wmts" / "1.0" / "wmtsGetCapabilities_response.xsd")))


def _ows_exception(r, status: int, code: str, locator: str) -> None:
    from lxml import etree

    from tests.conftest import SCHEMAS

    assert r.status_code == status, (r.status_code, r.text)
    doc = etree.fromstring(r.content)
    etree.XMLSchema(etree.parse(str(SCHEMAS / "ogc" / "ows" / "1.1.0" /
                                    "owsExceptionReport.xsd"))).assertValid(doc)
    exc = doc[0]
    assert exc.get("exceptionCode") == code and exc.get("locator") == locator, r.text


def test_wmts_capabilities_validate_and_kvp_is_strict(http, server, sample_layers,
                                                      raster_layer):
    from lxml import etree
    from owslib.wmts import WebMapTileService

    caps = http.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities"})
    _wmts_schema().assertValid(etree.fromstring(caps.content))
    kvp = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": raster_layer,
           "STYLE": "default", "TILEMATRIXSET": "WebMercatorQuad", "FORMAT": "image/png",
           "TILEMATRIX": "3", "TILEROW": "1", "TILECOL": "1"}
    _ows_exception(http.get("/wmts", params={**kvp, "STYLE": "fancy"}), 400,
                   "InvalidParameterValue", "style")
    _ows_exception(http.get("/wmts", params={**kvp, "VERSION": "9.9.9"}), 400,
                   "InvalidParameterValue", "version")
    _ows_exception(http.get("/wmts", params={**kvp, "REQUEST": "GetFeatureInfo"}), 501,
                   "OperationNotSupported", "request")
    _ows_exception(http.get("/wmts", params={**kvp, "LAYER": "nowhere"}), 400,
                   "InvalidParameterValue", "layer")
    _ows_exception(http.get("/wmts", params={**kvp, "TILEMATRIX": "99"}), 400,
                   "TileOutOfRange", "tilematrix")
    # A tile with nothing in it is a transparent image of the asked format, not a 204.
    empty = http.get("/wmts", params=kvp)
    assert empty.status_code == 200 and empty.headers["content-type"] == "image/png"
    assert empty.content.startswith(b"\x89PNG")
    # OWSLib reads the service and fetches that tile.
    wmts = WebMapTileService(f"{server}/wmts")
    assert raster_layer in wmts.contents
    tile = wmts.gettile(layer=raster_layer, tilematrixset="WebMercatorQuad", tilematrix="3",
                        row=1, column=1, format="image/png")
    assert tile.read().startswith(b"\x89PNG")


# 11. Tile matrix sets in the 2.0 encoding, and in 1.0 on request, which GDAL reads.
def test_tile_matrix_sets_in_both_encodings(http, raster_layer, tmp_path):
    import morecantile

    v2 = morecantile.TileMatrixSet.model_validate(http.get("/tileMatrixSets/CGCS2000Quad").json())
    assert v2.matrix(0).matrixWidth == 2
    tileset = http.get(f"/collections/{raster_layer}/tiles/WebMercatorQuad").json()
    v1_url = tileset["tileMatrixSetDefinition"]
    assert v1_url.endswith("/tileMatrixSets/WebMercatorQuad?encoding=1.0")
    v1 = http.get(v1_url).json()
    assert v1["type"] == "TileMatrixSetType" and "tileMatrices" not in v1
    assert v1["supportedCRS"].endswith("3857") and len(v1["tileMatrix"]) > 20
    assert http.get("/tileMatrixSets/WebMercatorQuad", params={"encoding": "3"}
                    ).status_code == 400
    # GDAL's own reader of tile matrix sets (the one its OGCAPI driver uses) takes the 1.0
    # document as served, and tiles a COG on it: the same tiles as the service's.
    path = tmp_path / "tms.json"
    path.write_text(json.dumps(v1))
    out = tmp_path / "dem.tif"
    run = subprocess.run(["gdal_translate", "-q", "-of", "COG", "-co", f"TILING_SCHEME={path}",
                          "-co", "ZOOM_LEVEL=13", str(SAMPLES / "olinda-dem.tif"), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    import rasterio

    with rasterio.open(out) as ds:
        origin = morecantile.tms.get("WebMercatorQuad").matrix(13)
        res = origin.cellSize
        assert abs(ds.transform.a - res) < 1e-6
        # Its corner falls on the grid's tile edges.
        assert abs(((ds.transform.c - origin.pointOfOrigin[0]) / (256 * res)) % 1) < 1e-6


def test_rasters_are_served_in_world_crs84_quad_too(http, raster_layer):
    import morecantile
    import numpy as np
    from rasterio.io import MemoryFile

    t = morecantile.tms.get("WorldCRS84Quad").tile(-34.87, -7.99, 12)
    r = http.get(f"/tiles/{raster_layer}/WorldCRS84Quad/{t.z}/{t.x}/{t.y}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with MemoryFile(r.content) as f, f.open() as img:
        assert img.read(img.count).any() and np.asarray(img.read(img.count)).max() == 255
    caps = http.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities"}).text
    assert "urn:ogc:def:crs:OGC:1.3:CRS84" in caps


# 4, 9 through QGIS: every collection opens valid, and the WMTS draws.
def test_qgis_opens_the_features_and_draws_the_wmts(server, sample_layers, raster_layer,
                                                   tmp_path):
    import shutil

    if shutil.which("qgis_process") is None and not os.path.exists(
            "/usr/lib/python3/dist-packages/qgis"):
        pytest.fail("make test installs QGIS (python3-qgis) from the system's packages")
    png = tmp_path / "wmts.png"
    run = subprocess.run(["/usr/bin/python3", str(ROOT / "tests" / "qgis_client.py"), server,
                          "lamps", raster_layer, str(png)], capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["oapif:lamps"]["valid"] and got["oapif:lamps"]["count"] == 586, got
    assert got[f"oapif:{raster_layer}"]["valid"], got  # its scenes, not an invalid layer
    assert got["wmts"]["valid"], got
    import rasterio

    with rasterio.open(png) as img:
        pixels = img.read()
    assert pixels.std() > 5, "QGIS drew nothing"  # the DEM in shades, not a blank

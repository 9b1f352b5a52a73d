"""Vector tiles over real HTTP: decoded and checked against the database."""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime

import geopandas as gpd
import mapbox_vector_tile
import morecantile
import psycopg
import pytest
from shapely.geometry import Point

from ingest.vector import ingest_vector

TMS = morecantile.tms.get("WebMercatorQuad")
HELSINKI = (24.944, 60.170)


def decode(data: bytes) -> dict:
    return mapbox_vector_tile.decode(data)


def tile_at(z: int, lonlat=HELSINKI) -> morecantile.Tile:
    return TMS.tile(*lonlat, z)


def to_lonlat(t: morecantile.Tile, px: float, py: float, extent: int = 4096):
    b = TMS.xy_bounds(t)
    x = b.left + px / extent * (b.right - b.left)
    y = b.bottom + py / extent * (b.top - b.bottom)  # decode() puts the origin bottom-left
    return TMS.lnglat(x, y)


def features_header(resp) -> dict[str, dict[str, str]]:
    out = {}
    for part in resp.headers["OneMap-Tile-Features"].split(", "):
        name, *kv = part.split(";")
        out[name] = dict(item.split("=") for item in kv)
    return out


def test_tile_matches_database(http, db, sample_layers):
    t = tile_at(16)
    resp = http.get(f"/tiles/lamps/{t.z}/{t.x}/{t.y}.mvt")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    layer = decode(resp.content)["lamps"]
    rows = db.execute(
        "SELECT _fid, osm_id, highway, other_tags, ST_X(geom), ST_Y(geom)"
        " FROM onemap_data.lamps WHERE _valid_to IS NULL"
        # Features in the tile's 64-unit buffer belong to it too, so edge symbols are whole.
        " AND ST_Intersects(_geom_3857, ST_TileEnvelope(%s, %s, %s, margin => 64.0 / 4096))",
        (t.z, t.x, t.y)).fetchall()
    assert len(rows) > 10
    expected = {r[0]: r for r in rows}
    got = {f["properties"]["_id"]: f for f in layer["features"]}
    assert set(got) == set(expected)
    for fid, f in got.items():
        _, osm_id, highway, other_tags, lon, lat = expected[fid]
        assert f["properties"]["osm_id"] == osm_id
        assert f["properties"]["highway"] == highway == "street_lamp"
        assert f["properties"].get("other_tags") == other_tags
        assert "_count" not in f["properties"]  # full detail at z16
        px, py = f["geometry"]["coordinates"]
        glon, glat = to_lonlat(t, px, py)
        # Positions are quantized to 1/4096 of the tile: allow one and a half units.
        assert glon == pytest.approx(lon, abs=360 / 2**16 / 4096 * 1.5)
        assert glat == pytest.approx(lat, abs=360 / 2**16 / 4096 * 1.5)
    assert features_header(resp)["lamps"] == {
        "covered": str(len(rows)), "kept": str(len(rows)), "method": "none"}


def test_several_layers_in_one_tile(http, sample_layers):
    t = tile_at(15)
    resp = http.get(f"/tiles/roads,buildings,lamps/{t.z}/{t.x}/{t.y}.mvt")
    assert resp.status_code == 200
    layers = decode(resp.content)
    assert set(layers) == {"roads", "buildings", "lamps"}
    assert {f["geometry"]["type"] for f in layers["roads"]["features"]} <= {
        "LineString", "MultiLineString"}
    assert {f["geometry"]["type"] for f in layers["buildings"]["features"]} <= {
        "Polygon", "MultiPolygon"}
    assert set(features_header(resp)) == {"roads", "buildings", "lamps"}


def whole_layer_tile(db, layer: str, z: int) -> morecantile.Tile:
    """The tile holding all of a layer at zoom z (the Helsinki sample is 1.5 km across)."""
    west, south, east, north = db.execute(
        "SELECT extent FROM onemap.layers WHERE id = %s", (layer,)).fetchone()[0]
    t = TMS.tile(west, north, z)
    assert t == TMS.tile(east, south, z), "the layer straddles a tile edge at this zoom"
    return t


def weights(feats: list[dict]) -> list[int]:
    return [f["properties"].get("_count", 1) for f in feats]


@pytest.mark.parametrize("as_of", [False, True])
def test_low_zoom_points_are_gathered_not_cut(http, db, sample_layers, as_of):
    t = whole_layer_tile(db, "lamps", 12)
    query = {"as-of": datetime.now(UTC).isoformat()} if as_of else {}
    resp = http.get(f"/tiles/lamps/{t.z}/{t.x}/{t.y}.mvt", params=query)
    feats = decode(resp.content)["lamps"]["features"]
    report = features_header(resp)["lamps"]
    total = db.execute("SELECT count(*) FROM onemap_data.lamps WHERE _valid_to IS NULL"
                       ).fetchone()[0]
    assert report["method"] == ("cells" if as_of else "overview")
    assert sum(weights(feats)) == int(report["covered"]) == total == 586
    assert len(feats) == int(report["kept"]) < total
    cells = [f for f in feats if "_count" in f["properties"]]
    singles = [f for f in feats if "_count" not in f["properties"]]
    assert cells and singles
    # A cell of several has only its count; a cell of one is that lamp, attributes and all.
    assert all(set(f["properties"]) == {"_count"} for f in cells)
    ids = {f["properties"]["_id"] for f in singles}
    known = {r[0] for r in db.execute("SELECT _fid FROM onemap_data.lamps"
                                      " WHERE highway = 'street_lamp'")}
    assert ids <= known and all(f["properties"]["highway"] == "street_lamp" for f in singles)


@pytest.mark.parametrize("layer", ["lamps", "roads", "buildings"])
def test_overview_and_on_the_fly_cells_agree(http, db, sample_layers, layer):
    """Tiles of the past make on the fly the very cells the overview holds for the present."""
    t = whole_layer_tile(db, layer, 11)
    url = f"/tiles/{layer}/{t.z}/{t.x}/{t.y}.mvt"
    now = decode(http.get(url).content)[layer]["features"]
    past = decode(http.get(url, params={"as-of": datetime.now(UTC).isoformat()}).content)

    def signature(feats):
        return sorted((f["geometry"]["type"], f["properties"].get("_count", 1),
                       f["properties"].get("_id")) for f in feats)

    assert signature(now) == signature(past[layer]["features"])


def test_low_zoom_shapes_keep_the_big_and_gather_the_small(http, db, sample_layers):
    t = whole_layer_tile(db, "buildings", 12)
    resp = http.get(f"/tiles/buildings/{t.z}/{t.x}/{t.y}.mvt")
    report = features_header(resp)["buildings"]
    feats = decode(resp.content)["buildings"]["features"]
    total = db.execute("SELECT count(*) FROM onemap_data.buildings WHERE _valid_to IS NULL"
                       ).fetchone()[0]
    assert report["method"] == "overview"
    assert sum(weights(feats)) == int(report["covered"]) == total
    kinds = {f["geometry"]["type"] for f in feats}
    assert "Point" in kinds and kinds & {"Polygon", "MultiPolygon"}
    # A building big enough to see stays a polygon with its attributes.
    shapes = [f for f in feats if f["geometry"]["type"] != "Point"]
    assert all("_count" not in f["properties"] and f["properties"]["_id"] for f in shapes)


def test_tilejson_and_style(http, db, sample_layers):
    tj = http.get("/tiles/roads,lamps/tilejson.json").json()
    assert tj["tilejson"] == "3.0.0"
    assert [v["id"] for v in tj["vector_layers"]] == ["roads", "lamps"]
    assert tj["vector_layers"][0]["fields"]["z_order"] == "Number"
    assert tj["vector_layers"][0]["fields"]["highway"] == "String"
    assert tj["attribution"] == "© OpenStreetMap contributors, ODbL"
    url = tj["tiles"][0]
    assert url.startswith(str(http.base_url).rstrip("/") + "/tiles/roads,lamps/{z}/{x}/{y}.mvt?v=")
    west, south, east, north = tj["bounds"]
    ext = db.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
                     " (SELECT ST_Extent(geom) e FROM (SELECT geom FROM onemap_data.roads"
                     "  WHERE _valid_to IS NULL UNION ALL SELECT geom FROM onemap_data.lamps"
                     "  WHERE _valid_to IS NULL) u) s").fetchone()
    assert (west, south, east, north) == pytest.approx(ext)
    # The pinned URL from TileJSON may be cached for long: it names the data version.
    t = tile_at(14)
    pinned = http.get(url.replace("{z}/{x}/{y}", f"{t.z}/{t.x}/{t.y}"))
    assert "immutable" in pinned.headers["cache-control"]

    style = http.get("/styles/roads,buildings,lamps/style.json").json()
    assert style["version"] == 8
    assert http.get(style["sources"]["onemap"]["url"]).json()["tilejson"] == "3.0.0"
    source_layers = {ly.get("source-layer") for ly in style["layers"]}
    assert source_layers == {None, "roads", "buildings", "lamps"}
    kinds = {ly["id"]: ly["type"] for ly in style["layers"]}
    assert kinds["lamps"] == "circle" and kinds["roads"] == "line"
    # Low zooms gather small roads and buildings into points: those are drawn too.
    assert kinds["roads-small"] == kinds["buildings-small"] == "circle"


def test_etag_304_and_no_stale_tile_after_ingest(http, tmp_path, settings):
    def write(status: str) -> None:
        gpd.GeoDataFrame({"code": ["p1", "p2"], "status": [status, "ok"]},
                         geometry=[Point(*HELSINKI), Point(24.99, 60.19)],  # 3 km apart
                         crs=4326).to_file(tmp_path / "pts.geojson")

    write("ok")
    ingest_vector(tmp_path / "pts.geojson", "etag_pts", key="code", settings=settings)
    t = tile_at(15)
    url = f"/tiles/etag_pts/{t.z}/{t.x}/{t.y}.mvt"
    first = http.get(url)
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag
    assert first.headers["cache-control"] == "public, no-cache"
    again = http.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag

    low = tile_at(9)
    low_url = f"/tiles/etag_pts/{low.z}/{low.x}/{low.y}.mvt"
    assert {f["properties"].get("status") for f in
            decode(http.get(low_url).content)["etag_pts"]["features"]} == {"ok"}
    cached = http.get(low_url)
    assert cached.headers["onemap-cache"] == "hit"
    assert "onemap-cache" not in first.headers  # full-detail tiles are not cached

    write("broken")  # one attribute changes
    ingest_vector(tmp_path / "pts.geojson", "etag_pts", key="code", settings=settings)
    # Low zooms read the overview, rebuilt in the same transaction; the cached tile of the
    # old version is not served.
    fresh = http.get(low_url)
    assert fresh.headers["onemap-cache"] == "miss"
    assert {f["properties"].get("status") for f in
            decode(fresh.content)["etag_pts"]["features"]} == {"ok", "broken"}
    after = http.get(url, headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.headers["etag"] != etag
    statuses = {f["properties"]["_id"]: f["properties"]["status"]
                for f in decode(after.content)["etag_pts"]["features"]}
    assert statuses == {"p1": "broken"}  # p2 lies outside this tile

    # The same data again is no change: the ETag stays valid.
    ingest_vector(tmp_path / "pts.geojson", "etag_pts", key="code", settings=settings)
    assert http.get(url, headers={"If-None-Match": after.headers["etag"]}).status_code == 304


def test_as_of_tile_shows_the_past(http, tmp_path, settings):
    path = tmp_path / "asof.geojson"
    gpd.GeoDataFrame({"code": ["x"], "v": [1]}, geometry=[Point(*HELSINKI)],
                     crs=4326).to_file(path)
    ingest_vector(path, "asof_pts", key="code", settings=settings)
    time.sleep(0.05)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    gpd.GeoDataFrame({"code": ["x"], "v": [2]}, geometry=[Point(*HELSINKI)],
                     crs=4326).to_file(path)
    ingest_vector(path, "asof_pts", key="code", settings=settings)
    t = tile_at(16)
    url = f"/tiles/asof_pts/{t.z}/{t.x}/{t.y}.mvt"
    now_v = decode(http.get(url).content)["asof_pts"]["features"][0]["properties"]["v"]
    past = http.get(url, params={"as-of": between})
    then_v = decode(past.content)["asof_pts"]["features"][0]["properties"]["v"]
    assert (now_v, then_v) == (2, 1)
    assert http.get(url, params={"as-of": "yesterday"}).status_code == 400


def test_gzip_and_cors(http, sample_layers):
    t = tile_at(14)
    url = f"/tiles/roads/{t.z}/{t.x}/{t.y}.mvt"
    plain = http.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    raw = http.build_request("GET", url, headers={"Accept-Encoding": "gzip",
                                                  "Origin": "https://app.example.gov"})
    resp = http.send(raw, stream=True)
    body = b"".join(resp.iter_raw())
    assert resp.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == plain.content
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "ETag" in resp.headers["access-control-expose-headers"]


@pytest.mark.parametrize("path, status, detail", [
    ("/tiles/nosuchlayer/1/0/0.mvt", 404, "no layer set 'nosuchlayer'"),
    ("/tiles/lamps,nosuch/1/0/0.mvt", 404, "no layer set 'lamps,nosuch'"),
    ("/tiles/lamps/x/0/0.mvt", 400, "not three integers"),
    ("/tiles/lamps/3/8/0.mvt", 400, "x runs 0..7"),
    ("/tiles/lamps/3/0/-1.mvt", 400, "y runs 0..7"),
    ("/tiles/lamps/25/0/0.mvt", 400, "zoom 25 is outside"),
    ("/tiles/lamps/1/0/0.png", 404, "no tile format"),
    ("/tiles/Lamps';--/1/0/0.mvt", 404, "no layer set"),
    ("/tiles/nosuch/tilejson.json", 404, "no layer set"),
    ("/styles/nosuch/style.json", 404, "no layer set"),
    ("/layers/nosuch", 404, "no layer 'nosuch'"),
])
def test_errors_are_problem_json(http, sample_layers, path, status, detail):
    resp = http.get(path)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status and detail in body["detail"]


def test_server_error_leaks_no_trace(http, tmp_path, settings):
    gpd.GeoDataFrame({"code": ["a"]}, geometry=[Point(*HELSINKI)], crs=4326).to_file(
        tmp_path / "doomed.geojson")
    ingest_vector(tmp_path / "doomed.geojson", "doomed", key="code", settings=settings)
    t = tile_at(16)  # full detail: never served from the tile cache
    assert http.get(f"/tiles/doomed/{t.z}/{t.x}/{t.y}.mvt").status_code == 200
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE onemap_data.doomed")  # the data vanishes behind the catalog
    resp = http.get(f"/tiles/doomed/{t.z}/{t.x}/{t.y}.mvt")
    assert resp.status_code == 500
    assert resp.json() == {"type": "about:blank", "title": "Internal Server Error",
                           "status": 500, "detail": "the error was logged"}
    assert "Traceback" not in resp.text and "doomed" not in resp.text
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        # The broken layer goes, so that no later test reads a catalog with it.
        conn.execute("DELETE FROM onemap.layers WHERE id = 'doomed'")


def test_catalog_health_and_viewer(http, sample_layers):
    health = http.get("/healthz").json()
    assert health["status"] == "ok" and health["audit"]["ok"] and health["audit"]["dropped"] == 0
    layers = {ly["id"]: ly for ly in http.get("/layers").json()["layers"]}
    assert {"districts", "lamps", "roads", "buildings"} <= set(layers)
    districts = http.get("/layers/districts").json()
    assert districts["crs"] == "EPSG:4490" and districts["key"] == "gb"
    assert [f["name"] for f in districts["fields"]] == ["name", "gb"]
    # The same links as the collection and the catalog record give, from one builder.
    assert {ln["rel"] for ln in districts["links"]} == {
        "items", "http://www.opengis.net/def/rel/ogc/1.0/queryables", "describedby",
        "tilejson", "stylesheet", "related",
        "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
        "http://www.opengis.net/def/rel/ogc/1.0/tilesets-map"}
    page = http.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "/static/vendor/maplibre-gl.js" in page.text
    assert "https://" not in page.text  # nothing from a CDN
    js = http.get("/static/vendor/maplibre-gl.js")
    assert js.status_code == 200 and len(js.content) > 500_000
    assert http.get("/static/viewer.js").status_code == 200


def test_tile_after_schema_change_has_the_new_field(http, tmp_path, settings):
    path = tmp_path / "evolve.geojson"
    gpd.GeoDataFrame({"code": ["a"]}, geometry=[Point(*HELSINKI)], crs=4326).to_file(path)
    ingest_vector(path, "evolving", key="code", settings=settings)
    t = tile_at(16)
    url = f"/tiles/evolving/{t.z}/{t.x}/{t.y}.mvt"
    assert decode(http.get(url).content)["evolving"]["features"][0]["properties"] == {
        "_id": "a", "code": "a"}
    gpd.GeoDataFrame({"code": ["a"], "owner": ["Transport"]}, geometry=[Point(*HELSINKI)],
                     crs=4326).to_file(path)
    ingest_vector(path, "evolving", key="code", settings=settings)
    props = decode(http.get(url).content)["evolving"]["features"][0]["properties"]
    assert props == {"_id": "a", "code": "a", "owner": "Transport"}


def test_missing_overview_is_built_at_start(tmp_path, settings, db):
    from layers.db import prepare

    gpd.GeoDataFrame({"code": ["a", "b"]}, geometry=[Point(*HELSINKI), Point(24.99, 60.19)],
                     crs=4326).to_file(tmp_path / "old.geojson")
    ingest_vector(tmp_path / "old.geojson", "old_layer", key="code", settings=settings)
    db.execute("DROP TABLE onemap_overview.old_layer")  # as if loaded by an older OneMap
    prepare(settings)
    cells = db.execute("SELECT sum(n) FROM onemap_overview.old_layer WHERE z = 5").fetchone()
    assert cells[0] == 2


def test_dense_layer_gets_a_higher_detail_zoom(http, tmp_path, settings, db):
    """A layer denser at the detail zoom than ONEMAP_MAX_DETAIL_FEATURES in one tile is
    drawn from its overview there, as cells with counts, and in full from the zoom where its
    densest tile is within the bound; a sparser version of it goes back to the default."""
    import dataclasses
    import random

    bound = dataclasses.replace(settings, max_detail_features=100)
    rng = random.Random(7)
    # 400 points within ~400 m: one z14 tile (~1.5 km) holds them all; z16 tiles hold <100.
    dense = [Point(HELSINKI[0] + rng.uniform(-0.003, 0.003),
                   HELSINKI[1] + rng.uniform(-0.0015, 0.0015)) for _ in range(400)]
    path = tmp_path / "dense.geojson"
    gpd.GeoDataFrame({"code": [f"d{i}" for i in range(400)], "n": list(range(400))},
                     geometry=dense, crs=4326).to_file(path)
    ingest_vector(path, "dense_pts", key="code", settings=bound)
    zoom = db.execute("SELECT detail_zoom FROM onemap.layers WHERE id = 'dense_pts'"
                      ).fetchone()[0]
    assert zoom > settings.detail_zoom
    t = tile_at(14)
    r = http.get(f"/tiles/dense_pts/{t.z}/{t.x}/{t.y}.mvt")
    head = features_header(r)["dense_pts"]
    assert head["method"] == "overview" and int(head["covered"]) == 400
    feats = decode(r.content)["dense_pts"]["features"]
    assert sum(weights(feats)) == 400 and len(feats) < 400
    # At the detail zoom every tile is whole, and none holds more than the bound.
    for tt in TMS.tiles(*gpd.GeoSeries(dense).total_bounds, zooms=[zoom]):
        r = http.get(f"/tiles/dense_pts/{tt.z}/{tt.x}/{tt.y}.mvt")
        head = features_header(r)["dense_pts"]
        assert head["method"] == "none" and int(head["kept"]) <= 100
    # A sparse version: back to the default detail zoom, and the running server knows.
    gpd.GeoDataFrame({"code": ["d0", "d1"], "n": [0, 1]}, geometry=dense[:2],
                     crs=4326).to_file(path)
    ingest_vector(path, "dense_pts", key="code", settings=bound)
    assert db.execute("SELECT detail_zoom FROM onemap.layers WHERE id = 'dense_pts'"
                      ).fetchone()[0] == settings.detail_zoom
    r = http.get(f"/tiles/dense_pts/{t.z}/{t.x}/{t.y}.mvt")
    assert features_header(r)["dense_pts"]["method"] == "none"
    assert {f["properties"]["_id"] for f in decode(r.content)["dense_pts"]["features"]} == {
        "d0", "d1"}

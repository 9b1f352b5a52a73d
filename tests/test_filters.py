"""CQL2 filters (text and JSON) over real HTTP, with answers worked out by hand."""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd
import pytest
from owslib.ogcapi.features import Features
from shapely.geometry import Point

from ingest.vector import ingest_vector

# code: (lon, lat, name, lanes, width, lit, surveyed)
ROWS = {
    "a": (116.30, 39.90, "Kaiyuan", 2, 7.5, True, "2024-01-10T00:00:00Z"),
    "b": (116.35, 39.92, "Kaixuan", 4, 12.0, False, "2024-05-01T00:00:00Z"),
    "c": (116.40, 39.95, None, 6, 20.0, True, "2024-09-15T00:00:00Z"),
    "d": (116.45, 39.97, "Beihai", 1, 3.5, False, "2025-02-01T00:00:00Z"),
    "e": (116.50, 40.00, "O'Brien", 3, 9.0, True, "2025-06-30T00:00:00Z"),
}


@pytest.fixture(scope="module")
def roads(settings, tmp_path_factory):
    path = tmp_path_factory.mktemp("filters") / "roads.gpkg"
    gpd.GeoDataFrame(
        {"code": list(ROWS), "name": [r[2] for r in ROWS.values()],
         "lanes": [r[3] for r in ROWS.values()], "width": [r[4] for r in ROWS.values()],
         "lit": [r[5] for r in ROWS.values()],
         "surveyed": pd.to_datetime([r[6] for r in ROWS.values()])},
        geometry=[Point(r[0], r[1]) for r in ROWS.values()], crs=4326).to_file(path)
    ingest_vector(path, "cql_roads", key="code", produced_field="surveyed", settings=settings)
    return "cql_roads"


def ids(http, roads, flt: str, lang: str | None = None, **extra) -> list[str]:
    params = {"filter": flt, **extra}
    if lang:
        params["filter-lang"] = lang
    resp = http.get(f"/collections/{roads}/items", params=params)
    assert resp.status_code == 200, resp.text
    return [f["id"] for f in resp.json()["features"]]


@pytest.mark.parametrize("flt, expected", [
    ("lanes > 2", "bce"),
    ("3 < lanes", "bc"),
    ("lanes >= 2 AND width < 10", "ae"),
    ("lanes = 1 OR lit = true", "acde"),
    ("NOT (lanes = 2)", "bcde"),
    ("lanes <> 2", "bcde"),
    ("name = 'Kaiyuan'", "a"),
    ("name = 'O''Brien'", "e"),
    ("name LIKE 'Kai%'", "ab"),
    ("lanes IN (2, 4)", "ab"),
    ("name IN ('Beihai', 'Nowhere')", "d"),
    ("lanes BETWEEN 2 AND 4", "abe"),
    ("name IS NULL", "c"),
    ("NOT (name IS NULL)", "abde"),
    ("width = 12", "b"),
    ("S_INTERSECTS(geometry, POLYGON((116.32 39.91, 116.42 39.91, 116.42 39.96,"
     " 116.32 39.96, 116.32 39.91)))", "bc"),
    ("S_WITHIN(geometry, BBOX(116.29, 39.89, 116.36, 39.93))", "ab"),
    ("S_DISJOINT(geometry, BBOX(116.29, 39.89, 116.36, 39.93))", "cde"),
    ("S_INTERSECTS(geometry, POINT(116.45 39.97))", "d"),
    ("T_AFTER(surveyed, TIMESTAMP('2024-06-01T00:00:00Z'))", "cde"),
    # System names start with _, which CQL2 text takes in double quotes.
    ("""T_BEFORE("_produced_at", TIMESTAMP('2024-06-01T00:00:00Z'))""", "ab"),
    ("T_INTERSECTS(surveyed, INTERVAL('2024-04-01T00:00:00Z', '2025-03-01T00:00:00Z'))",
     "bcd"),
    ("T_INTERSECTS(surveyed, INTERVAL('..', '2024-05-01T00:00:00Z'))", "ab"),
    ("T_DURING(surveyed, INTERVAL('2024-05-01T00:00:00Z', '..'))", "cde"),
    ("T_DISJOINT(surveyed, INTERVAL('2024-04-01T00:00:00Z', '2025-03-01T00:00:00Z'))", "ae"),
    ("T_EQUALS(surveyed, TIMESTAMP('2024-09-15T00:00:00Z'))", "c"),
])
def test_cql2_text(http, roads, flt, expected):
    assert ids(http, roads, flt) == list(expected)


def test_cql2_json_and_other_parameters(http, roads):
    tree = {"op": "and", "args": [
        {"op": ">=", "args": [{"property": "lanes"}, 2]},
        {"op": "s_intersects", "args": [{"property": "geometry"},
                                        {"bbox": [116.0, 39.0, 116.42, 41.0]}]}]}
    assert ids(http, roads, json.dumps(tree), "cql2-json") == ["a", "b", "c"]
    # A filter narrows whatever bbox and datetime already narrowed.
    assert ids(http, roads, "lanes >= 2", bbox="116.33,39.0,117,41",
               datetime="../2025-01-01T00:00:00Z") == ["b", "c"]


@pytest.mark.parametrize("flt, lang, detail", [
    ("lanes >", None, "not valid cql2-text"),
    ("{not json", "cql2-json", "not valid cql2-json"),
    ("height > 3", None, "unknown property 'height'"),
    ('"_rid" > 3', None, "unknown property '_rid'"),
    ("lanes = 'many'", None, "is not a value of 'lanes' (integer)"),
    ("lanes = 2.5", None, "is not a value of 'lanes' (integer)"),
    ("name = 3", None, "is not a value of 'name' (string)"),
    ("lanes LIKE 'x%'", None, "LIKE compares a string property"),
    ("T_AFTER(name, TIMESTAMP('2024-01-01T00:00:00Z'))", None, "needs a date or time"),
    ("S_INTERSECTS(name, POINT(1 1))", None, "needs the geometry property"),
    ("lanes > 1", "ecql", "filter-lang 'ecql' is not supported"),
])
def test_bad_filters_are_400(http, roads, flt, lang, detail):
    params = {"filter": flt}
    if lang:
        params["filter-lang"] = lang
    resp = http.get(f"/collections/{roads}/items", params=params)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert detail in resp.json()["detail"] and "Traceback" not in resp.text


def test_an_unknown_filter_crs_is_refused(http, roads):
    resp = http.get(f"/collections/{roads}/items", params={
        "filter": "lanes > 1", "filter-crs": "http://www.opengis.net/def/crs/EPSG/0/2056"})
    assert resp.status_code == 400 and "filter-crs" in resp.json()["detail"]


def test_injection_through_filter_values_stays_a_value(http, db, roads):
    for flt in ("name = 'x''; DROP TABLE onemap.layers; --'",
                "name LIKE '%'' OR ''1''=''1'",
                "name IN ('a'')) OR TRUE --', 'b')"):
        assert ids(http, roads, flt) == []
    assert db.execute("SELECT count(*) FROM onemap.layers").fetchone()[0] > 0


def test_queryables_come_from_the_dictionary(http, roads):
    doc = http.get(f"/collections/{roads}/queryables")
    assert doc.headers["content-type"] == "application/schema+json"
    props = doc.json()["properties"]
    assert props["lanes"]["type"] == "integer" and props["width"]["type"] == "number"
    assert props["lit"]["type"] == "boolean" and props["name"]["type"] == "string"
    assert props["surveyed"]["format"] == "date-time"
    assert props["_produced_at"]["format"] == "date-time"
    assert props["geometry"] == {"title": "geometry", "format": "geometry-any"}
    assert doc.json()["additionalProperties"] is False


def test_owslib_queryables_and_filtered_items(server, roads):
    api = Features(server)
    assert "lanes" in api.collection_queryables(roads)["properties"]
    page = api.collection_items(roads, filter="lanes BETWEEN 2 AND 4")
    assert sorted(f["id"] for f in page["features"]) == ["a", "b", "e"]

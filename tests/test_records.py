"""The searchable catalog (OGC API – Records): every layer a record, found by what it is."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import Point

from ingest.errors import IngestError
from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from tests.conftest import ensure_departments


@pytest.fixture(scope="module")
def catalog(settings, sample_layers, tmp_path_factory):
    ensure_departments(settings, {"housing": "Housing", "traffic-police": "Traffic Police",
                                  "environment": "Environment"})
    folder = tmp_path_factory.mktemp("records")
    for layer_id, title, dept, keywords, where in [
        ("rec_housing", "Public housing estates", "Housing", ["housing", "estates"],
         (116.40, 39.90)),
        ("rec_cameras", "Traffic cameras", "Traffic Police", ["traffic", "camera"],
         (116.30, 39.95)),
        ("rec_noise", "Noise monitors 100%", "Environment", ["environment", "noise"],
         (121.47, 31.23)),  # in Shanghai: outside a Beijing bbox
    ]:
        path = folder / f"{layer_id}.geojson"
        gpd.GeoDataFrame({"code": ["x"]}, geometry=[Point(*where)], crs=4326).to_file(path)
        ingest_vector(path, layer_id, key="code", settings=settings,
                      meta=LayerMeta(title=title, department=dept, keywords=keywords,
                                     description=f"{title}, kept by {dept}."))
    return "/collections/catalog/items"


def found(http, url, **params) -> set[str]:
    resp = http.get(url, params={"limit": 100, **params})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["numberMatched"] == len(doc["features"])
    return {f["id"] for f in doc["features"] if f["id"].startswith("rec_")}


def test_catalog_is_a_collection_of_records(http, catalog):
    listed = {c["id"]: c for c in http.get("/collections").json()["collections"]}
    assert listed["catalog"]["itemType"] == "record"
    assert http.get("/collections/catalog").json()["itemType"] == "record"
    assert found(http, catalog) == {"rec_housing", "rec_cameras", "rec_noise"}


@pytest.mark.parametrize("params, expected", [
    ({"q": "camera"}, {"rec_cameras"}),
    ({"q": "HOUSING"}, {"rec_housing"}),  # any case
    ({"q": "estates,noise"}, {"rec_housing", "rec_noise"}),  # any of the terms
    ({"q": "100%"}, {"rec_noise"}),  # % is a character, not a wildcard
    ({"q": "Publi_"}, set()),  # _ is a character too: it would match "Public"
    ({"keywords": "traffic"}, {"rec_cameras"}),
    ({"keywords": "noise,housing"}, {"rec_housing", "rec_noise"}),
    ({"department": "Environment"}, {"rec_noise"}),
    ({"bbox": "116,39.5,117,40.5"}, {"rec_housing", "rec_cameras"}),
    ({"type": "vector", "q": "Traffic"}, {"rec_cameras"}),
    ({"type": "raster"}, set()),
    ({"datetime": "2000-01-01T00:00:00Z/.."}, {"rec_housing", "rec_cameras", "rec_noise"}),
    ({"datetime": "../2000-01-01T00:00:00Z"}, set()),
])
def test_search(http, catalog, params, expected):
    assert found(http, catalog, **params) == expected


def test_a_record_carries_the_dictionary_and_every_way_to_the_data(http, db, catalog):
    rec = http.get("/collections/catalog/items/rec_cameras").json()
    props = rec["properties"]
    # Its own keywords first, then what any layer is found by.
    assert props["title"] == "Traffic cameras" and props["keywords"][:2] == ["traffic", "camera"]
    assert "vector" in props["keywords"]
    assert props["contacts"] == [{"organization": "Traffic Police", "roles": ["owner"]}]
    assert props["onemap:featureCount"] == 1 and props["onemap:sharingType"] == "unconditional"
    assert props["onemap:updateCycle"] == "irregular"
    assert [f["name"] for f in props["onemap:dataDictionary"]] == ["code"]
    assert rec["geometry"]["type"] == "Polygon"
    rels = {ln["rel"]: ln["href"] for ln in rec["links"]}
    for rel in ("items", "tilejson", "stylesheet", "describedby"):
        assert http.get(rels[rel]).status_code == 200, rel
    assert http.get("/collections/catalog/items/nosuch").status_code == 404


def test_bad_catalog_queries(http, catalog):
    for params, detail in [({"type": "video"}, "is not dataset"), ({"limit": "0"}, "at least 1"),
                           ({"bbox": "1,2"}, "needs 4"), ({"datetime": "never"}, "RFC 3339")]:
        resp = http.get(catalog, params=params)
        assert resp.status_code == 400 and detail in resp.json()["detail"]


def test_catalog_is_a_reserved_layer_id(tmp_path, settings):
    path = tmp_path / "c.geojson"
    gpd.GeoDataFrame({"code": ["x"]}, geometry=[Point(1, 1)], crs=4326).to_file(path)
    with pytest.raises(IngestError, match="reserved"):
        ingest_vector(path, "catalog", settings=settings)

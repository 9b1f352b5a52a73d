"""OGC API – Features Part 4 over HTTP: edits with history, validation, locking and rights."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import mercantile
import psycopg
import pytest

from ingest.vector import ingest_vector
from layers import overviews
from layers.meta import LayerMeta
from tests.conftest import department_keys

BASE = [116.40, 39.90]


def _feature(code: str, x: float, y: float, **props) -> dict:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
            "properties": {"code": code, "kind": "pothole", "lanes": 2, **props}}


@pytest.fixture(scope="module")
def keys(settings, server, tmp_path_factory) -> dict[str, str]:
    src = tmp_path_factory.mktemp("edits") / "works.geojson"
    feats = [_feature(f"W{i}", BASE[0] + 0.002 * i, BASE[1] + 0.001 * i) for i in range(20)]
    src.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    keys = department_keys(settings, {"publisher": "transport", "reader": "water"})
    ingest_vector(src, "works", key="code", settings=settings,
                  meta=LayerMeta(department="transport"))
    ingest_vector(src, "basemap_pois", key="code", settings=settings,
                  meta=LayerMeta(department="transport", role="base"))
    return keys


def auth(keys: dict[str, str], who: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[who]}", **extra}


def covered(http, keys, z: int) -> int:
    t = mercantile.tile(BASE[0], BASE[1], z)
    r = http.get(f"/tiles/works/{t.z}/{t.x}/{t.y}.mvt", headers=auth(keys, "publisher"))
    return int(r.headers["OneMap-Tile-Features"].split("covered=")[1].split(";")[0])


def test_create_replace_update_delete_with_history(http, keys):
    before = covered(http, keys, 10)
    r = http.post("/collections/works/items", headers=auth(keys, "publisher"),
                  json=_feature("N1", 116.41, 39.91, lanes=4))
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith("/collections/works/items/N1")
    created = r.headers["ETag"]
    item = http.get("/collections/works/items/N1", headers=auth(keys, "publisher"))
    assert item.headers["ETag"] == created and item.json()["properties"]["lanes"] == 4
    assert covered(http, keys, 10) == before + 1
    t_created = datetime.now(UTC).isoformat()
    time.sleep(0.05)

    # Replace, holding the current ETag; the old one is then refused.
    r = http.put("/collections/works/items/N1", headers=auth(keys, "publisher",
                 **{"If-Match": created}), json=_feature("N1", 116.42, 39.92, kind="closure"))
    assert r.status_code == 200, r.text
    replaced = r.headers["ETag"]
    assert replaced != created
    stale = http.put("/collections/works/items/N1", headers=auth(keys, "publisher",
                     **{"If-Match": created}), json=_feature("N1", 116.0, 39.0))
    assert stale.status_code == 412 and "changed since" in stale.json()["detail"]

    # Update changes only what it names.
    r = http.patch("/collections/works/items/N1", headers=auth(keys, "publisher",
                   **{"If-Match": replaced}), json={"type": "Feature",
                                                    "properties": {"lanes": 1}})
    assert r.status_code == 200, r.text
    now = http.get("/collections/works/items/N1").json()
    assert now["properties"]["kind"] == "closure" and now["properties"]["lanes"] == 1
    assert now["properties"]["_version"] == 3
    assert now["geometry"]["coordinates"] == [116.42, 39.92]
    # An update that changes nothing adds no version: the ETag stays.
    same = http.patch("/collections/works/items/N1", headers=auth(keys, "publisher"),
                      json={"type": "Feature", "properties": {"lanes": 1}})
    assert same.status_code == 200 and same.headers["ETag"] == r.headers["ETag"]
    assert http.get("/collections/works/items/N1").json()["properties"]["_version"] == 3

    # Delete closes the feature; its past stays readable.
    r = http.delete("/collections/works/items/N1",
                    headers=auth(keys, "publisher", **{"If-Match": r.headers["ETag"]}))
    assert r.status_code == 204
    assert http.get("/collections/works/items/N1").status_code == 404
    past = http.get("/collections/works/items/N1", params={"as-of": t_created}).json()
    assert past["properties"]["lanes"] == 4 and past["properties"]["kind"] == "pothole"
    assert covered(http, keys, 10) == before


def test_edits_keep_the_overview_exact(http, keys, settings, db):
    moves = [("W1", 116.60, 40.05), ("W2", 116.4001, 39.9001), ("W3", 115.9, 39.6)]
    for code, x, y in moves:
        etag = http.get(f"/collections/works/items/{code}").headers["ETag"]
        r = http.put(f"/collections/works/items/{code}",
                     headers=auth(keys, "publisher", **{"If-Match": etag}),
                     json=_feature(code, x, y))
        assert r.status_code == 200, r.text
    for code in ("W4", "W5"):
        assert http.delete(f"/collections/works/items/{code}",
                           headers=auth(keys, "publisher")).status_code == 204
    for i in range(3):
        assert http.post("/collections/works/items", headers=auth(keys, "publisher"),
                         json=_feature(f"X{i}", 116.3 + i * 0.1, 39.8)).status_code == 201

    def cells() -> dict:
        rows = db.execute("SELECT z, cx, cy, n, CASE WHEN n = 1 THEN _rid END, sx, sy"
                          " FROM onemap_overview.works").fetchall()
        return {r[:3]: (r[3], r[4], round(r[5], 3), round(r[6], 3)) for r in rows}

    edited = cells()
    # A full build inside a transaction that is rolled back: the reference, left unused.
    with psycopg.connect(settings.database_url) as conn:
        overviews.build(conn, "works", settings.detail_zoom)
        rebuilt = {r[:3]: (r[3], r[4], round(r[5], 3), round(r[6], 3)) for r in conn.execute(
            "SELECT z, cx, cy, n, CASE WHEN n = 1 THEN _rid END, sx, sy"
            " FROM onemap_overview.works").fetchall()}
        conn.rollback()
    assert len(edited) > 20
    assert edited == rebuilt


@pytest.mark.parametrize("body, status, words", [
    (_feature("B1", 116.4, 39.9, colour="red"), 400, "unknown properties ['colour']"),
    (_feature("B1", 116.4, 39.9, lanes="two"), 400, "'lanes' must be a integer"),
    (_feature("B1", 516.4, 39.9), 400, "outside longitude/latitude"),
    ({**_feature("B1", 0, 0), "geometry": {"type": "Point"}}, 400, "geometry is not GeoJSON"),
    ({**_feature("B1", 0, 0), "geometry": None}, 400, "no geometry"),
    ({**_feature("B1", 0, 0), "properties": {"code": "B1"}}, 400, "may not be empty"),
    (_feature("", 116.4, 39.9), 400, "needs a value"),
    (_feature("W0", 116.4, 39.9), 409, "exists"),
    ([1, 2], 400, "GeoJSON Feature"),
])
def test_bad_edits_are_400_and_change_nothing(http, keys, db, body, status, words):
    version = db.execute("SELECT version FROM onemap.layers WHERE id = 'works'").fetchone()[0]
    r = http.post("/collections/works/items", headers=auth(keys, "publisher"), json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert "Traceback" not in r.text
    assert db.execute("SELECT version FROM onemap.layers WHERE id = 'works'"
                      ).fetchone()[0] == version


def test_who_may_edit(http, keys):
    body = _feature("R1", 116.4, 39.9)
    assert http.post("/collections/works/items", json=body).status_code == 403
    assert http.post("/collections/works/items", json=body,
                     headers=auth(keys, "reader")).status_code == 403
    r = http.post("/collections/basemap_pois/items", json=body,
                  headers=auth(keys, "publisher"))
    assert r.status_code == 403 and "base layer" in r.json()["detail"]
    assert http.post("/collections/nosuch/items", json=body,
                     headers=auth(keys, "publisher")).status_code == 404
    assert http.delete("/collections/works/items/W0").status_code == 403
    assert http.get("/collections/works/items/W0").status_code == 200


@pytest.mark.parametrize("if_match", ['"r1\' OR 1=1 --"', "r12", '"x"', "'; DROP TABLE x; --"])
def test_if_match_that_names_no_version_is_412(http, keys, if_match, db):
    r = http.patch("/collections/works/items/W0", json={"properties": {"lanes": 3}},
                   headers=auth(keys, "publisher", **{"If-Match": if_match}))
    assert r.status_code == 412
    assert db.execute("SELECT count(*) FROM onemap_data.works").fetchone()[0] > 0


def test_an_edit_and_an_ingest_of_the_same_content_agree(http, keys, settings, tmp_path):
    """One content hash for every writer: a file that says what an edit already wrote is
    no change for that feature, and the file's first load is no change when read again."""
    feats = [_feature(f"S{i}", BASE[0] + 0.001 * i, BASE[1]) for i in range(3)]
    src = tmp_path / "same.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    ingest_vector(src, "works_same", key="code", settings=settings,
                  meta=LayerMeta(department="transport"))
    r = http.patch("/collections/works_same/items/S1", headers=auth(keys, "publisher"),
                   json={"type": "Feature", "properties": {"lanes": 5}})
    assert r.status_code == 200, r.text
    feats[1]["properties"]["lanes"] = 5
    src.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    report = ingest_vector(src, "works_same", key="code", settings=settings)
    assert (report.unchanged, report.changed, report.inserted) == (3, 0, 0), report.summary()


def test_part4_media_types_and_options(http, keys):
    """A body that is not JSON is a 415; OPTIONS tells what the caller may do there."""
    feature = json.dumps(_feature("T1", 116.4, 39.9))
    r = http.post("/collections/works/items", content=feature,
                  headers=auth(keys, "publisher", **{"Content-Type": "text/plain"}))
    assert r.status_code == 415 and "application/geo+json" in r.json()["detail"]
    r = http.post("/collections/works/items", content=feature,
                  headers=auth(keys, "publisher", **{"Content-Type": "application/geo+json"}))
    assert r.status_code == 201, r.text
    r = http.patch("/collections/works/items/T1", content='{"properties": {"lanes": 3}}',
                   headers=auth(keys, "publisher",
                                **{"Content-Type": "application/merge-patch+json"}))
    assert r.status_code == 200, r.text
    allowed = http.options("/collections/works/items", headers=auth(keys, "publisher"))
    assert allowed.status_code == 204 and "POST" in allowed.headers["Allow"]
    one = http.options("/collections/works/items/T1", headers=auth(keys, "publisher"))
    assert {"PUT", "PATCH", "DELETE"} <= set(one.headers["Allow"].replace(" ", "").split(","))
    reader = http.options("/collections/works/items", headers=auth(keys, "reader"))
    assert reader.status_code == 204 and reader.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert http.options("/collections/nowhere/items").status_code == 404

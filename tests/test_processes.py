"""The analysis processes over HTTP, each against the same computation done independently
(geopandas, shapely, pyproj) on the demo's real data, and under the caller's grants."""

from __future__ import annotations

import asyncio
import json
import math

import geopandas as gpd
import numpy as np
import psycopg
import pytest
from owslib.ogcapi.processes import Processes
from pyproj import Geod
from shapely.geometry import Point, box, shape

from access import admin
from access.admin import Actor
from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from tests.conftest import SAMPLES, department_keys

GEOD = Geod(ellps="WGS84")
DISTRICTS = SAMPLES / "beijing-districts-cgcs2000.geojson"


def _values(r) -> dict:
    return {f["properties"]["cell"]: f["properties"]["value"]
            for f in r.json()["result"]["features"]}


def run(http, pid: str, inputs: dict, key: str | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return http.post(f"/processes/{pid}/execution", json={"inputs": inputs},
                     headers=headers)


@pytest.fixture(scope="module")
def helsinki(settings, sample_layers, tmp_path_factory):
    """A 3 × 3 grid of cells over the lamps, and sites with a capacity: real positions (the
    extract's lamps), made layers of their own."""
    lamps = gpd.read_file(sample_layers["pbf"], layer="points",
                          where="highway = 'street_lamp'")
    x0, y0, x1, y1 = lamps.total_bounds
    w, h = (x1 - x0) / 3, (y1 - y0) / 3
    cells = gpd.GeoDataFrame(
        {"cell": [f"c{i}{j}" for i in range(3) for j in range(3)],
         "population": [100 * (i * 3 + j + 1) for i in range(3) for j in range(3)]},
        geometry=[box(x0 + i * w, y0 + j * h, x0 + (i + 1) * w, y0 + (j + 1) * h)
                  for i in range(3) for j in range(3)], crs=4326)
    folder = tmp_path_factory.mktemp("analysis")
    cells.to_file(folder / "cells.geojson", driver="GeoJSON")
    ingest_vector(folder / "cells.geojson", "hki_cells", key="cell", settings=settings,
                  meta=LayerMeta(title="Helsinki cells"))
    sites = lamps.iloc[::3][["osm_id", "geometry"]].copy()
    sites["capacity"] = np.arange(len(sites)) % 7 + 1
    sites.to_file(folder / "sites.geojson", driver="GeoJSON")
    ingest_vector(folder / "sites.geojson", "hki_sites", key="osm_id", settings=settings,
                  meta=LayerMeta(title="Sites"))
    ingest_vector(folder / "sites.geojson", "hki_sites_internal", key="osm_id",
                  settings=settings, meta=LayerMeta(title="Sites", level="internal"))
    return {"lamps": lamps, "cells": cells, "sites": sites}


def test_processes_are_listed_and_described_for_owslib(server, helsinki):
    p = Processes(server)
    ids = {x["id"] for x in p.processes()}
    assert {"locate", "nearest", "buffer", "aggregate"} <= ids
    d = p.process("aggregate")
    assert d["inputs"]["stat"]["schema"]["enum"][0] == "count"
    assert d["outputs"]["result"]["schema"]["contentMediaType"] == "application/geo+json"
    done = p.execute("locate", {"layer": "hki_cells", "point": list(
        helsinki["cells"].geometry[4].centroid.coords[0])})
    assert [f["properties"]["cell"] for f in done["result"]["features"]] == ["c11"]


def test_locate_finds_the_district_shapely_finds(http, sample_layers):
    districts = gpd.read_file(DISTRICTS)
    for _, row in districts.iloc[::3].iterrows():
        x, y = row.geometry.representative_point().coords[0]
        r = run(http, "locate", {"layer": "districts", "point": [x, y]})
        assert r.status_code == 200, r.text
        found = [f["properties"]["gb"] for f in r.json()["result"]["features"]]
        assert found == [row["gb"]], (row["name"], found)
    outside = run(http, "locate", {"layer": "districts", "point": [0, 0]})
    assert outside.json()["result"]["features"] == []


def test_nearest_matches_geodesic_distances(http, helsinki):
    lamps = helsinki["lamps"]
    lon, lat = lamps.geometry.union_all().centroid.coords[0]
    _, _, d = GEOD.inv(np.full(len(lamps), lon), np.full(len(lamps), lat),
                       lamps.geometry.x.to_numpy(), lamps.geometry.y.to_numpy())
    want = lamps.assign(d=d).sort_values("d").head(8)
    r = run(http, "nearest", {"layer": "lamps", "point": [lon, lat], "n": 8})
    assert r.status_code == 200, r.text
    got = r.json()["result"]["features"]
    assert [f["properties"]["osm_id"] for f in got] == list(want["osm_id"])
    for f, expected in zip(got, want["d"], strict=True):
        assert abs(f["properties"]["distance_m"] - expected) < 0.05
    within = run(http, "nearest", {"layer": "lamps", "point": [lon, lat], "n": 100,
                                   "within": float(want["d"].iloc[2]) + 0.01})
    assert len(within.json()["result"]["features"]) == 3


def test_buffer_area_agrees_with_a_local_projection(http):
    pt = Point(24.94, 60.17)
    r = run(http, "buffer", {"geometry": pt.__geo_interface__, "distance": 500})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    utm = gpd.GeoSeries([pt], crs=4326).to_crs(32635).buffer(500, 64)
    assert out["properties"]["area_m2"] == pytest.approx(float(utm.area.iloc[0]), rel=0.01)
    assert out["properties"]["area_m2"] == pytest.approx(math.pi * 500 ** 2, rel=0.01)
    assert shape(out["geometry"]).contains(pt)


def test_aggregate_counts_sums_and_lengths_as_geopandas(http, helsinki):
    cells, sites = helsinki["cells"], helsinki["sites"]
    joined = gpd.sjoin(sites, cells, predicate="intersects")
    counts = joined.groupby("cell").size().to_dict()
    sums = joined.groupby("cell")["capacity"].sum().to_dict()
    r = run(http, "aggregate", {"layer": "hki_sites", "by": "hki_cells"})
    assert r.status_code == 200, r.text
    got = _values(r)
    assert got == {c: counts.get(c, 0) for c in cells["cell"]}
    r = run(http, "aggregate", {"layer": "hki_sites", "by": "hki_cells", "stat": "sum",
                                "field": "capacity"})
    got = _values(r)
    assert {c: v for c, v in got.items() if v is not None} == sums
    # Roads' lengths inside each cell, on the ellipsoid.
    roads = gpd.read_file(SAMPLES / "helsinki-centre.osm.pbf", layer="lines",
                          where="highway IS NOT NULL")
    r = run(http, "aggregate", {"layer": "roads", "by": "hki_cells", "stat": "length"})
    got = _values(r)
    for _, c in cells.iterrows():
        inside = roads.geometry.intersection(c.geometry)
        want = sum(GEOD.geometry_length(g) for g in inside if not g.is_empty)
        assert got[c["cell"]] == pytest.approx(want, rel=0.002, abs=1.0), c["cell"]


def test_aggregate_obeys_the_grants(http, settings, helsinki):
    cells, sites = helsinki["cells"], helsinki["sites"]
    area = cells.geometry[0].union(cells.geometry[1])

    async def limit() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            actor = Actor("test")
            area_id = await admin.create_area(conn, actor, name="two_cells",
                                              geojson=area.__geo_interface__)
            await admin.create_department(conn, actor, settings.levels, id="an_area",
                                          name="An area")
            await admin.create_department(conn, actor, settings.levels, id="masked_dept",
                                          name="Masked")
            await admin.grant(conn, actor, settings.levels, to="department:an_area",
                              layers="hki_sites", area_id=area_id)
            await admin.grant(conn, actor, settings.levels, to="department:masked_dept",
                              layers="hki_sites", masked={"capacity": "full"})
        return {}

    asyncio.run(limit())
    keys = department_keys(settings, {"area_user": "an_area", "masked_user": "masked_dept"})
    r = run(http, "aggregate", {"layer": "hki_sites", "by": "hki_cells"}, keys["area_user"])
    assert r.status_code == 200, r.text
    got = _values(r)
    inside = sites[sites.intersects(area)]
    assert sum(got.values()) == len(gpd.sjoin(inside, cells, predicate="intersects"))
    assert all(v == 0 for c, v in got.items() if c not in ("c00", "c01"))
    masked = run(http, "aggregate", {"layer": "hki_sites", "by": "hki_cells", "stat": "sum",
                                     "field": "capacity"}, keys["masked_user"])
    assert masked.status_code == 403 and "capacity" in masked.json()["detail"]
    counted = run(http, "aggregate", {"layer": "hki_sites", "by": "hki_cells"},
                  keys["masked_user"])
    assert counted.status_code == 200
    # A layer the caller may not read is missing, as any other.
    hidden = run(http, "aggregate", {"layer": "hki_sites_internal", "by": "hki_cells"})
    assert hidden.status_code == 404
    assert run(http, "nearest", {"layer": "no_such", "point": [0, 0]}).status_code == 404


def test_bad_inputs_are_named(http, helsinki):
    cases = [("locate", {"layer": "hki_cells"}, "point"),
             ("locate", {"layer": "hki_cells", "point": [200, 0]}, "point"),
             ("locate", {"layer": "lamps", "point": [24.9, 60.1]}, "polygon"),
             ("nearest", {"layer": "lamps", "point": [24.9, 60.1], "n": 1000}, "n"),
             ("buffer", {"geometry": {"type": "Nope"}, "distance": 5}, "geometry"),
             ("buffer", {"geometry": {"type": "Point", "coordinates": [0, 0]},
                         "distance": -1}, "distance"),
             ("aggregate", {"layer": "hki_sites", "by": "hki_cells", "stat": "median"},
              "stat"),
             ("aggregate", {"layer": "hki_sites", "by": "hki_cells", "stat": "sum",
                            "field": "osm_id"}, "osm_id"),
             ("aggregate", {"layer": "hki_sites", "by": "lamps"}, "polygon"),
             ("locate", {"layer": "hki_cells", "point": [0, 0], "extra": 1}, "extra")]
    for pid, inputs, word in cases:
        r = run(http, pid, inputs)
        assert r.status_code == 400, (pid, inputs, r.text)
        assert word in r.json()["detail"], (pid, r.json()["detail"])
    assert http.get("/processes/nope").status_code == 404
    big = http.post("/processes/buffer/execution", content=b"{" + b" " * 300_000 + b"}",
                    headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert json.loads(http.get("/conformance").text)["conformsTo"]


def _finished(http, settings, job: str, headers: dict, work) -> dict:
    import time

    deadline = time.monotonic() + 30
    while True:
        work(settings, once=True)
        status = http.get(f"/jobs/{job}", headers=headers).json()
        if status["status"] in ("successful", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_an_async_run_is_a_job_of_its_principal(http, settings, helsinki):
    from jobs.worker import work

    keys = department_keys(settings, {"analyst": "analysts", "other": "others"})
    inputs = {"layer": "hki_sites", "by": "hki_cells", "stat": "sum", "field": "capacity"}
    sync = run(http, "aggregate", inputs, keys["analyst"]).json()["result"]
    r = http.post("/processes/aggregate/execution", json={"inputs": inputs},
                  headers={"Authorization": f"Bearer {keys['analyst']}",
                           "Prefer": "respond-async"})
    assert r.status_code == 201, r.text
    assert r.headers["Preference-Applied"] == "respond-async"
    job = r.json()["jobID"]
    assert r.headers["Location"].endswith(f"/jobs/{job}")
    mine = {"Authorization": f"Bearer {keys['analyst']}"}
    # Queued (a worker of another server on this database may already have it).
    assert http.get(f"/jobs/{job}", headers=mine).json()["status"] in (
        "accepted", "running", "successful")
    status = _finished(http, settings, job, mine, work)
    assert status["status"] == "successful" and status["processID"] == "aggregate", status
    results = [ln["href"] for ln in status["links"] if ln["rel"].endswith("/results")]
    got = http.get(results[0].removeprefix(str(http.base_url).rstrip("/")), headers=mine)
    assert got.status_code == 200 and got.json()["result"]["features"] == sync["features"]
    # Another principal sees no such job, nor its result.
    theirs = {"Authorization": f"Bearer {keys['other']}"}
    assert http.get(f"/jobs/{job}", headers=theirs).status_code == 404
    assert http.get(f"/jobs/{job}/results", headers=theirs).status_code == 404
    # A run whose inputs are wrong fails as a job, saying why.
    bad = http.post("/processes/aggregate/execution", headers={**mine,
                    "Prefer": "respond-async"},
                    json={"inputs": {"layer": "hki_sites", "by": "hki_cells",
                                     "stat": "median"}}).json()["jobID"]
    failed = _finished(http, settings, bad, mine, work)
    assert failed["status"] == "failed" and "median" in failed["message"]
    assert http.get(f"/jobs/{bad}/results", headers=mine).status_code == 404

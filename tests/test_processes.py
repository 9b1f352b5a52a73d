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
    assert {"locate", "nearest", "buffer", "aggregate", "clip", "intersect", "dissolve",
            "density", "zonal-statistics", "profile", "viewshed", "route",
            "service-area"} <= ids
    d = p.process("aggregate")
    assert d["inputs"]["stat"]["schema"]["enum"][0] == "count"
    assert d["outputs"]["result"]["schema"]["contentMediaType"] == "application/geo+json"
    done = p.execute("locate", {"layer": "hki_cells", "point": list(
        helsinki["cells"].geometry[4].centroid.coords[0])})
    assert [f["properties"]["cell"] for f in done["result"]["features"]] == ["c11"]
    grid = p.execute("density", {"layer": "hki_sites", "cell": 500})
    assert sum(f["properties"]["value"] for f in grid["result"]["features"]) == len(
        helsinki["sites"])
    for pid in ids:  # every description names its inputs with a schema
        assert all("schema" in v for v in p.process(pid)["inputs"].values()), pid


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


# ---- overlays, density and rasters ----------------------------------------------------------


def _geodesic(g) -> float:
    """Length of lines or area of polygons on the ellipsoid."""
    if "Polygon" in g.geom_type:
        return abs(GEOD.geometry_area_perimeter(g)[0])
    return GEOD.geometry_length(g)


def test_clip_and_intersect_match_geopandas_overlays(http, helsinki):
    cells = helsinki["cells"]
    roads = gpd.read_file(SAMPLES / "helsinki-centre.osm.pbf", layer="lines",
                          where="highway IS NOT NULL")
    window = cells.geometry[4].buffer(0.0008)
    r = run(http, "clip", {"layer": "roads", "geometry": window.__geo_interface__})
    assert r.status_code == 200, r.text
    got = {f["properties"]["osm_id"]: f for f in r.json()["result"]["features"]}
    want = gpd.clip(roads, window)
    want = want[~want.geometry.is_empty]
    assert set(got) == set(want["osm_id"])
    for _, row in want.iterrows():
        f = got[row["osm_id"]]
        assert f["properties"]["length_m"] == pytest.approx(_geodesic(row.geometry),
                                                            rel=1e-3, abs=0.05)
        assert shape(f["geometry"]).difference(window.buffer(1e-6)).is_empty  # 7 decimals
    # Buildings where they meet the cells: the common parts, with both layers' fields.
    buildings = gpd.read_file(SAMPLES / "helsinki-centre.osm.pbf", layer="multipolygons",
                              where="building IS NOT NULL", on_invalid="ignore")
    buildings = buildings[buildings.geometry.notna() & buildings.is_valid]
    r = run(http, "intersect", {"layer": "buildings", "overlay": "hki_cells"})
    assert r.status_code == 200, r.text
    parts = r.json()["result"]["features"]
    def osm(props) -> str:
        way = props["osm_way_id"]
        return str(props["osm_id"] if way is None or way != way else way)

    by_pair = {(osm(f["properties"]), f["properties"]["overlay_cell"]):
               f["properties"]["area_m2"] for f in parts}
    over = gpd.overlay(buildings, cells, how="intersection", keep_geom_type=True)
    checked = 0
    for _, row in over.iterrows():
        key = (osm(row), row["cell"])
        assert by_pair[key] == pytest.approx(_geodesic(row.geometry), rel=1e-3, abs=0.1), key
        checked += 1
    assert checked > 100
    assert {f["properties"]["overlay_population"] for f in parts} <= set(cells["population"])


def test_dissolve_and_density_match_shapely_and_pyproj(http, settings, helsinki):
    from pyproj import Transformer

    # The buildings as the layer holds them (ingest repaired or refused the broken ones).
    with psycopg.connect(settings.database_url) as conn:
        valid = gpd.read_postgis("SELECT building, geom FROM onemap_data.buildings"
                                 " WHERE _valid_to IS NULL", conn, geom_col="geom")
    r = run(http, "dissolve", {"layer": "buildings", "field": "building"})
    assert r.status_code == 200, r.text
    got = {f["properties"]["building"]: f["properties"]
           for f in r.json()["result"]["features"]}
    for value, group in valid.groupby("building"):
        assert got[value]["count"] == len(group), value
        merged = group.geometry.union_all()
        assert got[value]["area_m2"] == pytest.approx(_geodesic(merged), rel=0.01), value
    # Lamps in 100 m squares of Web Mercator, scaled to the ground at the middle latitude.
    lamps = helsinki["lamps"]
    x0, y0, x1, y1 = lamps.total_bounds
    r = run(http, "density", {"layer": "lamps", "cell": 100, "bbox": [x0, y0, x1, y1]})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    side = 100 / math.cos(math.radians((y0 + y1) / 2))
    assert out["side"] == pytest.approx(side)
    xs, ys = Transformer.from_crs(4326, 3857, always_xy=True).transform(
        lamps.geometry.x.to_numpy(), lamps.geometry.y.to_numpy())
    want: dict = {}
    for i, j in zip(np.floor(xs / side).astype(int), np.floor(ys / side).astype(int),
                    strict=True):
        want[(int(i), int(j))] = want.get((int(i), int(j)), 0) + 1
    got = {(f["properties"]["i"], f["properties"]["j"]): f["properties"]["value"]
           for f in out["features"]}
    assert got == want
    cell = out["features"][0]
    assert cell["properties"]["per_km2"] == pytest.approx(
        cell["properties"]["value"] / (_geodesic(shape(cell["geometry"])) / 1e6), rel=1e-3)
    assert sum(got.values()) == len(lamps)
    weighted = run(http, "density", {"layer": "hki_sites", "cell": 250, "weight": "capacity"})
    assert sum(f["properties"]["value"] for f in weighted.json()["result"]["features"]) \
        == int(helsinki["sites"]["capacity"].sum())
    huge = run(http, "density", {"layer": "lamps", "cell": 10, "bbox": [0, 0, 20, 20]})
    assert huge.status_code in (400, 413, 422) and "cells" in huge.json()["detail"]


@pytest.fixture(scope="module")
def dem(settings, tmp_path_factory):
    """The sample elevation model as a raster layer, zones over it, and its stored COG."""
    from datetime import UTC, datetime

    import rasterio

    from ingest.raster import ingest_raster
    from layers.rasters import RasterStore

    ingest_raster(SAMPLES / "olinda-dem.tif", "an_dem", settings=settings, elevation=True,
                  time=datetime(2000, 2, 11, tzinfo=UTC))
    with psycopg.connect(settings.database_url) as conn:
        path = conn.execute("SELECT path FROM onemap.scenes WHERE layer_id = 'an_dem'"
                            ).fetchone()[0]
    uri = RasterStore(settings.raster_root).uri(path)
    with rasterio.open(uri) as ds:
        x0, y0, x1, y1 = ds.bounds
    w, h = (x1 - x0) / 2, (y1 - y0) / 2
    zones = gpd.GeoDataFrame(
        {"zone": ["sw", "se", "nw", "ne"]},
        geometry=[box(x0 + i * w + w * 0.1, y0 + j * h + h * 0.1, x0 + (i + 1) * w - w * 0.1,
                      y0 + (j + 1) * h - h * 0.1).buffer(w * 0.05)
                  for j in range(2) for i in range(2)], crs=4326)
    folder = tmp_path_factory.mktemp("zones")
    zones.to_file(folder / "zones.geojson", driver="GeoJSON")
    ingest_vector(folder / "zones.geojson", "an_zones", key="zone", settings=settings,
                  meta=LayerMeta(title="Zones"))
    return {"uri": uri, "zones": zones, "bounds": (x0, y0, x1, y1)}


def test_zonal_statistics_agree_with_rasterio_mask(http, dem):
    import rasterio
    from rasterio.mask import mask

    r = run(http, "zonal-statistics", {"raster": "an_dem", "zones": "an_zones"})
    assert r.status_code == 200, r.text
    got = {f["properties"]["zone"]: f["properties"] for f in r.json()["result"]["features"]}
    with rasterio.open(dem["uri"]) as ds:
        for _, z in dem["zones"].iterrows():
            data, _ = mask(ds, [z.geometry.__geo_interface__], crop=True, filled=False,
                           indexes=1)
            v = data.compressed().astype("float64")
            v = v[np.isfinite(v)]
            st = got[z["zone"]]
            assert st["count"] == v.size > 100, z["zone"]
            assert st["mean"] == pytest.approx(float(v.mean()), rel=1e-6)
            assert st["min"] == pytest.approx(float(v.min()))
            assert st["max"] == pytest.approx(float(v.max()))
            assert st["std"] == pytest.approx(float(v.std()), rel=1e-6)
    one = run(http, "zonal-statistics", {"raster": "an_dem", "shapes": True,
                                         "geometry": dem["zones"].geometry[0].__geo_interface__})
    props = one.json()["result"]["features"][0]["properties"]
    assert props["count"] == got["sw"]["count"] and props["mean"] == got["sw"]["mean"]
    bad = run(http, "zonal-statistics", {"raster": "lamps", "zones": "an_zones"})
    assert bad.status_code == 404  # not a raster layer: as a missing one
    assert run(http, "zonal-statistics", {"raster": "an_dem", "zones": "an_zones",
                                          "band": 3}).status_code == 400


def test_profile_samples_the_heights_rasterio_reads(http, dem):
    import rasterio

    x0, y0, x1, y1 = dem["bounds"]
    a = (x0 + (x1 - x0) * 0.1, y0 + (y1 - y0) * 0.2)
    b = (x0 + (x1 - x0) * 0.9, y0 + (y1 - y0) * 0.7)
    r = run(http, "profile", {"raster": "an_dem", "samples": 50, "line": {
        "type": "LineString", "coordinates": [list(a), list(b)]}})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    props = out["properties"]
    _, _, length = GEOD.inv(*a, *b)
    assert props["length_m"] == pytest.approx(length, rel=1e-9)
    inner = GEOD.npts(*a, *b, 48)
    points = [a, *inner, b]
    for (lon, lat), c in zip(points, out["geometry"]["coordinates"], strict=True):
        assert c[0] == pytest.approx(lon, abs=1e-9) and c[1] == pytest.approx(lat, abs=1e-9)
    with rasterio.open(dem["uri"]) as ds:
        want = [float(v[0]) for v in ds.sample(points, indexes=1)]
    assert props["heights"] == pytest.approx(want)
    assert props["max"] == pytest.approx(max(want)) and props["min"] == pytest.approx(min(want))
    steps = np.diff(want)
    assert props["ascent_m"] == pytest.approx(float(steps[steps > 0].sum()))
    assert run(http, "profile", {"raster": "an_dem", "line": {
        "type": "Point", "coordinates": list(a)}}).status_code == 400


def test_base_layers_are_counted_not_handed_out(http, settings, helsinki):
    folder = SAMPLES
    ingest_vector(folder / "beijing-districts-cgcs2000.geojson", "an_base_districts",
                  key="gb", settings=settings, meta=LayerMeta(title="Base", role="base"))
    window = {"type": "Polygon", "coordinates": [[[116, 39.5], [117, 39.5], [117, 40.5],
                                                  [116, 40.5], [116, 39.5]]]}
    for pid, inputs in (("clip", {"layer": "an_base_districts", "geometry": window}),
                        ("dissolve", {"layer": "an_base_districts"}),
                        ("intersect", {"layer": "districts", "overlay": "an_base_districts"})):
        r = run(http, pid, inputs)
        assert r.status_code == 403 and "base layer" in r.json()["detail"], (pid, r.text)
    counted = run(http, "density", {"layer": "an_base_districts", "cell": 20_000})
    assert counted.status_code == 200
    assert sum(f["properties"]["value"] for f in counted.json()["result"]["features"]) == 16


def test_an_area_limited_caller_gets_nothing_outside_its_area(http, settings, helsinki, dem):
    cells = helsinki["cells"]
    area = cells.geometry[0]
    z = dem["zones"].geometry[0]
    half = box(*z.bounds).intersection(box(z.bounds[0], z.bounds[1],
                                           (z.bounds[0] + z.bounds[2]) / 2, z.bounds[3]))

    async def limit() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            actor = Actor("test")
            a = await admin.create_area(conn, actor, name="one_cell",
                                        geojson=area.__geo_interface__)
            b = await admin.create_area(conn, actor, name="half_zone",
                                        geojson=half.__geo_interface__)
            await admin.create_department(conn, actor, settings.levels, id="clipped_dept",
                                          name="Clipped")
            await admin.grant(conn, actor, settings.levels, to="department:clipped_dept",
                              layers="roads", area_id=a, area_mode="clip")
            await admin.grant(conn, actor, settings.levels, to="department:clipped_dept",
                              layers="an_dem", area_id=b, area_mode="clip")

    asyncio.run(limit())
    key = department_keys(settings, {"clipped_user": "clipped_dept"})["clipped_user"]
    everything = box(*cells.total_bounds).buffer(0.01)
    r = run(http, "clip", {"layer": "roads", "geometry": everything.__geo_interface__}, key)
    assert r.status_code == 200, r.text
    parts = r.json()["result"]["features"]
    assert parts and all(shape(f["geometry"]).difference(area.buffer(1e-6)).is_empty
                         for f in parts)
    full = run(http, "zonal-statistics", {"raster": "an_dem", "geometry": z.__geo_interface__})
    limited = run(http, "zonal-statistics", {"raster": "an_dem",
                                             "geometry": z.__geo_interface__}, key)
    n_full = full.json()["result"]["features"][0]["properties"]["count"]
    n_half = limited.json()["result"]["features"][0]["properties"]["count"]
    assert 0.3 * n_full < n_half < 0.7 * n_full


def _network(settings):
    """The stored roads as networkx sees them: a node per vertex (to 1e-7 degrees), an edge
    per segment, weighed by its length on the ellipsoid."""
    import networkx as nx

    with psycopg.connect(settings.database_url) as conn:
        roads = gpd.read_postgis("SELECT _fid, geom FROM onemap_data.roads"
                                 " WHERE _valid_to IS NULL", conn, geom_col="geom")
    g = nx.MultiGraph()
    for geom in roads.geometry:
        for line in getattr(geom, "geoms", [geom]):
            pts = [(round(x * 1e7), round(y * 1e7)) for x, y in line.coords]
            for a, b in zip(pts, pts[1:], strict=False):
                if a != b:
                    _, _, d = GEOD.inv(a[0] / 1e7, a[1] / 1e7, b[0] / 1e7, b[1] / 1e7)
                    g.add_edge(a, b, weight=d)
    return g


def test_routes_and_service_areas_agree_with_networkx(http, settings, sample_layers):
    import networkx as nx

    g = _network(settings)
    main = g.subgraph(max(nx.connected_components(g), key=len))
    nodes = sorted(main.nodes)
    rng = np.random.default_rng(3)
    for _ in range(4):
        a, b = (nodes[i] for i in rng.choice(len(nodes), 2, replace=False))
        want = nx.shortest_path_length(main, a, b, weight="weight")
        r = run(http, "route", {"layer": "roads", "start": [a[0] / 1e7, a[1] / 1e7],
                                "end": [b[0] / 1e7, b[1] / 1e7]})
        assert r.status_code == 200, r.text
        way = r.json()["result"]
        assert way["properties"]["length_m"] == pytest.approx(want, rel=1e-6, abs=0.01)
        drawn = sum(GEOD.line_length([p[0] for p in seg], [p[1] for p in seg])
                    for seg in way["geometry"]["coordinates"])
        assert drawn == pytest.approx(want, rel=1e-4)
        assert way["properties"]["snapped_m"][0] < 0.02
    start = nodes[len(nodes) // 2]
    r = run(http, "service-area", {"layer": "roads", "start": [start[0] / 1e7, start[1] / 1e7],
                                   "distances": [300, 600]})
    assert r.status_code == 200, r.text
    areas = r.json()["result"]["features"]
    for f in areas:
        m = f["properties"]["distance_m"]
        reached = nx.single_source_dijkstra_path_length(main, start, cutoff=m,
                                                        weight="weight")
        assert f["properties"]["nodes"] == len(reached), m
        within = sum(d["weight"] for u, v, d in main.edges(data=True)
                     if u in reached and v in reached)
        assert f["properties"]["length_m"] == pytest.approx(within, rel=1e-6)
        hull = shape(f["geometry"])
        inside = sum(hull.buffer(1e-6).contains(Point(n[0] / 1e7, n[1] / 1e7))
                     for n in reached)
        assert inside == len(reached)
    assert areas[0]["properties"]["nodes"] < areas[1]["properties"]["nodes"]
    far = run(http, "route", {"layer": "roads", "start": [24.0, 60.0], "end": list(
        (nodes[0][0] / 1e7, nodes[0][1] / 1e7))})
    assert far.status_code == 400 and "start" in far.json()["detail"]
    assert run(http, "route", {"layer": "lamps", "start": [24.9, 60.1],
                               "end": [24.9, 60.1]}).status_code == 400


def test_a_process_job_outlives_its_worker_and_a_dismissed_one_stops(http, settings,
                                                                       helsinki):
    import threading
    import time

    from jobs.queue import FINISH, SUBMIT, submit_params
    from jobs.worker import work

    keys = department_keys(settings, {"job_analyst": "job_analysts"})
    mine = {"Authorization": f"Bearer {keys['job_analyst']}"}
    inputs = {"layer": "hki_sites", "by": "hki_cells"}
    want = run(http, "aggregate", inputs, keys["job_analyst"]).json()["result"]["features"]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        pid = conn.execute("SELECT id FROM onemap.principals WHERE name = 'job_analyst'"
                           ).fetchone()[0]
        job = conn.execute(SUBMIT, submit_params(
            "process", pid, "job_analyst", "job_analysts", None,
            {"process": "aggregate", "inputs": inputs, "layers": ["hki_sites"]})).fetchone()[0]
        # Its worker was killed while it ran, a while ago.
        conn.execute("UPDATE onemap.jobs SET state = 'running', worker = 'gone:1',"
                     " attempts = 1, beat_at = now() - interval '10 minutes' WHERE id = %s",
                     (job,))
    status = _finished(http, settings, str(job), mine, work)
    assert status["status"] == "successful", status
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        attempts = conn.execute("SELECT attempts FROM onemap.jobs WHERE id = %s",
                                (job,)).fetchone()[0]
        # The dead worker, had it come back, could not finish it a second time.
        late = conn.execute(FINISH, {"state": "failed", "message": "late", "result": None,
                                     "id": job, "worker": "gone:1"}).fetchone()
    assert attempts == 2 and late is None
    got = http.get(f"/jobs/{job}/results", headers=mine).json()["result"]["features"]
    assert got == want
    # A run held up (its table locked here) and dismissed: its statement is cancelled and
    # it never ends successful, whichever worker had it.
    with psycopg.connect(settings.database_url) as lock:
        lock.execute("LOCK TABLE onemap_data.hki_sites IN ACCESS EXCLUSIVE MODE")
        r = http.post("/processes/aggregate/execution", json={"inputs": inputs},
                      headers={**mine, "Prefer": "respond-async"})
        held = r.json()["jobID"]
        runner = threading.Thread(target=work, args=(settings,), kwargs={"once": True})
        runner.start()
        deadline = time.monotonic() + 30
        while http.get(f"/jobs/{held}", headers=mine).json()["status"] != "running":
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        assert http.delete(f"/jobs/{held}", headers=mine).status_code in (200, 204)
        time.sleep(2.5)  # the worker looks each second
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            # Still locked here: a statement not cancelled would still be waiting.
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND wait_event_type = 'Lock' AND query LIKE %s",
                ("%hki_sites%",)).fetchone()[0]
        lock.rollback()
    runner.join(timeout=30)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        state, result = conn.execute("SELECT state, result FROM onemap.jobs WHERE id = %s",
                                     (held,)).fetchone()
    assert state == "dismissed" and result is None and waiting == 0


def test_a_result_by_reference_is_a_layer_of_the_callers_department(http, settings,
                                                                     helsinki):
    import mapbox_vector_tile
    import mercantile

    from layers.results import expire

    keys = department_keys(settings, {"keeper": "keepers", "stranger": "strangers"})
    mine = {"Authorization": f"Bearer {keys['keeper']}"}
    theirs = {"Authorization": f"Bearer {keys['stranger']}"}
    inputs = {"layer": "buildings", "overlay": "hki_cells"}
    value = run(http, "intersect", inputs, keys["keeper"]).json()["result"]
    r = http.post("/processes/intersect/execution", headers=mine, json={
        "inputs": inputs, "outputs": {"result": {"transmissionMode": "reference"}}})
    assert r.status_code == 200, r.text
    link = r.json()["result"]
    layer_id = link["layer"]
    assert link["href"].endswith(f"/collections/{layer_id}")
    assert link["count"] == len(value["features"]) > 100
    entry = http.get(f"/collections/{layer_id}", headers=mine)
    assert entry.status_code == 200, entry.text
    with psycopg.connect(settings.database_url) as conn:
        dept, level, sharing, levels = conn.execute(
            "SELECT department, level, sharing_type, (SELECT array_agg(level) FROM"
            " onemap.layers WHERE id IN ('buildings', 'hki_cells')) FROM onemap.layers"
            " WHERE id = %s", (layer_id,)).fetchone()
    assert dept == "keepers" and sharing == "not_shared"
    assert level == max(levels, key=settings.levels.index)
    items = http.get(f"/collections/{layer_id}/items", params={"limit": 1000},
                     headers=mine).json()
    assert items["numberMatched"] == len(value["features"])
    kept = sorted(round(f["properties"]["area_m2"], 3) for f in items["features"])
    assert all(f["properties"]["overlay_cell"] for f in items["features"])  # fields kept
    assert kept == sorted(round(f["properties"]["area_m2"], 3) for f in value["features"])
    # Drawn as tiles at once, for its department alone.
    x, y = helsinki["cells"].geometry[4].centroid.coords[0]
    t = mercantile.tile(x, y, 16)
    tile = http.get(f"/tiles/{layer_id}/{t.z}/{t.x}/{t.y}.mvt", headers=mine)
    assert tile.status_code == 200 and mapbox_vector_tile.decode(tile.content)[layer_id][
        "features"]
    assert http.get(f"/collections/{layer_id}", headers=theirs).status_code == 404
    # Anonymous callers and embedding keys keep nothing.
    anon = http.post("/processes/intersect/execution", json={
        "inputs": inputs, "outputs": {"result": {"transmissionMode": "reference"}}})
    assert anon.status_code == 401
    # As a job too: its result is the link.
    from jobs.worker import work

    job = http.post("/processes/dissolve/execution", headers={**mine, "Prefer": "respond-async"},
                    json={"inputs": {"layer": "buildings", "field": "building"},
                          "outputs": {"result": {"transmissionMode": "reference"}}}
                    ).json()["jobID"]
    assert _finished(http, settings, job, mine, work)["status"] == "successful"
    later = http.get(f"/jobs/{job}/results", headers=mine).json()["result"]
    assert later["href"].startswith("http") and later["layer"].startswith("result_dissolve_")
    assert http.get(f"/collections/{later['layer']}", headers=mine).status_code == 200
    # Its time up, it is withdrawn: served to no one.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE onemap.layers SET expires_at = now() - interval '1 minute'"
                     " WHERE id = %s", (layer_id,))
    assert layer_id in expire(settings.database_url, settings.levels, lock_timeout_ms=5000,
                              statement_ms=30_000)
    assert http.get(f"/collections/{layer_id}", headers=mine).status_code == 404


def test_a_viewshed_agrees_with_lines_of_sight(http, dem):
    """GDAL's viewshed against a line of sight drawn here: the heights along the way to
    each of 400 targets (the model read with rasterio, between pixel centres as the
    viewshed reads it), the earth's curvature less refraction taken off, and
    the target seen when nothing on the way rises above the line to it."""
    import rasterio

    x0, y0, x1, y1 = dem["bounds"]
    here = ((x0 + x1) / 2, (y0 + y1) / 2)
    r = run(http, "viewshed", {"raster": "an_dem", "point": list(here), "height": 10,
                               "radius": 2500})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    seen = shape(out["geometry"])
    assert 0.02 < out["properties"]["share"] < 0.98
    rng = np.random.default_rng(5)
    earth, cc = 6_371_008.8, 0.85714
    agree = clear = 0
    with rasterio.open(dem["uri"]) as ds:
        grid, inverse = ds.read(1).astype("float64"), ~ds.transform

    def heights(points) -> np.ndarray:
        """The ground between the model's pixel centres, interpolated bilinearly."""
        cr = np.array([inverse @ p for p in points]) - 0.5
        c0 = np.clip(np.floor(cr[:, 0]).astype(int), 0, grid.shape[1] - 2)
        r0 = np.clip(np.floor(cr[:, 1]).astype(int), 0, grid.shape[0] - 2)
        fc, fr = cr[:, 0] - c0, cr[:, 1] - r0
        return ((grid[r0, c0] * (1 - fc) + grid[r0, c0 + 1] * fc) * (1 - fr)
                + (grid[r0 + 1, c0] * (1 - fc) + grid[r0 + 1, c0 + 1] * fc) * fr)

    h0 = float(heights([here])[0]) + 10
    for _ in range(400):
        az, dist = rng.uniform(0, 360), rng.uniform(150, 2400)
        lon, lat, _ = GEOD.fwd(*here, az, dist)
        way = GEOD.npts(*here, lon, lat, 120)
        hs = heights([*way, (lon, lat)])
        along_m = np.linspace(dist / 121, dist, 121)
        drop = cc * along_m ** 2 / (2 * earth)
        angles = np.degrees(np.arctan2(hs - drop - h0, along_m))
        margin = angles[-1] - angles[:-1].max()
        if abs(margin) < 1.0:
            continue  # too close to call between two samplings of the ground
        clear += 1
        agree += (margin > 0) == seen.buffer(1e-5).contains(Point(lon, lat))
    assert clear > 120 and agree / clear > 0.97, (agree, clear)
    far = run(http, "viewshed", {"raster": "an_dem", "point": [0, 0]})
    assert far.status_code == 400


def test_a_kept_result_keeps_each_field_as_it_is_named(settings):
    from datetime import UTC, datetime, timedelta

    from layers import results
    from layers.errors import Invalid

    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.94, 60.17]},
         "properties": {"Name": "A", "名称": "乙", "n": 1, "share": 0.5}}]}
    until = datetime.now(UTC) + timedelta(hours=1)
    layer = results.write(settings.database_url, "result_names_test", doc,
                          LayerMeta(title="names", level="public"), until,
                          detail_zoom=settings.detail_zoom,
                          default_level=settings.default_level)
    assert {f.name: f.type for f in layer.fields} == {
        "Name": "string", "名称": "string", "n": "integer", "share": "number"}
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute('SELECT "Name", "名称", n, share FROM onemap_data.result_names_test'
                           " WHERE _valid_to IS NULL").fetchone()
    assert row == ("A", "乙", 1, 0.5)
    bad = {**doc, "features": [{**doc["features"][0], "properties": {"_fid": 1}}]}
    with pytest.raises(Invalid, match="_fid"):
        results.write(settings.database_url, "result_names_bad", bad, LayerMeta(), until,
                      detail_zoom=settings.detail_zoom, default_level=settings.default_level)

"""Publishing over HTTP: uploads as jobs run by `onemap worker`, over a real `onemap serve`
(which starts its worker), with the publish right, clearance, size limit, failed uploads
that leave the layer as it was, incremental re-uploads and the audit."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import httpx
import psycopg
import pytest
import rasterio
from shapely.geometry import Polygon

from tests.conftest import ROOT, SAMPLES, server_process
from tests.test_rasters import cog_path

UPLOAD_MB = 2


def principals(settings, users: dict[str, tuple[str, bool]]) -> dict[str, str]:
    """API keys for users (name -> (department, publisher))."""
    from access import admin
    from access.admin import Actor

    async def create() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            actor, out = Actor("test"), {}
            for dept, _ in dict.fromkeys(users.values()):
                known = await conn.execute("SELECT 1 FROM onemap.departments WHERE id = %s",
                                           (dept,))
                if await known.fetchone() is None:
                    await admin.create_department(conn, actor, settings.levels, id=dept,
                                                  name=dept, max_level="internal")
            for name, (dept, publisher) in users.items():
                await admin.create_principal(conn, actor, name=name, kind="user",
                                             department=dept, publisher=publisher)
                out[name] = (await admin.create_key(conn, actor, principal=name))["key"]
            return out

    return asyncio.run(create())


@pytest.fixture(scope="module")
def live(settings, tmp_path_factory):
    log = tmp_path_factory.mktemp("publish") / "serve.log"
    with server_process(settings, log, ONEMAP_UPLOAD_MAX_MB=str(UPLOAD_MB),
                        ONEMAP_ACCESS_NOTICES="1") as srv:
        yield srv


@pytest.fixture(scope="module")
def keys(settings):
    return principals(settings, {"pub_parks": ("parks", True), "reader_parks": ("parks", False),
                                 "pub_water": ("water", True)})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return sample_uploads(tmp_path_factory.mktemp("uploads"))


def sample_uploads(d: Path) -> dict[str, Path]:
    """A department's files: parks (one repaired, one rejected), booths with phone numbers,
    a second version of the booths and a truncated GeoPackage."""
    parks = gpd.GeoDataFrame(
        {"name": ["North park", "River park", "Broken", "Nowhere"],
         "area_ha": [12.5, 3.25, 1.0, 2.0]},
        geometry=[Polygon([(116.30, 39.90), (116.31, 39.90), (116.31, 39.91), (116.30, 39.91)]),
                  Polygon([(116.40, 39.95), (116.41, 39.95), (116.41, 39.96)]),
                  # a bow tie: repaired; and a feature far off the globe: rejected
                  Polygon([(116.5, 39.8), (116.52, 39.82), (116.52, 39.8), (116.5, 39.82)]),
                  Polygon([(500, 100), (501, 100), (501, 101)])], crs=4326)
    parks.to_file(d / "parks.gpkg", driver="GPKG")
    rows = [{"name": f"Booth {i}", "phone": f"010{62345670 + i}", "lon": 116.3 + i / 100,
             "lat": 39.9} for i in range(5)]
    with (d / "booths.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rows[2]["name"] = "Booth two, moved"
    rows[2]["lon"] = 116.33
    with (d / "booths-v2.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    whole = (d / "parks.gpkg").read_bytes()
    (d / "truncated.gpkg").write_bytes(whole[: len(whole) // 3])
    return {"parks": d / "parks.gpkg", "booths": d / "booths.csv",
            "booths2": d / "booths-v2.csv", "truncated": d / "truncated.gpkg"}


def post(live, key: str | None, path: Path, data: dict, name: str | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with path.open("rb") as fh:
        return httpx.post(f"{live.url}/layers", headers=headers, data=data,
                          files={"file": (name or path.name, fh)}, timeout=30)


def finished(live, key: str, job: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{live.url}/jobs/{job}", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        doc = r.json()
        seen.append(doc["state"])
        if doc["state"] in ("successful", "failed", "dismissed"):
            return doc
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish: {seen[-5:]}")


def items(live, key: str, layer: str) -> list[dict]:
    r = httpx.get(f"{live.url}/collections/{layer}/items?limit=100",
                  headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()["features"]


def test_a_department_publishes_a_geopackage_and_sees_what_was_rejected(live, keys, files,
                                                                         settings):
    r = post(live, keys["pub_parks"], files["parks"],
             {"layer": "parks", "title": "City parks", "level": "internal",
              "sharing_type": "conditional",
              "keywords": "parks, green", "fields": json.dumps(
                  {"area_ha": {"title": "Area", "unit": "ha", "description": "as surveyed"}})})
    assert r.status_code == 201, r.text
    job = r.json()["id"]
    assert r.headers["location"].endswith(f"/jobs/{job}")
    doc = finished(live, keys["pub_parks"], job)
    assert doc["state"] == "successful", doc
    res = doc["result"]
    assert (res["inserted"], res["repaired"], res["rejected"]) == (3, 1, 1), res
    rejected = [i for i in res["issues"] if i["action"] == "rejected"]
    assert rejected[0]["feature"] == 4 and "outside" in rejected[0]["reason"]
    assert doc["progress"] == 100
    # The layer is the department's, with what the form said.
    layer = httpx.get(f"{live.url}/layers/parks",
                      headers={"Authorization": f"Bearer {keys['reader_parks']}"}).json()
    assert layer["department"] == "parks" and layer["title"] == "City parks"
    assert layer["level"] == "internal" and set(layer["keywords"]) == {"parks", "green"}
    area = next(f for f in layer["fields"] if f["name"] == "area_ha")
    assert (area["title"], area["unit"], area["description"]) == ("Area", "ha", "as surveyed")
    # Another department neither reads the internal layer nor sees the job.
    other = {"Authorization": f"Bearer {keys['pub_water']}"}
    assert httpx.get(f"{live.url}/layers/parks", headers=other).status_code == 404
    assert httpx.get(f"{live.url}/jobs/{job}", headers=other).status_code == 404
    mine = httpx.get(f"{live.url}/jobs", headers={
        "Authorization": f"Bearer {keys['pub_parks']}"}).json()["jobs"]
    assert job in [j["id"] for j in mine]
    # The upload's files are gone once the job ended.
    assert not [f for f in settings.uploads.iterdir() if f.name != "parts"]


def test_a_phone_number_stays_text_and_a_re_upload_with_a_key_is_incremental(
        live, keys, files):
    key = keys["pub_parks"]
    r = post(live, key, files["booths"], {"layer": "booths", "key": "phone", "fields":
                                          json.dumps({"phone": {"type": "string",
                                                                "title": "Phone"}})})
    doc = finished(live, key, r.json()["id"])
    assert doc["state"] == "successful", doc
    assert doc["result"]["inserted"] == 5
    got = sorted(f["properties"]["phone"] for f in items(live, key, "booths"))
    assert got == [f"010{62345670 + i}" for i in range(5)]  # the leading zero kept
    layer = httpx.get(f"{live.url}/layers/booths",
                      headers={"Authorization": f"Bearer {key}"}).json()
    phone = next(f for f in layer["fields"] if f["name"] == "phone")
    assert (phone["type"], phone["title"]) == ("string", "Phone")
    # Again by the same key: one booth moved and renamed, the others as they were.
    r = post(live, key, files["booths2"], {"layer": "booths", "key": "phone", "fields":
                                           json.dumps({"phone": {"type": "string"}})})
    doc = finished(live, key, r.json()["id"])
    assert doc["state"] == "successful", doc
    res = doc["result"]
    assert (res["changed"], res["unchanged"]) == (1, 4), res
    assert "Booth two, moved" in {f["properties"]["name"] for f in items(live, key, "booths")}


def test_a_truncated_upload_fails_and_leaves_the_layer_as_it_was(live, keys, files, settings):
    key = keys["pub_parks"]
    before = httpx.get(f"{live.url}/layers/parks",
                       headers={"Authorization": f"Bearer {key}"}).json()
    r = post(live, key, files["truncated"], {"layer": "parks"}, name="parks.gpkg")
    assert r.status_code == 201, r.text
    doc = finished(live, key, r.json()["id"])
    assert doc["state"] == "failed"
    assert "parks.gpkg" in doc["message"] and "uploads" not in doc["message"]
    after = httpx.get(f"{live.url}/layers/parks",
                      headers={"Authorization": f"Bearer {key}"}).json()
    assert after["version"] == before["version"]
    assert after["feature_count"] == before["feature_count"] == 3
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT principal, detail->>'state', layers FROM onemap.audit"
                           " WHERE action = 'publish' AND detail->>'job' = %s",
                           (doc["id"],)).fetchone()
    assert row == ("pub_parks", "failed", ["parks"])


def test_only_publishers_publish_within_their_clearance(live, keys, files):
    data = {"layer": "parks_copy"}
    anonymous = post(live, None, files["parks"], data)
    assert anonymous.status_code == 401
    reader = post(live, keys["reader_parks"], files["parks"], data)
    assert reader.status_code == 403 and "publish right" in reader.json()["detail"]
    # Another department's layer, even by a publisher.
    water = post(live, keys["pub_water"], files["parks"], {"layer": "parks"})
    assert water.status_code == 403
    # For another department, or above the department's clearance.
    other = post(live, keys["pub_parks"], files["parks"], {"layer": "x1", "department": "water"})
    assert other.status_code == 403
    secret = post(live, keys["pub_parks"], files["parks"], {"layer": "x2", "level": "secret"})
    assert secret.status_code == 403 and "clearance" in secret.json()["detail"]
    # Bad forms name what is wrong.
    missing = httpx.post(f"{live.url}/layers", headers={
        "Authorization": f"Bearer {keys['pub_parks']}"}, data={"title": "t"},
        files={"file": ("a.csv", b"x,y\n")})
    assert missing.status_code == 400 and "'layer'" in missing.json()["detail"]
    bad = post(live, keys["pub_parks"], files["parks"], {"layer": "x3", "fields": "{"})
    assert bad.status_code == 400 and "fields" in bad.json()["detail"]
    wrong = post(live, keys["pub_parks"], files["parks"],
                 {"layer": "x4", "fields": json.dumps({"name": {"type": "phone"}})})
    assert wrong.status_code == 400 and "'phone'" in wrong.json()["detail"]


def test_an_upload_over_the_limit_is_refused_before_it_is_read(live, keys):
    big = b"0" * (UPLOAD_MB * 1024 * 1024 + 10)
    r = httpx.post(f"{live.url}/layers", headers={
        "Authorization": f"Bearer {keys['pub_parks']}"}, data={"layer": "big"},
        files={"file": ("big.csv", big)})
    assert r.status_code == 413 and f"{UPLOAD_MB} MB" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it comes
        yield (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.csv"'
               b"\r\n\r\n")
        for _ in range(UPLOAD_MB * 4 + 2):
            yield b"1" * 256 * 1024
    r = httpx.post(f"{live.url}/layers", content=chunks(), headers={
        "Authorization": f"Bearer {keys['pub_parks']}",
        "Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413


def test_a_raster_upload_becomes_a_raster_layer(live, keys, db, settings):
    key = keys["pub_parks"]
    r = post(live, key, SAMPLES / "olinda-dem.tif", {"layer": "parks_dem", "elevation": "yes",
                                                     "time": "2020-01-01T00:00:00+00:00"})
    assert r.status_code == 201, r.text
    doc = finished(live, key, r.json()["id"], timeout=120)
    assert doc["state"] == "successful", doc
    layer = httpx.get(f"{live.url}/layers/parks_dem",
                      headers={"Authorization": f"Bearer {key}"}).json()
    assert layer["kind"] == "raster" and layer["department"] == "parks"
    with rasterio.open(cog_path(db, settings, "parks_dem")) as cog:  # the stored COG
        lon, lat = cog.xy(cog.height // 2, cog.width // 2)
        value = float(next(cog.sample([(lon, lat)]))[0])
    got = httpx.get(f"{live.url}/rasters/parks_dem/point?lon={lon}&lat={lat}",
                    headers={"Authorization": f"Bearer {key}"})
    assert got.status_code == 200, got.text
    assert got.json()["height"] == pytest.approx(value, abs=1e-3)


def test_a_job_outlives_its_worker(live, settings, keys, files):
    """Queued with no worker running, or left running by a worker that died: the next
    worker runs it."""
    from jobs.queue import SUBMIT, submit_params

    folder = settings.uploads / "orphan"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "booths.csv").write_bytes(files["booths"].read_bytes())
    params = {"dir": "orphan", "files": ["booths.csv"], "options": {"key": "name"},
              "meta": {"department": "parks"}, "fields": {"phone": {"type": "string"}}}
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        job = conn.execute(SUBMIT, submit_params("ingest", None, "pub_parks", "parks",
                                                 "orphans", params)).fetchone()[0]
        # Its first worker died while running it a while ago.
        conn.execute("UPDATE onemap.jobs SET state = 'running', worker = 'gone:1', attempts = 1,"
                     " beat_at = now() - interval '10 minutes' WHERE id = %s", (job,))
    env = {**os.environ, "ONEMAP_DATABASE_URL": str(settings.database_url),
           "ONEMAP_DATA_DIR": str(settings.data_dir)}
    out = subprocess.run([sys.executable, "-m", "onemap.cli", "worker", "--once"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 60  # the serving worker may have taken it first
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while True:
            state, attempts, message, result = conn.execute(
                "SELECT state, attempts, message, result FROM onemap.jobs WHERE id = %s",
                (job,)).fetchone()
            if state != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert (state, attempts) == ("successful", 2), message
    assert result["inserted"] == 5
    assert not folder.exists()


def test_the_upload_route_is_in_the_api_document(live):
    doc = httpx.get(f"{live.url}/api").json()
    assert "post" in doc["paths"]["/layers"]
    assert doc["paths"]["/layers"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert {"get", "delete"} <= set(doc["paths"]["/jobs/{job}"])
    chunk = doc["paths"]["/uploads/{upload}"]["put"]
    assert "application/octet-stream" in chunk["requestBody"]["content"]
    assert "post" in doc["paths"]["/uploads"]


def test_the_command_line_says_as_whom_it_publishes(settings, keys, files):
    env = {**os.environ, "ONEMAP_DATABASE_URL": str(settings.database_url),
           "ONEMAP_DATA_DIR": str(settings.data_dir)}
    run = [sys.executable, "-m", "onemap.cli", "ingest", "vector", str(files["booths"]),
           "--layer", "cli_booths", "--key", "name"]
    unknown = subprocess.run([*run, "--as", "nobody_here"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "nobody_here" in unknown.stderr
    done = subprocess.run([*run, "--as", "pub_parks"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    plain = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT principal, department, method, detail->>'state' FROM"
                            " onemap.audit WHERE action = 'publish' AND 'cli_booths' = ANY(layers)"
                            " ORDER BY id").fetchall()
    assert rows == [("pub_parks", "parks", "CLI", "successful"),
                    ("administrator (command line)", None, "CLI", "successful")]
    models = files["booths"].parent / "models.csv"
    models.write_text("id,maker,model,category,power_w,weight_kg,needs_24h,network\n"
                      "pub-test-sensor,generic,air sensor,sensor,3,0.5,no,none\n")
    ledger = subprocess.run([sys.executable, "-m", "onemap.cli", "ingest", "ledger",
                             str(models), "--entity", "model", "--as", "pub_parks"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert ledger.returncode == 0, ledger.stderr
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT principal, department FROM onemap.audit WHERE action ="
                            " 'publish' AND path = 'ingest device models' ORDER BY id DESC"
                            " LIMIT 1").fetchone() == ("pub_parks", "parks")


def test_a_large_file_comes_in_chunks_and_resumes(live, keys, files, settings):
    key = keys["pub_parks"]
    auth = {"Authorization": f"Bearer {key}"}
    data = files["parks"].read_bytes()
    stale = settings.uploads / "parts" / ("0" * 32)  # left unfinished two days ago
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "data").write_bytes(b"half a file")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    opened = httpx.post(f"{live.url}/uploads", headers=auth,
                        json={"name": "parks-big.gpkg", "size": len(data)})
    assert opened.status_code == 201, opened.text
    url = opened.headers["location"]
    assert not stale.exists()  # an upload nobody finished within a day is swept away
    third = len(data) // 3

    def put(start: int, end: int):
        return httpx.put(url, headers={**auth, "Content-Range":
                                       f"bytes {start}-{end - 1}/{len(data)}"},
                         content=data[start:end])

    assert put(0, third).json()["offset"] == third
    # A chunk from the wrong place is refused and says where to go on.
    wrong = put(2 * third, len(data))
    assert wrong.status_code == 409 and str(third) in wrong.json()["detail"]
    head = httpx.head(url, headers=auth)
    assert head.headers["upload-offset"] == str(third)  # resumed from what arrived
    # Not yet complete: publishing it is refused.
    early = httpx.post(f"{live.url}/layers", headers=auth,
                       data={"layer": "parks_big", "upload": opened.json()["id"]})
    assert early.status_code == 400 and "send the rest" in early.json()["detail"]
    assert put(third, len(data)).json()["complete"]
    # Another principal does not see it.
    other = {"Authorization": f"Bearer {keys['pub_water']}"}
    assert httpx.head(url, headers=other).status_code == 404
    # A form that fails after the upload was taken (the same file named twice) loses
    # nothing: the upload is still there, whole.
    twice = httpx.post(f"{live.url}/layers", headers=auth,
                       data={"layer": "parks_big", "upload": [opened.json()["id"]] * 2})
    assert twice.status_code == 400 and "two files" in twice.json()["detail"]
    assert httpx.head(url, headers=auth).headers["upload-offset"] == str(len(data))
    r = httpx.post(f"{live.url}/layers", headers=auth,
                   data={"layer": "parks_big", "upload": opened.json()["id"]})
    assert r.status_code == 201, r.text
    doc = finished(live, key, r.json()["id"])
    assert doc["state"] == "successful" and doc["result"]["inserted"] == 3
    assert httpx.head(url, headers=auth).status_code == 404  # used up


def test_every_format_the_command_line_reads_publishes_over_http(live, keys, tmp_path):
    """GeoJSON, FlatGeobuf, KML, GML, a loose and a zipped shapefile and an OSM extract, each
    uploaded as a department would and read back from the layer it became."""
    import zipfile

    key = keys["pub_parks"]
    auth = {"Authorization": f"Bearer {key}"}
    parks = gpd.GeoDataFrame(
        {"name": ["North park", "River park"], "area_ha": [12.5, 3.25]},
        geometry=[Polygon([(116.30, 39.90), (116.31, 39.90), (116.31, 39.91), (116.30, 39.91)]),
                  Polygon([(116.40, 39.95), (116.41, 39.95), (116.41, 39.96)])], crs=4326)
    uploads: dict[str, tuple[list[Path], dict]] = {}
    for fmt, driver, ext in [("geojson", "GeoJSON", "geojson"), ("fgb", "FlatGeobuf", "fgb"),
                             ("kml", "KML", "kml"), ("gml", "GML", "gml")]:
        parks.to_file(tmp_path / f"parks.{ext}", driver=driver)
        uploads[fmt] = ([tmp_path / f"parks.{ext}"], {})
    shp = tmp_path / "shp"
    shp.mkdir()
    parks.to_file(shp / "parks.shp", driver="ESRI Shapefile")
    parts = sorted(shp.iterdir())
    uploads["shp"] = (parts, {})
    with zipfile.ZipFile(tmp_path / "parks-shp.zip", "w") as z:
        for part in parts:
            z.write(part, part.name)
    uploads["zip"] = ([tmp_path / "parks-shp.zip"], {})
    uploads["osm"] = ([SAMPLES / "helsinki-centre.osm.pbf"],
                      {"source_layer": "points", "where": "highway = 'street_lamp'"})
    jobs = {}
    for fmt, (paths, extra) in uploads.items():
        handles = [p.open("rb") for p in paths]
        try:
            r = httpx.post(f"{live.url}/layers", headers=auth, timeout=60,
                           data={"layer": f"upfmt_{fmt}", "level": "internal", **extra},
                           files=[("file", (p.name, h))
                                  for p, h in zip(paths, handles, strict=True)])
        finally:
            for h in handles:
                h.close()
        assert r.status_code == 201, (fmt, r.text)
        jobs[fmt] = r.json()["id"]
    for fmt, job in jobs.items():
        doc = finished(live, key, job, timeout=120)
        assert doc["state"] == "successful", (fmt, doc)
        items = httpx.get(f"{live.url}/collections/upfmt_{fmt}/items?limit=1000",
                          headers=auth).json()
        if fmt == "osm":
            assert items["numberMatched"] == doc["result"]["inserted"] > 100
            assert all(f["geometry"]["type"] == "Point" for f in items["features"])
        else:
            names = sorted(f["properties"].get("name") or f["properties"].get("Name")
                           for f in items["features"])
            assert names == ["North park", "River park"], (fmt, items["features"][0])


def test_a_queued_job_is_authorized_again_when_it_runs(live, settings, keys, files):
    """The publish right withdrawn between the upload and its run: the job fails saying so,
    and nothing is written."""
    from jobs.queue import SUBMIT, submit_params

    folder = settings.uploads / "revoked"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "booths.csv").write_bytes(files["booths"].read_bytes())
    params = {"dir": "revoked", "files": ["booths.csv"], "options": {},
              "meta": {"department": "parks"}}
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        pid = conn.execute("SELECT id FROM onemap.principals WHERE name = 'reader_parks'"
                           ).fetchone()[0]
        job = conn.execute(SUBMIT, submit_params("ingest", pid, "reader_parks", "parks",
                                                 "revoked_booths", params)).fetchone()[0]
    deadline = time.monotonic() + 60  # the serving worker takes it
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while True:
            state, message = conn.execute("SELECT state, message FROM onemap.jobs WHERE id = %s",
                                          (job,)).fetchone()
            if state in ("successful", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        exists = conn.execute("SELECT count(*) FROM onemap.layers WHERE id = 'revoked_booths'"
                              ).fetchone()[0]
    assert state == "failed" and "no longer allowed" in message and "publish right" in message
    assert exists == 0
    assert not folder.exists()

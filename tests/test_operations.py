"""Running OneMap as more than one process: metrics, liveness and readiness, request ids,
and what nodes on one database must agree on (rate limits, base quotas, fresh data)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import mercantile
import psycopg
import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from access import admin
from access.admin import Actor
from tests.conftest import ROOT, department_keys, free_port, server_process


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sum(metrics: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in metrics.items()
               if n == name and all((k, v2) in lab for k, v2 in labels.items()))


def test_metrics_move_with_traffic_and_answers_carry_a_request_id(http, server,
                                                                 sample_layers):
    before = _metrics(server)
    t = mercantile.tile(24.945, 60.17, 10)  # generalized: kept in the tile cache
    for _ in range(5):
        assert http.get(f"/tiles/lamps/{t.z}/{t.x}/{t.y}.mvt").status_code == 200
    assert http.get("/collections/lamps/items", params={"limit": 2}).status_code == 200
    after = _metrics(server)
    tiles = _sum(after, "onemap_requests_total", family="tiles", status="200") - _sum(
        before, "onemap_requests_total", family="tiles", status="200")
    assert tiles == 5
    assert _sum(after, "onemap_request_seconds_count", family="collections") > _sum(
        before, "onemap_request_seconds_count", family="collections")
    assert _sum(after, "onemap_tile_cache_total") >= 1  # the repeats were hits
    assert _sum(after, "onemap_db_pool_connections", state="open") >= 1
    assert ("onemap_audit_queue", ()) in after
    # A request id: the client's when it is a sane one, else a new one.
    r = http.get("/livez", headers={"X-Request-Id": "abc-123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    odd = http.get("/livez", headers={"X-Request-Id": "x" * 300})
    assert len(odd.headers["x-request-id"]) == 16
    assert http.get("/readyz").json()["status"] == "ready"


@contextlib.contextmanager
def nginx_in_front(upstreams: list[str]):
    """The shipped docker/nginx.conf, run by the system's nginx on loopback in front of
    ``upstreams`` (host:port)."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (make test installs it)")
    run = Path(tempfile.mkdtemp(prefix="onemap-nginx-"))
    run.chmod(0o755)
    cache = run / "cache"
    cache.mkdir()
    for d in (run, cache):
        d.chmod(0o777)  # nginx's workers run as another user
    port = free_port()
    text = (ROOT / "docker" / "nginx.conf").read_text()
    text = (text.replace("ONEMAP_UPSTREAMS", " ".join(f"server {u} max_fails=1 fail_timeout=5s;"
                                                       for u in upstreams))
            .replace("ONEMAP_CACHE_DIR", str(cache)).replace("ONEMAP_RUN_DIR", str(run))
            .replace("ONEMAP_LISTEN", f"127.0.0.1:{port}"))
    conf = run / "nginx.conf"
    conf.write_text(text)
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(run), "-e", str(run / "err"),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/livez", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(run, ignore_errors=True)


def _png_template(url: str, layer: str) -> str:
    """The PNG tile template of ``layer`` in the WMTS capabilities served at ``url``."""
    caps = etree.fromstring(httpx.get(url + "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities",
                                      timeout=30).content)
    ns = {"w": "http://www.opengis.net/wmts/1.0", "o": "http://www.opengis.net/ows/1.1"}
    return caps.xpath(f"//w:Layer[o:Identifier='{layer}']/w:ResourceURL"
                      "[@format='image/png']/@template", namespaces=ns)[0]


def test_nginx_keeps_pinned_tiles_never_private_ones_and_nothing_stale(settings,
                                                                        sample_layers,
                                                                        tmp_path):
    department_keys(settings, {"cache_user": "cachers"})
    key = department_keys(settings, {"cache_user2": "cachers"})["cache_user2"]
    with server_process(settings, tmp_path / "a.log") as a, \
            server_process(settings, tmp_path / "b.log") as b, \
            nginx_in_front([a.url.removeprefix("http://"), b.url.removeprefix("http://")]) as front:
        t = mercantile.tile(24.945, 60.17, 14)
        path = f"/tiles/lamps/{t.z}/{t.x}/{t.y}.mvt"
        first = httpx.get(front + path, timeout=10)
        assert first.status_code == 200
        etag = first.headers["etag"]
        pinned = f"{path}?v={etag.strip(chr(34))}"
        got = [httpx.get(front + pinned, timeout=10) for _ in range(3)]
        assert [r.headers["x-cache-status"] for r in got][1:] == ["HIT", "HIT"]
        assert got[2].content == httpx.get(a.url + pinned, timeout=10).content
        # Unpinned answers must be revalidated: never served from the cache.
        plain = [httpx.get(front + path, timeout=10).headers["x-cache-status"]
                 for _ in range(3)]
        assert "HIT" not in plain
        # Conditional requests reach OneMap, which says 304.
        assert httpx.get(front + path, headers={"If-None-Match": etag},
                         timeout=10).status_code == 304
        # A signed-in caller's answers are neither kept nor served from the cache.
        mine = [httpx.get(front + pinned, headers={"Authorization": f"Bearer {key}"},
                          timeout=10) for _ in range(2)]
        assert {r.headers["x-cache-status"] for r in mine} == {"BYPASS"}
        assert all(r.headers["cache-control"].startswith("private") for r in mine)
        # Image tiles, as a WMTS client asks them: by the template its capabilities give,
        # which carries the pin of the layer's images.
        template = _png_template(front, "lamps")
        assert "?v=" in template, template
        image = (template.replace("{TileMatrixSet}", "WebMercatorQuad")
                 .replace("{TileMatrix}", str(t.z)).replace("{TileCol}", str(t.x))
                 .replace("{TileRow}", str(t.y)))
        image = image[image.index("/tiles/"):]
        tiles = [httpx.get(front + image, timeout=30) for _ in range(2)]
        assert tiles[0].headers["content-type"] == "image/png", tiles[0].text[:300]
        assert tiles[0].headers["cache-control"].startswith("public") and \
            "immutable" in tiles[0].headers["cache-control"]
        assert tiles[1].headers["x-cache-status"] == "HIT"
        assert tiles[1].content == tiles[0].content and tiles[0].content[:4] == b"\x89PNG"
        # New data: a new ETag through the front at once, so a new pinned URL.
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE onemap.layers SET version = version + 1 WHERE id = 'lamps'")
        assert httpx.get(front + path, timeout=10).headers["etag"] != etag
        assert _png_template(front, "lamps") != template  # the images' pin moved with it


def test_the_image_holds_every_package_and_its_files(tmp_path):
    """The Dockerfile's steps without a container engine: what it copies (everything but
    .dockerignore's list) holds every package pyproject.toml names, and the wheel
    `pip install .` builds from it holds every file of theirs that OneMap reads."""
    import fnmatch
    import sys
    import tomllib
    import zipfile

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in
                project["tool"]["setuptools"]["packages"]["find"]["include"]]
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    docker = (ROOT / "docker" / "Dockerfile").read_text()
    assert "COPY . ." in docker and "pip install --no-cache-dir ." in docker
    for package in packages:
        assert not any(fnmatch.fnmatch(package, p.lstrip("!")) for p in ignored
                       if not p.startswith("!")), package
    tops = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert tops - {"tests", "bench"} <= set(packages), tops - set(packages)
    # The build context as the image gets it: the project's files less .dockerignore's.
    context = tmp_path / "context"
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    for name in listed:
        if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name, p + "/*")
               for p in ignored if not p.startswith("!")):
            continue
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "-q", "-w", str(tmp_path), str(context)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in packages:
        for f in (ROOT / package).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                assert str(f.relative_to(ROOT)) in names, f"{f.relative_to(ROOT)} not installed"

    # Installed on its own (not this checkout), it imports, finds its migrations, pages
    # and styles, and builds its app.
    target = tmp_path / "installed"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--target", str(target), str(wheel)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    probe = (
        "import importlib, pathlib, sys\n"
        f"pkgs = {packages!r}\n"
        "mods = [importlib.import_module(p) for p in pkgs]\n"
        "assert all(str(m.__path__[0]).startswith(sys.argv[1]) for m in mods), mods\n"
        "from layers import migrate\n"
        "root = pathlib.Path(migrate.__file__).parent / 'migrations'\n"
        "assert len(list(root.glob('*.sql'))) >= 20\n"
        "from mapserver.deps import STATIC\n"
        "assert (STATIC / 'index.html').exists() and str(STATIC).startswith(sys.argv[1])\n"
        "import styles\n"
        "assert (pathlib.Path(styles.__path__[0]) / 'icons' / 'camera.svg').exists()\n"
        "from mapserver.app import create_app\n"
        "create_app()\n"
        "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", probe, str(target)], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


def test_two_nodes_a_replica_and_nginx_serve_as_one(settings, replica, tmp_path):
    """The whole of it on loopback: a primary and its streaming replica, two nodes reading
    from it, nginx in front. A publish through one node is seen through the other and
    through nginx at once with the replica behind; one rate limit; a node killed under
    load; the replica killed."""
    from ingest.vector import ingest_vector
    from layers.meta import LayerMeta

    x0, y0 = 116.3, 39.9
    src = tmp_path / "ops_works.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point",
                                         "coordinates": [x0 + 0.001 * i, y0 + 0.001 * i]},
         "properties": {"code": f"W{i}", "kind": "pothole"}} for i in range(10)]}))
    keys = department_keys(settings, {"ops_publisher": "ops_pub"})
    ingest_vector(src, "ops_works", key="code", settings=settings,
                  meta=LayerMeta(department="ops_pub", level="public"))
    limited = asyncio.run(_limited_key(settings, "ops_publisher", 4))
    mine = {"Authorization": f"Bearer {keys['ops_publisher']}"}
    env = {"ONEMAP_DATABASE_REPLICA_URLS": replica["url"]}
    with server_process(settings, tmp_path / "a.log", **env) as a, \
            server_process(settings, tmp_path / "b.log", ONEMAP_WORKERS="2", **env) as b, \
            nginx_in_front([a.url.removeprefix("http://"),
                            b.url.removeprefix("http://")]) as front:
        t = mercantile.tile(x0 + 0.0045, y0 + 0.0045, 12)
        tile = f"/tiles/ops_works/{t.z}/{t.x}/{t.y}.mvt"
        before = httpx.get(front + tile, timeout=10)
        assert before.status_code == 200
        # Reads are made on the replica; B's two processes add up in one scrape.
        for _ in range(20):
            assert httpx.get(b.url + tile, timeout=10).headers["etag"] == before.headers["etag"]
        assert sum(r["served"] for r in _replicas(b.url)) >= 1
        assert _sum(_metrics(b.url), "onemap_requests_total", family="tiles") >= 20
        with psycopg.connect(replica["url"], autocommit=True) as r:
            r.execute("SELECT pg_wal_replay_pause()")
        made = httpx.post(f"{a.url}/collections/ops_works/items", headers=mine, timeout=10,
                          json={"type": "Feature", "geometry": {
                              "type": "Point", "coordinates": [x0 + 0.0047, y0 + 0.0047]},
                              "properties": {"code": "NEW", "kind": "crack"}})
        assert made.status_code == 201, made.text
        # Seen at once through the other node and through the front, the replica behind.
        got = httpx.get(f"{b.url}/collections/ops_works/items/NEW", timeout=10)
        assert got.status_code == 200 and got.json()["properties"]["kind"] == "crack"
        page = httpx.get(f"{b.url}/collections/ops_works/items", timeout=10).json()
        assert page["numberMatched"] == 11
        with psycopg.connect(replica["url"], autocommit=True) as r:  # it is behind indeed
            assert r.execute("SELECT count(*) FROM onemap_data.ops_works WHERE _valid_to IS"
                             " NULL").fetchone()[0] == 10
        after = httpx.get(front + tile, timeout=10)
        assert after.headers["etag"] != before.headers["etag"]
        assert _covered(after) == _covered(before) + 1
        with psycopg.connect(replica["url"], autocommit=True) as r:
            r.execute("SELECT pg_wal_replay_resume()")
        # One rate limit over both nodes.
        codes = [httpx.get(f"{(a, b)[i % 2].url}/collections", timeout=10, headers={
            "Authorization": f"Bearer {limited}"}).status_code for i in range(8)]
        assert codes.count(200) == 4, codes
        # A node killed under load: the front goes on with the other.
        codes = []
        for i in range(30):
            if i == 8:
                a.proc.kill()
            codes.append(httpx.get(f"{front}/collections/ops_works/items?offset={i % 5}",
                                   timeout=10).status_code)
        assert codes.count(200) >= 29, codes
        # The replica killed: reads go on from the primary.
        replica["stop"]()
        codes = [httpx.get(front + (tile if i % 2 else "/collections/ops_works/items"),
                           timeout=10).status_code for i in range(10)]
        assert codes == [200] * 10, codes


def _replicas(url: str) -> list[dict]:
    """What each replica served, from health (one process's view of it)."""
    return httpx.get(f"{url}/healthz", timeout=10).json()["replicas"]


def _covered(r: httpx.Response) -> int:
    return int(r.headers["OneMap-Tile-Features"].split("covered=")[1].split(";")[0])


async def _limited_key(settings, principal: str, per_minute: int) -> str:
    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as conn:
        made = await admin.create_key(conn, Actor("test"), principal=principal,
                                      rate_limit=per_minute)
        return made["key"]



def test_a_stop_finishes_what_is_in_flight_and_writes_its_audit(settings, sample_layers,
                                                               tmp_path):
    """SIGTERM while a request waits (its table locked here): the socket closes, the request
    is answered, and its audit row is written before the process ends."""
    import signal
    import threading

    with psycopg.connect(settings.database_url) as conn:
        since = conn.execute("SELECT now()").fetchone()[0]
    with server_process(settings, tmp_path / "node.log") as node:
        answers: list[httpx.Response] = []
        with psycopg.connect(settings.database_url) as lock:
            lock.execute("LOCK TABLE onemap_data.lamps IN ACCESS EXCLUSIVE MODE")
            asking = threading.Thread(target=lambda: answers.append(httpx.get(
                f"{node.url}/collections/lamps/items", params={"limit": 2},
                timeout=30)))
            asking.start()
            time.sleep(1.0)  # the request is waiting on the lock
            node.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.HTTPError):  # no new request is taken
                httpx.get(f"{node.url}/livez", timeout=2)
            lock.rollback()
        asking.join(timeout=30)
        # Ended by the signal once it was done (uvicorn raises it again after its shutdown).
        assert node.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert answers and answers[0].status_code == 200, answers
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT status FROM onemap.audit WHERE path ="
                            " '/collections/lamps/items' AND at >= %s", (since,)).fetchall()
    assert rows == [(200,)], rows

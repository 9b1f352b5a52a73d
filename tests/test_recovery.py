"""Recovery: a restarted database, a killed postmaster, a killed ingest, a restarted server.

These run a cluster of their own (``Cluster``), since they stop and kill it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest

from ingest.vector import ingest_vector
from layers.cluster import Cluster
from layers.meta import LayerMeta
from tests.conftest import ROOT, own_cluster, server_process


@pytest.fixture(scope="module")
def own(settings) -> Iterator[tuple[Cluster, object]]:
    with own_cluster("onemap-recovery-") as c:
        yield c, replace(settings, database_url=c.url, data_dir=c.root.parent / "var")


def _points(path: Path, n: int) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9 + i * 1e-4, 60.1]},
         "properties": {"pid": f"p{i}"}} for i in range(n)]}))
    return path


def _postmaster(c: Cluster) -> int:
    return int((c.pgdata / "postmaster.pid").read_text().splitlines()[0])


def test_the_server_answers_right_after_the_database_restarts(own, tmp_path):
    c, s = own
    ingest_vector(_points(tmp_path / "p.geojson", 5), "rpoints", key="pid", settings=s)
    with server_process(s, tmp_path / "serve.log") as live, \
            httpx.Client(base_url=live.url, timeout=30) as client:
        assert client.get("/collections/rpoints/items").status_code == 200
        c.stop()
        c.start()
        # The pooled connections died with the old server; none is handed to a request.
        for _ in range(5):
            r = client.get("/collections/rpoints/items")
            assert r.status_code == 200, r.text
        assert "Traceback" not in live.log_text()


def test_a_killed_postmaster_leaves_nothing_that_stops_a_start(own):
    c, _ = own
    # A backend busy computing when its postmaster is killed lingers on, holding the
    # shared memory a new postmaster needs.
    busy = threading.Thread(target=_sleep_in, args=(c.url,), daemon=True)
    busy.start()
    time.sleep(1.0)
    os.kill(_postmaster(c), signal.SIGKILL)
    time.sleep(0.5)
    assert c.orphans(), "the busy backend should have outlived its postmaster"
    started = time.monotonic()
    c.start()
    assert time.monotonic() - started < 20
    with psycopg.connect(c.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _sleep_in(url: str) -> None:
    # Pure computation: a backend checks for its postmaster's death only when it waits.
    try:
        with psycopg.connect(url) as conn:
            conn.execute("SELECT sum(i) FROM generate_series(1, 20000000000::bigint) i")
    except psycopg.Error:
        pass


def test_a_killed_ingest_lets_go_of_the_layers_lock_within_seconds(own, tmp_path):
    c, s = own
    src = _points(tmp_path / "big.geojson", 30_000)
    env = {**os.environ, "ONEMAP_DATABASE_URL": c.url, "ONEMAP_DATA_DIR": str(s.data_dir)}
    ingest = subprocess.Popen([sys.executable, "-m", "onemap.cli", "ingest", "vector",
                               str(src), "--layer", "killed", "--key", "pid"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with psycopg.connect(c.url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while not conn.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                               " AND granted").fetchone():
            assert time.monotonic() < deadline and ingest.poll() is None
            time.sleep(0.05)
        ingest.kill()
        ingest.wait()
        killed = time.monotonic()
        while conn.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'").fetchone():
            assert time.monotonic() - killed < 10, "the lock outlived its ingest"
            time.sleep(0.1)
    # And the layer can be written at once.
    report = ingest_vector(_points(tmp_path / "small.geojson", 3), "killed", key="pid",
                           settings=s)
    assert report.inserted == 3


def test_an_anonymous_base_quota_survives_a_restart(own, tmp_path):
    c, s = own
    ingest_vector(_points(tmp_path / "b.geojson", 10), "rbase", key="pid", settings=s,
                  meta=LayerMeta(role="base"))

    def fetch(live) -> int:
        return httpx.get(f"{live.url}/collections/rbase/items", params={"limit": "3"},
                         timeout=30).status_code

    with server_process(s, tmp_path / "a.log", ONEMAP_BASE_DAILY_ITEMS="5") as live:
        assert [fetch(live), fetch(live), fetch(live)] == [200, 200, 429]
    with server_process(s, tmp_path / "b.log", ONEMAP_BASE_DAILY_ITEMS="5") as live:
        assert fetch(live) == 429


@pytest.fixture
def tiny_store(tmp_path) -> Iterator[Path]:
    """A raster store on a 256 KB file system, to fill up."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a small file system needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_raster_store_is_not_called_bad_input(own, tiny_store):
    c, s = own
    env = {**os.environ, "ONEMAP_DATABASE_URL": c.url, "ONEMAP_DATA_DIR": str(s.data_dir),
           "ONEMAP_RASTER_STORE": str(tiny_store)}
    run = subprocess.run([sys.executable, "-m", "onemap.cli", "ingest", "raster",
                          str(ROOT / "data" / "samples" / "olinda-landsat7.tif"),
                          "--layer", "full_store", "--compress", "deflate"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 3, (run.returncode, run.stderr)
    assert "has no room left" in run.stderr and "cannot be read" not in run.stderr
    assert "Traceback" not in run.stderr
    assert not any(p.is_file() for p in tiny_store.rglob("*"))  # nothing half-written kept
    with psycopg.connect(c.url) as conn:
        assert conn.execute("SELECT 1 FROM onemap.layers WHERE id = 'full_store'"
                            ).fetchone() is None

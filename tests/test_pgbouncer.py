"""OneMap behind pgbouncer (the system's 1.18) in session and in transaction pooling
(``ONEMAP_DATABASE_POOLING=transaction``): tiles and feature pages past psycopg's threshold
for preparing statements, the statement budget, edits through the layers' writer and the
access notices all work through it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import mercantile
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from tests.conftest import department_keys, free_port, server_process


@pytest.fixture(params=["session", "transaction"])
def pgbouncer(settings, request):
    if shutil.which("pgbouncer") is None:
        pytest.skip("pgbouncer is not installed (make test installs it)")
    info = conninfo_to_dict(str(settings.database_url))
    run = Path(tempfile.mkdtemp(prefix="onemap-pgbouncer-"))
    run.chmod(0o777)
    port = free_port()
    (run / "users.txt").write_text(f'"{info["user"]}" ""\n')
    (run / "pgbouncer.ini").write_text(
        f"[databases]\n{info['dbname']} = host={info.get('host', '127.0.0.1')}"
        f" port={info['port']} dbname={info['dbname']} user={info['user']}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n"
        f"auth_file = {run}/users.txt\npool_mode = {request.param}\n"
        # OneMap's connections name their session settings at start-up; pgbouncer passes
        # none, OneMap sets its statement budget on each connection itself.
        "ignore_startup_parameters = options\nmax_client_conn = 500\n"
        f"default_pool_size = 40\nadmin_users = {info['user']}\nunix_socket_dir =\n"
        f"logfile = {run}/pgbouncer.log\npidfile = {run}/pgbouncer.pid\n")
    cmd = ["pgbouncer", str(run / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer does not run as root
        pw = pwd.getpwnam("postgres")
        for p in run.iterdir():
            os.chown(p, pw.pw_uid, pw.pw_gid)
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"postgresql://{info['user']}@127.0.0.1:{port}/{info['dbname']}"
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            assert proc.poll() is None and time.monotonic() < deadline, "pgbouncer did not start"
            time.sleep(0.2)
    try:
        yield {"url": url, "mode": request.param, "direct": str(settings.database_url),
               "admin": f"postgresql://{info['user']}@127.0.0.1:{port}/pgbouncer"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(run, ignore_errors=True)


def test_onemap_works_behind_pgbouncer(settings, sample_layers, pgbouncer, tmp_path):
    t = mercantile.tile(24.945, 60.17, 15)
    pooled = {"ONEMAP_DATABASE_POOLING": pgbouncer["mode"],
              "ONEMAP_DATABASE_DIRECT_URL": pgbouncer["direct"]}
    keys = department_keys(settings, {f"pgb_{pgbouncer['mode']}": "pgb_publishers"})
    layer = f"pgb_works_{pgbouncer['mode']}"
    src = tmp_path / "works.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.94, 60.17]},
         "properties": {"code": "W1", "kind": "pothole"}}]}))
    ingest_vector(src, layer, key="code", settings=settings,
                  meta=LayerMeta(department="pgb_publishers", level="public"))
    with server_process(settings, tmp_path / "node.log", ONEMAP_DATABASE_URL=pgbouncer["url"],
                        ONEMAP_BUDGET_FILTERS_MS="1", **pooled) as node:
        for _ in range(8):  # past psycopg's threshold for preparing a statement
            assert httpx.get(f"{node.url}/tiles/lamps/{t.z}/{t.x}/{t.y}.mvt",
                             timeout=10).status_code == 200
            page = httpx.get(f"{node.url}/collections/lamps/items?limit=3", timeout=10)
            assert page.status_code == 200 and len(page.json()["features"]) == 3
        # The per-request budget is the node's own, set on each connection: a filter over
        # every lamp cannot finish in a millisecond.
        slow = httpx.get(f"{node.url}/collections/lamps/items", timeout=10,
                         params={"filter": "highway LIKE '%lamp%' OR highway LIKE '%x%'",
                                 "limit": 1000})
        assert slow.status_code == 503, slow.text
        assert httpx.get(f"{node.url}/healthz", timeout=10).json()["access"]["notices"]
        # An edit: the layers' writer, its lock and its budget, through the pooler.
        key = next(iter(keys.values()))
        for i in range(7):
            made = httpx.post(f"{node.url}/collections/{layer}/items", timeout=10,
                              headers={"Authorization": f"Bearer {key}"}, json={
                                  "type": "Feature", "properties": {"code": f"N{i}",
                                                                   "kind": "crack"},
                                  "geometry": {"type": "Point", "coordinates": [24.941, 60.17]}})
            assert made.status_code == 201, made.text
        assert httpx.get(f"{node.url}/collections/{layer}/items", timeout=10
                         ).json()["numberMatched"] == 8
        # OneMap's pool is pgbouncer's clients, in the mode asked for, over server
        # connections pgbouncer holds.
        with psycopg.connect(pgbouncer["admin"], autocommit=True,
                             row_factory=dict_row) as admin:
            pools = [p for p in admin.execute("SHOW POOLS").fetchall()
                     if p["database"] != "pgbouncer"]
        assert pools and all(p["pool_mode"] == pgbouncer["mode"] for p in pools)
        assert sum(p["cl_active"] + p["cl_waiting"] for p in pools) >= 1
        assert sum(p["sv_active"] + p["sv_idle"] + p["sv_used"] for p in pools) >= 1

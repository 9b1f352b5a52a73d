"""Rasters on object storage: COGs written by ingest to an S3-compatible server (moto's,
started here) and read back with range requests through GDAL's /vsis3/, and a store served
by nginx read through /vsicurl/; their tiles are those of the local store, byte for byte."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mercantile
import pytest

from tests.conftest import SAMPLES, free_port, server_process

LANDSAT = SAMPLES / "olinda-landsat7.tif"
WHEN = datetime(2001, 7, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3(settings):
    """An S3-compatible server on loopback with a bucket, and GDAL's settings to reach it."""
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO",
           "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_ACCESS_KEY_ID": "onemap",
           "AWS_SECRET_ACCESS_KEY": "onemap-secret", "AWS_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id="onemap", aws_secret_access_key="onemap-secret"
                 ).create_bucket(Bucket="onemap-cogs")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def served_store(settings):
    """nginx serving the local raster store's folder over HTTP (range requests too)."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (make test installs it)")
    run = Path(tempfile.mkdtemp(prefix="onemap-store-"))
    run.chmod(0o777)
    port = free_port()
    root = Path(settings.raster_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for p in [root, *root.parents]:
        p.chmod(p.stat().st_mode | 0o055)  # nginx's workers read it as another user
    (run / "nginx.conf").write_text(
        f"worker_processes 1; pid {run}/nginx.pid; error_log {run}/error.log warn;\n"
        f"events {{}}\nhttp {{ access_log off; client_body_temp_path {run}/b;"
        f" proxy_temp_path {run}/p; fastcgi_temp_path {run}/f; uwsgi_temp_path {run}/u;"
        f" scgi_temp_path {run}/s;\n server {{ listen 127.0.0.1:{port};"
        f" location / {{ root {root}; }} }} }}\n")
    proc = subprocess.Popen(["nginx", "-c", str(run / "nginx.conf"), "-p", str(run),
                             "-e", str(run / "err"), "-g", "daemon off;"],
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(run, ignore_errors=True)


def _tiles(url: str, layer: str) -> list[bytes]:
    out = []
    for t in mercantile.tiles(-34.90, -8.03, -34.84, -7.96, zooms=[13, 14]):
        r = httpx.get(f"{url}/tiles/{layer}/WebMercatorQuad/{t.z}/{t.x}/{t.y}.png", timeout=30)
        assert r.status_code in (200, 204, 404), r.text
        out.append(r.content if r.status_code == 200 else b"")
    assert sum(1 for b in out if b) >= 4
    return out


def test_cog_tiles_from_object_storage_equal_the_local_stores(settings, s3, served_store,
                                                              tmp_path):
    from ingest.raster import ingest_raster

    ingest_raster(LANDSAT, "store_local", settings=settings, time=WHEN)
    remote = dataclasses.replace(settings, raster_store="/vsis3/onemap-cogs/rasters")
    ingest_raster(LANDSAT, "store_s3", settings=remote, time=WHEN)
    # Written to the bucket, not to the folder.
    assert not (Path(settings.raster_root) / "store_s3").exists()
    local = server_process(settings, tmp_path / "local.log")
    in_s3 = server_process(settings, tmp_path / "s3.log",
                           ONEMAP_RASTER_STORE="/vsis3/onemap-cogs/rasters", **s3)
    over_http = server_process(settings, tmp_path / "http.log",
                               ONEMAP_RASTER_STORE=f"/vsicurl/{served_store}")
    with local as a, in_s3 as b, over_http as c:
        want = _tiles(a.url, "store_local")
        assert _tiles(b.url, "store_s3") == want
        assert _tiles(c.url, "store_local") == want

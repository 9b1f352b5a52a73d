"""A throwaway PostgreSQL + PostGIS cluster for the session, and OneMap served over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import httpx
import psycopg
import pytest
import uvicorn

from ingest.vector import ingest_vector
from layers.cluster import Cluster
from layers.migrate import migrate
from mapserver.app import create_app
from onemap.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="onemap-test-"))
    os.chmod(root, 0o755)
    c = Cluster(root / "pg", free_port(), durable=False)
    c.start()
    with psycopg.connect(c.url, autocommit=True) as conn:
        migrate(conn)
    yield c
    c.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Layers made by tests are public unless a test says otherwise; the access tests
    # classify their own.
    return Settings(database_url=cluster.url, data_dir=tmp_path_factory.mktemp("var"),
                    ingest_batch_size=1000, default_level="public")


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def server(settings: Settings) -> Iterator[str]:
    """OneMap under uvicorn on a free loopback port, for as long as the session runs."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("OneMap did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def sample_layers(settings: Settings) -> dict[str, str]:
    """The demo's layers, loaded once from the real sample files."""
    from ingest.vector import LayerMeta

    pbf = SAMPLES / "helsinki-centre.osm.pbf"
    osm = LayerMeta(attribution="© OpenStreetMap contributors, ODbL")
    ingest_vector(SAMPLES / "beijing-districts-cgcs2000.geojson", "districts", key="gb",
                  settings=settings)
    ingest_vector(pbf, "lamps", source_layer="points", where="highway = 'street_lamp'",
                  key="osm_id", settings=settings, meta=osm)
    ingest_vector(pbf, "roads", source_layer="lines", where="highway IS NOT NULL",
                  key="osm_id", settings=settings, meta=osm)
    ingest_vector(pbf, "buildings", source_layer="multipolygons",
                  where="building IS NOT NULL", key="osm_id,osm_way_id", settings=settings,
                  meta=osm)
    return {"pbf": str(pbf)}


def read_source(path: Path | str, **kw) -> gpd.GeoDataFrame:
    return gpd.read_file(path, **kw)

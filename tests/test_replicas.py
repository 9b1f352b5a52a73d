"""Reads on a streaming replica of the test cluster (pg_basebackup, the system's
PostgreSQL): tiles and feature pages are made there, never for an older version than the
primary's, and the primary serves while the replica is away."""

from __future__ import annotations

import json

import httpx
import mapbox_vector_tile
import mercantile
import psycopg

from tests.conftest import server_process


def _features(body: bytes) -> list:
    layer = mapbox_vector_tile.decode(body)["lamps"]
    return sorted((json.dumps(f["properties"], sort_keys=True), json.dumps(f["geometry"]))
                  for f in layer["features"])


def _replicas(url: str) -> list[dict]:
    return httpx.get(f"{url}/healthz", timeout=10).json()["replicas"]


def test_reads_go_to_the_replica_and_never_behind_the_primary(settings, sample_layers,
                                                             replica, tmp_path):
    t = mercantile.tile(24.945, 60.17, 15)
    tile = f"/tiles/lamps/{t.z}/{t.x}/{t.y}.mvt"
    page = "/collections/lamps/items?limit=5"
    with server_process(settings, tmp_path / "node.log",
                        ONEMAP_DATABASE_REPLICA_URLS=replica["url"]) as node:
        direct = httpx.get(node.url + tile, timeout=10)
        assert direct.status_code == 200
        for _ in range(5):
            again = httpx.get(node.url + tile, timeout=10)
            # The same features (their order in the tile is the plan's, on either server).
            assert _features(again.content) == _features(direct.content)
            assert again.headers["etag"] == direct.headers["etag"]
            assert httpx.get(node.url + page, timeout=10).status_code == 200
        assert _replicas(node.url)[0]["served"] >= 10
        # The replica stops replaying: a new version on the primary is still what is served.
        with psycopg.connect(replica["url"], autocommit=True) as r:
            r.execute("SELECT pg_wal_replay_pause()")
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE onemap.layers SET version = version + 1 WHERE id = 'lamps'")
            version = conn.execute("SELECT version FROM onemap.layers WHERE id = 'lamps'"
                                   ).fetchone()[0]
        with psycopg.connect(replica["url"], autocommit=True) as r:
            assert r.execute("SELECT version FROM onemap.layers WHERE id = 'lamps'"
                             ).fetchone()[0] < version
        behind_before = _replicas(node.url)[0]["behind"]
        fresh = httpx.get(node.url + tile, timeout=10)
        assert fresh.headers["etag"] != direct.headers["etag"]
        assert httpx.get(node.url + page, timeout=10).status_code == 200
        assert _replicas(node.url)[0]["behind"] >= behind_before + 2
        with psycopg.connect(replica["url"], autocommit=True) as r:
            r.execute("SELECT pg_wal_replay_resume()")
        # The replica gone: the primary serves at once.
        replica["stop"]()
        codes = [httpx.get(node.url + (tile if i % 2 else page), timeout=10).status_code
                 for i in range(10)]
        assert codes == [200] * 10, codes
        assert _replicas(node.url)[0]["up"] is False

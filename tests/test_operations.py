"""Running OneMap as more than one process: metrics, liveness and readiness, request ids,
and what nodes on one database must agree on (rate limits, base quotas, fresh data)."""

from __future__ import annotations

import asyncio

import httpx
import mercantile
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from access import admin
from access.admin import Actor
from tests.conftest import department_keys, server_process


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


def test_two_nodes_share_one_rate_limit_and_one_state(settings, sample_layers, tmp_path):
    department_keys(settings, {"ops_user": "ops"})

    async def key() -> str:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            made = await admin.create_key(conn, Actor("test"), principal="ops_user",
                                          rate_limit=4)
            return made["key"]

    limited = asyncio.run(key())
    headers = {"Authorization": f"Bearer {limited}"}
    with server_process(settings, tmp_path / "a.log") as a, \
            server_process(settings, tmp_path / "b.log", ONEMAP_WORKERS="2") as b:
        codes = [httpx.get(f"{(a, b)[i % 2].url}/collections", headers=headers,
                           timeout=10).status_code for i in range(10)]
        assert codes.count(200) == 4 and codes.count(429) == 6, codes
        # B's processes add up in one scrape, whichever process answers it.
        for _ in range(6):
            httpx.get(f"{b.url}/livez", timeout=10)
        seen = _sum(_metrics(b.url), "onemap_requests_total", family="livez")
        assert seen >= 6
        # A change written elsewhere is what both nodes serve at once.
        t = mercantile.tile(24.945, 60.17, 14)
        path = f"/tiles/lamps/{t.z}/{t.x}/{t.y}.mvt"
        tags = {n.url: httpx.get(n.url + path, timeout=10).headers["etag"] for n in (a, b)}
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE onemap.layers SET version = version + 1 WHERE id = 'lamps'")
        for n in (a, b):
            assert httpx.get(n.url + path, timeout=10).headers["etag"] != tags[n.url]

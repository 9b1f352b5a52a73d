"""Attacks, over real HTTP against OneMap's own process (``onemap serve``): each one was
found to crash the server, stop the audit log, widen a key's rights, leak a credential,
hang a worker or answer 500; each test shows it no longer does, and the last sends every
class again and checks that the server still answers, audits and has no stuck worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from access import admin
from access.admin import Actor, AdminError
from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from tests.conftest import Live, server_process

ORIGIN = "https://maps.example"
LOCK_MS = 1500  # the live server's lock timeout


@dataclass
class Keys:
    root: str  # an administrator's API key
    owner: str  # the owning department's publisher
    embed: str  # an embedding key of that publisher, for ORIGIN
    admin_embed: str  # an embedding key whose principal became an administrator
    reader: str  # a department whose grant hides and filters


def _points(n: int) -> dict:
    feats = [{"type": "Feature", "geometry": {"type": "Point",
                                              "coordinates": [24.94 + i * 1e-4, 60.17]},
              "properties": {"pid": f"p{i}", "kind": "lamp" if i % 2 else "mast",
                             "height": i, "secret": f"s{i}"}} for i in range(n)]
    return {"type": "FeatureCollection", "features": feats}


@pytest.fixture(scope="module")
def keys(settings, sample_layers, tmp_path_factory) -> Keys:
    src = tmp_path_factory.mktemp("hard") / "hpoints.geojson"
    src.write_text(json.dumps(_points(20)))

    async def make() -> Keys:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            a = Actor("test")
            for dept in ("hard-ops", "hard-read"):
                await admin.create_department(conn, a, settings.levels, id=dept, name=dept)
            await asyncio.to_thread(ingest_vector, src, "hpoints", key="pid",
                                    settings=settings, meta=LayerMeta(department="hard-ops"))
            await admin.create_principal(conn, a, name="hard-root", kind="user",
                                         department="hard-ops", admin=True)
            for name, dept in (("hard-owner", "hard-ops"), ("hard-later-admin", "hard-ops"),
                               ("hard-reader", "hard-read")):
                await admin.create_principal(conn, a, name=name, kind="user", department=dept)
            key = {}
            for name in ("hard-root", "hard-owner", "hard-reader"):
                key[name] = (await admin.create_key(conn, a, principal=name))["key"]
            embed = (await admin.create_key(conn, a, principal="hard-owner", kind="embed",
                                            origins=[ORIGIN]))["key"]
            # One whose principal is made an administrator afterwards stays read-only and
            # limited to its layers.
            later = (await admin.create_key(conn, a, principal="hard-later-admin",
                                            kind="embed", origins=[ORIGIN],
                                            layers=["hpoints"]))["key"]
            await conn.execute("UPDATE onemap.principals SET admin = true"
                               " WHERE name = 'hard-later-admin'")
            await conn.execute("UPDATE onemap.access_state SET version = version + 1")
            # The grant's filter names the very field it hides: the server applies it.
            await admin.grant(conn, a, settings.levels, to="department:hard-read",
                              layers="hpoints", hidden=["secret", "kind"],
                              filter="kind = 'lamp'")
            return Keys(key["hard-root"], key["hard-owner"], embed, later, key["hard-reader"])

    return asyncio.run(make())


class Servers:
    """The module's server process; one that an attack killed is started again for the
    next test (the test that killed it has failed already), so each test stands alone."""

    def __init__(self, settings, folder) -> None:
        self.settings, self.folder, self.runs = settings, folder, 0
        self.stack = contextlib.ExitStack()
        self.current: Live | None = None

    def get(self) -> Live:
        if self.current is None or not self.current.alive():
            self.runs += 1
            self.current = self.stack.enter_context(server_process(
                self.settings, self.folder / f"serve-{self.runs}.log",
                ONEMAP_LOCK_TIMEOUT_MS=str(LOCK_MS)))
        return self.current


@pytest.fixture(scope="module")
def servers(settings, keys, tmp_path_factory) -> Iterator[Servers]:
    s = Servers(settings, tmp_path_factory.mktemp("live"))
    with s.stack:
        yield s


@pytest.fixture
def live(servers: Servers) -> Live:
    return servers.get()


@pytest.fixture
def client(live: Live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def audit_rows(client: httpx.Client, keys: Keys, **params: str) -> list[dict]:
    r = client.get("/admin/audit", params={"limit": "1000", **params},
                   headers=bearer(keys.root))
    assert r.status_code == 200, r.text
    return r.json()


def healthy(live: Live, client: httpx.Client) -> dict:
    assert live.alive(), live.log_text()[-3000:]
    r = client.get("/healthz")
    assert r.status_code == 200, r.text
    return r.json()


def problem_of(r: httpx.Response, status: int, words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert words in body.get("detail", ""), body
    return body


# 1. Nesting that crashed the CQL2 parser, in both encodings.
def deep_text(n: int) -> str:
    return "(" * n + "height = 1" + ")" * n


def deep_json(n: int) -> str:
    inner = '{"op":"=","args":[{"property":"height"},1]}'
    return '{"op":"not","args":[' * n + inner + "]}" * n


def test_deeply_nested_filters_are_refused_and_the_server_lives(live, client):
    for lang, text in (("cql2-text", deep_text(1800)), ("cql2-json", deep_json(900)),
                       ("cql2-text", deep_text(25))):
        r = client.get("/collections/hpoints/items",
                       params={"filter": text, "filter-lang": lang})
        problem_of(r, 400, "levels")
        assert live.alive()
    # Within the bound, nesting is fine.
    r = client.get("/collections/hpoints/items", params={"filter": deep_text(15)})
    assert r.status_code == 200 and r.json()["numberReturned"] == 1
    big = "height IN (" + ",".join(str(i) for i in range(8000)) + ")"
    problem_of(client.get("/collections/hpoints/items", params={"filter": big}), 400,
               "characters")
    ring = [[round(24.9 + 0.01 * math.cos(i / 550 * math.pi), 5),
             round(60.17 + 0.01 * math.sin(i / 550 * math.pi), 5)] for i in range(1100)]
    ring.append(ring[0])
    poly = json.dumps({"op": "s_touches", "args": [{"property": "geometry"},
                                                   {"type": "Polygon", "coordinates": [ring]}]})
    problem_of(client.get("/collections/roads/items",
                          params={"filter": poly, "filter-lang": "cql2-json"}), 400, "vertices")
    healthy(live, client)


# 2. NUL and other untranslatable input: 400, and the audit log goes on.
def test_nul_bytes_are_400s_and_never_stop_the_audit_log(live, client, keys):
    stamp = f"nul-{time.time_ns()}"
    for path, params in (("/collections/hpoints/items", {"q": "a\x00b", "mark": stamp}),
                         ("/collections/catalog/items", {"q": "x\x00", "mark": stamp}),
                         ("/collections/catalog/items", {"keywords": "\x00", "mark": stamp}),
                         ("/registry/reuse", {"lon": "24.9\x00", "lat": "60.1",
                                              "mark": stamp}),
                         ("/layers", {"mark": stamp, "k\x00": "1"})):
        problem_of(client.get(path, params=params), 400, "NUL")
    r = client.get("/collections/hpoints/items/p1%00")
    problem_of(r, 400, "NUL")
    body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]},
            "properties": {"pid": "nul", "kind": "a\u0000b"}}
    r = client.post("/collections/hpoints/items", content=json.dumps(body),
                    headers={**bearer(keys.owner), "Content-Type": "application/geo+json"})
    problem_of(r, 400, "NUL")
    # The refused requests are audited, as they came, and later ones still are.
    client.get("/collections/hpoints/items", params={"q": stamp})
    rows = audit_rows(client, keys)
    mine = [row for row in rows if stamp in json.dumps(row.get("detail"))]
    assert len(mine) >= 6, mine
    assert {row["status"] for row in mine} == {400, 200}
    assert any("\\0" in json.dumps(row["detail"]) for row in mine)
    audit = healthy(live, client)["audit"]
    assert audit["ok"] and audit["dropped"] == 0, audit


# 3, 4. Embedding keys: read-only and limited, whoever their principal is.
def test_embedding_keys_never_administer_or_write(live, client, keys):
    from_origin = {"Origin": ORIGIN}
    admin_embed = {**from_origin, **bearer(keys.admin_embed)}
    problem_of(client.get("/admin/audit", headers=admin_embed), 403, "embedding")
    problem_of(client.get("/admin/principals", params={"key": keys.admin_embed},
                          headers=from_origin), 403, "embedding")
    # Limited to its layer: the others do not exist for it.
    assert client.get("/collections/hpoints/items", headers=admin_embed).status_code == 200
    assert client.get("/collections/roads/items", headers=admin_embed).status_code == 404
    # The publisher's embedding key may read but never write, with a forged Origin.
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]},
               "properties": {"pid": "emb", "kind": "lamp", "height": 1, "secret": "e"}}
    for method, path, body in (("POST", "/collections/hpoints/items", feature),
                               ("PUT", "/collections/hpoints/items/p2", feature),
                               ("DELETE", "/collections/hpoints/items/p2", None),
                               ("POST", "/registry/reservations", {"carrier": "x", "slot": 1}),
                               ("POST", "/admin/keys", {"principal": "hard-owner"})):
        for creds in ({"headers": {**from_origin, **bearer(keys.embed)}},
                      {"params": {"key": keys.embed}, "headers": from_origin}):
            r = client.request(method, path, json=body, **creds)
            problem_of(r, 403, "read-only")
    assert client.get("/collections/hpoints/items/p2").status_code == 200
    # The same principal with its API key publishes.
    r = client.post("/collections/hpoints/items", json=feature, headers=bearer(keys.owner))
    assert r.status_code == 201, r.text
    assert client.delete("/collections/hpoints/items/emb",
                         headers=bearer(keys.owner)).status_code == 204


def test_no_embedding_key_is_issued_for_an_administrator(settings, keys, live, client):
    async def issue() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            await admin.create_key(conn, Actor("test"), principal="hard-root", kind="embed",
                                   origins=[ORIGIN])

    with pytest.raises(AdminError, match="administrator"):
        asyncio.run(issue())
    r = client.post("/admin/keys", headers=bearer(keys.root),
                    json={"principal": "hard-root", "kind": "embed", "origins": [ORIGIN]})
    problem_of(r, 400, "administrator")


# 5. No credential in any log line.
def test_credentials_never_reach_the_log(live, client, keys):
    secret = keys.embed.rsplit("_", 1)[1]
    bogus = "om_deadbeef_THISisNOTaREALsecretBUTitMUSTnotBElogged"
    client.get("/collections/hpoints/items", params={"key": keys.embed},
               headers={"Origin": ORIGIN})
    client.get("/collections/hpoints/items", params={"key": bogus})
    client.get("/collections/hpoints/items", params={"key": keys.root})  # an API key in a URL
    client.get("/collections/hpoints/items", headers=bearer(bogus))
    time.sleep(0.5)
    text = live.log_text()
    assert "/collections/hpoints/items?key=***" in text, text[-2000:]
    for s in (secret, "THISisNOTaREALsecret", keys.root.rsplit("_", 1)[1]):
        assert s not in text


# 6. Time budgets: a statement past its budget is cancelled, 503 with Retry-After.
def slow_filter() -> str:
    # Cheap to say, dear to answer: every road, each written out as GeoJSON.
    return "highway IS NOT NULL OR highway IS NULL"


def test_a_statement_past_its_budget_is_cancelled(settings, keys, tmp_path):
    # A server whose filtered queries have a 1 ms budget: any real one runs past it.
    with server_process(settings, tmp_path / "serve.log", ONEMAP_BUDGET_FILTERS_MS="1") as live, \
            httpx.Client(base_url=live.url, timeout=30) as client:
        started = time.monotonic()
        r = client.get("/collections/roads/items", params={"filter": slow_filter(),
                                                           "limit": "5000"})
        elapsed = time.monotonic() - started
        problem_of(r, 503, "time budget")
        assert int(r.headers["Retry-After"]) >= 1
        assert elapsed < 5, elapsed
        # Other kinds keep theirs; the connection the budget cut serves on.
        for _ in range(3):
            assert client.get("/collections/roads/items", params={"limit": "5"}
                              ).status_code == 200
        assert client.get("/tiles/roads/14/9327/4742.mvt").status_code == 200
        healthy(live, client)
        assert "Traceback" not in live.log_text()


def test_layers_per_tile_and_low_zoom_history_are_bounded(live, client):
    many = ",".join(["hpoints"] * 17)
    problem_of(client.get(f"/tiles/{many}/0/0/0.mvt"), 400, "at most 16 layers")
    five = ",".join(["hpoints", "roads", "lamps", "buildings", "districts"])
    problem_of(client.get(f"/tiles/{five}/2/2/1.mvt", params={"as-of": "2024-01-01T00:00:00Z"}),
               400, "as-of")
    assert client.get(f"/tiles/{five}/2/2/1.mvt").status_code == 200


# 7. Bodies are bounded per endpoint, by Content-Length and while streaming.
def test_bodies_over_their_limit_are_refused(live, client, keys):
    big = b'{"site": ' + b" " * (300 * 1024) + b"1}"
    problem_of(client.post("/registry/reuse", content=big,
                           headers={"Content-Type": "application/json"}), 413, "256 KB")

    def chunks() -> Iterator[bytes]:
        yield b'{"site": '
        for _ in range(400):
            yield b" " * 1024
        yield b"1}"

    r = client.post("/registry/reuse", content=chunks(),
                    headers={"Content-Type": "application/json"})
    problem_of(r, 413, "256 KB")
    # A declared length over the limit is refused before a byte of the body is read.
    with socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /collections/hpoints/items HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + keys.owner.encode() + b"\r\n"
                  b"Content-Type: application/geo+json\r\n"
                  b"Content-Length: 11534336\r\n\r\n")
        s.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)  # the head and the body may come in two packets
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"10 MB" in answer, answer
    # Deep nesting within the size: a 400, not a crash of the JSON parser.
    r = client.post("/collections/hpoints/items", content=b"[" * 200_000 + b"]" * 200_000,
                    headers={**bearer(keys.owner), "Content-Type": "application/json"})
    problem_of(r, 400, "nested deeper")
    healthy(live, client)


# 8. Writes waiting on a layer's lock: bounded, never starving reads, never committed late.
def test_writes_behind_a_held_lock(live, client, keys, settings):
    url = settings.database_url
    before = client.get("/collections/hpoints/items/p3").json()["properties"]["height"]
    holder = psycopg.connect(url)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('onemap.layer:hpoints'))")
    results: list[int] = []

    def patch(height: int, timeout: float) -> None:
        try:
            with httpx.Client(base_url=live.url, timeout=timeout) as c:
                r = c.patch("/collections/hpoints/items/p3", headers=bearer(keys.owner),
                            json={"type": "Feature", "properties": {"height": height}})
                results.append(r.status_code)
        except httpx.TimeoutException:
            results.append(-1)

    try:
        # A dozen writers wait for the lock; reads go on meanwhile.
        waiting = [threading.Thread(target=patch, args=(1000 + i, 30)) for i in range(12)]
        for t in waiting:
            t.start()
        time.sleep(0.5)
        started = time.monotonic()
        for z, x, y in ((14, 9327, 4742), (12, 2331, 1185), (10, 582, 296)):
            assert client.get(f"/tiles/roads/{z}/{x}/{y}.mvt").status_code == 200
        assert client.get("/collections/hpoints/items").status_code == 200
        assert time.monotonic() - started < 3
        for t in waiting:
            t.join()
        # Each waited at most the lock timeout, then was told why.
        assert results == [503] * 12, results
        r = client.patch("/collections/hpoints/items/p3", headers=bearer(keys.owner),
                         json={"type": "Feature", "properties": {"height": 7}})
        problem_of(r, 503, "being written")
        assert r.headers["Retry-After"]
        # A writer whose client gives up while it waits is rolled back, not committed later.
        results.clear()
        quitter = threading.Thread(target=patch, args=(4242, 0.5))
        quitter.start()
        quitter.join()
        assert results == [-1]
    finally:
        holder.rollback()  # the lock goes; the abandoned edit may now run, and must not land
        holder.close()
    time.sleep(1.5)
    after = client.get("/collections/hpoints/items/p3").json()["properties"]["height"]
    assert after == before
    rows = audit_rows(client, keys, layer="hpoints")
    assert any(row["status"] == 499 and row["method"] == "PATCH" for row in rows)


# 9. The layer's geometry type holds for edits, and no row breaks a query.
def test_edits_keep_the_layers_geometry_type(live, client, keys):
    line = {"type": "Feature", "geometry": {"type": "LineString",
                                            "coordinates": [[24.9, 60.1], [24.91, 60.11]]},
            "properties": {"pid": "line", "kind": "lamp", "height": 1, "secret": "l"}}
    problem_of(client.post("/collections/hpoints/items", json=line,
                           headers=bearer(keys.owner)), 400, "holds Point")
    problem_of(client.put("/collections/hpoints/items/p4", json={**line, "id": "p4"},
                          headers=bearer(keys.owner)), 400, "holds Point")
    r = client.get("/collections/hpoints/items", params={"bbox": "24,60,26,61"})
    assert r.status_code == 200 and r.json()["numberMatched"] >= 20


# 12. A grant's filter on a field the grant hides.
def test_a_grant_filter_on_a_hidden_field_is_applied(live, client, keys):
    r = client.get("/collections/hpoints/items", params={"limit": "100"},
                   headers=bearer(keys.reader))
    assert r.status_code == 200, r.text
    feats = r.json()["features"]
    assert feats and {f["id"] for f in feats} == {f"p{i}" for i in range(1, 20, 2)}
    assert all("kind" not in f["properties"] and "secret" not in f["properties"]
               for f in feats)
    # The caller's own filter may not name it.
    problem_of(client.get("/collections/hpoints/items", params={"filter": "kind = 'mast'"},
                          headers=bearer(keys.reader)), 400, "unknown property")


# 15. Malformed input: each a 400 naming the parameter, never a 500.
MALFORMED = [
    ("/collections/hpoints/items", {"offset": "99999999999999999999"}, "offset"),
    ("/collections/hpoints/items", {"limit": "1e3"}, "limit"),
    ("/collections/hpoints/items", {"bbox": "nan,60,25,61"}, "bbox"),
    ("/collections/hpoints/items", {"bbox": "24,60,inf,61"}, "bbox"),
    ("/collections/hpoints/items", {"filter": "height = 99999999999999999999999"}, "height"),
    ("/collections/hpoints/items", {"filter": '{"op": "=", "args": [{"property": "height"}]}',
                                    "filter-lang": "cql2-json"}, "filter"),
    ("/collections/hpoints/items", {"filter": '{"op": "s_intersects", "args": [{"property": '
                                              '"geometry"}, {"bbox": ["a", 1, 2, 3]}]}',
                                    "filter-lang": "cql2-json"}, "BBOX"),
    ("/collections/hpoints/items", {"filter": '{"op": "s_intersects", "args": [{"property": '
                                              '"geometry"}, {"type": "Polygon", '
                                              '"coordinates": 5}]}',
                                    "filter-lang": "cql2-json"}, "filter"),
    ("/registry/reuse", {"lon": "nan", "lat": "60"}, "lon"),
    ("/registry/reuse", {"lon": "24.9", "lat": "60.1", "radius": "inf"}, "radius"),
    ("/tiles/roads/14/9327/4742.mvt", {"as-of": "2024-13-45"}, "datetime"),
]


@pytest.mark.parametrize(("path", "params", "words"), MALFORMED)
def test_malformed_input_is_a_400(live, client, keys, path, params, words):
    r = client.get(path, params=params, headers=bearer(keys.root))
    problem_of(r, 400, words)


def test_malformed_bodies_are_400s(live, client, keys):
    owner = {**bearer(keys.owner), "Content-Type": "application/geo+json"}
    for body, words in (
            ('{"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]},'
             ' "properties": {"pid": "n1", "height": NaN}}', "not JSON"),
            ('{"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]},'
             ' "properties": {"pid": "n2", "height": 99999999999999999999999}}', "64-bit"),
            ("[" * 100 + "]" * 100, "nested deeper")):
        problem_of(client.post("/collections/hpoints/items", content=body, headers=owner),
                   400, words)


# 1-9, 15 together: afterwards the server answers, audits and has no stuck worker.
def test_after_every_attack_the_server_still_serves(live, client, keys, settings):
    def audited() -> int:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM onemap.audit").fetchone()[0]

    count_before = audited()
    attacks = [
        lambda c: c.get("/collections/hpoints/items", params={"filter": deep_text(3000)}),
        lambda c: c.get("/collections/hpoints/items",
                        params={"filter": deep_json(900), "filter-lang": "cql2-json"}),
        lambda c: c.get("/collections/catalog/items", params={"q": "\x00"}),
        lambda c: c.get("/admin/audit", headers={"Origin": ORIGIN, **bearer(keys.admin_embed)}),
        lambda c: c.delete("/collections/hpoints/items/p5",
                           headers={"Origin": ORIGIN, **bearer(keys.embed)}),
        lambda c: c.get("/collections/roads/items",
                        params={"filter": slow_filter(), "limit": "5000"}),
        lambda c: c.post("/registry/reuse", content=b" " * (2 * 1024 * 1024)),
        lambda c: c.post("/collections/hpoints/items", headers=bearer(keys.owner),
                         json={"type": "Feature", "properties": {"pid": "x"},
                               "geometry": {"type": "LineString",
                                            "coordinates": [[24, 60], [25, 61]]}}),
        lambda c: c.get("/collections/hpoints/items", params={"offset": "1" * 30}),
    ]
    statuses: list[int] = []
    lock = threading.Lock()

    def run(attack) -> None:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            for _ in range(3):
                status = attack(c).status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=run, args=(a,)) for a in attacks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 500 not in statuses, statuses
    assert live.alive(), live.log_text()[-3000:]
    started = time.monotonic()
    assert client.get("/tiles/roads/14/9327/4742.mvt").status_code == 200
    assert client.get("/collections/hpoints/items").status_code == 200
    assert time.monotonic() - started < 2
    time.sleep(1.5)  # the audit writer's batch
    assert audited() >= count_before + len(statuses)
    assert healthy(live, client)["audit"]["ok"]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        stuck = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle'"
                             " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                             " AND query_start < now() - interval '5 seconds'").fetchone()[0]
    assert stuck == 0


# 14. Totals and bounds are what the caller may see, never the whole layer's.
def test_limited_callers_see_their_own_totals_and_bounds(live, client, keys):
    whole = client.get("/layers/hpoints", headers=bearer(keys.owner)).json()
    assert whole["feature_count"] == 20
    r = client.get("/layers/hpoints", headers=bearer(keys.reader)).json()
    # The grant's filter keeps the lamps: the odd points, 24.9401 to 24.9419 east.
    assert r["feature_count"] == 10
    west, east = 24.94 + 1e-4, 24.94 + 19e-4
    assert r["extent"][0] == pytest.approx(west) and r["extent"][2] == pytest.approx(east)
    assert whole["extent"][0] < west - 1e-5  # the whole layer reaches further west
    listed = {ly["id"]: ly for ly in client.get("/layers", headers=bearer(keys.reader)
                                                ).json()["layers"]}
    assert listed["hpoints"]["feature_count"] == 10
    coll = client.get("/collections/hpoints", headers=bearer(keys.reader)).json()
    assert coll["extent"]["spatial"]["bbox"][0][0] == pytest.approx(west)
    record = client.get("/collections/catalog/items/hpoints", headers=bearer(keys.reader)).json()
    assert record["properties"]["onemap:featureCount"] == 10
    assert record["geometry"]["coordinates"][0][0][0] == pytest.approx(west)
    tj = client.get("/tiles/hpoints/tilejson.json", headers=bearer(keys.reader)).json()
    assert tj["bounds"][0] == pytest.approx(west)
    caps = client.get("/wmts", params={"service": "WMTS", "request": "GetCapabilities"},
                      headers=bearer(keys.reader)).text
    assert f"{west!r}"[:8] in caps.split("hpoints", 1)[1].split("</Layer>", 1)[0]
    ts = client.get("/collections/hpoints/tiles/WebMercatorQuad",
                    headers=bearer(keys.reader)).json()
    assert ts["boundingBox"]["lowerLeft"][0] == pytest.approx(west)
    # A catalog search by place finds a layer by the part the caller sees: around the
    # westernmost point, which the reader's filter leaves out, the owner finds the layer
    # and the reader does not; around a point it sees, the reader finds it too.
    def found(who: str, x: float) -> set[str]:
        box = f"{x - 2e-5},60.16,{x + 2e-5},60.18"
        page = client.get("/collections/catalog/items", params={"bbox": box, "limit": 100},
                          headers=bearer(who)).json()
        assert page["numberMatched"] == len(page["features"])
        return {f["id"] for f in page["features"]}

    assert "hpoints" in found(keys.owner, 24.94)
    assert "hpoints" not in found(keys.reader, 24.94)
    assert "hpoints" in found(keys.reader, 24.9403)


# 6. A read whose client leaves is cancelled, its statement with it.
def _waiting(settings) -> int:
    """Statements of the server's that wait for a lock on the layer's table."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                            " AND wait_event_type = 'Lock' AND query LIKE '%%hpoints%%'"
                            " AND pid <> pg_backend_pid()").fetchone()[0]


def test_a_read_whose_client_leaves_is_cancelled(live, client, keys, settings):
    # The layer's table is held by another session, so a read of it waits for as long as
    # that lasts: a read that would never end on its own.
    with psycopg.connect(settings.database_url) as holder:
        holder.execute("LOCK TABLE onemap_data.hpoints IN ACCESS EXCLUSIVE MODE")
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"GET /collections/hpoints/items HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 10
            while _waiting(settings) == 0:
                assert time.monotonic() < deadline, "the read never reached the table"
                time.sleep(0.05)
            time.sleep(0.3)
            assert _waiting(settings) == 1  # still waiting while the client is there
        left = time.monotonic()
        while _waiting(settings):
            assert time.monotonic() - left < 3, "the statement waited on after the client left"
            time.sleep(0.05)
        holder.rollback()
    healthy(live, client)
    deadline = time.monotonic() + 5
    while not [r for r in audit_rows(client, keys, layer="hpoints")
               if r["method"] == "GET" and r["status"] == 499]:
        assert time.monotonic() < deadline, "the cancelled read is not in the audit log"
        time.sleep(0.2)
    assert "Traceback" not in live.log_text()

"""A city and two districts on loopback, each OneMap with its own cluster: joining,
harvesting, the cascade with the caller's identity, a district down and back."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mapbox_vector_tile
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from access import admin
from access.admin import Actor
from federation.keys import HEADER
from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from onemap.settings import Settings
from tests.conftest import ROOT, SAMPLES, department_keys, free_port, own_cluster, server_process

DISTRICTS = SAMPLES / "beijing-districts-cgcs2000.geojson"
STYLE = {"version": 8, "layers": [
    {"id": "bounds", "type": "fill", "source-layer": "boundaries",
     "paint": {"fill-color": "#e4ddd0"}}]}
TILE = "12/3372/1551"  # over the city's centre (Beijing)


@dataclass
class Node:
    name: str
    role: str
    settings: Settings
    port: int
    log: Path
    live: object = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "ONEMAP_DATABASE_URL": str(self.settings.database_url),
                "ONEMAP_DATA_DIR": str(self.settings.data_dir), "ONEMAP_PORT": str(self.port),
                "ONEMAP_NODE_NAME": self.name, "ONEMAP_NODE_ROLE": self.role,
                "ONEMAP_DEFAULT_LEVEL": "public"}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "onemap.cli", *args], cwd=ROOT,
                              env=self.env(), capture_output=True, text=True, timeout=120)

    def start(self, stack: contextlib.ExitStack) -> None:
        self.live = stack.enter_context(server_process(
            self.settings, self.log, port=self.port, ONEMAP_NODE_NAME=self.name,
            ONEMAP_NODE_ROLE=self.role, ONEMAP_JOB_WORKERS="0"))

    def get(self, path: str, who: str | None = None, headers: dict | None = None
            ) -> httpx.Response:
        headers = {**({"Authorization": f"Bearer {self.keys[who]}"} if who else {}),
                   **(headers or {})}
        return httpx.get(self.url + path, headers=headers, timeout=10)


def _sql(node: Node, statement: str, params: tuple = ()) -> list:
    with psycopg.connect(node.settings.database_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _departments(node: Node, rows: list[tuple[str, str | None]]) -> None:
    import asyncio

    async def make() -> None:
        async with await psycopg.AsyncConnection.connect(node.settings.database_url,
                                                         autocommit=True) as conn:
            for dept, parent in rows:
                await admin.create_department(conn, Actor("test"), node.settings.levels,
                                              id=dept, name=dept, parent=parent)

    asyncio.run(make())


def _grant(node: Node, **kw) -> int:
    import asyncio

    async def make() -> int:
        async with await psycopg.AsyncConnection.connect(node.settings.database_url,
                                                         autocommit=True) as conn:
            return (await admin.grant(conn, Actor("test"), node.settings.levels, **kw))["id"]

    return asyncio.run(make())


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        made = {}
        for name, role in (("city", "city"), ("north", "district"), ("south", "district")):
            cluster = stack.enter_context(own_cluster(f"onemap-{name}-"))
            settings = Settings(database_url=cluster.url, ingest_batch_size=1000,
                                data_dir=tmp_path_factory.mktemp(name), default_level="public")
            made[name] = Node(name, role, settings, free_port(),
                              tmp_path_factory.mktemp(f"{name}-log") / "serve.log")
        city, north, south = made["city"], made["north"], made["south"]
        # The city: its own layer, an e-map over it, and two departments' users.
        ingest_vector(DISTRICTS, "boundaries", key="gb", settings=city.settings,
                      meta=LayerMeta(role="base"))
        style = tmp_path_factory.mktemp("style") / "emap.json"
        style.write_text(json.dumps(STYLE))
        done = city.cli("basemap", "emap", "--style", str(style), "--title", "E-map")
        assert done.returncode == 0, done.stderr
        city.keys = department_keys(city.settings, {"planner": "planning", "clerk": "records"})
        # North: an internal layer the city reads by grant; south: a public one.
        ingest_vector(DISTRICTS, "wards", key="gb", settings=north.settings,
                      meta=LayerMeta(level="internal", sharing_type="conditional",
                                     title="Wards of the north"))
        ingest_vector(DISTRICTS, "parcels", key="gb", settings=south.settings,
                      meta=LayerMeta(title="Parcels of the south"))
        _departments(north, [("city", None), ("city-planning", None)])
        _grant(north, to="department:city", layers="wards")
        north.grant = _grant(north, to="department:city-planning", layers="wards",
                             masked={"name": "full"})
        north.keys = department_keys(north.settings, {"resident": "housing"})
        for node in made.values():
            node.start(stack)
        yield made


def _join(fed, name: str) -> None:
    city = fed["city"]
    token = city.cli("federation", "token", "--hours", "1")
    assert token.returncode == 0, token.stderr
    joined = fed[name].cli("federation", "join", city.url, "--token", token.stdout.strip())
    assert joined.returncode == 0, joined.stderr
    assert "joined city" in joined.stdout
    again = fed[name].cli("federation", "join", city.url, "--token", token.stdout.strip())
    assert again.returncode == 2 and "used or expired" in again.stderr


def _wait(what, seconds: float = 15):
    deadline = time.monotonic() + seconds
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.2)


def _records(city: Node, who: str | None, q: str) -> list[dict]:
    r = city.get(f"/collections/catalog/items?q={q}", who)
    assert r.status_code == 200, r.text
    return r.json()["features"]


def _names(doc: dict) -> dict[str, str]:
    return {f["properties"]["gb"]: f["properties"].get("name") for f in doc["features"]}


@pytest.fixture(scope="module")
def joined(fed):
    _join(fed, "north")
    _join(fed, "south")
    return fed


def test_districts_join_and_their_catalogs_are_harvested(joined):
    city = joined["city"]
    nodes = {r[0]: r for r in _sql(city, "SELECT name, role, url FROM onemap.nodes")}
    assert set(nodes) == {"north", "south"}
    assert nodes["north"][2] == joined["north"].url
    # The district knows its city, and the city's key verifies what the city signs.
    assert [r[0] for r in _sql(joined["north"], "SELECT name FROM onemap.nodes")] == ["city"]
    found = _wait(lambda: _records(city, "planner", "wards"))
    record = found[0]
    assert record["id"] == "north:wards"
    assert record["properties"]["onemap:origin"] == "north"
    assert [f["name"] for f in record["properties"]["onemap:dataDictionary"]] >= ["gb"]
    assert record["properties"]["onemap:version"] >= 1
    # Its links lead through the city, never to the district itself.
    hrefs = [ln["href"] for ln in record["links"]]
    assert hrefs and all(h.startswith(city.url) for h in hrefs), hrefs
    assert any("/federation/north/" in h for h in hrefs)
    # An internal record is not listed to the public; the public south one is.
    assert _records(city, None, "wards") == []
    assert [r["id"] for r in _records(city, None, "parcels")] == ["south:parcels"]
    one = city.get("/collections/catalog/items/south:parcels")
    assert one.status_code == 200 and one.json()["properties"]["onemap:origin"] == "south"
    assert city.get("/collections/catalog/items/north:wards").status_code == 404
    # Administrators see the nodes and their state.
    assert city.get("/federation").status_code == 401
    status = city.cli("federation", "status")
    assert status.returncode == 0 and "north" in status.stdout and "records 1" in status.stdout


def test_a_layer_published_at_a_district_is_found_at_the_city_a_moment_later(joined):
    city, south = joined["city"], joined["south"]
    ingest_vector(DISTRICTS, "schools", key="gb", settings=south.settings,
                  meta=LayerMeta(title="Schools of the south"))
    started = time.monotonic()
    found = _wait(lambda: _records(city, None, "schools"), 10)
    assert found[0]["id"] == "south:schools"
    assert time.monotonic() - started < 10


def test_tiles_and_features_through_the_city_are_the_districts(joined):
    city, south = joined["city"], joined["south"]
    direct = south.get("/collections/parcels/items?limit=100")
    cascaded = city.get("/federation/south/collections/parcels/items?limit=100")
    assert cascaded.status_code == 200, cascaded.text
    a, b = direct.json(), cascaded.json()
    assert [f["id"] for f in a["features"]] == [f["id"] for f in b["features"]]
    assert [f["geometry"] for f in a["features"]] == [f["geometry"] for f in b["features"]]
    assert _names(a) == _names(b) and len(_names(a)) == 16
    assert all(ln["href"].startswith(f"{city.url}/federation/south/") for ln in b["links"])
    tile_direct = south.get(f"/tiles/parcels/{TILE}.mvt")
    first = city.get(f"/federation/south/tiles/parcels/{TILE}.mvt")
    again = city.get(f"/federation/south/tiles/parcels/{TILE}.mvt")
    assert first.status_code == 200 and first.content == tile_direct.content
    assert mapbox_vector_tile.decode(first.content)["parcels"]["features"]
    assert first.headers["OneMap-Cache"] == "miss" and again.headers["OneMap-Cache"] == "hit"
    assert again.content == first.content
    # The district's ETag holds through the city.
    etag = again.headers["etag"]
    assert city.get(f"/federation/south/tiles/parcels/{TILE}.mvt",
                    headers={"If-None-Match": etag}).status_code == 304
    # Map images and their capabilities too, the capabilities' links through the city.
    getmap = ("/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=parcels&STYLES="
              "&CRS=EPSG:4490&BBOX=39.6,116.0,40.3,116.8&WIDTH=256&HEIGHT=256&FORMAT=image/png")
    image = city.get(f"/federation/south{getmap}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == south.get(getmap).content
    caps = city.get("/federation/south/wms?SERVICE=WMS&REQUEST=GetCapabilities")
    assert caps.status_code == 200 and f"{city.url}/federation/south/wms" in caps.text
    assert south.url not in caps.text and "<Name>parcels</Name>" in caps.text
    # Only what a node serves to readers is passed on.
    assert city.get("/federation/south/admin/keys").status_code == 404
    assert city.get("/federation/nowhere/tiles/parcels/1/1/1.mvt").status_code == 404


def test_the_callers_identity_travels_and_the_districts_grants_decide(joined):
    city, north = joined["city"], joined["north"]
    path = "/federation/north/collections/wards/items?limit=50"
    planner = city.get(path, "planner")
    clerk = city.get(path, "clerk")
    assert planner.status_code == 200 and clerk.status_code == 200, planner.text
    masked, clear = _names(planner.json()), _names(clerk.json())
    assert set(masked) == set(clear) and len(clear) == 16
    assert all(v and "区" in v for v in clear.values())
    assert all(masked[k] != clear[k] for k in clear), "a mask was not applied"
    # Tiles too: the planner's cached tile is never the clerk's.
    t_planner = city.get(f"/federation/north/tiles/wards/{TILE}.mvt", "planner")
    t_clerk = city.get(f"/federation/north/tiles/wards/{TILE}.mvt", "clerk")
    assert t_planner.status_code == t_clerk.status_code == 200
    assert t_clerk.headers["OneMap-Cache"] == "miss"
    names = {f["properties"].get("name") for f in
             mapbox_vector_tile.decode(t_clerk.content)["wards"]["features"]}
    assert names and all("区" in n for n in names)
    assert t_planner.content != t_clerk.content
    # The public may not read the internal layer through the city either.
    assert city.get(path).status_code == 404
    # The district audits who asked, as the city said.
    _wait(lambda: _sql(north, "SELECT 1 FROM onemap.audit WHERE principal = 'city/planner'"))
    # A forged assertion (another key, the city's name) is refused at the district.
    forged = Ed25519PrivateKey.generate()
    import jwt
    now = int(time.time())
    token = jwt.encode({"sub": "planner", "iss": "city", "aud": "north", "iat": now,
                        "exp": now + 60}, forged, algorithm="EdDSA")
    r = httpx.get(f"{north.url}/collections/wards/items", headers={HEADER: token})
    assert r.status_code == 401 and "not valid" in r.json()["detail"]
    # Revoked at the district: refused through the city at once.
    city.get(path, "planner")
    assert city.get(path, "planner").headers["OneMap-Cache"] == "hit"  # kept, trusted
    _sql(north, "DELETE FROM onemap.grants WHERE id = %s", (north.grant,))
    refused = _wait(lambda: city.get(path, "planner").status_code == 404, 3)
    assert refused
    assert city.get(path, "clerk").status_code == 200


def test_a_district_serves_the_citys_emap_from_a_cascade(joined):
    city, north = joined["city"], joined["north"]
    direct = city.get(f"/basemaps/emap/{TILE}.mvt")
    assert direct.status_code == 200
    through = north.get(f"/federation/city/basemaps/emap/{TILE}.mvt", "resident")
    assert through.status_code == 200, through.text
    assert mapbox_vector_tile.decode(through.content) == mapbox_vector_tile.decode(
        direct.content)
    style = north.get("/federation/city/basemaps/emap/style.json", "resident").json()
    here = f"{north.url}/federation/city/"
    assert all(s["url"].startswith(here) for s in style["sources"].values()), style
    assert style["glyphs"].startswith(here) and style["sprite"].startswith(here)
    tilejson = north.get(next(iter(style["sources"].values()))["url"].removeprefix(north.url),
                         "resident").json()
    assert tilejson["tiles"] and all(u.startswith(here) for u in tilejson["tiles"]), tilejson
    # Never a bulk copy: the city's administration is not reachable this way.
    assert north.get("/federation/city/federation", "resident").status_code == 404


def _admin_key(node: Node) -> str:
    import asyncio

    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(node.settings.database_url,
                                                         autocommit=True) as conn:
            actor = Actor("test")
            await admin.create_department(conn, actor, node.settings.levels, id="it",
                                          name="IT")
            await admin.create_principal(conn, actor, name="root", kind="user",
                                         department="it", admin=True)
            return (await admin.create_key(conn, actor, principal="root"))["key"]

    node.keys["root"] = asyncio.run(make())
    return node.keys["root"]


def test_concurrent_misses_are_asked_once_and_counted(joined):
    city = joined["city"]
    _admin_key(city)
    before = city.get("/federation", "root").json()
    south = next(n for n in before["nodes"] if n["name"] == "south")
    asked = south["cascade"].get("asked", 0)
    barrier = threading.Barrier(12)

    def fetch(_: int) -> int:
        barrier.wait()
        return city.get("/federation/south/tiles/parcels/11/1686/775.mvt").status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(fetch, range(12)))
    assert codes == [200] * 12
    after = next(n for n in city.get("/federation", "root").json()["nodes"]
                 if n["name"] == "south")
    counts = after["cascade"]
    # Asked of the district once: the others waited for that answer or were given it.
    assert counts["asked"] - asked == 1, counts
    was = south["cascade"]
    shared = sum(counts.get(k, 0) - was.get(k, 0) for k in ("collapsed", "hits"))
    assert shared == 11, (was, counts)
    assert after["health"] == "up" and after["records"] >= 1 and after["answering"]
    assert city.get("/federation", "planner").status_code == 403


def test_a_slow_node_costs_its_timeout_not_the_citys_time(joined):
    """A node that takes the connection and never answers: 504 within the 2 s timeout,
    then refused at once for a few seconds, and nothing else waits on it."""
    city = joined["city"]
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)  # the kernel accepts; nobody ever answers
    _sql(city, "INSERT INTO onemap.nodes (name, role, url, public_key) VALUES"
               " ('slow', 'district', %s, 'none')", (f"http://127.0.0.1:{hang.getsockname()[1]}",))
    try:
        def timed() -> tuple[int, float]:
            started = time.monotonic()
            r = city.get("/federation/slow/tiles/roads/1/1/1.mvt")
            return r.status_code, time.monotonic() - started

        status, took = _wait(lambda: (t := timed())[0] != 404 and t, 5)
        assert status == 504 and took < 3, (status, took)
        status, took = timed()
        assert status == 502 and took < 0.5, (status, took)
        assert city.get(f"/tiles/boundaries/{TILE}.mvt").status_code == 200
    finally:
        _sql(city, "DELETE FROM onemap.nodes WHERE name = 'slow'")
        hang.close()


def test_a_district_down_then_back(joined, tmp_path):
    city, south = joined["city"], joined["south"]
    cached = f"/federation/south/tiles/parcels/{TILE}.mvt"
    assert city.get(cached).status_code == 200
    south.live.proc.terminate()
    south.live.proc.wait(timeout=15)
    started = time.monotonic()
    missing = city.get("/federation/south/tiles/parcels/12/3373/1551.mvt")
    assert missing.status_code in (502, 504) and time.monotonic() - started < 2
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "south" in missing.json()["detail"]
    # What the city keeps keeps coming, saying how old it is.
    stale = city.get(cached)
    assert stale.status_code == 200 and stale.headers["OneMap-Cache"] == "stale"
    assert int(stale.headers["OneMap-Stale"]) >= 0 and "110" in stale.headers["Warning"]
    assert stale.content and mapbox_vector_tile.decode(stale.content)["parcels"]["features"]
    # A live search across the nodes says which answered, within the timeout; the
    # district that did not keeps its records as last harvested.
    started = time.monotonic()
    r = city.get("/collections/catalog/items?q=parcels,wards&distributedSearch=true",
                 "clerk")
    assert r.status_code == 200 and time.monotonic() - started < 3
    doc = r.json()
    statuses = {s["node"]: s["status"] for s in doc["onemap:nodes"]}
    assert statuses == {"north": "ok", "south": "unreachable"}, doc["onemap:nodes"]
    assert {f["id"] for f in doc["features"]} >= {"north:wards", "south:parcels"}
    catalog = city.get("/collections/catalog").json()
    assert {c["node"] for c in catalog["federatedCatalogs"]} == {"north", "south"}
    # The city's own layers, and the other district, are unaffected.
    assert city.get(f"/tiles/boundaries/{TILE}.mvt").status_code == 200
    assert city.get("/federation/north/collections/wards/items?limit=1",
                    "clerk").status_code == 200
    # A failing harvest holds up neither the others nor the catalog.
    started = time.monotonic()
    harvested = city.cli("federation", "harvest")
    assert harvested.returncode == 0
    assert "south: failed" in harvested.stdout and "north:" in harvested.stdout
    assert time.monotonic() - started < 30
    assert [r["id"] for r in _records(city, None, "parcels")] == ["south:parcels"]
    status = city.cli("federation", "status").stdout
    assert "last error" in status
    # Back: fresh answers again.
    with contextlib.ExitStack() as stack:
        south.start(stack)
        fresh = _wait(lambda: (r := city.get(cached)).headers.get("OneMap-Cache") in (
            "miss", "revalidated", "hit") and r, 10)
        assert fresh.status_code == 200 and "OneMap-Stale" not in fresh.headers


def test_removing_a_node_withdraws_its_layers(joined):
    city = joined["city"]
    token = city.keys["planner"]
    assert city.get("/federation/north/collections/wards/items?limit=1",
                    "clerk").status_code == 200
    gone = city.cli("federation", "remove", "north")
    assert gone.returncode == 0, gone.stderr
    assert _records(city, "planner", "wards") == []
    r = httpx.get(f"{city.url}/federation/north/collections/wards/items",
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404


def test_rule_13_who_an_asserted_caller_is_here():
    """Pure: the departments, clearance and rights of a caller another node asserts."""
    from access.directory import Directory
    from access.policy import ANONYMOUS, Policy

    d = Directory(("public", "internal", "sensitive", "secret"))
    d._departments = {
        "city": {"id": "city", "parent_id": None, "max_level": "internal", "area_id": 7},
        "city-planning": {"id": "city-planning", "parent_id": "city",
                          "max_level": "sensitive", "area_id": None}}
    planner = d.federated("city", {"sub": "ann", "dep": ["planning", "gov"],
                                   "lvl": "secret"})
    assert planner.departments == ("city-planning", "city") and planner.area_id == 7
    assert planner.max_level == "sensitive"  # the lower of the two
    assert planner.name == "city/ann" and planner.node == "city" and not planner.admin
    clerk = d.federated("city", {"sub": "bo", "dep": ["records"], "lvl": "public"})
    assert clerk.departments == ("city",) and clerk.max_level == "public"
    stranger = d.federated("east", {"sub": "cy", "dep": ["planning"]})
    assert stranger.departments == () and stranger.max_level == "public"
    anon = d.federated("city", {"sub": "anonymous"})
    assert anon.anonymous and anon.node == "city"
    p = Policy(d.levels)
    assert not p.may_write(planner) and not p.may_write(clerk)
    assert p.cascade_refusal(planner, "south", "roads") is not None  # never a third node
    assert p.cascade_refusal(ANONYMOUS, "south", "roads") is None
    assert p.sees_record(ANONYMOUS, "public", "unconditional")
    assert not p.sees_record(ANONYMOUS, "public", "conditional")
    assert not p.sees_record(clerk, "internal", "unconditional")
    assert p.sees_record(planner, "sensitive", "conditional")

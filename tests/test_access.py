"""Authorization across every endpoint family and principal kind, over real HTTP.

The city: departments city > civil, chaoyang, health. Civil affairs owns ``residents``
(internal, shared on condition); Chaoyang district may read it inside its jurisdiction
with ID numbers masked; health owns ``clinics`` (internal, shared unconditionally); one
``vault`` layer is secret.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import mapbox_vector_tile
import mercantile
import psycopg
import pytest
import shapely

from access import admin
from access.admin import Actor
from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from tests.conftest import SAMPLES

CHAOYANG, HAIDIAN = "156110105", "156110108"
ORIGIN = "https://apps.chaoyang.example"


@dataclass
class World:
    keys: dict[str, str]
    points: dict[str, list[tuple[float, float]]]


def _points(district: str, n: int) -> list[tuple[float, float]]:
    d = gpd.read_file(SAMPLES / "beijing-districts-cgcs2000.geojson")
    shape = d[d.gb.astype(str) == district].geometry.iloc[0]
    c = shape.representative_point()
    out = [(c.x + 0.001 * i, c.y + 0.0007 * i) for i in range(n)]
    assert all(shape.contains(shapely.Point(p)) for p in out)
    return out


def _residents(path: Path, points: dict[str, list[tuple[float, float]]]) -> None:
    feats = []
    for district, pts in points.items():
        for i, (x, y) in enumerate(pts):
            feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                          "properties": {"rid": f"{district[-3:]}-{i}", "name": f"p{i}",
                                         "id_number": f"11010519800101{i:04d}",
                                         "phone": f"1390000{i:04d}", "district": district}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


@pytest.fixture(scope="module")
def world(settings, sample_layers, tmp_path_factory, http_base) -> World:
    import httpx

    points = {CHAOYANG: _points(CHAOYANG, 6), HAIDIAN: _points(HAIDIAN, 4)}
    src = tmp_path_factory.mktemp("access") / "residents.geojson"
    _residents(src, points)

    async def bootstrap() -> str:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            actor = Actor("test")
            await admin.create_department(conn, actor, settings.levels, id="city",
                                          name="City")
            await admin.create_principal(conn, actor, name="root", kind="user",
                                         department="city", admin=True)
            return (await admin.create_key(conn, actor, principal="root"))["key"]

    root = asyncio.run(bootstrap())
    keys = {"root": root}
    with httpx.Client(base_url=http_base, timeout=30,
                      headers={"Authorization": f"Bearer {root}"}) as c:
        def post(path: str, body: dict) -> dict:
            r = c.post(path, json=body)
            assert r.status_code == 201, r.text
            return r.json()

        area = post("/admin/areas", {"name": "Chaoyang", "from_layer": "districts",
                                     "feature": CHAOYANG})["id"]
        post("/admin/departments", {"id": "civil", "name": "Civil affairs", "parent": "city",
                                    "max_level": "sensitive"})
        post("/admin/departments", {"id": "chaoyang", "name": "Chaoyang district",
                                    "parent": "city", "area_id": area})
        post("/admin/departments", {"id": "health", "name": "Health", "parent": "city"})
        # Layers are owned by departments of the directory, so these come after them.
        ingest_vector(src, "residents", key="rid", settings=settings, meta=LayerMeta(
            department="civil", sharing_type="conditional", level="internal"))
        ingest_vector(src, "clinics", key="rid", settings=settings, meta=LayerMeta(
            department="health", sharing_type="unconditional", level="internal"))
        ingest_vector(src, "vault", key="rid", settings=settings, meta=LayerMeta(
            department="civil", sharing_type="conditional", level="secret"))
        for name, dept in (("civil_user", "civil"), ("cy_user", "chaoyang"),
                           ("health_user", "health"), ("embedder", "chaoyang")):
            post("/admin/principals", {"name": name, "kind": "user", "department": dept})
            keys[name] = post("/admin/keys", {"principal": name})["key"]
        post("/admin/principals", {"name": "cy_sso", "kind": "user", "department": "chaoyang",
                                   "subject": "cy-sub"})
        keys["embed"] = post("/admin/keys", {"principal": "embedder", "kind": "embed",
                                             "origins": [ORIGIN],
                                             "layers": ["residents"]})["key"]
        keys["expired"] = post("/admin/keys", {"principal": "cy_user",
                                               "expires_at": "2020-01-01T00:00:00Z"})["key"]
        keys["limited"] = post("/admin/keys", {"principal": "health_user",
                                               "rate_limit": 3})["key"]
        post("/admin/grants", {"to": "department:chaoyang", "layers": "residents",
                               "masked": {"id_number": "middle"}})
        r = c.put("/admin/layers/residents/classification",
                  json={"fields": {"phone": "sensitive"}})
        assert r.status_code == 200, r.text
    return World(keys, points)


@pytest.fixture(scope="module")
def http_base(server) -> str:
    return server


def get(http, path: str, who: str | None, world: World, **headers: str):
    if who is not None:
        headers["Authorization"] = f"Bearer {world.keys[who]}"
    return http.get(path, headers=headers)


def tile_of(point: tuple[float, float], z: int) -> str:
    t = mercantile.tile(point[0], point[1], z)
    return f"{t.z}/{t.x}/{t.y}"


def mvt(body: bytes) -> dict:
    return mapbox_vector_tile.decode(body)


LAYER_URLS = ["/collections/{l}", "/collections/{l}/items", "/collections/{l}/queryables",
              "/collections/{l}/items/{fid}", "/tiles/{l}/tilejson.json", "/tiles/{l}/{tile}.mvt",
              "/styles/{l}/style.json", "/layers/{l}", "/collections/catalog/items/{l}"]


def urls(layer: str, world: World) -> list[str]:
    point = world.points[CHAOYANG][0]
    return [u.format(l=layer, fid="105-0", tile=tile_of(point, 14)) for u in LAYER_URLS]


@pytest.mark.parametrize("who", [None, "health_user"])
def test_denied_layer_is_missing_on_every_endpoint(http, world, who):
    for url in urls("residents", world):
        denied = get(http, url, who, world)
        missing = get(http, url.replace("residents", "nosuchlayer"), who, world)
        assert denied.status_code == missing.status_code == 404, url
        assert denied.json()["title"] == missing.json()["title"]
    for listing, pick in (("/collections", lambda d: [c["id"] for c in d["collections"]]),
                          ("/layers", lambda d: [ly["id"] for ly in d["layers"]]),
                          ("/collections/catalog/items?limit=100",
                           lambda d: [f["id"] for f in d["features"]])):
        ids = pick(get(http, listing, who, world).json())
        assert "residents" not in ids and "vault" not in ids and "districts" in ids
    # Signed in, a layer shared unconditionally at the department's level is readable.
    clinics = get(http, "/collections/clinics/items", who, world)
    assert clinics.status_code == (200 if who else 404)


def test_owner_reads_everything(http, world):
    r = get(http, "/collections/residents/items?limit=100", "civil_user", world)
    assert r.status_code == 200
    feats = r.json()["features"]
    assert len(feats) == 10
    assert {f["properties"]["id_number"] for f in feats} == {
        f"11010519800101{i:04d}" for i in range(6)} | {f"11010519800101{i:04d}" for i in range(4)}
    assert "phone" in feats[0]["properties"]
    assert get(http, "/collections/vault", "civil_user", world).status_code == 200


def test_district_sees_its_area_masked_without_secret_fields(http, world):
    r = get(http, "/collections/residents/items?limit=100", "cy_user", world)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["numberMatched"] == body["numberReturned"] == 6
    for f in body["features"]:
        assert f["properties"]["district"] == CHAOYANG
        assert f["properties"]["id_number"].startswith("110") and "*" in \
            f["properties"]["id_number"] and f["properties"]["id_number"].endswith(
                f["properties"]["id_number"][-4:])
        assert "phone" not in f["properties"]
    # A feature outside the area does not exist; one inside does, masked.
    assert get(http, "/collections/residents/items/104-0", "cy_user", world).status_code == 404
    assert get(http, f"/collections/residents/items/{HAIDIAN[-3:]}-0", "cy_user",
               world).status_code == 404
    one = get(http, "/collections/residents/items/105-0", "cy_user", world).json()
    assert one["properties"]["id_number"] == "110***********0000"
    # Hidden and masked fields cannot be asked for or filtered on.
    q = get(http, "/collections/residents/queryables", "cy_user", world).json()["properties"]
    assert "phone" not in q and "id_number" not in q and "district" in q
    for bad in ("properties=phone", "filter=id_number LIKE '1101%'",
                "filter=phone = '13900000000'"):
        assert get(http, f"/collections/residents/items?{bad}", "cy_user",
                   world).status_code == 400, bad
    # The data dictionary shown leaves the hidden field out.
    fields = [f["name"] for f in get(http, "/layers/residents", "cy_user", world).json()[
        "fields"]]
    assert "phone" not in fields and "id_number" in fields


def test_tiles_obey_area_and_masks(http, world):
    inside = tile_of(world.points[CHAOYANG][0], 14)
    outside = tile_of(world.points[HAIDIAN][0], 14)
    civil_in = mvt(get(http, f"/tiles/residents/{inside}.mvt", "civil_user", world).content)
    cy_in = mvt(get(http, f"/tiles/residents/{inside}.mvt", "cy_user", world).content)
    cy_out = get(http, f"/tiles/residents/{outside}.mvt", "cy_user", world)
    assert cy_out.status_code == 200 and mvt(cy_out.content) == {}
    assert "covered=0;kept=0" in cy_out.headers["OneMap-Tile-Features"]
    civil_props = [f["properties"] for f in civil_in["residents"]["features"]]
    cy_props = [f["properties"] for f in cy_in["residents"]["features"]]
    assert len(civil_props) == len(cy_props) > 0
    assert all("phone" in p for p in civil_props) and not any("phone" in p for p in cy_props)
    assert all("*" in p["id_number"] for p in cy_props)
    assert not any("*" in p["id_number"] for p in civil_props)
    # Low zoom: the counts of cells reveal nothing outside the area.
    z8 = tile_of(world.points[CHAOYANG][0], 8)
    assert tile_of(world.points[HAIDIAN][0], 8) == z8
    civil = get(http, f"/tiles/residents/{z8}.mvt", "civil_user", world)
    cy = get(http, f"/tiles/residents/{z8}.mvt", "cy_user", world)
    assert "covered=10" in civil.headers["OneMap-Tile-Features"]
    assert "covered=6" in cy.headers["OneMap-Tile-Features"]
    assert civil.headers["Cache-Control"].startswith("private")


def test_same_tile_url_gives_each_principal_its_own_bytes(http, world):
    url = f"/tiles/residents/{tile_of(world.points[CHAOYANG][0], 10)}.mvt"
    first = {who: get(http, url, who, world) for who in ("civil_user", "cy_user")}
    again = {who: get(http, url, who, world) for who in ("civil_user", "cy_user")}
    for who in first:
        assert again[who].headers["OneMap-Cache"] == "hit"
        assert again[who].content == first[who].content
    assert first["civil_user"].content != first["cy_user"].content
    assert first["civil_user"].headers["ETag"] != first["cy_user"].headers["ETag"]
    # The ETag one principal got is no 304 for the other.
    r = get(http, url, "cy_user", world, **{"If-None-Match": first["civil_user"].headers["ETag"]})
    assert r.status_code == 200 and r.content == first["cy_user"].content
    assert get(http, url, None, world).status_code == 404


def test_levels(http, world):
    assert get(http, "/collections/vault", "cy_user", world).status_code == 404
    with_root = {"Authorization": f"Bearer {world.keys['root']}"}
    grant = http.post("/admin/grants", headers=with_root,
                      json={"to": "cy_user", "layers": "vault"}).json()
    # A grant without clearance for the level opens nothing.
    assert get(http, "/collections/vault", "cy_user", world).status_code == 404
    cleared = http.post("/admin/grants", headers=with_root,
                        json={"to": "cy_user", "layers": "vault", "max_level": "secret"})
    assert cleared.status_code == 201
    assert get(http, "/collections/vault", "cy_user", world).status_code == 200
    for g in (grant, cleared.json()):
        assert http.delete(f"/admin/grants/{g['id']}", headers=with_root).status_code == 204
    assert get(http, "/collections/vault", "cy_user", world).status_code == 404


def test_embedding_key_origin_layers_and_url(http, world):
    url = f"/tiles/residents/{tile_of(world.points[CHAOYANG][0], 14)}.mvt"
    key = world.keys["embed"]
    ok = http.get(f"{url}?key={key}", headers={"Origin": ORIGIN})
    assert ok.status_code == 200 and mvt(ok.content)
    assert http.get(f"{url}?key={key}", headers={"Referer": f"{ORIGIN}/map"}).status_code == 200
    assert http.get(f"{url}?key={key}", headers={"Origin": "https://evil.example"}
                    ).status_code == 403
    assert http.get(f"{url}?key={key}").status_code == 403
    # The key opens only its layers. It rides into the tile URLs of the TileJSON it came
    # with (so a map library given that URL alone draws), in a private answer only, and
    # appears in nothing else served back.
    assert http.get(f"/collections/clinics?key={key}", headers={"Origin": ORIGIN}
                    ).status_code == 404
    tj = http.get(f"/tiles/residents/tilejson.json?key={key}", headers={"Origin": ORIGIN})
    assert tj.status_code == 200 and tj.headers["cache-control"].startswith("private")
    assert all(f"key={key}" in t for t in tj.json()["tiles"])
    assert key not in json.dumps({k: v for k, v in tj.json().items() if k != "tiles"})
    items = http.get(f"/collections/residents/items?limit=1&key={key}",
                     headers={"Origin": ORIGIN})
    assert items.status_code == 200 and key not in items.text
    assert any(ln["rel"] == "next" for ln in items.json()["links"])
    # An API key is not for URLs.
    assert http.get(f"{url}?key={world.keys['cy_user']}").status_code == 401


def test_bad_credentials_are_refused(http, world, issuer):
    url = "/collections/residents"
    for header in (f"Bearer {world.keys['expired']}", "Bearer om_nosuch_secret",
                   f"Bearer {world.keys['cy_user'][:-2]}xx", "Bearer", "Basic abc",
                   "Bearer not-a-jwt"):
        r = http.get(url, headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.headers["content-type"] == "application/problem+json"
        assert "Traceback" not in r.text
    # JWTs: good, expired, wrongly signed, for another audience or issuer, unknown subject.
    good = issuer.token("cy-sub")
    r = http.get("/collections/residents/items", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200 and r.json()["numberMatched"] == 6
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for bad in (issuer.token("cy-sub", expires_in=-10), issuer.token("cy-sub", key=other),
                issuer.token("cy-sub", audience="elsewhere"),
                issuer.token("cy-sub", issuer="https://evil.example"),
                issuer.token("nobody")):
        r = http.get(url, headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401


def test_revoked_key_stops_at_once(http, world):
    with_root = {"Authorization": f"Bearer {world.keys['root']}"}
    made = http.post("/admin/keys", headers=with_root, json={"principal": "cy_user"}).json()
    auth = {"Authorization": f"Bearer {made['key']}"}
    assert http.get("/collections/residents", headers=auth).status_code == 200
    assert http.delete(f"/admin/keys/{made['id']}", headers=with_root).status_code == 204
    assert http.get("/collections/residents", headers=auth).status_code == 401
    listed = http.get("/admin/keys", headers=with_root).text
    secret = made["key"].removeprefix(f"om_{made['id']}_")
    assert made["key"] not in listed and secret not in listed


def _access_health(http) -> dict:
    return http.get("/healthz").json()["access"]


def _revoke_elsewhere(http, world, db, rounds: int) -> None:
    """Keys made over HTTP, revoked straight in the database (as the CLI or another
    server would): each is refused as soon as the change's notice arrives, which is within
    a few milliseconds of its commit (half a second allowed on a loaded machine)."""
    with_root = {"Authorization": f"Bearer {world.keys['root']}"}
    for _ in range(rounds):
        made = http.post("/admin/keys", headers=with_root,
                         json={"principal": "cy_user"}).json()
        auth = {"Authorization": f"Bearer {made['key']}"}
        assert http.get("/collections/residents", headers=auth).status_code == 200
        db.execute("UPDATE onemap.keys SET revoked_at = now() WHERE id = %s", (made["id"],))
        deadline = time.monotonic() + 0.5
        while http.get("/collections/residents", headers=auth).status_code != 401:
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.005)


def test_access_changes_arrive_as_notices(http, world, db):
    """No request reads the access version while the notices are heard, and a change made
    by another process holds from the next request all the same."""
    assert _access_health(http)["notices"] is True
    before = _access_health(http)["reads"]
    for _ in range(30):
        assert get(http, "/collections/residents", "civil_user", world).status_code == 200
    assert _access_health(http)["reads"] - before <= 1
    _revoke_elsewhere(http, world, db, 25)


def test_access_without_notices_reads_every_request(http, world, db):
    """The listening connection cut: requests read the version themselves, so revocation
    still holds at once, and the notices come back."""
    cut = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'onemap access notices'").fetchall()
    assert cut and all(ok for (ok,) in cut)
    before = _access_health(http)["reads"]
    _revoke_elsewhere(http, world, db, 3)
    assert _access_health(http)["reads"] > before
    deadline = time.monotonic() + 15
    while not _access_health(http)["notices"]:
        assert time.monotonic() < deadline, "the notices did not come back"
        time.sleep(0.2)
    _revoke_elsewhere(http, world, db, 3)


def test_rate_limit(http, world):
    codes = [get(http, "/collections", "limited", world).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    r = get(http, "/collections", "limited", world)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_grant_change_takes_effect_without_restart(http, world):
    with_root = {"Authorization": f"Bearer {world.keys['root']}"}
    assert get(http, "/collections/residents", "health_user", world).status_code == 404
    g = http.post("/admin/grants", headers=with_root,
                  json={"to": "department:health", "layers": "resid*",
                        "hidden": ["id_number", "phone"], "filter": "district = '156110108'"})
    assert g.status_code == 201, g.text
    r = get(http, "/collections/residents/items?limit=100", "health_user", world).json()
    assert r["numberMatched"] == 4
    assert all("id_number" not in f["properties"] for f in r["features"])
    # The id is made of no concealed field here, so features are found by id.
    assert get(http, "/collections/residents/items/108-0", "health_user", world
               ).status_code == 200
    http.delete(f"/admin/grants/{g.json()['id']}", headers=with_root)
    assert get(http, "/collections/residents", "health_user", world).status_code == 404


def test_admin_api_is_for_administrators(http, world):
    assert http.get("/admin/grants").status_code == 401
    assert get(http, "/admin/grants", "civil_user", world).status_code == 403
    assert http.post("/admin/grants", json={"to": "public", "layers": "*"},
                     headers={"Authorization": f"Bearer {world.keys['civil_user']}"}
                     ).status_code == 403
    with_root = {"Authorization": f"Bearer {world.keys['root']}"}
    for body, status in (({"to": "public", "layers": "residents", "publish": True}, 400),
                         ({"to": "nobody", "layers": "residents"}, 404),
                         ({"to": "cy_user", "layers": "residents", "masked": {"x": "middle"}},
                          400),
                         ({"to": "cy_user", "layers": "residents", "filter": "nope = 1"}, 400),
                         ({"to": "cy_user", "layers": "residents", "bogus": 1}, 400),
                         ({"to": "cy_user"}, 400)):
        r = http.post("/admin/grants", headers=with_root, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"


def test_audit_holds_every_case(http, world):
    time.sleep(0.01)
    get(http, "/collections/residents/items?limit=5", "cy_user", world)
    get(http, "/collections/residents", "health_user", world)
    http.get("/collections/residents", headers={"Authorization": "Bearer om_nosuch_x"})
    with_root = {"Authorization": f"Bearer {world.keys['root']}"}
    rows = http.get("/admin/audit?layer=residents&limit=1000", headers=with_root).json()
    seen = {(r["principal"], r["status"]) for r in rows}
    assert ("cy_user", 200) in seen and ("health_user", 404) in seen
    assert ("anonymous", 404) in seen
    items = next(r for r in rows if r["principal"] == "cy_user" and r["path"].endswith("/items"))
    assert items["features"] == 5 and items["department"] == "chaoyang"
    refused = http.get("/admin/audit?principal=anonymous&limit=1000", headers=with_root).json()
    assert any(r["status"] == 401 for r in refused)
    tiles = http.get("/admin/audit?action=tiles&limit=1000", headers=with_root).json()
    assert any(r["detail"].get("tile") for r in tiles)
    changes = http.get("/admin/audit?action=admin&limit=1000", headers=with_root).json()
    assert {"grant", "revoke grant", "create key", "revoke key", "classify"} <= {
        r["method"] for r in changes}
    assert all(world.keys["embed"] not in json.dumps(r) for r in
               http.get("/admin/audit?limit=10000", headers=with_root).json())


@pytest.mark.parametrize("path", [
    "/tiles/residents';DROP TABLE onemap.layers;--/0/0/0.mvt",
    "/collections/residents%27%20OR%201=1--/items",
    "/collections/residents/items/105-0'%20OR%20'1'='1",
    "/layers/residents'--",
    "/styles/residents,x'y/style.json",
    "/3dtiles/residents';DROP TABLE onemap.layers;--/tileset.json",
    "/3dtiles/residents/16/1'%20OR%201=1/2.glb",
])
def test_injection_through_paths(http, world, path, db):
    r = get(http, path, "civil_user", world)
    assert r.status_code in (400, 404), path
    assert "Traceback" not in r.text
    assert db.execute("SELECT count(*) FROM onemap.layers").fetchone()[0] > 0


def test_injection_through_headers_and_key(http, world, db):
    for value in ("Bearer om_x'; DROP TABLE onemap.keys;--_y", "Bearer ' OR 1=1 --",
                  f"Bearer {world.keys['civil_user']}' OR '1'='1"):
        r = http.get("/collections", headers={"Authorization": value})
        assert r.status_code == 401
    r = http.get("/tiles/residents/14/0/0.mvt?key=om_a'--_b", headers={"Origin": ORIGIN})
    assert r.status_code == 401
    r = get(http, "/collections/residents/items/105-0", "civil_user", world,
            **{"If-None-Match": "'; DROP TABLE x;--"})
    assert r.status_code == 200
    assert db.execute("SELECT count(*) FROM onemap.keys").fetchone()[0] > 0
    # Grants' filters are CQL2, parsed and bound, never SQL.
    with_root = {"Authorization": f"Bearer {world.keys['root']}"}
    r = http.post("/admin/grants", headers=with_root, json={
        "to": "cy_user", "layers": "residents", "filter": "name = 'x'' OR 1=1; --'"})
    if r.status_code == 201:
        rows = get(http, "/collections/residents/items", "cy_user", world).json()
        assert rows["numberMatched"] == 0
        http.delete(f"/admin/grants/{r.json()['id']}", headers=with_root)
    else:
        assert r.status_code == 400


@pytest.mark.parametrize("path", ["/static/../../../../etc/passwd",
                                  "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                                  "/static/..%2f..%2f..%2fetc/passwd",
                                  "/static/%252e%252e/etc/passwd"])
def test_path_traversal(http, path):
    r = http.get(path)
    assert r.status_code == 404
    assert "root:" not in r.text


def test_cli_administers_access(http, world, settings, monkeypatch, capsys):
    from onemap.cli import main

    monkeypatch.setenv("ONEMAP_DATABASE_URL", settings.database_url)
    assert main(["auth", "department", "waterworks", "--name", "Waterworks", "--parent",
                 "city"]) == 0
    assert main(["auth", "principal", "li", "--department", "waterworks"]) == 0
    capsys.readouterr()
    assert main(["auth", "key", "li", "--note", "cli test"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("om_") and "shown once" in out.err
    auth = {"Authorization": f"Bearer {key}"}
    assert http.get("/collections/clinics", headers=auth).status_code == 200
    key_id = key.split("_")[1]
    assert main(["auth", "revoke-key", key_id]) == 0
    assert http.get("/collections/clinics", headers=auth).status_code == 401
    assert main(["auth", "classify", "residents", "--level", "topsecret"]) == 2
    assert "'topsecret' is not one of" in capsys.readouterr().err
    assert main(["auth", "grant", "li", "residents", "--mask", "id_number"]) == 2
    assert main(["auth", "list", "keys"]) == 0
    assert key not in capsys.readouterr().out


def test_base_layer_daily_quota_per_key(settings, world, sample_layers, db):
    from dataclasses import replace

    from starlette.testclient import TestClient

    from mapserver.app import create_app

    db.execute("UPDATE onemap.layers SET role = 'base' WHERE id = 'clinics'")
    try:
        app = create_app(replace(settings, base_daily_items=5))
        with TestClient(app) as client:
            auth = {"Authorization": f"Bearer {world.keys['cy_user']}"}
            assert client.get("/collections/clinics/items?limit=3", headers=auth
                              ).status_code == 200
            assert client.get("/collections/clinics/items?limit=3", headers=auth
                              ).status_code == 200
            r = client.get("/collections/clinics/items?limit=3", headers=auth)
            assert r.status_code == 429 and "daily quota" in r.json()["detail"]
            # Another caller has its own quota.
            other = {"Authorization": f"Bearer {world.keys['civil_user']}"}
            assert client.get("/collections/clinics/items?limit=3", headers=other
                              ).status_code == 200
    finally:
        db.execute("UPDATE onemap.layers SET role = 'thematic' WHERE id = 'clinics'")


# Raster: an orthophoto across Chaoyang and Haidian, owned by civil affairs (internal,
# shared on condition), granted to Chaoyang, whose jurisdiction is its district.


@pytest.fixture(scope="module")
def ortho(world, settings, tmp_path_factory, http_base) -> str:
    import httpx
    import numpy as np
    import rasterio
    from rasterio.transform import from_bounds

    from ingest.raster import ingest_raster

    pts = world.points[CHAOYANG] + world.points[HAIDIAN]
    w, s = min(p[0] for p in pts) - 0.05, min(p[1] for p in pts) - 0.05
    e, n = max(p[0] for p in pts) + 0.05, max(p[1] for p in pts) + 0.05
    path = tmp_path_factory.mktemp("ortho") / "ortho.tif"
    rng = np.random.default_rng(7)
    with rasterio.open(path, "w", driver="GTiff", width=400, height=300, count=3,
                       dtype="uint8", crs="EPSG:4490",
                       transform=from_bounds(w, s, e, n, 400, 300)) as dst:
        dst.write(rng.integers(1, 255, (3, 300, 400), dtype="uint8"))
    ingest_raster(path, "ortho", settings=settings, meta=LayerMeta(
        department="civil", sharing_type="conditional", level="internal"))
    r = httpx.post(f"{http_base}/admin/grants",
                   json={"to": "department:chaoyang", "layers": "ortho"},
                   headers={"Authorization": f"Bearer {world.keys['root']}"})
    assert r.status_code == 201, r.text
    return "ortho"


def raster_tile_of(point: tuple[float, float], z: int) -> str:
    return f"/tiles/ortho/WebMercatorQuad/{tile_of(point, z)}.png"


def alpha(body: bytes):
    from rasterio.io import MemoryFile

    with MemoryFile(body) as mem, mem.open() as ds:
        return ds.read(ds.count)


@pytest.mark.parametrize("who", [None, "health_user"])
def test_denied_raster_is_missing_everywhere(http, world, ortho, who):
    p = world.points[CHAOYANG][0]
    z, x, y = tile_of(p, 14).split("/")
    urls = [raster_tile_of(p, 14), "/tiles/ortho/CGCS2000Quad/tilejson.json",
            f"/rasters/ortho/point?lon={p[0]}&lat={p[1]}", "/collections/ortho/tiles",
            f"/collections/ortho/tiles/WebMercatorQuad/{z}/{y}/{x}", "/layers/ortho"]
    for url in urls:
        denied = get(http, url, who, world)
        missing = get(http, url.replace("ortho", "nosuchlayer"), who, world)
        assert denied.status_code == missing.status_code == 404, url
    kvp = ("/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER={l}&TILEMATRIXSET=WebMercatorQuad"
           f"&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&FORMAT=image/png")
    denied = get(http, kvp.format(l="ortho"), who, world)
    missing = get(http, kvp.format(l="nosuchlayer"), who, world)
    assert denied.status_code == missing.status_code == 400
    assert denied.content.replace(b"ortho", b"") == missing.content.replace(b"nosuchlayer", b"")
    caps = get(http, "/wmts/1.0.0/WMTSCapabilities.xml", who, world).text
    assert "<ows:Identifier>ortho</ows:Identifier>" not in caps
    assert "<ows:Identifier>districts</ows:Identifier>" in caps


def test_raster_area_limits_pixels(http, world, ortho, districts_shape):
    import numpy as np
    import shapely as sh

    owner = get(http, raster_tile_of(world.points[HAIDIAN][0], 14), "civil_user", world)
    assert owner.status_code == 200 and (alpha(owner.content) == 255).all()
    # Chaoyang's user: a tile wholly in Haidian is empty; at z10 the district's edge
    # runs through the tile and the pixels shown are exactly those inside the district.
    out = get(http, raster_tile_of(world.points[HAIDIAN][0], 14), "cy_user", world)
    assert out.status_code == 204 or not alpha(out.content).any()
    z10 = tile_of(world.points[CHAOYANG][0], 10)
    got = get(http, f"/tiles/ortho/WebMercatorQuad/{z10}.png", "cy_user", world)
    mine = get(http, f"/tiles/ortho/WebMercatorQuad/{z10}.png", "civil_user", world)
    assert got.headers["ETag"] != mine.headers["ETag"] and got.content != mine.content
    a, full = alpha(got.content), alpha(mine.content)
    zz, xx, yy = map(int, z10.split("/"))
    t = mercantile.Tile(xx, yy, zz)
    b = mercantile.xy_bounds(t)
    xs = b.left + (np.arange(256) + 0.5) * (b.right - b.left) / 256
    ys = b.top - (np.arange(256) + 0.5) * (b.top - b.bottom) / 256
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = np.degrees(gx / 6378137.0), np.degrees(2 * np.arctan(np.exp(gy / 6378137.0))
                                                      - np.pi / 2)
    inside = sh.contains_xy(districts_shape, lon, lat)
    expected = inside & (full == 255)
    assert expected.any() and (~expected & (full == 255)).any()
    assert ((a == 255) == expected).mean() > 0.99
    assert not ((a == 255) & ~inside).sum() > 0.005 * a.size
    # Point values: inside yes, outside as if there were no data.
    p, q = world.points[CHAOYANG][0], world.points[HAIDIAN][0]
    assert get(http, f"/rasters/ortho/point?lon={p[0]}&lat={p[1]}", "cy_user",
               world).status_code == 200
    assert get(http, f"/rasters/ortho/point?lon={q[0]}&lat={q[1]}", "cy_user",
               world).status_code == 404
    assert got.headers["Cache-Control"].startswith("private")


@pytest.fixture(scope="module")
def districts_shape():
    d = gpd.read_file(SAMPLES / "beijing-districts-cgcs2000.geojson")
    return d[d.gb.astype(str) == CHAOYANG].geometry.iloc[0]


def test_raster_access_is_audited(http, world, ortho, db):
    get(http, raster_tile_of(world.points[CHAOYANG][0], 12), "cy_user", world)
    get(http, raster_tile_of(world.points[CHAOYANG][0], 12), None, world)
    time.sleep(1.5)  # the audit log is written in batches
    rows = db.execute("SELECT principal, status, detail FROM onemap.audit"
                      " WHERE 'ortho' = ANY(layers) AND path LIKE '/tiles/ortho/%%'").fetchall()
    seen = {(r[0], r[1]) for r in rows}
    assert ("cy_user", 200) in seen and ("anonymous", 404) in seen
    assert any(r[2].get("tile", "").startswith("WebMercatorQuad/12/") for r in rows)

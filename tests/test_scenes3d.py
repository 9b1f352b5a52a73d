"""3D scenes against real data: the Helsinki buildings extruded to their OSM heights, served
as 3D Tiles over HTTP, decoded back to the ellipsoid and checked against the source
footprints with geodesy; and the same grants as everywhere else (not listed and 404
without one, only the area's buildings, masked properties, a hidden height not used)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode, urljoin

import numpy as np
import psycopg
import pygltflib as gl
import pytest
import shapely
from pyproj import Geod, Transformer

from access import admin
from access.admin import Actor
from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from onemap.cli import main as cli
from tests.conftest import SAMPLES, department_keys, ensure_departments, read_source, serving

LAYER = "b3d"
GEOD = Geod(ellps="WGS84")
TO_LLH = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
TO_ECEF = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
TOOLS = Path(__file__).resolve().parent.parent / ".tools" / "node_modules"
VALIDATOR = TOOLS / "gltf-validator"
CESIUM = TOOLS / "cesium" / "Build" / "Cesium"
USERS = {"s3_owner": "s3_housing", "s3_district": "s3_kallio", "s3_hider": "s3_hide",
         "s3_clipped": "s3_clip",
         "s3_outsider": "s3_other"}


def expected_height(tags: object) -> float:
    """Independently of the SQL: height tag, else storeys x 3 m, else 6 m."""
    text = tags if isinstance(tags, str) else ""

    def tag(name: str) -> float | None:
        m = re.search(rf'"{re.escape(name)}"=>"\s*([0-9]+(\.[0-9]+)?)', text)
        return float(m.group(1)) if m and float(m.group(1)) > 0 else None
    h = tag("height")
    if h is None and (lv := tag("building:levels")) is not None:
        h = lv * 3.0
    return min(h, 1000.0) if h is not None else 6.0


@pytest.fixture(scope="module")
def scene(settings, sample_layers, monkeypatch_module, server):
    pbf = SAMPLES / "helsinki-centre.osm.pbf"
    ensure_departments(settings, {"s3_housing": "s3 housing"})
    ingest_vector(pbf, LAYER, source_layer="multipolygons", where="building IS NOT NULL",
                  key="osm_id,osm_way_id", settings=settings, meta=LayerMeta(
                      department="s3_housing", sharing_type="conditional", level="internal",
                      attribution="© OpenStreetMap contributors, ODbL"))
    monkeypatch_module.setenv("ONEMAP_DATABASE_URL", settings.database_url)
    monkeypatch_module.setenv("ONEMAP_DATA_DIR", str(settings.data_dir))
    assert cli(["scene3d", LAYER, "--height", "other_tags:height",
                "--levels", "other_tags:building:levels"]) == 0
    keys = department_keys(settings, USERS)
    # Real bad input: a few footprints have broken rings, which the ingest repairs; those
    # are read as empty here and left out of the checks against the source.
    source = read_source(pbf, layer="multipolygons", where="building IS NOT NULL",
                         on_invalid="ignore")
    x0, y0, x1, y1 = source.total_bounds
    west = shapely.box(x0 - 0.001, y0 - 0.001, (x0 + x1) / 2, y1 + 0.001)

    async def grants() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            actor = Actor("test")
            area = await admin.create_area(conn, actor, name="s3 west",
                                           geojson=shapely.geometry.mapping(west))
            await admin.grant(conn, actor, settings.levels, to="department:s3_kallio",
                              layers=LAYER, masked={"name": "middle"}, area_id=area)
            await admin.grant(conn, actor, settings.levels, to="department:s3_hide",
                              layers=LAYER, hidden=["other_tags"])
            await admin.grant(conn, actor, settings.levels, to="department:s3_clip",
                              layers=LAYER, area_id=area, area_mode="clip")

    asyncio.run(grants())
    source["key"] = list(zip(source.osm_id.fillna(""), source.osm_way_id.fillna(""),
                             strict=True))
    return {"keys": keys, "source": source.set_index("key"), "west": west}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def as_(scene, who: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {scene['keys'][who]}"} if who else {}


def leaves(node: dict):
    if "content" in node:
        yield node
    for child in node.get("children", []):
        yield from leaves(child)


ROOT = f"/3dtiles/{LAYER}/tileset.json"


def whole(http, headers: dict[str, str], url: str = ROOT, query: str = "") -> dict:
    """A tileset with its external tilesets fetched and put in place (each pointing tile
    gets its external root's children) and every content URI made absolute, as a viewer
    resolves them. Checks on the way that each external root matches its pointing tile
    and that each document reports the features under it."""
    r = http.get(url + query, headers=headers)
    assert r.status_code == 200, (url, r.text)
    doc = r.json()

    def expand(node: dict) -> int:
        kept = 0
        for child in node.get("children", []):
            kept += expand(child)
        uri = node.get("content", {}).get("uri")
        if uri is not None:
            target = urljoin(url, uri)
            if target.endswith(".json"):
                sub = whole(http, headers, target, query)
                assert sub["root"]["boundingVolume"] == node["boundingVolume"]
                assert sub["root"]["geometricError"] == node["geometricError"]
                node["children"] = sub["root"]["children"]
                del node["content"]
                kept += sub["kept"]
            else:
                node["content"]["uri"] = target
        return kept

    kept = expand(doc["root"])
    report = r.headers["onemap-tile-features"]
    doc["kept"] = int(report.split(";")[1].removeprefix("kept="))
    assert kept in (0, doc["kept"])  # 0: a document of content tiles only
    return doc


def decoded(http, scene, who: str | None, query: str = "") -> tuple[dict, list[dict]]:
    """The tileset, and per leaf its vertices back on the ellipsoid with their features."""
    ts = whole(http, as_(scene, who), query=query)
    out = []
    for leaf in leaves(ts["root"]):
        t = http.get(leaf["content"]["uri"] + query, headers=as_(scene, who))
        assert t.status_code == 200 and t.headers["content-type"] == "model/gltf-binary"
        out.append({"leaf": leaf, "etag": t.headers["etag"], "bytes": t.content,
                    **read_glb(t.content, leaf["transform"])})
        assert t.headers["onemap-tile-features"] == f"{LAYER};kept={out[-1]['count']}"
    assert ts["kept"] == sum(t["count"] for t in out)
    return ts, out


def read_glb(raw: bytes, transform: list[float]) -> dict:
    doc = gl.GLTF2.load_from_bytes(raw)
    blob = doc.binary_blob()

    def view(i: int, dtype) -> np.ndarray:
        v = doc.bufferViews[i]
        return np.frombuffer(blob[v.byteOffset:v.byteOffset + v.byteLength], dtype=dtype)

    prim = doc.meshes[0].primitives[0]
    xyz = view(doc.accessors[prim.attributes.POSITION].bufferView, np.float32).reshape(-1, 3)
    fids = view(doc.accessors[prim.attributes._FEATURE_ID_0].bufferView,
                np.float32).astype(int)
    enu = np.column_stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]]).astype(float)
    n = view(doc.accessors[prim.attributes.NORMAL].bufferView, np.float32).reshape(-1, 3)
    normals = np.column_stack([n[:, 0], -n[:, 2], n[:, 1]]).astype(float)
    m = np.array(transform).reshape(4, 4).T
    ecef = (m @ np.column_stack([enu, np.ones(len(enu))]).T).T
    lon, lat, h = TO_LLH.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
    meta = doc.extensions["EXT_structural_metadata"]
    table = meta["propertyTables"][0]
    # A property the table leaves out holds its noData value ("") for every feature.
    props: dict[str, list] = {k: [""] * table["count"]
                              for k in meta["schema"]["classes"]["feature"]["properties"]}
    for key, where in table["properties"].items():
        if "stringOffsets" in where:
            data, offs = view(where["values"], np.uint8).tobytes(), view(
                where["stringOffsets"], np.uint32)
            props[key] = [data[offs[i]:offs[i + 1]].decode() for i in range(table["count"])]
        else:
            props[key] = view(where["values"], np.float32).tolist()
    assert prim.extensions["EXT_mesh_features"]["featureIds"][0]["featureCount"] == \
        table["count"]
    return {"enu": enu, "normals": normals, "llh": np.column_stack([lon, lat, h]),
            "fids": fids, "props": props,
            "count": table["count"], "schema": meta["schema"]}


def to_enu(shape: shapely.Geometry, transform: list[float]) -> shapely.Geometry:
    """A lon/lat shape in a tile's east-north-up frame (its height-0 plane)."""
    inverse = np.linalg.inv(np.array(transform).reshape(4, 4).T)

    def local(xy: np.ndarray) -> np.ndarray:
        x, y, z = TO_ECEF.transform(xy[:, 0], xy[:, 1], np.zeros(len(xy)))
        return (inverse @ np.column_stack([x, y, z, np.ones(len(xy))]).T).T[:, :2]

    return shapely.transform(shape, local)


def test_buildings_rise_to_their_heights_on_their_footprints(http, scene, db):
    ts, tiles = decoded(http, scene, "s3_owner")
    assert ts["asset"]["version"] == "1.1" and ts["root"]["refine"] == "ADD"
    source = scene["source"]
    seen: set[tuple[str, str]] = set()
    checked = repaired = faced_out = walls = 0
    # The ingest's repair of a broken footprint is checked elsewhere: those are compared
    # with the shape it stored.
    stored = {(r[0] or "", r[1] or ""): shapely.from_wkb(r[2]) for r in db.execute(
        "SELECT osm_id, osm_way_id, ST_AsBinary(geom) FROM onemap_data.b3d"
        " WHERE _valid_to IS NULL")}
    for t in tiles:
        w, s, e, n, _, top = t["leaf"]["boundingVolume"]["region"]
        lon, lat, h = np.radians(t["llh"][:, 0]), np.radians(t["llh"][:, 1]), t["llh"][:, 2]
        assert (lon >= w - 1e-9).all() and (lon <= e + 1e-9).all()
        assert (lat >= s - 1e-9).all() and (lat <= n + 1e-9).all()
        assert h.min() > -0.01 and h.max() < top + 0.01
        # Each vertex's normal is its triangle's, unit length, on the side it faces.
        tri = t["enu"].reshape(-1, 3, 3)
        face = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        face /= np.linalg.norm(face, axis=1, keepdims=True)
        assert (np.einsum("ij,ij->i", np.repeat(face, 3, axis=0), t["normals"]) > 0.999).all()
        for i in range(t["count"]):
            key = (t["props"]["osm_id"][i], t["props"]["osm_way_id"][i])
            assert key not in seen, f"{key} drawn twice"
            seen.add(key)
            want = expected_height(source.loc[[key], "other_tags"].iloc[0])
            assert t["props"]["_height"][i] == pytest.approx(want)
            sel = t["fids"] == i
            tri = t["enu"][sel].reshape(-1, 3, 3)
            hs = t["llh"][sel, 2].reshape(-1, 3)
            assert np.allclose(hs[np.abs(hs) > 0.01], want, atol=0.01)
            footprint = source.loc[[key]].geometry.iloc[0]
            if footprint is None or not footprint.is_valid:
                footprint, repaired = stored[key], repaired + 1
            inside = shapely.contains_xy(footprint.buffer(2e-6), t["llh"][sel, 0],
                                         t["llh"][sel, 1])
            assert inside.all(), f"{key}: vertices off the footprint"
            cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            areas = np.linalg.norm(cross, axis=1) / 2
            roof = (np.abs(hs - want) < 0.01).all(axis=1)
            assert (cross[roof, 2] > 0).all(), f"{key}: a roof faces down"
            # A wall faces out: a step along its normal leaves the footprint, one against
            # it enters (steps of 5 cm, in the tile's own frame).
            mid, normal = tri[~roof].mean(axis=1)[:, :2], cross[~roof, :2]
            normal /= np.linalg.norm(normal, axis=1)[:, None]
            plan = to_enu(footprint, t["leaf"]["transform"])
            out = shapely.contains_xy(plan, *(mid + 0.05 * normal).T)
            into = shapely.contains_xy(plan, *(mid - 0.05 * normal).T)
            faced_out += int((~out & into).sum())
            walls += len(mid)
            # pyproj takes a hole's area away only when its ring runs against the shell's.
            area = GEOD.geometry_area_perimeter(shapely.orient_polygons(footprint))[0]
            # Walls stand on every ring, holes too (pyproj's perimeter counts only shells).
            perimeter = sum(GEOD.geometry_length(r) for r in shapely.get_rings(
                shapely.get_parts(footprint)))
            assert areas[roof].sum() == pytest.approx(abs(area), rel=5e-3)
            assert areas[~roof].sum() == pytest.approx(perimeter * want, rel=5e-3)
            checked += 1
    # Every current building is in exactly one tile.
    assert checked == len(seen) == len(stored) > 400 and repaired < 15
    assert faced_out > 0.99 * walls


def test_tileset_nests_and_bounds_its_children(http, scene):
    """Through the external tilesets too: each child inside its parent's bounds, with a
    smaller error, down to the content tiles."""
    ts = whole(http, as_(scene, "s3_owner"))

    def walk(node: dict, depth: int) -> int:
        region = node["boundingVolume"]["region"]
        for child in node.get("children", []):
            c = child["boundingVolume"]["region"]
            assert c[0] >= region[0] - 1e-12 and c[1] >= region[1] - 1e-12
            assert c[2] <= region[2] + 1e-12 and c[3] <= region[3] + 1e-12
            assert c[5] <= region[5] and child["geometricError"] < node["geometricError"]
        return max([depth, *(walk(c, depth + 1) for c in node.get("children", []))])

    assert walk(ts["root"], 0) >= 5  # the split zoom is 4 above the content tiles
    root = http.get(ROOT, headers=as_(scene, "s3_owner")).json()
    assert all(n["content"]["uri"].endswith(".json") for n in leaves(root["root"]))
    assert ts["geometricError"] > ts["root"]["geometricError"] > 0


def test_scene_obeys_the_grants(http, scene, settings):
    """Not listed and 404 without a grant; the area's buildings only, names masked; the
    height of a caller who may not read the height field is the default."""
    missing = http.get("/3dtiles/nope/tileset.json", headers=as_(scene, "s3_outsider"))
    for who in ("s3_outsider", None):
        listed = http.get("/3dtiles", headers=as_(scene, who)).json()["scenes"]
        assert LAYER not in [s["id"] for s in listed]
        r = http.get(f"/3dtiles/{LAYER}/tileset.json", headers=as_(scene, who))
        assert r.status_code == 404 and r.json()["detail"] == \
            missing.json()["detail"].replace("nope", LAYER)
    assert LAYER in [s["id"] for s in http.get(
        "/3dtiles", headers=as_(scene, "s3_district")).json()["scenes"]]

    _, full = decoded(http, scene, "s3_owner")
    _, part = decoded(http, scene, "s3_district")
    west = scene["west"]
    owner = {(t["props"]["osm_id"][i], t["props"]["osm_way_id"][i]): t["props"]["name"][i]
             for t in full for i in range(t["count"])}
    shown = {(t["props"]["osm_id"][i], t["props"]["osm_way_id"][i]): t["props"]["name"][i]
             for t in part for i in range(t["count"])}
    with psycopg.connect(settings.database_url) as conn:
        expected = {tuple(r) for r in conn.execute(
            "SELECT coalesce(osm_id, ''), coalesce(osm_way_id, '') FROM onemap_data.b3d"
            " WHERE _valid_to IS NULL"
            " AND ST_Intersects(geom, ST_GeomFromText(%s, 4326))", (west.wkt,))}
    assert set(shown) == expected and 0 < len(expected) < len(owner)
    named = [k for k in shown if len(owner[k]) > 7]
    assert named and all(shown[k] != owner[k] and shown[k][:3] == owner[k][:3]
                         for k in named)
    # A tile east of the area, which the owner has, is missing for the district.
    east = [t for t in full if all((t["props"]["osm_id"][i], t["props"]["osm_way_id"][i])
                                   not in expected for i in range(t["count"]))]
    assert east
    r = http.get(east[0]["leaf"]["content"]["uri"], headers=as_(scene, "s3_district"))
    assert r.status_code == 404
    # The same tile URL: each caller gets the bytes made for what it may see.
    both = {t["leaf"]["content"]["uri"]: t for t in full}
    shared = [(t, both[t["leaf"]["content"]["uri"]]) for t in part
              if t["leaf"]["content"]["uri"] in both]
    assert shared and all(mine["etag"] != theirs["etag"] for mine, theirs in shared)
    # Where the caller sees less (fewer buildings, or a masked name), the bytes differ.
    differ = [(mine, theirs) for mine, theirs in shared if mine["count"] != theirs["count"]
              or any(len(n) > 7 for n in theirs["props"]["name"])]
    assert differ and all(mine["bytes"] != theirs["bytes"] for mine, theirs in differ)

    # Clipped at the area's edge: buildings across it are cut, nothing lies outside.
    _, clipped = decoded(http, scene, "s3_clipped")
    edge = west.buffer(1e-7)
    assert all(shapely.contains_xy(edge, t["llh"][:, 0], t["llh"][:, 1]).all()
               for t in clipped)
    cut = {(t["props"]["osm_id"][i], t["props"]["osm_way_id"][i]) for t in clipped
           for i in range(t["count"])}
    assert cut <= expected and len(cut) >= len(expected) - 2
    crossing = {(t["props"]["osm_id"][i], t["props"]["osm_way_id"][i]) for t in full
                for i in range(t["count"])
                if not shapely.contains_xy(edge, *t["llh"][t["fids"] == i, :2].T).all()}
    assert crossing & cut, "no building crosses the area's edge: the clip went untested"

    _, hidden = decoded(http, scene, "s3_hider")
    assert all("other_tags" not in t["props"] for t in hidden)
    assert {h for t in hidden for h in t["props"]["_height"]} == {6.0}
    assert all(np.abs(t["llh"][:, 2]).max() < 6.01 for t in hidden)


def test_embedding_key_opens_the_scene_from_its_origin_only(http, scene, settings):
    """Viewers cannot send headers: the key rides in the tileset's URL, tiles are relative
    to it (a viewer repeats the query), and the key is never written into a response."""
    async def key() -> str:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            made = await admin.create_key(conn, Actor("test"), principal="s3_district",
                                          kind="embed", origins=["https://twin.example"],
                                          layers=[LAYER])
            return made["key"]

    k = asyncio.run(key())
    twin = {"Origin": "https://twin.example"}
    r = http.get(f"{ROOT}?key={k}", headers=twin)
    assert r.status_code == 200 and k not in r.text
    ts = whole(http, twin, query=f"?key={k}")
    uri = next(leaves(ts["root"]))["content"]["uri"]
    assert "?" not in uri and "key" not in uri
    t = http.get(f"{uri}?key={k}", headers=twin)
    assert t.status_code == 200 and k.encode() not in t.content
    assert http.get(f"{ROOT}?key={k}", headers={"Origin": "https://evil.example"}
                    ).status_code == 403
    assert http.get(f"{ROOT}?key={k}").status_code == 403


def test_scene_access_is_audited(http, scene, db):
    http.get(f"/3dtiles/{LAYER}/tileset.json", headers=as_(scene, "s3_district"))
    http.get(f"/3dtiles/{LAYER}/tileset.json", headers=as_(scene, "s3_outsider"))
    time.sleep(1.5)  # the audit log is written in batches
    rows = db.execute("SELECT principal, status, action, features FROM onemap.audit"
                      " WHERE %s = ANY(layers) AND path LIKE '/3dtiles/%%'",
                      (LAYER,)).fetchall()
    seen = {(r[0], r[1], r[2]) for r in rows}
    assert ("s3_district", 200, "3d") in seen and ("s3_outsider", 404, "3d") in seen
    assert any(r[0] == "s3_district" and r[3] for r in rows)


def test_scene_publication_refuses_bad_definitions(scene, capsys):
    assert cli(["scene3d", "roads", "--height", "x"]) == 2
    assert "has no polygons" in capsys.readouterr().err
    assert cli(["scene3d", LAYER, "--height", "floors"]) == 2
    assert "has no field 'floors'" in capsys.readouterr().err
    assert cli(["scene3d", "nope"]) == 2


def test_tiles_pass_the_khronos_gltf_validator(http, scene, tmp_path):
    assert VALIDATOR.exists(), "make test installs gltf-validator under .tools/"
    _, tiles = decoded(http, scene, "s3_district")
    script = ("const v=require(process.argv[1]);const fs=require('fs');"
              "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])))"
              ".then(r=>console.log(JSON.stringify(r.issues)))")
    for t in tiles[:5]:
        path = tmp_path / "t.glb"
        path.write_bytes(t["bytes"])
        out = subprocess.run(["node", "-e", script, str(VALIDATOR), str(path)],
                             capture_output=True, text=True, check=True).stdout
        issues = json.loads(out)
        assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, out


def test_scene_as_it_stood(http, scene, db):
    """An edit raises a building at once; ``as-of`` shows the city before it, through the
    external tilesets and tiles alike (the query rides along, as a viewer sends it)."""
    moment = db.execute("SELECT now()").fetchone()[0].isoformat()
    owner = as_(scene, "s3_owner")
    item = http.get(f"/collections/{LAYER}/items", params={"limit": 1}, headers=owner).json()
    fid = item["features"][0]["id"]
    r = http.patch(f"/collections/{LAYER}/items/{fid}", headers=owner,
                   json={"properties": {"other_tags": '"height"=>"150"'}})
    assert r.status_code == 200, r.text

    def heights(query: str = "") -> dict[str, float]:
        _, tiles = decoded(http, scene, "s3_owner", query)
        return {t["props"]["_fid"][i]: t["props"]["_height"][i]
                for t in tiles for i in range(t["count"])}

    now = heights()
    then = heights("?" + urlencode({"as-of": moment}))
    assert now[fid] == 150.0 and then[fid] != 150.0
    assert {k: v for k, v in now.items() if k != fid} == {
        k: v for k, v in then.items() if k != fid}


def test_cesium_draws_the_scene_through_an_embedding_key(scene, settings, db):
    """The reference viewer, CesiumJS in a headless Chromium, on the 3D page with an
    embedding key in its URL: it reads the tileset, the external tilesets and every tile
    (the key riding along), and counts the features it loaded: the area's buildings."""
    from playwright.sync_api import sync_playwright

    assert (CESIUM / "Cesium.js").exists(), "make test installs CesiumJS under .tools/"
    assert shutil.which("chromium"), "make test installs Chromium from the system's packages"
    with serving(replace(settings, cesium_dir=CESIUM)) as url:
        async def key() -> str:
            async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                             autocommit=True) as conn:
                made = await admin.create_key(conn, Actor("test"), principal="s3_district",
                                              kind="embed", origins=[url], layers=[LAYER])
                return made["key"]

        k = asyncio.run(key())
        want = db.execute(
            "SELECT count(*) FROM onemap_data.b3d t, onemap.areas a WHERE a.name = 's3 west'"
            " AND t._valid_to IS NULL AND ST_Intersects(t.geom, a.geom)").fetchone()[0]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            try:
                page = browser.new_page(viewport={"width": 1024, "height": 700})
                seen: list[str] = []
                page.on("console", lambda m: seen.append(m.text))
                page.on("response", lambda r: seen.append(f"{r.status} {r.url}"))
                page.goto(f"{url}/scene3d#key={k}")
                try:
                    page.wait_for_function("document.body.dataset.loaded === 'yes'",
                                           timeout=30_000)
                except Exception:
                    print("\n".join(seen[:40]), page.evaluate("({...document.body.dataset})"))
                    raise
                body = page.evaluate("({...document.body.dataset})")
            finally:
                browser.close()
    assert body.get("failed") is None
    assert int(body["features"]) == want > 0

"""Bad input gets a clear error or a per-feature report, and never costs the old version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Point, Polygon

from ingest.errors import IngestError
from ingest.vector import ingest_vector
from layers.catalog import get_layer
from layers.meta import LayerMeta
from layers.store import features

BOWTIE = Polygon([(116.0, 39.0), (116.1, 39.1), (116.1, 39.0), (116.0, 39.1)])
SQUARE = Polygon([(116.0, 39.0), (116.1, 39.0), (116.1, 39.1), (116.0, 39.1)])


def geojson(path: Path, feats: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def feat(code: str | None, geometry: dict | None, **props) -> dict:
    return {"type": "Feature", "properties": {"code": code, **props}, "geometry": geometry}


def test_invalid_geometries_repaired_or_rejected_with_report(tmp_path, settings, db):
    path = geojson(tmp_path / "bad.geojson", [
        feat("ok", SQUARE.__geo_interface__),
        feat("bowtie", BOWTIE.__geo_interface__),
        feat("flat", {"type": "Polygon", "coordinates": [[[116, 39], [116.1, 39], [116, 39],
                                                          [116, 39]]]}),
        feat("none", None),
        feat("far", {"type": "Point", "coordinates": [400, 39]}),
        feat(None, {"type": "Point", "coordinates": [116, 39]}),
        feat(None, None),  # no key and no geometry: still one rejection
    ])
    report = ingest_vector(path, "bad_geoms", key="code", settings=settings)
    issues = {(i.feature, i.id, i.action) for i in report.issues}
    assert issues == {(2, "bowtie", "repaired"), (3, "flat", "rejected"),
                      (4, "none", "rejected"), (5, "far", "rejected"), (6, None, "rejected"),
                      (7, None, "rejected")}
    assert report.rejected == 5  # one issue per feature, even with two faults
    reasons = {i.id: i.reason for i in report.issues}
    assert "Self-intersection" in reasons["bowtie"]
    assert "no geometry" in reasons["none"]
    assert "longitude/latitude" in reasons["far"]
    layer = get_layer(db, "bad_geoms")
    stored = {f["id"] for f in features(db, "bad_geoms", layer.fields)}
    assert stored == {"ok", "bowtie"}
    logged = db.execute("SELECT status, counts FROM onemap.ingests WHERE layer_id = 'bad_geoms'"
                        ).fetchone()
    assert logged[0] == "ok" and logged[1]["rejected"] == 5 and logged[1]["repaired"] == 1


def test_duplicate_keys_rejected_after_the_first(tmp_path, settings, db):
    path = geojson(tmp_path / "dup.geojson", [
        feat("a", Point(116, 39).__geo_interface__, n=1),
        feat("a", Point(116.1, 39).__geo_interface__, n=2),
        feat("b", Point(116.2, 39).__geo_interface__, n=3),
    ])
    report = ingest_vector(path, "dup_keys", key="code", settings=settings)
    assert [(i.feature, i.id, i.action) for i in report.issues] == [(2, "a", "rejected")]
    assert "first at feature 1" in report.issues[0].reason
    layer = get_layer(db, "dup_keys")
    rows = {f["id"]: f["properties"]["n"] for f in features(db, "dup_keys", layer.fields)}
    assert rows == {"a": 1, "b": 3}


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
@pytest.mark.parametrize("case, message", [
    ("missing_file", "file not found"),
    ("truncated_geojson", "cannot be read as vector data"),
    ("not_vector", "cannot be read as vector data"),
    ("unknown_crs", "unknown coordinate reference system 'EPSG:999999'"),
    ("missing_key", "key field 'nope' is not in the file; its fields are: code, n"),
    ("no_crs", "has no coordinate reference system"),
    ("bad_layer_id", "invalid layer id"),
    ("bad_source_layer", "no layer 'roads'; layers are: points"),
    ("bad_role", "role 'basemap' is not one of base, thematic"),
    ("bad_sharing", "sharing type 'open' is not one of"),
])
def test_clear_errors(case, message, tmp_path, settings, db):
    good = geojson(tmp_path / "good.geojson", [feat("a", Point(116, 39).__geo_interface__, n=1)])
    kwargs: dict = {"settings": settings}
    path: Path = good
    layer_id = f"err_{case}"
    if case == "missing_file":
        path = tmp_path / "nothing.geojson"
    elif case == "not_vector":
        path = tmp_path / "notes.geojson"
        path.write_text("this is not GeoJSON")
    elif case == "truncated_geojson":
        path = tmp_path / "cut.geojson"
        path.write_text(good.read_text()[:60])
    elif case == "unknown_crs":
        kwargs["source_crs"] = "EPSG:999999"
    elif case == "missing_key":
        kwargs["key"] = "nope"
    elif case == "no_crs":
        gpd.GeoDataFrame({"code": ["a"]}, geometry=[Point(1, 2)]).to_file(tmp_path / "x.shp")
        (tmp_path / "x.prj").unlink(missing_ok=True)
        path = tmp_path / "x.shp"
    elif case == "bad_layer_id":
        layer_id = "Robert'); DROP TABLE layers;--"
    elif case == "bad_source_layer":
        gpd.GeoDataFrame({"code": ["a"]}, geometry=[Point(1, 2)], crs=4326).to_file(
            tmp_path / "p.gpkg", layer="points")
        path = tmp_path / "p.gpkg"
        kwargs["source_layer"] = "roads"
    elif case == "bad_role":
        kwargs["meta"] = LayerMeta(role="basemap")
    elif case == "bad_sharing":
        kwargs["meta"] = LayerMeta(sharing_type="open")
    with pytest.raises(IngestError) as err:
        ingest_vector(path, layer_id, **kwargs)
    assert message in str(err.value)
    logged = db.execute("SELECT count(*) FROM onemap.ingests WHERE layer_id = %s",
                        (layer_id,)).fetchone()[0]
    # Bad arguments are refused before any work: nothing was read, nothing to log.
    if case.startswith("bad_") and case != "bad_source_layer":
        assert logged == 0
    assert path.name in str(err.value)


def test_failed_ingest_leaves_previous_version_intact(tmp_path, settings, db):
    first = geojson(tmp_path / "v1.geojson", [
        feat(str(i), Point(116 + i / 100, 39).__geo_interface__, n=i) for i in range(50)])
    ingest_vector(first, "intact", key="code", settings=settings)
    before = get_layer(db, "intact")
    rows_before = features(db, "intact", before.fields)
    # A second version whose file breaks off in the middle: FlatGeobuf streams, so the
    # reader fails after several batches have already been copied into the database.
    gpd.GeoDataFrame({"code": [str(i) for i in range(5000)], "n": list(range(5000))},
                     geometry=[Point(117, 40)] * 5000, crs=4326).to_file(tmp_path / "full.fgb")
    data = (tmp_path / "full.fgb").read_bytes()
    broken = tmp_path / "v2.fgb"
    broken.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(IngestError) as err:
        ingest_vector(broken, "intact", key="code", settings=settings)
    assert "v2.fgb" in str(err.value) and "layer unchanged" in str(err.value)
    after = get_layer(db, "intact")
    assert (after.version, after.feature_count) == (before.version, before.feature_count)
    assert features(db, "intact", after.fields) == rows_before
    status = db.execute("SELECT status, error FROM onemap.ingests WHERE layer_id = 'intact'"
                        " ORDER BY id DESC LIMIT 1").fetchone()
    assert status[0] == "failed" and status[1]


def test_cli_exit_codes(tmp_path, settings):
    env = {"ONEMAP_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin"}
    good = geojson(tmp_path / "cli.geojson", [feat("a", Point(116, 39).__geo_interface__, n=1)])
    ok = subprocess.run([sys.executable, "-m", "onemap.cli", "ingest", "vector", str(good),
                         "--layer", "cli_layer", "--key", "code", "--title", "CLI layer"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "cli_layer v1: read 1, new 1" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "onemap.cli", "ingest", "vector",
                          str(tmp_path / "missing.shp"), "--layer", "cli_layer"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert "missing.shp: file not found" in bad.stderr
    assert "Traceback" not in bad.stderr
    listing = subprocess.run([sys.executable, "-m", "onemap.cli", "layers"],
                             capture_output=True, text=True, env=env)
    assert listing.returncode == 0 and "cli_layer" in listing.stdout
    assert "CLI layer" in listing.stdout
    # An owner is a department of the directory: a free name is refused, and the layer
    # stays as it was.
    nobody = subprocess.run([sys.executable, "-m", "onemap.cli", "ingest", "vector", str(good),
                             "--layer", "cli_layer", "--key", "code",
                             "--department", "Ministry of Nowhere"],
                            capture_output=True, text=True, env=env)
    assert nobody.returncode == 2, nobody.stderr
    assert "no department 'Ministry of Nowhere'" in nobody.stderr
    assert "Traceback" not in nobody.stderr


def test_a_lost_database_is_a_message_not_a_traceback(tmp_path, settings):
    from tests.conftest import free_port

    env = {"ONEMAP_DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/none",
           "PATH": "/usr/bin:/bin"}
    good = geojson(tmp_path / "lost.geojson", [feat("a", Point(116, 39).__geo_interface__)])
    for args in (["ingest", "vector", str(good), "--layer", "lost", "--key", "code"],
                 ["layers"], ["auth", "list", "departments"]):
        run = subprocess.run([sys.executable, "-m", "onemap.cli", *args],
                             capture_output=True, text=True, env=env)
        assert run.returncode == 2, (args, run.stderr)
        assert "the database is not reachable" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr

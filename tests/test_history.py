"""Re-ingesting with a key is an incremental update, and every past state stays readable."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import geopandas as gpd
import shapely
from shapely.geometry import Point

from ingest.vector import ingest_vector
from layers.catalog import get_layer
from layers.store import features


def write(path, rows: dict[str, tuple[float, str]]) -> None:
    gpd.GeoDataFrame({"code": list(rows), "status": [s for _, s in rows.values()]},
                     geometry=[Point(116 + x, 39.9) for x, _ in rows.values()],
                     crs=4326).to_file(path)


def current(db, layer_id, as_of=None) -> dict[str, tuple[float, str]]:
    layer = get_layer(db, layer_id)
    return {f["id"]: (round(shapely.from_wkt(f["wkt"]).x - 116, 6), f["properties"]["status"])
            for f in features(db, layer_id, layer.fields, as_of=as_of)}


def test_incremental_update_and_as_of(tmp_path, settings, db):
    v1 = {"a": (0.01, "ok"), "b": (0.02, "ok"), "c": (0.03, "ok"), "d": (0.04, "ok")}
    write(tmp_path / "v1.gpkg", v1)
    r1 = ingest_vector(tmp_path / "v1.gpkg", "hist", key="code", settings=settings)
    assert (r1.inserted, r1.version) == (4, 1)
    first_ingest = {f["id"]: f["meta"]["_ingested_at"]
                    for f in features(db, "hist", get_layer(db, "hist").fields)}
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)

    # b changes its status, c moves, d vanishes, e is new, a stays as it was.
    v2 = {"a": (0.01, "ok"), "b": (0.02, "broken"), "c": (0.05, "ok"), "e": (0.06, "new")}
    write(tmp_path / "v2.gpkg", v2)
    r2 = ingest_vector(tmp_path / "v2.gpkg", "hist", key="code", settings=settings)
    assert (r2.inserted, r2.changed, r2.unchanged, r2.closed) == (1, 2, 1, 1)
    assert r2.version == 2

    assert current(db, "hist") == v2
    assert current(db, "hist", as_of=between) == v1
    assert get_layer(db, "hist").feature_count == 4

    rows = db.execute("SELECT _fid, _version, _valid_to IS NULL, _ingested_at"
                      " FROM onemap_data.hist ORDER BY _fid, _version").fetchall()
    by_fid: dict[str, list] = {}
    for fid, version, live, ingested in rows:
        by_fid.setdefault(fid, []).append((version, live, ingested))
    assert [(v, live) for v, live, _ in by_fid["a"]] == [(1, True)]
    assert [(v, live) for v, live, _ in by_fid["b"]] == [(1, False), (2, True)]
    assert [(v, live) for v, live, _ in by_fid["d"]] == [(1, False)]  # closed, not deleted
    # A changed feature keeps the time OneMap first received it.
    assert by_fid["b"][1][2] == first_ingest["b"]

    # The same file again changes nothing: no new version, the tiles' ETag stays.
    r3 = ingest_vector(tmp_path / "v2.gpkg", "hist", key="code", settings=settings)
    assert (r3.inserted, r3.changed, r3.closed, r3.unchanged, r3.version) == (0, 0, 0, 4, 2)

    # A vanished feature that comes back continues its own version count.
    write(tmp_path / "v3.gpkg", {**v2, "d": (0.04, "back")})
    r4 = ingest_vector(tmp_path / "v3.gpkg", "hist", key="code", settings=settings)
    assert (r4.changed, r4.inserted, r4.version) == (0, 1, 3)
    assert db.execute("SELECT max(_version) FROM onemap_data.hist WHERE _fid = 'd'"
                      ).fetchone()[0] == 2
    assert current(db, "hist", as_of=between) == v1


def test_new_and_widened_fields_keep_history_readable(tmp_path, settings, db):
    gpd.GeoDataFrame({"code": ["a"], "lanes": [2]}, geometry=[Point(116, 39)],
                     crs=4326).to_file(tmp_path / "s1.gpkg")
    ingest_vector(tmp_path / "s1.gpkg", "schema_evo", key="code", settings=settings)
    gpd.GeoDataFrame({"code": ["a"], "lanes": ["two"], "owner": ["TJ"]},
                     geometry=[Point(116, 39)], crs=4326).to_file(tmp_path / "s2.gpkg")
    ingest_vector(tmp_path / "s2.gpkg", "schema_evo", key="code", settings=settings)
    layer = get_layer(db, "schema_evo")
    types = {f.name: f.type for f in layer.fields}
    assert types == {"code": "string", "lanes": "string", "owner": "string"}
    assert layer.schema_version == 2
    versions = db.execute("SELECT _version, lanes, owner FROM onemap_data.schema_evo"
                          " ORDER BY _version").fetchall()
    assert versions == [(1, "2", None), (2, "two", "TJ")]

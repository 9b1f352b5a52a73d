"""Every listed format loads, lands in lon/lat, and reads back feature by feature."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import prcoords
import pyproj
import pytest
import shapely
from shapely.geometry import Point, Polygon

from ingest.vector import ingest_vector
from layers.catalog import get_layer
from layers.store import features
from tests.conftest import SAMPLES

CODES = ["A1", "B2", "C3"]
LONLAT = [(116.391, 39.907), (116.402, 39.915), (116.425, 39.881)]


def frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": CODES, "name": ["天安门", "Jingshan", "Tiantan"], "lanes": [4, 2, 6],
         "width": [12.5, 7.0, 20.25]},
        geometry=[Point(xy) for xy in LONLAT], crs="EPSG:4326")


def write(fmt: str, tmp: Path) -> tuple[Path, dict]:
    gdf = frame()
    if fmt == "geojson":
        p = tmp / "f.geojson"
        gdf.to_file(p, driver="GeoJSON")
    elif fmt == "gpkg":
        p = tmp / "f.gpkg"
        gdf.to_file(p, driver="GPKG", layer="poi")
    elif fmt == "fgb":
        p = tmp / "f.fgb"
        gdf.to_file(p, driver="FlatGeobuf")
    elif fmt in ("shp", "shpzip"):
        d = tmp / "shp"
        d.mkdir()
        gdf.to_file(d / "poi.shp")
        p = d / "poi.shp"
        if fmt == "shpzip":
            p = tmp / "poi.zip"
            with zipfile.ZipFile(p, "w") as z:
                for part in d.iterdir():
                    z.write(part, part.name)
    elif fmt == "csv":
        p = tmp / "f.csv"
        pd.DataFrame({"code": CODES, "name": gdf["name"], "lanes": gdf["lanes"],
                      "width": gdf["width"], "longitude": [x for x, _ in LONLAT],
                      "latitude": [y for _, y in LONLAT]}).to_csv(p, index=False)
    else:
        raise AssertionError(fmt)
    return p, {}


@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "fgb", "shp", "shpzip", "csv"])
def test_each_format_reads_back(fmt, tmp_path, settings, db):
    path, _ = write(fmt, tmp_path)
    layer_id = f"fmt_{fmt}"
    report = ingest_vector(path, layer_id, key="code", settings=settings)
    assert (report.read, report.inserted, report.rejected) == (3, 3, 0)
    rows = {f["id"]: f for f in features(db, layer_id, get_layer(db, layer_id).fields)}
    assert sorted(rows) == CODES
    for code, (lon, lat), name, lanes in zip(CODES, LONLAT, frame()["name"], [4, 2, 6],
                                             strict=True):
        got = rows[code]
        x, y = shapely.from_wkt(got["wkt"]).coords[0]
        assert (x, y) == pytest.approx((lon, lat), abs=1e-9)
        assert got["properties"]["name"] == name
        assert int(got["properties"]["lanes"]) == lanes


def test_osm_pbf_named_layer(settings, db):
    report = ingest_vector(SAMPLES / "helsinki-centre.osm.pbf", "osm_signals",
                           source_layer="points", where="highway = 'traffic_signals'",
                           key="osm_id", settings=settings)
    assert report.read == report.inserted == 135
    layer = get_layer(db, "osm_signals")
    assert layer.geometry_type == "Point" and layer.feature_count == 135
    src = gpd.read_file(SAMPLES / "helsinki-centre.osm.pbf", layer="points",
                        where="highway = 'traffic_signals'").set_index("osm_id")
    for f in features(db, "osm_signals", layer.fields):
        assert shapely.from_wkt(f["wkt"]).equals_exact(src.loc[f["id"], "geometry"], 1e-9)


def test_crs_transform_matches_pyproj(tmp_path, settings, db):
    utm = pyproj.CRS.from_epsg(32650)  # UTM 50N covers Beijing
    to_utm = pyproj.Transformer.from_crs(4326, utm, always_xy=True)
    pts = [Point(to_utm.transform(x, y)) for x, y in LONLAT]
    square = Polygon([(450000, 4415000), (450500, 4415000), (450500, 4415500),
                      (450000, 4415500)])
    gdf = gpd.GeoDataFrame({"code": [*CODES, "SQ"]}, geometry=[*pts, square], crs=utm)
    gdf.to_file(tmp_path / "utm.gpkg")
    ingest_vector(tmp_path / "utm.gpkg", "utm_points", key="code", settings=settings)
    back = pyproj.Transformer.from_crs(utm, 4326, always_xy=True)
    layer = get_layer(db, "utm_points")
    assert layer.source_crs == "EPSG:32650" and layer.crs == "EPSG:4326"
    rows = {f["id"]: shapely.from_wkt(f["wkt"]) for f in features(db, "utm_points", layer.fields)}
    for code, p in zip(CODES, pts, strict=True):
        assert rows[code].coords[0] == pytest.approx(back.transform(p.x, p.y), abs=1e-9)
    expected = shapely.transform(square, lambda xy: pd.DataFrame(
        back.transform(xy[:, 0], xy[:, 1])).T.to_numpy())
    assert rows["SQ"].equals_exact(expected, 1e-9)


def test_cgcs2000_kept_in_catalog(settings, db, sample_layers):
    layer = get_layer(db, "districts")
    assert layer.crs == "EPSG:4490" and layer.feature_count == 16
    src = gpd.read_file(SAMPLES / "beijing-districts-cgcs2000.geojson").set_index("gb")
    for f in features(db, "districts", layer.fields):
        # CGCS2000 coordinates are stored as they are: no datum shift applied.
        assert shapely.from_wkt(f["wkt"]).equals_exact(src.loc[f["id"], "geometry"], 1e-9)


def test_gcj02_offset_removed(tmp_path, settings, db):
    shifted = []
    for lon, lat in LONLAT:
        g = prcoords.wgs_gcj(prcoords.Coords(lat, lon))
        shifted.append((g.lon, g.lat))
    offset = pyproj.Geod(ellps="WGS84").inv(*LONLAT[0], *shifted[0])[2]
    assert 100 < offset < 1000  # GCJ-02 moves Beijing by hundreds of metres
    gpd.GeoDataFrame({"code": CODES}, geometry=[Point(p) for p in shifted],
                     crs="EPSG:4326").to_file(tmp_path / "gcj.geojson")
    ingest_vector(tmp_path / "gcj.geojson", "gcj_points", key="code", source_crs="GCJ02",
                  settings=settings)
    layer = get_layer(db, "gcj_points")
    rows = {f["id"]: shapely.from_wkt(f["wkt"]) for f in features(db, "gcj_points", layer.fields)}
    for code, (lon, lat) in zip(CODES, LONLAT, strict=True):
        err = pyproj.Geod(ellps="WGS84").inv(lon, lat, *rows[code].coords[0])[2]
        assert err < 0.5, f"{code} is {err:.2f} m from its true position"


def test_data_dictionary_and_times(tmp_path, settings, db):
    gdf = frame()
    gdf["surveyed"] = pd.to_datetime(["2024-03-01T08:00:00Z", "2024-04-01T08:00:00Z",
                                      "2024-05-01T08:00:00Z"])
    gdf.loc[1, "name"] = None
    gdf.to_file(tmp_path / "d.gpkg")
    before = datetime.now(UTC)
    ingest_vector(tmp_path / "d.gpkg", "dict_layer", key="code", produced_field="surveyed",
                  settings=settings)
    layer = get_layer(db, "dict_layer")
    fields = {f.name: f for f in layer.fields}
    assert fields["code"].key and not fields["code"].nullable
    assert fields["code"].type == "string" and fields["code"].length == 2
    assert fields["name"].nullable and fields["name"].length == len("Tiantan")
    assert fields["lanes"].type == "integer" and not fields["lanes"].nullable
    assert fields["width"].type == "number"
    assert fields["surveyed"].type == "datetime"
    assert layer.feature_count == 3 and layer.key_field == "code"
    assert layer.extent == pytest.approx([116.391, 39.881, 116.425, 39.915])
    rows = {f["id"]: f["meta"] for f in features(db, "dict_layer", layer.fields)}
    assert rows["A1"]["_produced_at"] == datetime(2024, 3, 1, 8, tzinfo=UTC)
    for meta in rows.values():
        assert meta["_ingested_at"] >= before and meta["_updated_at"] >= before

"""Raster layers end to end: ingest the Olinda Landsat 7 scene and DEM, read tiles back in
both grids over HTTP and check their pixels against rasterio reading the same area."""

from __future__ import annotations

import os
import shutil
import warnings
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from owslib.wmts import WebMapTileService
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rasterio.vrt import WarpedVRT
from rio_cogeo.cogeo import cog_validate

from ingest.errors import IngestError
from ingest.raster import ingest_raster
from layers.grids import CGCS2000, WEB_MERCATOR, grid
from layers.meta import LayerMeta
from tests.conftest import SAMPLES

LANDSAT = SAMPLES / "olinda-landsat7.tif"
DEM = SAMPLES / "olinda-dem.tif"
OLINDA = (-34.87, -7.99)
Y2001 = datetime(2001, 8, 1, tzinfo=UTC)
Y2011 = datetime(2011, 8, 1, tzinfo=UTC)


def decode(body: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(body) as mem, mem.open() as ds:
            return ds.read()


def cog_path(db, settings, layer: str, when: datetime | None = None) -> str:
    row = db.execute("SELECT path FROM onemap.scenes WHERE layer_id = %s AND valid_to IS NULL"
                     " AND (%s::timestamptz IS NULL OR acquired_at = %s)"
                     " ORDER BY acquired_at DESC LIMIT 1", (layer, when, when)).fetchone()
    return os.path.join(settings.raster_root, row[0])


def reference(path: str, tms_name: str, tile: morecantile.Tile, band: int,
              resampling: Resampling = Resampling.nearest,
              overview: int | None = None) -> np.ma.MaskedArray:
    """The tile's area read straight from a file (or one of its overviews) with rasterio."""
    tms = grid(tms_name)
    b = tms.xy_bounds(tile)
    transform = from_bounds(b.left, b.bottom, b.right, b.top, 256, 256)
    opts = {} if overview is None else {"overview_level": overview}
    with rasterio.open(path, **opts) as src, WarpedVRT(
            src, crs=tms.rasterio_crs, transform=transform, width=256, height=256,
            resampling=resampling) as vrt:
        return vrt.read(band, masked=True)


@pytest.fixture(scope="module")
def rasters(settings, tmp_path_factory) -> dict[str, str]:
    """imagery: 2001 (the real scene) and 2011 (the same scene inverted, a second slice);
    holes: the scene with a block set to 0 and 0 declared no data; dem: elevation."""
    tmp = tmp_path_factory.mktemp("rasters")
    inverted, holes = tmp / "olinda-2011.tif", tmp / "olinda-holes.tif"
    with rasterio.open(LANDSAT) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(inverted, "w", **profile) as dst:
        dst.write(255 - data)
    data[:, 100:200, 100:200] = 0
    with rasterio.open(holes, "w", **profile) as dst:
        dst.write(data)
    meta = LayerMeta(title="Olinda imagery", attribution="Landsat 7 (r-cran-stars, Apache-2.0)")
    ingest_raster(LANDSAT, "imagery", settings=settings, time=Y2001, bands=[3, 2, 1],
                  meta=meta)
    ingest_raster(inverted, "imagery", settings=settings, time=Y2011)
    ingest_raster(holes, "holes", settings=settings, time=Y2001, nodata=0)
    ingest_raster(DEM, "dem", settings=settings, time=Y2001, elevation=True)
    return {"inverted": str(inverted), "holes": str(holes), "tmp": str(tmp)}


def test_ingest_makes_valid_cogs_and_catalog_entries(http, db, settings, rasters):
    for layer in ("imagery", "holes", "dem"):
        for (path,) in db.execute("SELECT path FROM onemap.scenes WHERE layer_id = %s",
                                  (layer,)):
            valid, errors, _ = cog_validate(os.path.join(settings.raster_root, path),
                                            quiet=True)
            assert valid, errors
    doc = http.get("/layers/imagery").json()
    assert doc["kind"] == "raster" and doc["crs"] == "EPSG:4326"
    assert doc["source_crs"].endswith("31985")
    assert [b["type"] for b in doc["raster"]["bands"]] == ["uint8"] * 6
    assert [f["name"] for f in doc["fields"]] == [f"b{i}" for i in range(1, 7)]
    assert doc["raster"]["times"] == [Y2001.isoformat(), Y2011.isoformat()]
    assert doc["raster"]["default_bands"] == [3, 2, 1]
    w, s, e, n = doc["extent"]
    assert -34.92 < w < OLINDA[0] < e < -34.82 and -8.05 < s < OLINDA[1] < n < -7.94
    assert 0.0002 < doc["raster"]["resolution"][0] < 0.0003  # 28.5 m in degrees
    with rasterio.open(cog_path(db, settings, "imagery", Y2001)) as cog:
        assert cog.overviews(1) and cog.profile["blockxsize"] == 256
    dem = http.get("/layers/dem").json()
    assert dem["raster"]["elevation"] and dem["raster"]["bands"][0]["type"] == "float32"


@pytest.mark.parametrize("tms_name,z", [(WEB_MERCATOR, 14), (CGCS2000, 13), (WEB_MERCATOR, 16)])
def test_tile_pixels_match_rasterio(http, db, settings, rasters, tms_name, z):
    tile = grid(tms_name).tile(*OLINDA, z)
    r = http.get(f"/tiles/imagery/{tms_name}/{z}/{tile.x}/{tile.y}.png",
                 params={"bidx": "4", "datetime": "2001-08-01T00:00:00Z"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = decode(r.content)
    assert got.shape == (2, 256, 256)  # grey and alpha
    want = reference(cog_path(db, settings, "imagery", Y2001), tms_name, tile, 4)
    valid = (got[1] == 255) & ~np.ma.getmaskarray(want)
    assert valid.mean() > 0.9
    assert (got[0][valid] == want.data[valid]).mean() > 0.999
    # ... and the stored COG is the source, to resampling: the original file agrees.
    orig = reference(str(LANDSAT), tms_name, tile, 4)
    ok = valid & ~np.ma.getmaskarray(orig)
    diff = np.abs(got[0][ok].astype(int) - orig.data[ok].astype(int))
    assert np.median(diff) <= 3


@pytest.mark.parametrize("tms_name,z", [(WEB_MERCATOR, 10), (CGCS2000, 10)])
def test_low_zoom_tiles_read_the_overview(http, db, settings, rasters, tms_name, z):
    """Tiles coarser than the scene read its overview, as a GDAL warp does."""
    tile = grid(tms_name).tile(*OLINDA, z)
    r = http.get(f"/tiles/imagery/{tms_name}/{z}/{tile.x}/{tile.y}.png", params={"bidx": "4"})
    got = decode(r.content)
    want = reference(cog_path(db, settings, "imagery"), tms_name, tile, 4, overview=0)
    valid = (got[1] == 255) & ~np.ma.getmaskarray(want)  # the scene covers a corner
    assert valid.mean() > 0.03
    assert (got[0][valid] == want.data[valid]).mean() > 0.999


def test_formats_and_band_styles(http, rasters):
    t = grid(WEB_MERCATOR).tile(*OLINDA, 14)
    path = f"/tiles/imagery/{WEB_MERCATOR}/14/{t.x}/{t.y}"
    assert http.get(f"{path}.webp").content[:4] == b"RIFF"
    assert http.get(f"{path}.jpg").content[:3] == b"\xff\xd8\xff"
    rgb = decode(http.get(f"{path}.png", params={"datetime": "2005-01-01"}).content)
    assert rgb.shape == (4, 256, 256)
    one = decode(http.get(f"{path}.png", params={"bidx": "3", "datetime": "2005"
                                                 "-01-01"}).content)
    assert (rgb[0] == one[0]).all()  # default bands 3,2,1: red is band 3
    cm = decode(http.get(f"{path}.png", params={"bidx": "4", "colormap_name": "viridis"}
                         ).content)
    assert cm.shape[0] == 4 and len(np.unique(cm[:3].reshape(3, -1), axis=1)[0]) > 10
    stretched = decode(http.get(f"{path}.png", params={"bidx": "4", "rescale": "0,100",
                                                       "datetime": "2001-08-01"}).content)
    plain = decode(http.get(f"{path}.png", params={"bidx": "4", "datetime": "2001-08-01"}
                            ).content)
    inside = plain[1] == 255
    expect = np.clip(plain[0][inside].astype(float) * 255 / 100, 0, 255)
    assert np.abs(stretched[0][inside] - expect).max() <= 1
    for bad, why in (({"bidx": "9"}, "band 9"), ({"bidx": "1,2"}, "1 band"),
                     ({"colormap_name": "nope", "bidx": "1"}, "colormap"),
                     ({"rescale": "0"}, "rescale"), ({"algorithm": "hillshade"}, "elevation"),
                     ({"datetime": "yesterday"}, "RFC 3339")):
        r = http.get(f"{path}.png", params=bad)
        assert r.status_code == 400 and why in r.json()["detail"], (bad, r.text)
    assert http.get(f"{path}.gif").status_code == 404
    assert http.get(f"/tiles/imagery/NoSuchGrid/14/{t.x}/{t.y}.png").status_code == 404
    assert http.get(f"/tiles/imagery/{CGCS2000}/3/16/0.png").status_code == 400


def test_nodata_is_transparent(http, db, settings, rasters):
    tms = grid(WEB_MERCATOR)
    # A tile over the scene's west edge: outside the footprint is transparent.
    edge = tms.tile(-34.9166, -7.99, 14)
    r = http.get(f"/tiles/imagery/{WEB_MERCATOR}/14/{edge.x}/{edge.y}.png")
    alpha = decode(r.content)[-1]
    assert (alpha == 0).any() and (alpha == 255).any()
    with rasterio.open(cog_path(db, settings, "imagery")) as cog:
        w, s, e, n = cog.bounds
    b = tms.xy_bounds(edge)
    xs = b.left + (np.arange(256) + 0.5) * (b.right - b.left) / 256
    lon = np.degrees(xs / 6378137.0)
    covered = np.broadcast_to((lon >= w) & (lon <= e), (256, 256))
    assert ((alpha == 255) == covered).mean() > 0.99
    # Pixels equal to the declared nodata value (the zeroed block) are transparent too: a
    # tile on the block's top edge.
    with rasterio.open(rasters["holes"]) as src:
        x, y = src.xy(100, 150)
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(x, y)
    hole = tms.tile(lon, lat, 15)
    got = decode(http.get(f"/tiles/holes/{WEB_MERCATOR}/15/{hole.x}/{hole.y}.png").content)
    want = reference(cog_path(db, settings, "holes"), WEB_MERCATOR, hole, 1)
    assert np.ma.getmaskarray(want).any() and not np.ma.getmaskarray(want).all()
    assert ((got[-1] == 0) == np.ma.getmaskarray(want)).mean() > 0.99
    # A tile wholly inside the block is empty.
    with rasterio.open(rasters["holes"]) as src:
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(
            *src.xy(150, 150))
    inside = tms.tile(lon, lat, 16)
    assert reference(cog_path(db, settings, "holes"), WEB_MERCATOR, inside, 1).mask.all()
    assert http.get(f"/tiles/holes/{WEB_MERCATOR}/16/{inside.x}/{inside.y}.png"
                    ).status_code == 204
    # Far away there is nothing: an empty answer, not an error.
    far = tms.tile(116.4, 39.9, 14)
    assert http.get(f"/tiles/imagery/{WEB_MERCATOR}/14/{far.x}/{far.y}.png").status_code == 204


def test_time_slices(http, rasters):
    t = grid(WEB_MERCATOR).tile(*OLINDA, 14)
    path = f"/tiles/imagery/{WEB_MERCATOR}/14/{t.x}/{t.y}.png"

    def band(**params) -> np.ndarray:
        r = http.get(path, params={"bidx": "1", **params})
        assert r.status_code == 200, r.text
        return decode(r.content)

    latest, y2001 = band(), band(datetime="2001-08-01T00:00:00Z")
    inside = (latest[1] == 255) & (y2001[1] == 255)
    assert (latest[0][inside].astype(int) + y2001[0][inside] == 255).all()  # 2011 = inverted
    assert (band(datetime="2010-12-31T00:00:00Z")[0] == y2001[0]).all()
    assert (band(datetime="2000-01-01T00:00:00Z/2005-01-01T00:00:00Z")[0] == y2001[0]).all()
    assert (band(datetime="2011-08-01T00:00:00Z")[0] == latest[0]).all()
    r = http.get(path, params={"datetime": "1999-01-01T00:00:00Z"})
    assert r.status_code == 404 and "time slice" in r.json()["detail"]
    # Slices differ, so do their ETags; a repeat is served from the cache.
    a = http.get(path, params={"bidx": "1"})
    b = http.get(path, params={"bidx": "1", "datetime": "2001-08-01T00:00:00Z"})
    assert a.headers["etag"] != b.headers["etag"]
    assert http.get(path, params={"bidx": "1"}).headers["onemap-cache"] == "hit"
    assert http.get(path, params={"bidx": "1"}, headers={"If-None-Match": a.headers["etag"]}
                    ).status_code == 304


def test_terrain_rgb_decodes_to_heights(http, db, settings, rasters):
    tms = grid(WEB_MERCATOR)
    t = tms.tile(*OLINDA, 13)
    r = http.get(f"/tiles/dem/{WEB_MERCATOR}/13/{t.x}/{t.y}.png",
                 params={"algorithm": "terrainrgb"})
    assert r.status_code == 200
    rgba = decode(r.content).astype("float64")
    heights = -10000 + (rgba[0] * 65536 + rgba[1] * 256 + rgba[2]) * 0.1
    want = reference(cog_path(db, settings, "dem"), WEB_MERCATOR, t, 1, Resampling.bilinear)
    ok = (rgba[3] == 255) & ~np.ma.getmaskarray(want)
    assert ok.mean() > 0.5
    assert np.median(np.abs(heights[ok] - want.data[ok])) < 0.1
    assert np.percentile(np.abs(heights[ok] - want.data[ok]), 95) < 1.0
    assert 0 < heights[ok].max() < 100  # Olinda: sea level to about 90 m
    # The point query gives the same height as rasterio sampling the COG.
    got = http.get("/rasters/dem/point", params={"lon": OLINDA[0], "lat": OLINDA[1]}).json()
    with rasterio.open(cog_path(db, settings, "dem")) as cog:
        sampled = float(next(cog.sample([OLINDA]))[0])
    assert got["height"] == pytest.approx(sampled, abs=1e-3) and got["bands"] == ["b1"]
    assert http.get("/rasters/dem/point", params={"lon": 10, "lat": 10}).status_code == 404
    assert http.get("/rasters/dem/point", params={"lon": "x", "lat": 1}).status_code == 400
    tj = http.get(f"/tiles/dem/{WEB_MERCATOR}/tilejson.json",
                  params={"algorithm": "terrainrgb"}).json()
    assert tj["encoding"] == "mapbox" and "algorithm=terrainrgb" in tj["tiles"][0]
    jpg = http.get(f"/tiles/dem/{WEB_MERCATOR}/13/{t.x}/{t.y}.jpg",
                   params={"algorithm": "terrainrgb"})
    assert jpg.status_code == 400


def test_hillshade(http, rasters):
    t = grid(WEB_MERCATOR).tile(*OLINDA, 13)
    r = http.get(f"/tiles/dem/{WEB_MERCATOR}/13/{t.x}/{t.y}.png",
                 params={"algorithm": "hillshade"})
    shade = decode(r.content)
    assert shade.shape == (2, 256, 256)
    lit = shade[0][shade[1] == 255]
    assert lit.std() > 2 and 100 < np.median(lit) < 255  # flat ground is mid-grey or lighter
    east = decode(http.get(f"/tiles/dem/{WEB_MERCATOR}/13/{t.x}/{t.y}.png",
                           params={"algorithm": "hillshade", "azimuth": "135"}).content)
    assert (east[0] != shade[0]).mean() > 0.3  # the sun moved


def test_bad_rasters_leave_the_layer_as_it_was(http, db, settings, rasters, tmp_path,
                                                sample_layers):
    before = http.get("/layers/imagery").json()
    files = sorted(Path(settings.raster_root).rglob("*"))
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image")
    bare = tmp_path / "bare.tif"
    with rasterio.open(bare, "w", driver="GTiff", width=10, height=10, count=1,
                       dtype="uint8") as dst:
        dst.write(np.ones((1, 10, 10), "uint8"))
    truncated = tmp_path / "truncated.tif"
    with open(rasters["inverted"], "rb") as fh:
        truncated.write_bytes(fh.read()[: os.path.getsize(rasters["inverted"]) // 2])
    cases = [(text, "not a raster"), (bare, "coordinate reference system"),
             (truncated, "cannot be read whole")]
    for path, why in cases:
        with pytest.raises(IngestError) as err:
            ingest_raster(path, "imagery", settings=settings, time=datetime(2020, 1, 1,
                                                                            tzinfo=UTC))
        assert path.name in str(err.value) and why in str(err.value), str(err.value)
    with pytest.raises(IngestError, match="bands"):
        ingest_raster(DEM, "imagery", settings=settings)
    with pytest.raises(IngestError, match="vector layer"):
        ingest_raster(LANDSAT, "roads", settings=settings)
    assert http.get("/layers/imagery").json()["version"] == before["version"]
    assert sorted(Path(settings.raster_root).rglob("*")) == files  # nothing half-written
    failed = db.execute("SELECT count(*) FROM onemap.ingests WHERE layer_id = 'imagery'"
                        " AND status = 'failed'").fetchone()[0]
    assert failed >= 4


def test_cli_ingests_a_raster_and_refuses_a_bad_one(settings, tmp_path, db):
    import subprocess
    import sys

    env = {**os.environ, "ONEMAP_DATABASE_URL": settings.database_url,
           "ONEMAP_DATA_DIR": str(settings.data_dir)}
    ok = subprocess.run([sys.executable, "-m", "onemap.cli", "ingest", "raster", str(DEM),
                         "--layer", "dem_cli", "--elevation", "--time", "2000-02-11"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "dem_cli v1" in ok.stdout
    bad = tmp_path / "bad.tif"
    bad.write_text("nope")
    r = subprocess.run([sys.executable, "-m", "onemap.cli", "ingest", "raster", str(bad),
                        "--layer", "dem_cli"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "bad.tif" in r.stderr and "Traceback" not in r.stderr


def test_wmts_capabilities_and_tiles_through_owslib(http, server, sample_layers, rasters):
    caps = http.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities"})
    assert caps.status_code == 200 and caps.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(caps.content)
    assert root.tag == "{http://www.opengis.net/wmts/1.0}Capabilities"
    assert http.get("/wmts/1.0.0/WMTSCapabilities.xml").content == caps.content
    wmts = WebMapTileService(f"{server}/wmts/1.0.0/WMTSCapabilities.xml")
    assert {"imagery", "dem", "roads"} <= set(wmts.contents)
    assert {WEB_MERCATOR, CGCS2000} <= set(wmts.tilematrixsets)
    imagery = wmts.contents["imagery"]
    assert {"image/png", "image/webp", "image/jpeg"} <= set(imagery.formats)
    assert imagery.dimensions["Time"]["default"] == "2011-08-01T00:00:00Z"
    # Vector layers: their tiles, and images drawn in their style.
    assert wmts.contents["roads"].formats == ["application/vnd.mapbox-vector-tile",
                                              "image/png", "image/jpeg", "image/webp"]
    cg = wmts.tilematrixsets[CGCS2000]
    assert cg.tilematrix["0"].matrixwidth == 2 and cg.tilematrix["0"].matrixheight == 1
    assert cg.tilematrix["0"].topleftcorner == (90.0, -180.0)
    for tms_name, z in ((WEB_MERCATOR, 14), (CGCS2000, 13)):
        t = grid(tms_name).tile(*OLINDA, z)
        lim = imagery.tilematrixsetlinks[tms_name].tilematrixlimits[str(z)]
        assert lim.mintilecol <= t.x <= lim.maxtilecol and lim.mintilerow <= t.y <= lim.maxtilerow
        kvp = wmts.gettile(layer="imagery", tilematrixset=tms_name, tilematrix=str(z),
                           row=t.y, column=t.x, format="image/png",
                           Time="2001-08-01T00:00:00Z").read()
        template = next(u["template"] for u in imagery.resourceURLs
                        if u["format"] == "image/png")
        rest_url = (template.replace("{TileMatrixSet}", tms_name)
                    .replace("{TileMatrix}", str(z)).replace("{TileRow}", str(t.y))
                    .replace("{TileCol}", str(t.x)).replace("{Time}", "2001-08-01T00:00:00Z"))
        rest = http.get(rest_url.removeprefix(server)).content
        assert kvp == rest and rest[:4] == b"\x89PNG"
    bad = http.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetTile", "LAYER": "imagery"})
    assert bad.status_code == 400
    report = ET.fromstring(bad.content)
    assert report.tag == "{http://www.opengis.net/ows/1.1}ExceptionReport"
    missing = http.get("/wmts", params={
        "SERVICE": "WMTS", "REQUEST": "GetTile", "LAYER": "nope", "TILEMATRIXSET": WEB_MERCATOR,
        "TILEMATRIX": "1", "TILEROW": "0", "TILECOL": "0", "FORMAT": "image/png"})
    assert missing.status_code == 400 and b"InvalidParameterValue" in missing.content


def test_ogc_api_tiles(http, sample_layers, rasters):
    sets = http.get("/tileMatrixSets").json()["tileMatrixSets"]
    assert {s["id"] for s in sets} == {WEB_MERCATOR, CGCS2000, "WorldCRS84Quad"}
    doc = http.get(f"/tileMatrixSets/{CGCS2000}").json()
    parsed = morecantile.TileMatrixSet.model_validate(doc)
    assert parsed.matrix(0).matrixWidth == 2 and parsed.crs.srs.endswith("4490")
    listed = http.get("/collections/imagery/tiles").json()["tilesets"]
    assert len(listed) == 3 and {ts["dataType"] for ts in listed} == {"map"}
    ts = http.get(f"/collections/imagery/tiles/{CGCS2000}").json()
    item = next(ln for ln in ts["links"] if ln["rel"] == "item" and ln["type"] == "image/png")
    t = grid(CGCS2000).tile(*OLINDA, 13)
    url = (item["href"].replace("{tileMatrix}", "13").replace("{tileRow}", str(t.y))
           .replace("{tileCol}", str(t.x)))
    via_ogc = http.get(url)
    assert via_ogc.content == http.get(f"/tiles/imagery/{CGCS2000}/13/{t.x}/{t.y}.png").content
    vec = http.get("/collections/roads/tiles").json()["tilesets"]
    assert [v["dataType"] for v in vec] == ["vector", "vector"]  # in both grids
    assert http.get(f"/collections/roads/tiles/{CGCS2000}").status_code == 200
    assert http.get("/collections/roads/tiles/WorldCRS84Quad").status_code == 404
    collections = {c["id"]: c for c in http.get("/collections").json()["collections"]}
    assert collections["imagery"]["dataType"] == "map"
    assert collections["imagery"]["extent"]["temporal"]["values"] == [
        Y2001.isoformat(), Y2011.isoformat()]
    # Its items are its scenes' footprints, one per time slice; its pixels are tiles.
    scenes = http.get("/collections/imagery/items").json()["features"]
    assert len(scenes) == 2 and all(f["geometry"]["type"] == "Polygon" for f in scenes)


def test_tilejson_for_rasters(http, rasters):
    tj = http.get(f"/tiles/imagery/{CGCS2000}/tilejson.json", params={"bidx": "4"}).json()
    assert tj["tileMatrixSet"] == CGCS2000 and tj["tiles"][0].endswith(".webp?bidx=4")
    assert tj["times"][0] == Y2011.isoformat()
    assert http.get(f"/tiles/imagery/{CGCS2000}/tilejson.json",
                    params={"bidx": "12"}).status_code == 400


def test_store_is_configured(settings, tmp_path):
    store = tmp_path / "elsewhere"
    moved = type(settings)(**{**settings.__dict__, "raster_store": str(store)})
    ingest_raster(DEM, "dem_elsewhere", settings=moved, elevation=True)
    assert len(list(store.rglob("*.tif"))) == 1
    assert not any(p.name.startswith(".staging") for p in store.iterdir())
    shutil.rmtree(store)


@pytest.mark.parametrize("nodata,shown", [(float("nan"), "nan"), (float("-inf"), "-inf")])
def test_float_nodata_that_json_cannot_hold(http, db, settings, rasters, nodata, shown):
    """A float DEM whose no-data value is NaN or an infinity: ingested, listed, and its
    no-data cells transparent in tiles, like any other no-data value."""
    path = Path(rasters["tmp"]) / f"dem-{shown}.tif"
    with rasterio.open(DEM) as src:
        profile, data = src.profile, src.read().astype("float32")
    data[:, 40:80, 40:80] = nodata
    profile.update(dtype="float32", nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    layer = f"dem_{shown.replace('-', 'minus_')}"
    ingest_raster(path, layer, settings=settings, time=Y2001, elevation=True)
    doc = http.get(f"/layers/{layer}").json()
    assert doc["raster"]["bands"][0]["nodata"] == shown
    stats = doc["raster"]["stats"][0]
    assert all(np.isfinite(stats[k]) for k in ("min", "max", "p2", "p98")), stats
    assert http.get(f"/collections/{layer}").status_code == 200
    with rasterio.open(path) as src:
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(
            *src.xy(40, 60))
    tms = grid(WEB_MERCATOR)
    edge = tms.tile(lon, lat, 15)
    r = http.get(f"/tiles/{layer}/{WEB_MERCATOR}/15/{edge.x}/{edge.y}.png")
    assert r.status_code == 200, r.text
    want = reference(cog_path(db, settings, layer), WEB_MERCATOR, edge, 1)
    masked = np.ma.getmaskarray(want)
    assert masked.any() and not masked.all()
    assert ((decode(r.content)[-1] == 0) == masked).mean() > 0.99

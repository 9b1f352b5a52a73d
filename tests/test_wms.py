"""WMS 1.3.0 against a running OneMap, with real clients (OWSLib, GDAL's WMS driver, QGIS):
capabilities and exceptions valid by the OGC schemas, images decoded and checked pixel by
pixel against the layer's style and the caller's limits."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import geopandas as gpd
import httpx
import imagecodecs
import numpy as np
import psycopg
import pyproj
import pytest
import shapely
from lxml import etree
from owslib.wms import WebMapService

from access import admin
from access.admin import Actor
from ingest.vector import ingest_vector
from layers.meta import LayerMeta
from tests.conftest import ROOT, SAMPLES, SCHEMAS, department_keys

CHAOYANG, YANQING = "156110105", "156110119"
PARK, LAKE, OTHER = "#2e8b57", "#1e90ff", "#999999"
STYLE = [
    {"id": "wz-fill", "type": "fill", "paint": {
        "fill-color": ["match", ["get", "kind"], "park", PARK, "lake", LAKE, OTHER],
        "fill-opacity": 1}},
    {"id": "wz-line", "type": "line", "paint": {"line-color": "#333333", "line-width": 1}},
    {"id": "wz-label", "type": "symbol", "layout": {
        "text-field": ["get", "name"], "text-size": 16, "text-font": ["Noto Sans Bold"]},
     "paint": {"text-color": "#000000", "text-halo-color": "#ffffff", "text-halo-width": 1}},
]
WMS = "/wms?SERVICE=WMS&VERSION=1.3.0"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _districts() -> gpd.GeoDataFrame:
    return gpd.read_file(SAMPLES / "beijing-districts-cgcs2000.geojson")


@pytest.fixture(scope="module")
def zones(settings, sample_layers, tmp_path_factory, server) -> dict[str, str]:
    """Beijing's districts as a department's zones (parks and lakes, named), restyled by
    their publisher; a reader who sees every zone, a district office limited to Chaoyang
    that sees the names masked, and a point at a known place."""
    keys = department_keys(settings, {"wz-editor": "wz-parks", "wz-reader": "wz-readers",
                                      "wz-district": "wz-chaoyang"})
    d = _districts()
    gb = d.gb.astype(str)
    zones = gpd.GeoDataFrame({
        "zid": gb, "name": [f"ZONE{g[-3:]}" for g in gb],
        "kind": ["park" if int(g) % 2 else "lake" for g in gb]},
        geometry=d.geometry.values, crs=d.crs)
    path = tmp_path_factory.mktemp("wms") / "zones.geojson"
    zones.to_file(path)
    ingest_vector(path, "wz_zones", key="zid", settings=settings, meta=LayerMeta(
        department="wz-parks", sharing_type="conditional", level="internal",
        description="Zones of the parks department"))
    mark = tmp_path_factory.mktemp("wms") / "mark.geojson"
    gpd.GeoDataFrame({"mid": ["m1"]}, geometry=[shapely.Point(116.3975, 39.9087)],
                     crs=4326).to_file(mark)
    ingest_vector(mark, "wz_mark", key="mid", settings=settings)
    r = httpx.put(f"{server}/styles/wz_zones", json={"layers": STYLE},
                  headers={"Authorization": f"Bearer {keys['wz-editor']}"})
    assert r.status_code == 200, r.text

    async def grants() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            actor = Actor("test")
            area = await admin.create_area(conn, actor, name="wz-chaoyang",
                                           from_layer="districts", feature=CHAOYANG)
            await admin.grant(conn, actor, settings.levels, to="department:wz-readers",
                              layers="wz_zones")
            await admin.grant(conn, actor, settings.levels, to="department:wz-chaoyang",
                              layers="wz_zones", masked={"name": "middle"}, area_id=area)

    asyncio.run(grants())
    return keys


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _png(body: bytes) -> np.ndarray:
    return imagecodecs.png_decode(body)


def _schema(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "ogc" / "wms" / "1.3.0" / name)))


def _pixel(lon: float, lat: float, bbox: tuple[float, float, float, float], size: int
           ) -> tuple[int, int]:
    """Column and row of a lon/lat in an EPSG:3857 image of ``bbox``."""
    x, y = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)
    return (int((x - bbox[0]) / (bbox[2] - bbox[0]) * size),
            int((bbox[3] - y) / (bbox[3] - bbox[1]) * size))


def _beijing_3857() -> tuple[float, float, float, float]:
    t = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = t.transform(115.4, 39.4)
    x1, y1 = t.transform(117.6, 41.1)
    side = max(x1 - x0, y1 - y0)
    return (x0, y0, x0 + side, y0 + side)


def _getmap(http, key, layers="wz_zones", bbox=None, size=512, **extra) -> np.ndarray:
    bbox = bbox or _beijing_3857()
    q = "&".join(f"{k}={v}" for k, v in {
        "REQUEST": "GetMap", "LAYERS": layers, "STYLES": "", "CRS": "EPSG:3857",
        "BBOX": ",".join(f"{v:.3f}" for v in bbox), "WIDTH": size, "HEIGHT": size,
        "FORMAT": "image/png", **extra}.items())
    r = http.get(f"{WMS}&{q}", headers=_auth(key))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:500]
    return _png(r.content)


def _inside(code: str) -> shapely.Point:
    d = _districts()
    return d[d.gb.astype(str) == code].geometry.iloc[0].representative_point()


def _fill_point(code: str) -> shapely.Point:
    """A point well inside a district and away from its label (at its middle)."""
    d = _districts()
    shape = d[d.gb.astype(str) == code].geometry.iloc[0]
    inner, label = shape.buffer(-0.02), shape.representative_point()
    pts = [pt for pt in (shapely.Point(x, y) for x in np.linspace(*inner.bounds[::2], 15)
                         for y in np.linspace(*inner.bounds[1::2], 15)) if inner.contains(pt)]
    return max(pts, key=lambda pt: min(pt.distance(label), 0.08) - pt.distance(inner.centroid)
               / 10)


def test_capabilities_validate_and_list_what_the_caller_may_read(http, zones, server):
    schema = _schema("capabilities_1_3_0.xsd")
    reader = http.get(f"{WMS}&REQUEST=GetCapabilities", headers=_auth(zones["wz-reader"]))
    assert reader.status_code == 200 and reader.headers["content-type"].startswith("text/xml")
    doc = etree.fromstring(reader.content)
    assert schema.validate(doc), schema.error_log
    anonymous = etree.fromstring(http.get(f"{WMS}&REQUEST=GetCapabilities").content)
    assert schema.validate(anonymous), schema.error_log
    ns = {"w": "http://www.opengis.net/wms"}
    names = doc.xpath("//w:Layer/w:Name/text()", namespaces=ns)
    assert "wz_zones" in names and "wz_zones" not in anonymous.xpath(
        "//w:Layer/w:Name/text()", namespaces=ns)
    # In a tree by department, with boxes per CRS (latitude first for EPSG:4326).
    zone = doc.xpath("//w:Layer[w:Name='wz_zones']", namespaces=ns)[0]
    assert zone.getparent().findtext("w:Title", namespaces=ns) == "wz-parks"
    assert zone.get("queryable") == "1"
    boxes = {b.get("CRS"): b for b in zone.findall("w:BoundingBox", ns)}
    assert {"CRS:84", "EPSG:4326", "EPSG:4490", "EPSG:3857", "EPSG:4548"} <= set(boxes)
    assert 39 < float(boxes["EPSG:4326"].get("minx")) < 42  # latitude
    assert 115 < float(boxes["CRS:84"].get("minx")) < 118  # longitude
    top_crs = doc.xpath("/w:WMS_Capabilities/w:Capability/w:Layer/w:CRS/text()",
                        namespaces=ns)
    assert {"EPSG:4547", "EPSG:4490", "CRS:84"} <= set(top_crs)
    # OWSLib reads it as a WMS client does.
    wms = WebMapService(f"{server}/wms", version="1.3.0",
                        headers=_auth(zones["wz-reader"]))
    assert wms.identification.type == "WMS" and "wz_zones" in wms.contents
    layer = wms["wz_zones"]
    assert layer.queryable == 1 and "EPSG:4547" in layer.crsOptions
    assert layer.styles["default"]["legend"].startswith(server)


def test_getmap_draws_the_style_by_category(http, zones, server):
    bbox = _beijing_3857()
    wms = WebMapService(f"{server}/wms", version="1.3.0",
                        headers=_auth(zones["wz-reader"]))
    img = wms.getmap(layers=["wz_zones"], styles=[""], srs="EPSG:3857", bbox=bbox,
                     size=(512, 512), format="image/png", transparent=True)
    pixels = _png(img.read())
    assert pixels.shape == (512, 512, 4)
    d = _districts()
    for code, kind in ((CHAOYANG, PARK), ("156110108", LAKE), (YANQING, PARK)):
        c = d[d.gb.astype(str) == code].geometry.iloc[0]
        # A point well inside, away from the label in the middle.
        inner = c.buffer(-0.02)
        pts = [p for p in (shapely.Point(x, y) for x in np.linspace(*inner.bounds[::2], 9)
                           for y in np.linspace(*inner.bounds[1::2], 9)) if inner.contains(p)]
        cols = [tuple(pixels[r, k][:3]) for k, r in (_pixel(p.x, p.y, bbox, 512)
                                                    for p in pts)]
        assert max(set(cols), key=cols.count) == _rgb(kind), (code, cols[:5])
    # Outside Beijing nothing is drawn: transparent.
    assert pixels[2, 2, 3] == 0


def test_area_limited_caller_sees_only_its_area_and_names_masked(http, zones):
    bbox = _beijing_3857()
    full = _getmap(http, zones["wz-reader"], bbox=bbox, TRANSPARENT="TRUE")
    limited = _getmap(http, zones["wz-district"], bbox=bbox, TRANSPARENT="TRUE")
    far = _inside(YANQING)
    col, row = _pixel(far.x, far.y, bbox, 512)
    assert full[row, col, 3] == 255 and limited[row, col, 3] == 0  # Yanqing: not drawn
    inside = _inside(CHAOYANG)
    col, row = _pixel(inside.x, inside.y, bbox, 512)
    assert limited[row, col, 3] == 255  # Chaoyang: drawn
    # The label: black text on the unmasked map around Chaoyang's label point; the masked
    # caller's map never draws the name in clear (its style cannot read a masked field).
    t = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    cx, cy = t.transform(inside.x, inside.y)
    half = 6000
    close = (cx - half, cy - half, cx + half, cy + half)
    clear = _getmap(http, zones["wz-reader"], bbox=close, size=256)
    masked = _getmap(http, zones["wz-district"], bbox=close, size=256)
    dark = lambda a: int(((a[..., :3].astype(int).sum(axis=-1) < 120) & (a[..., 3] > 0)).sum())  # noqa: E731
    assert dark(clear) > 30, "the unmasked map has the name"
    assert dark(masked) == 0, "the masked map draws no name"


def test_getfeatureinfo_returns_the_feature_masked_as_granted(http, zones, server):
    bbox = _beijing_3857()
    p = _inside(CHAOYANG)
    col, row = _pixel(p.x, p.y, bbox, 512)
    wms = WebMapService(f"{server}/wms", version="1.3.0",
                        headers=_auth(zones["wz-district"]))
    got = wms.getfeatureinfo(layers=["wz_zones"], query_layers=["wz_zones"], styles=[""],
                             srs="EPSG:3857", bbox=bbox, size=(512, 512),
                             format="image/png", info_format="application/json",
                             xy=(col, row))
    doc = json.loads(got.read())
    assert [f["properties"]["zid"] for f in doc["features"]] == [CHAOYANG]
    name = doc["features"][0]["properties"]["name"]
    assert name == "*" * len("ZONE105")  # masked, as the grant says
    q = (f"{WMS}&REQUEST=GetFeatureInfo&LAYERS=wz_zones&QUERY_LAYERS=wz_zones&STYLES="
         f"&CRS=EPSG:3857&BBOX={','.join(map(str, bbox))}&WIDTH=512&HEIGHT=512"
         f"&FORMAT=image/png&I={col}&J={row}")
    clear = http.get(q + "&INFO_FORMAT=application/geo%2Bjson",
                     headers=_auth(zones["wz-reader"])).json()
    assert clear["features"][0]["properties"]["name"] == "ZONE105"
    html = http.get(q + "&INFO_FORMAT=text/html", headers=_auth(zones["wz-reader"]))
    assert html.headers["content-type"].startswith("text/html") and "ZONE105" in html.text
    text = http.get(q + "&INFO_FORMAT=text/plain", headers=_auth(zones["wz-reader"]))
    assert "name = ZONE105" in text.text
    # Outside the caller's area: nothing there.
    far = _inside(YANQING)
    col, row = _pixel(far.x, far.y, bbox, 512)
    q2 = q.replace("&I=", "&_I=").replace("&J=", "&_J=") + f"&I={col}&J={row}"
    none = http.get(q2 + "&INFO_FORMAT=application/json", headers=_auth(zones["wz-district"]))
    assert none.status_code == 200 and none.json()["features"] == []


def test_gauss_kruger_output_agrees_with_pyproj(http, zones):
    """EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E), northing first in the BBOX as
    EPSG defines it: the marker lands where pyproj puts the point, to a pixel."""
    lon, lat = 116.3975, 39.9087
    e, n = pyproj.Transformer.from_crs(4490, 4547, always_xy=True).transform(lon, lat)
    x0, y0, size = e - 3000, n - 2000, 256
    x1, y1 = x0 + 10000, y0 + 10000
    r = http.get(f"{WMS}&REQUEST=GetMap&LAYERS=wz_mark&STYLES=&CRS=EPSG:4547"
                 f"&BBOX={y0},{x0},{y1},{x1}&WIDTH={size}&HEIGHT={size}&FORMAT=image/png"
                 "&TRANSPARENT=TRUE")
    assert r.status_code == 200, r.text
    px = _png(r.content)
    rows, cols = np.nonzero(px[..., 3] > 128)
    assert len(rows) > 10
    want_col = (e - x0) / (x1 - x0) * size
    want_row = (y1 - n) / (y1 - y0) * size
    assert abs(cols.mean() + 0.5 - want_col) <= 1 and abs(rows.mean() + 0.5 - want_row) <= 1
    # The same in EPSG:4490, latitude first.
    r = http.get(f"{WMS}&REQUEST=GetMap&LAYERS=wz_mark&STYLES=&CRS=EPSG:4490"
                 f"&BBOX={lat - 0.01},{lon - 0.02},{lat + 0.03},{lon + 0.02}&WIDTH=256"
                 "&HEIGHT=256&FORMAT=image/png&TRANSPARENT=TRUE")
    px = _png(r.content)
    rows, cols = np.nonzero(px[..., 3] > 128)
    assert abs(cols.mean() + 0.5 - 128) <= 1 and abs(rows.mean() + 0.5 - 192) <= 1
    # Features in the same CRS.
    f = http.get("/collections/wz_mark/items?crs=EPSG:4547").json()
    north, east = f["features"][0]["geometry"]["coordinates"]
    assert abs(north - n) < 0.01 and abs(east - e) < 0.01


def test_exceptions_validate_and_name_the_parameter(http, zones):
    schema = _schema("exceptions_1_3_0.xsd")
    base = (f"{WMS}&REQUEST=GetMap&LAYERS=wz_mark&STYLES=&CRS=EPSG:3857"
            "&BBOX=0,0,1000,1000&WIDTH=64&HEIGHT=64&FORMAT=image/png")
    cases = {
        base.replace("EPSG:3857", "EPSG:2000"): ("InvalidCRS", "CRS"),
        base.replace("wz_mark", "nope"): ("LayerNotDefined", "LAYERS"),
        base.replace("image/png", "image/gif"): ("InvalidFormat", "FORMAT"),
        base.replace("0,0,1000,1000", "0,0,x,1000"): ("InvalidParameterValue", "BBOX"),
        base.replace("WIDTH=64", "WIDTH=99999"): ("InvalidParameterValue", "WIDTH"),
        base.replace("STYLES=", "STYLES=fancy"): ("StyleNotDefined", "STYLES"),
        f"{WMS}&REQUEST=GetCoffee": ("OperationNotSupported", "REQUEST"),
        base.replace("wz_mark", "wz_zones"): ("LayerNotDefined", "LAYERS"),  # anonymous
    }
    for url, (code, locator) in cases.items():
        r = http.get(url)
        assert 400 <= r.status_code < 500, (url, r.status_code)
        doc = etree.fromstring(r.content)
        assert schema.validate(doc), schema.error_log
        exc = doc[0]
        assert exc.get("code") == code and exc.get("locator") == locator, (url, r.text)
    # In the image, as a client that shows errors on the map asks.
    r = http.get(base.replace("wz_mark", "nope") + "&EXCEPTIONS=INIMAGE&WIDTH=300")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = _png(r.content)
    assert (img[..., :3].astype(int).sum(axis=-1) < 600).sum() > 50  # the text is drawn
    blank = _png(http.get(base.replace("wz_mark", "nope") + "&EXCEPTIONS=BLANK").content)
    assert (blank[..., :3] == 255).all()


def test_legend_graphic_is_drawn_from_the_style(http, zones):
    r = http.get(f"{WMS}&REQUEST=GetLegendGraphic&LAYER=wz_zones&FORMAT=image/png",
                 headers=_auth(zones["wz-reader"]))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = _png(r.content)
    colours = {tuple(c) for c in img[..., :3].reshape(-1, 3)}
    assert _rgb(PARK) in colours and _rgb(LAKE) in colours
    assert http.get(f"{WMS}&REQUEST=GetLegendGraphic&LAYER=wz_zones&FORMAT=image/png"
                    ).status_code == 404  # the layer does not exist for everyone


def test_gdal_reads_a_region(http, zones, server, tmp_path):
    out = tmp_path / "region.tif"
    x0, y0, x1, y1 = _beijing_3857()
    url = (f"WMS:{server}/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=wz_zones"
           f"&CRS=EPSG:3857&BBOX={x0},{y0},{x1},{y1}&FORMAT=image/png")
    run = subprocess.run(["gdal_translate", "-q", "-outsize", "256", "256", "-of", "GTiff",
                          "--config", "GDAL_HTTP_HEADERS",
                          f"Authorization: Bearer {zones['wz-reader']}", url, str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    import rasterio

    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 3857
        data = ds.read()
    rgb = {tuple(v) for v in data[:3].reshape(3, -1).T}
    assert _rgb(PARK) in rgb and _rgb(LAKE) in rgb


def test_qgis_draws_the_wms_layer(zones, server, tmp_path):
    if not Path("/usr/lib/python3/dist-packages/qgis").is_dir():
        pytest.fail("make test installs QGIS (python3-qgis) from the system's packages")
    png = tmp_path / "qgis-wms.png"
    run = subprocess.run(["/usr/bin/python3", str(ROOT / "tests" / "qgis_client.py"), "--wms",
                          server, "districts", str(png)], capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["wms"]["valid"], got
    img = imagecodecs.png_decode(png.read_bytes())
    assert (img[..., :3].astype(int).sum(axis=-1) < 600).sum() > 20, "QGIS drew nothing"



def _cell(tms_name: str, lon: float, lat: float, z: int):
    from layers.grids import grid

    tms = grid(tms_name)
    t = tms.tile(lon, lat, z)
    b = tms.bounds(t)
    col = int((lon - b.left) / (b.right - b.left) * 256)
    row = int((b.top - lat) / (b.top - b.bottom) * 256) if tms_name != "WebMercatorQuad" \
        else None
    if row is None:
        to = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
        x, y = to.transform(lon, lat)
        xb = tms.xy_bounds(t)
        col = int((x - xb.left) / (xb.right - xb.left) * 256)
        row = int((xb.top - y) / (xb.top - xb.bottom) * 256)
    return t, col, row


@pytest.mark.parametrize("tms_name", ["WebMercatorQuad", "CGCS2000Quad"])
def test_image_tiles_in_both_grids_with_etags_and_cache(http, zones, tms_name):
    p = _fill_point("156110108")  # Haidian: a lake
    t, col, row = _cell(tms_name, p.x, p.y, 9)
    url = f"/tiles/wz_zones/{tms_name}/{t.z}/{t.x}/{t.y}.png"
    reader, district = _auth(zones["wz-reader"]), _auth(zones["wz-district"])
    first = http.get(url, headers=reader)
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    img = _png(first.content)
    assert img.shape[:2] == (256, 256) and tuple(img[row, col, :3]) == _rgb(LAKE)
    etag = first.headers["etag"]
    again = http.get(url, headers=reader)
    assert again.headers["onemap-cache"] == "hit" and again.content == first.content
    assert http.get(url, headers={**reader, "If-None-Match": etag}).status_code == 304
    assert "private" in first.headers["cache-control"]
    # Another caller's limits give other bytes under another ETag; anonymous: no layer.
    other = http.get(url, headers=district)
    assert other.status_code == 200 and other.headers["etag"] != etag
    assert http.get(url).status_code == 404
    # The layer's vector tile of the same cell, in the same grid.
    import mapbox_vector_tile

    mvt = http.get(url.replace(".png", ".mvt"), headers=reader)
    assert mvt.status_code == 200, mvt.text
    zids = {f["properties"].get("zid") for f in
            mapbox_vector_tile.decode(mvt.content)["wz_zones"]["features"]}
    assert "156110108" in zids
    # The same image through OGC API - Tiles' map tileset.
    sets = http.get("/collections/wz_zones/map/tiles", headers=reader).json()
    assert {s["dataType"] for s in sets["tilesets"]} == {"map"}
    assert len(sets["tilesets"]) == 2
    ogc = http.get(f"/collections/wz_zones/map/tiles/{tms_name}/{t.z}/{t.y}/{t.x}?f=png",
                   headers=reader)
    assert ogc.status_code == 200 and ogc.content == first.content
    # Its template carries the images' pin: the tile it names may be kept (the reader's
    # alone: signed in), and another tile of the layer carries the same ETag.
    links = http.get(f"/collections/wz_zones/map/tiles/{tms_name}", headers=reader).json()
    href = next(k["href"] for k in links["links"] if k.get("type") == "image/png")
    assert "?f=png&v=" in href, href
    pinned = http.get(href.replace("{tileMatrix}", str(t.z)).replace("{tileRow}", str(t.y))
                      .replace("{tileCol}", str(t.x)), headers=reader)
    assert pinned.status_code == 200 and pinned.content == first.content
    assert pinned.headers["cache-control"].startswith("private") and \
        "immutable" in pinned.headers["cache-control"], pinned.headers["cache-control"]
    assert pinned.headers["etag"].strip('"') == href.rsplit("v=", 1)[1]
    beside = http.get(href.replace("{tileMatrix}", str(t.z)).replace("{tileRow}", str(t.y))
                      .replace("{tileCol}", str(t.x + 1)), headers=reader)
    assert beside.status_code == 200 and beside.headers["etag"] == pinned.headers["etag"]


def test_wmts_offers_vector_layers_as_images_in_both_grids(http, zones):
    reader = _auth(zones["wz-reader"])
    r = http.get("/wmts?SERVICE=WMTS&REQUEST=GetCapabilities", headers=reader)
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "ogc" / "wmts" / "1.0" /
                                             "wmtsGetCapabilities_response.xsd")))
    doc = etree.fromstring(r.content)
    assert schema.validate(doc), schema.error_log
    # Its own default namespace, as QGIS reads it, after the WMS documents of this module.
    assert b'<Capabilities xmlns="http://www.opengis.net/wmts/1.0"' in r.content[:200]
    ns = {"w": "http://www.opengis.net/wmts/1.0", "o": "http://www.opengis.net/ows/1.1"}
    layer = doc.xpath("//w:Layer[o:Identifier='wz_zones']", namespaces=ns)[0]
    assert "image/png" in layer.xpath("w:Format/text()", namespaces=ns)
    assert {"WebMercatorQuad", "CGCS2000Quad"} <= set(layer.xpath(
        "w:TileMatrixSetLink/w:TileMatrixSet/text()", namespaces=ns))
    p = _fill_point(CHAOYANG)
    t, col, row = _cell("CGCS2000Quad", p.x, p.y, 10)
    got = http.get("/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=wz_zones"
                   f"&STYLE=default&TILEMATRIXSET=CGCS2000Quad&TILEMATRIX={t.z}"
                   f"&TILEROW={t.y}&TILECOL={t.x}&FORMAT=image/png", headers=reader)
    assert got.status_code == 200, got.text
    assert tuple(_png(got.content)[row, col, :3]) == _rgb(PARK)


@pytest.fixture(scope="module")
def scene(settings, zones) -> tuple[float, float, float, float]:
    """A raster layer with two time slices."""
    from datetime import datetime

    from ingest.raster import ingest_raster

    for year in (2001, 2002):
        ingest_raster(SAMPLES / "olinda-landsat7.tif", "wz_scene", settings=settings,
                      time=datetime(year, 8, 1), bands=[3, 2, 1])
    with psycopg.connect(settings.database_url) as conn:
        e = conn.execute("SELECT extent FROM onemap.layers WHERE id = 'wz_scene'").fetchone()
    return tuple(e[0])


def test_raster_layers_draw_under_vector_layers_with_a_time_dimension(http, scene):
    caps = etree.fromstring(http.get(f"{WMS}&REQUEST=GetCapabilities").content)
    ns = {"w": "http://www.opengis.net/wms"}
    dim = caps.xpath("//w:Layer[w:Name='wz_scene']/w:Dimension", namespaces=ns)[0]
    assert dim.get("name") == "time" and dim.get("default").startswith("2002-08-01")
    assert dim.text.count(",") == 1
    w, s, e, n = scene
    box = f"{s},{w},{n},{e}"  # EPSG:4326: latitude first
    url = (f"{WMS}&REQUEST=GetMap&LAYERS=wz_scene,wz_mark&STYLES=,&CRS=EPSG:4326&BBOX={box}"
           "&WIDTH=200&HEIGHT=200&FORMAT=image/png&TRANSPARENT=TRUE")
    r = http.get(url)
    assert r.status_code == 200, r.text
    img = _png(r.content)
    assert (img[..., 3] == 255).mean() > 0.9 and img[..., :3].std() > 5  # the scene
    older = _png(http.get(url + "&TIME=2001-08-01").content)
    assert older.shape == img.shape
    none = http.get(url + "&TIME=1990-01-01")
    assert none.status_code == 400 and b'code="InvalidDimensionValue"' in none.content
    jpeg = http.get(url.replace("image/png", "image/jpeg"))
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"


def _drawing_processes(pid: int) -> set[int]:
    """The live drawing processes under process ``pid`` (``mapimages.draw._Drawer``)."""
    children: dict[int, list[int]] = {}
    states: dict[int, tuple[str, bytes]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        p = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(p)
        states[p] = (fields[0], cmdline)
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            todo.append(c)
            state, cmdline = states[c]
            if b"spawn_main" in cmdline and state != "Z":
                found.add(c)
    return found


def test_a_drawing_process_that_dies_or_hangs_is_replaced(settings, zones, tmp_path):
    """A drawing process killed between images: the next image is drawn by the one that
    takes its place, the same, instead of every image failing from then on. One killed
    while drawing, or stuck past its deadline (``draw.DEADLINE`` times the images'
    statement budget): that image is a 503 to try again, and the next is drawn."""
    import os
    import signal
    import threading
    import time

    from mapimages.draw import DEADLINE
    from tests.conftest import server_process

    budget_ms = 400
    ask = (f"{WMS}&REQUEST=GetMap&LAYERS=wz_zones&STYLES=&CRS=EPSG:3857&BBOX="
           f"{','.join(map(str, _beijing_3857()))}&WIDTH=256&HEIGHT=256&FORMAT=image/png")
    with server_process(settings, tmp_path / "serve.log", ONEMAP_IMAGE_WORKERS="1",
                        ONEMAP_WORKERS="1", ONEMAP_BUDGET_IMAGES_MS=str(budget_ms)) as live, \
            httpx.Client(base_url=live.url, timeout=30,
                         headers=_auth(zones["wz-reader"])) as client:
        first = client.get(ask)
        assert first.status_code == 200, first.text
        drawers = _drawing_processes(live.proc.pid)
        assert len(drawers) == 1, drawers
        os.kill(drawers.pop(), signal.SIGKILL)
        time.sleep(0.5)
        again = client.get(ask)
        assert again.status_code == 200, again.text
        assert np.array_equal(_png(again.content), _png(first.content))

        # Stopped, it takes the next image and never answers; then killed.
        (drawer,) = _drawing_processes(live.proc.pid)
        os.kill(drawer, signal.SIGSTOP)
        got: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: got.append(client.get(ask)))
        asking.start()
        time.sleep(0.3)
        assert not got
        os.kill(drawer, signal.SIGKILL)
        asking.join(30)
        assert got[0].status_code == 503, got[0].text
        assert "try again" in got[0].text and "Traceback" not in got[0].text
        assert client.get(ask).status_code == 200

        # Stopped and left so: past its deadline the image is a 503, the process gone.
        (drawer,) = _drawing_processes(live.proc.pid)
        os.kill(drawer, signal.SIGSTOP)
        began = time.monotonic()
        late = client.get(ask)
        took = time.monotonic() - began
        assert late.status_code == 503, late.text
        assert "time budget" in late.text
        assert DEADLINE * budget_ms / 1000 <= took < DEADLINE * budget_ms / 1000 + 5
        assert client.get(ask).status_code == 200
        (replaced,) = _drawing_processes(live.proc.pid)
        assert replaced != drawer

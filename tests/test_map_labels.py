"""Map images drawn, against a running OneMap: point labels placed as the style anchors and
offsets them, kept apart, haloed, Chinese drawn in its own face, in every image format;
dense markers read once per cell; few features drawn whole by Skia as Mapnik draws them;
translucent colours kept by every path."""

from __future__ import annotations

import asyncio

import geopandas as gpd
import imagecodecs
import numpy as np
import psycopg
import pyproj
import pytest
import shapely

from ingest.vector import ingest_vector
from layers.catalog import fetch_layers
from mapimages.compose import marker_cell
from mapimages.marks import MOST_MARKS
from styles import store

SIDE = 256
METRES = 10.0  # per pixel
CENTRE = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(116.40, 39.91)
# Points by their offset from the centre in pixels (right, down), and their names.
POINTS = {"a1": ((0, 0), "ALPHA"), "a2": ((0, 8), "BRAVO"),
          "c1": ((-80, -60), "朝阳"), "c2": ((80, -60), "公园")}
STYLE = [{"id": "lb-label", "type": "symbol", "filter": ["has", "name"], "layout": {
    "text-field": ["get", "name"], "text-size": 12, "text-font": ["Noto Sans Regular"],
    "text-anchor": "top", "text-offset": [0, 0.8]},
    "paint": {"text-color": "#000000", "text-halo-color": "#ffffff", "text-halo-width": 1.5}}]


@pytest.fixture(scope="module")
def labelled(settings, server, tmp_path_factory) -> str:
    to_lonlat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    rows = {k: to_lonlat.transform(CENTRE[0] + dx * METRES, CENTRE[1] - dy * METRES)
            for k, ((dx, dy), _) in POINTS.items()}
    frame = gpd.GeoDataFrame({"pid": list(POINTS), "name": [n for _, n in POINTS.values()]},
                             geometry=[shapely.Point(*rows[k]) for k in POINTS], crs=4326)
    path = tmp_path_factory.mktemp("labels") / "named.geojson"
    frame.to_file(path)
    _ingest_styled(settings, path, {"lb_points": STYLE})
    return "lb_points"


def _ingest_styled(settings, path, looks: dict[str, list[dict]]) -> None:
    """Each layer of ``looks`` ingested from ``path`` and given its style."""
    for name in looks:
        ingest_vector(path, name, key="pid", settings=settings)

    async def styled() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            for name, style in looks.items():
                layer = (await fetch_layers(conn, ids=[name]))[0]
                await store.put(conn, layer, store.checked(layer, style), "test")

    asyncio.run(styled())


def _image(http, layer: str, fmt: str = "image/png") -> bytes:
    half = SIDE / 2 * METRES
    box = (CENTRE[0] - half, CENTRE[1] - half, CENTRE[0] + half, CENTRE[1] + half)
    r = http.get("/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&STYLES=&CRS=EPSG:3857"
                 f"&LAYERS={layer}&BBOX={','.join(f'{v:.2f}' for v in box)}"
                 f"&WIDTH={SIDE}&HEIGHT={SIDE}&FORMAT={fmt}&TRANSPARENT=TRUE")
    assert r.status_code == 200 and r.headers["content-type"] == fmt, r.text[:300]
    return r.content


def _dark(a: np.ndarray) -> np.ndarray:
    """The text's ink: grey to black, opaque (its halo is white)."""
    return (a[..., :3].astype(int).sum(axis=-1) < 500) & (a[..., 3] > 200)


def _at(offset: tuple[int, int]) -> tuple[int, int]:
    return SIDE // 2 + offset[0], SIDE // 2 + offset[1]


def test_labels_are_anchored_kept_apart_and_haloed(http, labelled):
    a = imagecodecs.png_decode(_image(http, labelled))
    assert a.shape == (SIDE, SIDE, 4)
    dark = _dark(a)
    col, row = _at(POINTS["a1"][0])
    band = dark[:, col - 40:col + 40]
    rows = np.flatnonzero(band.any(axis=1))
    assert rows.size, "ALPHA's label is drawn"
    # Anchored by its top, 0.8 em below the point: nothing above it, its text below.
    assert rows.min() >= row + 7, (rows.min(), row)
    # BRAVO's point is 8 px below ALPHA's: their labels would overlap, one is drawn.
    assert rows.max() - rows.min() <= 14, (rows.min(), rows.max())
    # ALPHA or BRAVO, whichever came first: one line of 12 px text, not two 8 px apart.
    # The halo: opaque white around the black glyphs.
    near = a[rows.min() - 2:rows.max() + 3, col - 40:col + 40]
    white = (near[..., :3].min(axis=-1) > 240) & (near[..., 3] == 255)
    assert white.sum() > dark[rows.min():rows.max() + 1, col - 40:col + 40].sum() / 2
    # Chinese names in the CJK face: two different names, two different drawings (a face
    # without them would draw the same empty boxes for both).
    marks = []
    for key in ("c1", "c2"):
        c, r = _at(POINTS[key][0])
        cut = dark[r + 7:r + 28, c - 30:c + 30]
        assert cut.sum() > 40, f"{key}'s name is drawn"
        ys, xs = np.nonzero(cut)
        marks.append(cut[ys.min():, xs.min():][:14, :24])
    h = min(m.shape[0] for m in marks)
    w = min(m.shape[1] for m in marks)
    assert (marks[0][:h, :w] != marks[1][:h, :w]).sum() > 30


@pytest.mark.parametrize("fmt", ["image/jpeg", "image/webp"])
def test_labelled_images_in_other_formats(http, labelled, fmt):
    body = _image(http, labelled, fmt)
    a = (imagecodecs.jpeg8_decode if fmt == "image/jpeg" else imagecodecs.webp_decode)(body)
    col, row = _at(POINTS["a1"][0])
    text = a[row + 7:row + 24, col - 40:col + 40, :3].astype(int).sum(axis=-1)
    assert (text < 450).sum() > 20, "the label is drawn"


def test_dense_markers_read_once_per_cell_cover_what_every_marker_covers(
        settings, server, http, tmp_path):
    """Circles of one size drawn over each other are read once per cell of half their
    radius: the image covers the same pixels, in every category's colour, as one that
    reads every point (a filter keeps every point read)."""
    to_lonlat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    step = METRES / 2  # two points per pixel each way
    xy = [(CENTRE[0] + i * step, CENTRE[1] + j * step) for i in range(-60, 60, 3)
          for j in range(-60, 60, 2)]
    kinds = ["a" if (k * 7) % 3 else "b" for k in range(len(xy))]
    frame = gpd.GeoDataFrame(
        {"pid": [f"d{k}" for k in range(len(xy))], "kind": kinds},
        geometry=[shapely.Point(*to_lonlat.transform(x, y)) for x, y in xy], crs=4326)
    path = tmp_path / "dense.geojson"
    frame.to_file(path)
    colour = ["match", ["get", "kind"], "a", "#d62728", "#1f77b4"]
    looks = {}
    for name, extra in (("lb_dense", {}), ("lb_dense_all", {"filter": ["has", "kind"]})):
        looks[name] = [{"id": name, "type": "circle", **extra, "paint": {
            "circle-radius": 4, "circle-color": colour}}]
    _ingest_styled(settings, path, looks)
    # Read once per cell of 2 px (half the radius) without the filter, per pixel with it.
    assert marker_cell(looks["lb_dense"], 16) == 2.0
    assert marker_cell(looks["lb_dense_all"], 16) == 1.0
    # More points than Skia draws whole (``marks``): Mapnik draws them.
    assert len(xy) > MOST_MARKS
    thinned, every = (imagecodecs.png_decode(_image(http, n)) for n in looks)
    covered, all_covered = thinned[..., 3] > 0, every[..., 3] > 0
    assert all_covered.sum() > 3000
    # The same area, to a pixel or two at its edges.
    assert (covered ^ all_covered).sum() < 0.05 * all_covered.sum()
    for rgb in ((0xd6, 0x27, 0x28), (0x1f, 0x77, 0xb4)):
        assert (np.abs(thinned[..., :3].astype(int) - rgb).sum(axis=-1) < 30).sum() > 100


def test_few_points_drawn_whole_agree_with_mapnik(settings, server, http, tmp_path):
    """A street's few points, circles of a category's colour with a white stroke and their
    labels, are drawn whole by Skia from one read (``mapimages.marks``): each circle's
    middle in its category's colour, the stroke around it, nothing past it, its label
    below; and the same pixels covered, in the same colours, as Mapnik draws them (a
    circle sort key, which only Mapnik's path takes, sends the twin layer there)."""
    to_lonlat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    spots = {"w1": ((-60, -40), "a", "NORTH"), "w2": ((50, -30), "b", "EAST"),
             "w3": ((-30, 50), "b", "SOUTH"), "w4": ((70, 70), "a", "CORNER")}
    frame = gpd.GeoDataFrame(
        {"pid": list(spots), "kind": [k for _, k, _ in spots.values()],
         "name": [n for _, _, n in spots.values()]},
        geometry=[shapely.Point(*to_lonlat.transform(CENTRE[0] + dx * METRES,
                                                     CENTRE[1] - dy * METRES))
                  for (dx, dy), _, _ in spots.values()], crs=4326)
    path = tmp_path / "few.geojson"
    frame.to_file(path)
    red, blue = (0xd6, 0x27, 0x28), (0x1f, 0x77, 0xb4)
    circle = {"id": "c", "type": "circle", "paint": {
        "circle-radius": 6, "circle-color": ["match", ["get", "kind"], "a", "#d62728",
                                             "#1f77b4"],
        "circle-stroke-color": "#ffffff", "circle-stroke-width": 2}}
    looks = {"lb_few": [circle, {**STYLE[0], "filter": ["has", "name"]}],
             "lb_few_mapnik": [{**circle, "layout": {"circle-sort-key": 1}}, STYLE[0]]}
    _ingest_styled(settings, path, looks)
    whole, mapnik = (imagecodecs.png_decode(_image(http, n)) for n in looks)
    for (dx, dy), kind, _ in spots.values():
        col, row = _at((dx, dy))
        assert tuple(whole[row, col]) == (*(red if kind == "a" else blue), 255)
        # The stroke lies outside the radius (6 to 8 px), nothing past it.
        assert whole[row, col + 6, :3].min() > 240 and whole[row, col + 6, 3] == 255
        assert whole[row, col + 10, 3] == 0 and whole[row - 10, col, 3] == 0
        # The label, anchored below the circle.
        assert _dark(whole[row + 9:row + 26, col - 30:col + 30]).sum() > 20
    covered, by_mapnik = whole[..., 3] > 128, mapnik[..., 3] > 128
    assert by_mapnik.sum() > 400
    assert (covered ^ by_mapnik).sum() < 0.08 * by_mapnik.sum()
    for rgb in (red, blue):
        near = [(np.abs(a[..., :3].astype(int) - rgb).sum(axis=-1) < 30).sum()
                for a in (whole, mapnik)]
        assert abs(near[0] - near[1]) <= 0.15 * near[1], near


def test_translucent_fills_keep_their_colour_however_drawn(settings, server, http, tmp_path):
    """A fill at 0.85 opacity in a transparent image comes out as its colour with that
    alpha, drawn whole by Skia, by Mapnik, or by Mapnik with Skia's labels over it (a fill
    sort key, which only Mapnik's path takes, sends a layer there)."""
    to_lonlat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    square = shapely.box(CENTRE[0] - 400, CENTRE[1] - 400, CENTRE[0] + 400, CENTRE[1] + 400)
    frame = gpd.GeoDataFrame(
        {"pid": ["s1"], "name": ["SQUARE"]},
        geometry=[shapely.transform(square, lambda c: np.column_stack(
            to_lonlat.transform(c[:, 0], c[:, 1])))], crs=4326)
    path = tmp_path / "square.geojson"
    frame.to_file(path)
    fill = {"id": "f", "type": "fill", "paint": {"fill-color": "#e07b91",
                                                 "fill-opacity": 0.85}}
    mapnik_fill = {**fill, "layout": {"fill-sort-key": 1}}
    label = {**STYLE[0], "layout": {**STYLE[0]["layout"], "text-anchor": "center",
                                    "text-offset": [0, 0]}}
    looks = {"lb_sq_whole": [fill, label], "lb_sq_mapnik": [mapnik_fill],
             "lb_sq_labelled": [mapnik_fill, label]}
    _ingest_styled(settings, path, looks)
    for name in looks:
        a = imagecodecs.png_decode(_image(http, name)).astype(int)
        inside = a[SIDE // 2 + 20, SIDE // 2 + 20]  # inside the square, off its label
        assert abs(inside[3] - 217) <= 1, (name, inside)
        assert np.abs(inside[:3] - (0xe0, 0x7b, 0x91)).max() <= 2, (name, inside)
        assert a[5, 5, 3] == 0, (name, a[5, 5])  # outside the square
    # On an opaque background, the fill is laid over it by every path alike.
    half = SIDE / 2 * METRES
    box = ",".join(f"{v:.2f}" for v in (CENTRE[0] - half, CENTRE[1] - half,
                                        CENTRE[0] + half, CENTRE[1] + half))
    for name in looks:
        r = http.get("/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&STYLES=&CRS=EPSG:3857"
                     f"&LAYERS={name}&BBOX={box}&WIDTH={SIDE}&HEIGHT={SIDE}"
                     "&FORMAT=image/png&TRANSPARENT=FALSE&BGCOLOR=0x000000")
        a = imagecodecs.png_decode(r.content).astype(int)
        inside = a[SIDE // 2 + 20, SIDE // 2 + 20]
        over_black = np.round(np.array((0xe0, 0x7b, 0x91)) * 0.85)
        assert inside[3] == 255 and np.abs(inside[:3] - over_black).max() <= 3, (name, inside)
        assert tuple(a[5, 5]) == (0, 0, 0, 255), (name, a[5, 5])


def test_labels_meet_across_image_tile_edges(settings, server, http, tmp_path):
    """Two image tiles side by side place the labels near their common edge alike (both
    read and place labels in a margin around them, in an order that is the same in
    both): no label is cut by the edge, drawn on one side and missing on the other."""
    import mercantile

    z = 17
    t = mercantile.tile(116.40, 39.91, z)
    left, right = mercantile.xy_bounds(t.x, t.y, z), mercantile.xy_bounds(t.x + 1, t.y, z)
    side = left.right - left.left
    rng = np.random.default_rng(11)
    xs = rng.uniform(left.left - side / 2, right.right + side / 2, 480)
    ys = rng.uniform(left.bottom - side / 2, left.top + side / 2, 480)
    to_lonlat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    frame = gpd.GeoDataFrame(
        {"pid": [f"e{k}" for k in range(len(xs))],
         "name": [f"P{k * 7919 % 10_000_000:07d}" for k in range(len(xs))]},
        geometry=shapely.points(np.column_stack(to_lonlat.transform(xs, ys))),
        crs=4326)
    path = tmp_path / "edge.geojson"
    frame.to_file(path)
    _ingest_styled(settings, path, {"lb_edge": [
        {"id": "c", "type": "circle", "paint": {"circle-radius": 3, "circle-color": "#3182bd"}},
        {**STYLE[0], "layout": {**STYLE[0]["layout"], "text-size": 11}}]})
    tiles = []
    for x in (t.x, t.x + 1):
        r = http.get(f"/tiles/lb_edge/WebMercatorQuad/{z}/{x}/{t.y}.png")
        assert r.status_code == 200, r.text[:300]
        tiles.append(imagecodecs.png_decode(r.content))
    a, b = tiles[0][:, -1, 3].astype(int), tiles[1][:, 0, 3].astype(int)
    assert (a > 200).sum() > 20, "labels and circles cross the edge"
    # A row opaque on one side of the edge and empty on the other: something cut there.
    cut = ((a > 200) & (b == 0)) | ((b > 200) & (a == 0))
    assert cut.sum() <= 2, np.flatnonzero(cut)


def test_each_feature_is_drawn_by_its_own_class_alone(settings, server, http, tmp_path):
    """A categorized fill and outline (``match``) with a class drawn as nothing (a
    transparent fill, a line of no width), a default class and the style layer's filter:
    each square comes out in its class's colour, the class of nothing as nothing (not as
    the default), the filtered one not at all — by Mapnik's rules (the first that matches
    draws, the last tests only the filter) and, for the fill, by Skia."""
    to_lonlat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    spots = {"q1": ((-60, -60), "a"), "q2": ((60, -60), "none"), "q3": ((-60, 60), "other"),
             "q4": ((60, 60), "hidden")}
    frame = gpd.GeoDataFrame(
        {"pid": list(spots), "kind": [k for _, k in spots.values()]},
        geometry=[shapely.transform(shapely.box(
            CENTRE[0] + dx * METRES - 200, CENTRE[1] - dy * METRES - 200,
            CENTRE[0] + dx * METRES + 200, CENTRE[1] - dy * METRES + 200),
            lambda c: np.column_stack(to_lonlat.transform(c[:, 0], c[:, 1])))
            for (dx, dy), _ in spots.values()], crs=4326)
    path = tmp_path / "classes.geojson"
    frame.to_file(path)
    shown = ["!=", ["get", "kind"], "hidden"]
    fill = {"id": "f", "type": "fill", "filter": shown,
            "paint": {"fill-color": ["match", ["get", "kind"], "a", "#d62728",
                                     "none", "rgba(0,0,0,0)", "#1f77b4"]}}
    line = {"id": "l", "type": "line", "filter": shown, "paint": {
        "line-color": "#000000", "line-width": ["match", ["get", "kind"], "none", 0, 4]}}
    looks = {"lb_cls_whole": [fill], "lb_cls_mapnik": [{**fill, "layout": {
        "fill-sort-key": 1}}], "lb_cls_lined": [fill, line]}
    _ingest_styled(settings, path, looks)
    want = {"a": (0xd6, 0x27, 0x28, 255), "none": (0, 0, 0, 0),
            "other": (0x1f, 0x77, 0xb4, 255), "hidden": (0, 0, 0, 0)}
    for name in looks:
        a = imagecodecs.png_decode(_image(http, name))
        for offset, kind in spots.values():
            col, row = _at(offset)
            got = tuple(int(v) for v in a[row, col])
            assert got[3] == want[kind][3] and (got[3] == 0 or got == want[kind]), (
                name, kind, got)
            if name == "lb_cls_lined":  # on the square's edge: its outline, or nothing
                edge = tuple(int(v) for v in a[row, col + 20])
                if kind in ("none", "hidden"):
                    assert edge[3] == 0, (kind, edge)
                else:
                    assert edge == (0, 0, 0, 255), (kind, edge)


def test_a_label_text_is_its_field_or_its_template():
    """A label's text as MapLibre makes it: an expression's value as it is (a value with
    braces in it stays so), a string's {field} tokens filled in from the feature, its
    layout the same for features that agree on what it reads."""
    from mapimages.labels import _Style

    feature = {"code": "P{name}", "name": "Elm", "n": 3.0}
    by_field = _Style({"type": "symbol", "layout": {"text-field": ["get", "code"]}}, 14)
    assert by_field.text_of(feature) == "P{name}"
    assert by_field.text_of({"name": "Elm"}) == ""
    number = _Style({"type": "symbol", "layout": {"text-field": ["get", "n"]}}, 14)
    assert number.text_of(feature) == "3"
    template = _Style({"type": "symbol", "layout": {"text-field": "{name} {n}"}}, 14)
    assert template.text_of(feature) == "Elm 3"
    joined = _Style({"type": "symbol", "layout": {
        "text-field": ["concat", ["get", "name"], "-", ["get", "code"]],
        "text-size": ["match", ["get", "name"], "Elm", 20, 12]}}, 14)
    assert joined.text_of(feature) == "Elm-P{name}"
    assert joined.layout(feature).size == 20 and joined.layout({"name": "Oak"}).size == 12
    assert joined.layout(feature) is joined.layout({**feature, "code": "other"})


def test_dense_circles_are_drawn_from_an_image_of_each(tmp_path):
    """Circles of a source read once per cell of several pixels are copied from an image
    of each circle (``compose.sprite``): the fill in the middle, the stroke at its edge,
    of MapLibre's size; one read per pixel keeps Mapnik's path per point."""
    import xml.etree.ElementTree as ET

    from mapimages.compose import Drawn, Source, map_xml

    entry = {"id": "c", "type": "circle", "source-layer": "0:p", "paint": {
        "circle-radius": 6, "circle-stroke-width": 2, "circle-stroke-color": "#ffffff",
        "circle-color": ["match", ["get", "kind"], "a", "#d62728", "#1f77b4"]}}

    def markers(cell: float) -> list[dict[str, str]]:
        source = Source("0:p", {"type": "postgis", "table": "t"}, ("kind",), True, cell)
        root = ET.fromstring(map_xml([Drawn(source, [entry])], "epsg:3857", 12, None,
                                     None, tmp_path))
        return [m.attrib for m in root.iter("MarkersSymbolizer")]

    assert all(m.get("marker-type") == "ellipse" for m in markers(1.0))
    dense = markers(3.0)
    assert len(dense) == 2 and all("marker-type" not in m for m in dense)
    for m, rgb in zip(dense, ((0xd6, 0x27, 0x28), (0x1f, 0x77, 0xb4)), strict=True):
        pixels = imagecodecs.png_decode(open(m["file"], "rb").read())
        side = pixels.shape[0]
        assert side == 2 * (6 + 2) + 2
        mid = side // 2
        assert tuple(pixels[mid, mid]) == (*rgb, 255)
        # The stroke lies outside the radius: white from 6 to 8 px off the middle.
        assert tuple(pixels[mid, mid + 7][:3]) == (255, 255, 255)
        assert pixels[mid, mid + 7][3] > 200 and pixels[mid, mid + 8][3] == 0
    assert markers(3.0) == dense  # made once, named by what they show
    assert len(list(tmp_path.glob("circle-*.png"))) == 2


def test_without_a_folder_for_circle_images_circles_are_drawn_as_paths(monkeypatch):
    """Where no folder for the circles' images can be made, dense circles are drawn as a
    path per point again, and the folder is not tried again for every map."""
    import tempfile

    from mapimages.draw import Images

    tried = []

    def refused(**kw):
        tried.append(kw)
        raise PermissionError("read-only")

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    images = Images("postgresql://u@127.0.0.1:1/none", None, 1000, 1)
    assert images._sprite_folder() is None and images._sprite_folder() is None
    assert len(tried) == 1

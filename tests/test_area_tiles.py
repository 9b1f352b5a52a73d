"""Low-zoom tiles of an area-limited principal: the overview's cells inside the area plus
cells made from the rows near its edge must equal cells made from every row in the area."""

from __future__ import annotations

import json

import mapbox_vector_tile
import morecantile
import numpy as np
import psycopg
import pytest
from psycopg import sql

from ingest.vector import ingest_vector
from layers.catalog import get_layer
from layers.meta import LayerMeta
from layers.restrict import Restriction
from layers.tiles import PostgisSource, _statement, params

TMS = morecantile.tms.get("WebMercatorQuad")
CHAOYANG = "156110105"


@pytest.fixture(scope="module")
def scattered(settings, sample_layers, tmp_path_factory) -> tuple[str, int]:
    """4,000 seeded points over Chaoyang and around it, and Chaoyang as an area."""
    rng = np.random.default_rng(7)
    lon = rng.uniform(116.30, 116.75, 4000)
    lat = rng.uniform(39.78, 40.10, 4000)
    src = tmp_path_factory.mktemp("area") / "scattered.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"pid": i, "kind": f"k{i % 5}"},
         "geometry": {"type": "Point", "coordinates": [float(x), float(y)]}}
        for i, (x, y) in enumerate(zip(lon, lat, strict=True))]}))
    ingest_vector(src, "scattered", key="pid", settings=settings,
                  meta=LayerMeta(level="public"))
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        area = conn.execute(
            "INSERT INTO onemap.areas (name, geom) SELECT 'Chaoyang (test)',"
            " ST_Multi(ST_CollectionExtract(ST_MakeValid(geom), 3)) FROM onemap_data.districts"
            " WHERE _fid = %s AND _valid_to IS NULL RETURNING id", (CHAOYANG,)).fetchone()[0]
    return "scattered", area


def _tile(db, layer, method: str, r: Restriction, t: morecantile.Tile):
    """(features covered, the tile's features): those in the tile proper, since index boxes
    are single precision and a cell at the buffer's edge may fall either side of it."""
    statement, extra = _statement(layer, method, False, r)
    row = db.execute(statement, {**params(layer.id, t.z, t.x, t.y, None), **extra}).fetchone()
    features = mapbox_vector_tile.decode(bytes(row[0])).get(layer.id, {}).get("features", [])
    inside = [f for f in features if all(0 <= v < 4096 for v in f["geometry"]["coordinates"])]
    return row[1], sorted(json.dumps([f["geometry"], f["properties"]], sort_keys=True)
                          for f in inside)


@pytest.mark.parametrize("z", [8, 10, 11, 12])
def test_area_cells_equal_cells_made_from_the_rows(db, scattered, z):
    layer_id, area = scattered
    layer = get_layer(db, layer_id)
    source = PostgisSource(layer, 14)
    r = Restriction(area_id=area)
    assert source.method(z, False, r) == "area"
    assert source.method(z, False, Restriction(area_id=area, filter="kind = 'k1'")) == "cells"
    tiles = list(TMS.tiles(116.30, 39.78, 116.75, 40.10, zooms=[z]))
    inside_cells = 0
    for t in tiles:
        got = _tile(db, layer, "area", r, t)
        want = _tile(db, layer, "cells", r, t)
        assert got[1] == want[1], t
        assert abs(got[0] - want[0]) <= 2
        inside_cells += db.execute(sql.SQL(
            "SELECT count(*) FROM onemap_overview.scattered c, onemap.areas a"
            " WHERE a.id = %s AND c.z = %s AND ST_Covers(a.geom_3857, c.g)"
            " AND c.g && ST_TileEnvelope(%s, %s, %s)"), (area, z, t.z, t.x, t.y)).fetchone()[0]
    # The overview did part of the work, and the area did limit what was shown.
    assert inside_cells > 0
    everyone = sum(_tile(db, layer, "overview", Restriction(), t)[0] for t in tiles)
    limited = sum(_tile(db, layer, "area", r, t)[0] for t in tiles)
    assert 0 < limited < everyone

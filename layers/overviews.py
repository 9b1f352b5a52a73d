"""Overviews: what low-zoom tiles show of features too small to see there.

At each zoom below a layer's detail zoom, a feature smaller than half a pixel (every
point) joins a cell of the tile-aligned grid of ``CELL_UNITS`` tile units. A cell keeps how
many features it holds, the sum of their positions (for the centroid) and its lowest row id
(whose attributes it shows when it holds one feature). Levels are built from the detail zoom
down, each from the one above plus the features that become small at it, so a build reads
the layer once. Tiles then read at most 16,384 cells instead of every feature under them.
"""

from __future__ import annotations

import math

import psycopg
from psycopg import sql

from layers.catalog import OVERVIEW_SCHEMA, overview_of, table_of
from layers.tiles import CELL_UNITS, CENTRE, EXTENT, WORLD, min_size

_SIZE = ("greatest(ST_XMax(t._geom_3857) - ST_XMin(t._geom_3857),"
         " ST_YMax(t._geom_3857) - ST_YMin(t._geom_3857))")


def cell_size(z: int) -> float:
    return WORLD / (1 << z) / (EXTENT // CELL_UNITS)


def build(conn: psycopg.Connection, layer_id: str, detail_zoom: int) -> int:
    """(Re)builds the layer's overview inside the caller's transaction; returns its rows.

    The new table is filled under a temporary name and swapped in last, so tile readers
    wait for the ingest only for the moment of the swap.
    """
    t = table_of(layer_id)
    final = overview_of(layer_id)
    temp = sql.Identifier(OVERVIEW_SCHEMA, f"{layer_id[:50]}__build")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(temp))
    conn.execute(sql.SQL(
        "CREATE TABLE {} (z smallint NOT NULL, cx integer NOT NULL, cy integer NOT NULL,"
        " n integer NOT NULL, _rid bigint NOT NULL, sx double precision NOT NULL,"
        " sy double precision NOT NULL, g geometry(Point, 3857) NOT NULL)").format(temp))
    size = sql.SQL(_SIZE)
    for z in range(detail_zoom - 1, -1, -1):
        # Features that are small at z but were not yet small at z + 1 enter here.
        upper = min_size(z)
        lower = min_size(z + 1) if z < detail_zoom - 1 else -1.0
        conn.execute(sql.SQL(
            "INSERT INTO {o} (z, cx, cy, n, _rid, sx, sy, g)"
            " SELECT %(z)s, cx, cy, sum(n), min(_rid), sum(sx), sum(sy),"
            "  ST_SetSRID(ST_MakePoint(sum(sx) / sum(n), sum(sy) / sum(n)), 3857) FROM ("
            "  SELECT floor((x + %(half)s) / %(cell)s)::int AS cx,"
            "   floor((%(half)s - y) / %(cell)s)::int AS cy, 1 AS n, _rid, x AS sx, y AS sy"
            "  FROM (SELECT t._rid, {centre}"
            "   FROM {t} t WHERE t._valid_to IS NULL AND {size} < %(upper)s"
            "   AND {size} >= %(lower)s) f"
            "  UNION ALL"
            # Cells of the level above halve their indices: two by two make one here.
            "  SELECT cx >> 1, cy >> 1, n, _rid, sx, sy FROM {o} WHERE z = %(z)s + 1"
            " ) c GROUP BY cx, cy"
        ).format(o=temp, t=t, size=size, centre=sql.SQL(CENTRE)),
            {"z": z, "half": WORLD / 2, "cell": cell_size(z), "upper": upper, "lower": lower})
    conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (z, g)").format(temp))
    conn.execute(sql.SQL("CREATE INDEX ON {} (z, cx, cy)").format(temp))
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(temp)).fetchone()
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(final))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(temp, sql.Identifier(layer_id)))
    conn.execute(sql.SQL("ANALYZE {}").format(final))
    return int(rows[0]) if rows else 0


def densest(conn: psycopg.Connection, layer_id: str, z: int) -> int:
    """The most current features whose centre falls in one tile of zoom ``z``."""
    row = conn.execute(sql.SQL(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM ("
        "  SELECT {centre} FROM {t} t WHERE t._valid_to IS NULL) f"
        " GROUP BY floor((x + %(half)s) / %(tile)s), floor((%(half)s - y) / %(tile)s)) c"
    ).format(t=table_of(layer_id), centre=sql.SQL(CENTRE)),
        {"half": WORLD / 2, "tile": WORLD / (1 << z)}).fetchone()
    return int(row[0]) if row else 0


MOST_DETAIL_ZOOM = 18  # a layer is never generalized above this zoom


def choose_detail_zoom(conn: psycopg.Connection, layer_id: str, least: int,
                       most_features: int) -> int:
    """The lowest zoom from ``least`` at which no tile holds more than ``most_features``
    features (by their centres): full-detail tiles stay bounded however dense the layer,
    and the zooms below are drawn from the overview, as cells with counts."""
    z = least
    while z < MOST_DETAIL_ZOOM and densest(conn, layer_id, z) > most_features:
        z += 1
    return z


def ensure_all(conn: psycopg.Connection, default_detail_zoom: int) -> list[str]:
    """Builds the overviews that are missing (layers loaded before overviews existed, or an
    overview dropped by hand); returns the layers built. Run at start-up."""
    rows = conn.execute(
        "SELECT id, coalesce(detail_zoom, %s) FROM onemap.layers l WHERE kind = 'vector'"
        " AND to_regclass(format('%%I.%%I', 'onemap_data', id)) IS NOT NULL"
        " AND to_regclass(format('%%I.%%I', %s::text, id)) IS NULL",
        (default_detail_zoom, OVERVIEW_SCHEMA)).fetchall()
    for layer_id, zoom in rows:
        with conn.transaction():
            build(conn, layer_id, zoom)
    return [r[0] for r in rows]


def _cell(x: float, y: float, z: int) -> tuple[int, int]:
    size = cell_size(z)
    return math.floor((x + WORLD / 2) / size), math.floor((WORLD / 2 - y) / size)


def apply_change(conn: psycopg.Connection, layer_id: str, detail_zoom: int,
                 removed: list[tuple[int, float, float, float]],
                 added: list[tuple[int, float, float, float]]) -> None:
    """Updates the overview for single-feature edits, in the caller's transaction, without a
    rebuild: each feature is (row id, centre x, centre y, size) in Web Mercator.

    A cell keeps its count and position sums exact. Its row id names the feature shown
    when it holds one; when a removal leaves one feature, that feature is found again.
    """
    o = overview_of(layer_id)
    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (z, cx, cy)").format(
        sql.Identifier(f"{layer_id[:50]}_cell"), o))
    for z in range(detail_zoom):
        small = min_size(z)
        for _rid, x, y, size in removed:
            if size >= small:
                continue
            cx, cy = _cell(x, y, z)
            cur = conn.execute(sql.SQL(
                "UPDATE {o} SET n = n - 1, sx = sx - %(x)s, sy = sy - %(y)s,"
                " g = CASE WHEN n > 1 THEN ST_SetSRID(ST_MakePoint((sx - %(x)s) / (n - 1),"
                "  (sy - %(y)s) / (n - 1)), 3857) ELSE g END"
                " WHERE z = %(z)s AND cx = %(cx)s AND cy = %(cy)s RETURNING n").format(o=o),
                {"x": x, "y": y, "z": z, "cx": cx, "cy": cy}).fetchone()
            if cur is None:
                continue
            if cur[0] <= 0:
                conn.execute(sql.SQL("DELETE FROM {} WHERE z = %s AND cx = %s AND cy = %s"
                                     ).format(o), (z, cx, cy))
            elif cur[0] == 1:
                _find_single(conn, layer_id, z, cx, cy)
        for rid, x, y, size in added:
            if size >= small:
                continue
            cx, cy = _cell(x, y, z)
            conn.execute(sql.SQL(
                "WITH up AS (UPDATE {o} SET n = n + 1, sx = sx + %(x)s, sy = sy + %(y)s,"
                "  _rid = least(_rid, %(rid)s), g = ST_SetSRID(ST_MakePoint("
                "  (sx + %(x)s) / (n + 1), (sy + %(y)s) / (n + 1)), 3857)"
                "  WHERE z = %(z)s AND cx = %(cx)s AND cy = %(cy)s RETURNING 1)"
                " INSERT INTO {o} (z, cx, cy, n, _rid, sx, sy, g)"
                " SELECT %(z)s, %(cx)s, %(cy)s, 1, %(rid)s, %(x)s, %(y)s,"
                "  ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), 3857)"
                " WHERE NOT EXISTS (SELECT 1 FROM up)").format(o=o),
                {"x": x, "y": y, "z": z, "cx": cx, "cy": cy, "rid": rid})


def _find_single(conn: psycopg.Connection, layer_id: str, z: int, cx: int, cy: int) -> None:
    """A cell left with one feature shows that feature: find it and take its position."""
    size = cell_size(z)
    x0, y1 = cx * size - WORLD / 2, WORLD / 2 - cy * size
    conn.execute(sql.SQL(
        "UPDATE {o} o SET _rid = f._rid, sx = f.x, sy = f.y,"
        " g = ST_SetSRID(ST_MakePoint(f.x, f.y), 3857) FROM ("
        "  SELECT t._rid, {centre} FROM {t} t"
        "  WHERE t._valid_to IS NULL AND t._geom_3857 && ST_MakeEnvelope(%(x0)s, %(y0)s,"
        "   %(x1)s, %(y1)s, 3857) AND {small} < %(small)s) f"
        " WHERE o.z = %(z)s AND o.cx = %(cx)s AND o.cy = %(cy)s"
        " AND floor((f.x + %(half)s) / %(cell)s) = %(cx)s"
        " AND floor((%(half)s - f.y) / %(cell)s) = %(cy)s").format(
            o=overview_of(layer_id), t=table_of(layer_id), small=sql.SQL(_SIZE),
            centre=sql.SQL(CENTRE)),
        {"x0": x0, "y0": y1 - size, "x1": x0 + size, "y1": y1, "small": min_size(z), "z": z,
         "cx": cx, "cy": cy, "half": WORLD / 2, "cell": size})

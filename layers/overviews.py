"""Overviews: what low-zoom tiles show of features too small to see there.

At each zoom below a layer's detail zoom, a feature smaller than half a pixel (every
point) joins a cell of the tile-aligned grid of ``CELL_UNITS`` tile units. A cell keeps how
many features it holds, the sum of their positions (for the centroid) and its lowest row id
(whose attributes it shows when it holds one feature). Levels are built from the detail zoom
down, each from the one above plus the features that become small at it, so a build reads
the layer once. Tiles then read at most 16,384 cells instead of every feature under them.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from layers.catalog import OVERVIEW_SCHEMA, overview_of, table_of
from layers.tiles import CELL_UNITS, EXTENT, WORLD, min_size


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
    size = sql.SQL("greatest(ST_XMax(t._geom_3857) - ST_XMin(t._geom_3857),"
                   " ST_YMax(t._geom_3857) - ST_YMin(t._geom_3857))")
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
            "  FROM (SELECT t._rid, (ST_XMin(t._geom_3857) + ST_XMax(t._geom_3857)) / 2 AS x,"
            "   (ST_YMin(t._geom_3857) + ST_YMax(t._geom_3857)) / 2 AS y"
            "   FROM {t} t WHERE t._valid_to IS NULL AND {size} < %(upper)s"
            "   AND {size} >= %(lower)s) f"
            "  UNION ALL"
            # Cells of the level above halve their indices: two by two make one here.
            "  SELECT cx >> 1, cy >> 1, n, _rid, sx, sy FROM {o} WHERE z = %(z)s + 1"
            " ) c GROUP BY cx, cy"
        ).format(o=temp, t=t, size=size),
            {"z": z, "half": WORLD / 2, "cell": cell_size(z), "upper": upper, "lower": lower})
    conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (z, g)").format(temp))
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(temp)).fetchone()
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(final))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(temp, sql.Identifier(layer_id)))
    conn.execute(sql.SQL("ANALYZE {}").format(final))
    return int(rows[0]) if rows else 0


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

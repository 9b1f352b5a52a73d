"""Routes and service areas on a line layer's network, with pgRouting.

A layer's network is its current lines cut at every vertex into edges, nodes being the
vertices (to 1e-7 degrees): ways that share a vertex meet there, ways that only cross (a
bridge over a street) do not, as in OpenStreetMap. Edges cost their length in metres on
the ellipsoid and are walked both ways. The network is built from one version of the
layer, the first time it is asked for after that version (``graph``), in
``onemap_graph."<layer>"`` under an advisory lock, so concurrent asks build it once.

Every search reads only the edges of features the caller may read (``layers.restrict``:
filter and area; within an area only the edges that touch it), near the two ends: the
edges handed to pgRouting are those within a margin around them, so a search costs what
its neighbourhood holds, not the whole city's network.
"""

from __future__ import annotations

import math
from typing import Any

from psycopg import AsyncClientCursor, AsyncConnection, sql
from psycopg.rows import dict_row
from pyproj import Geod

from layers import restrict
from layers.catalog import Layer, table_of
from layers.errors import Invalid, NotFound, Unavailable
from layers.restrict import Restriction
from layers.store import alive

SNAP_M = 500  # the farthest a route's end may lie from the network
MARGIN_M = 2_000  # around a route's ends: the edges its search may use, at least
MAX_REACH_M = 20_000  # of a service area
GEOD = Geod(ellps="WGS84")


def _edges_table(layer: Layer) -> sql.Identifier:
    return sql.Identifier("onemap_graph", layer.id)


async def available(conn: AsyncConnection) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pgrouting'")
    return await cur.fetchone() is not None


async def graph(conn: AsyncConnection, layer: Layer) -> sql.Identifier:
    """The layer's network at its current version, built now if it is older."""
    if not await available(conn):
        raise Unavailable("routing needs pgRouting on the database server, which it lacks")
    if "Line" not in (layer.geometry_type or ""):
        raise Invalid(f"a route runs on a line layer; {layer.id} has {layer.geometry_type}")
    edges = _edges_table(layer)
    if await _built(conn, layer) == layer.version:
        return edges
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('onemap.graph'), "
                           "hashtext(%s))", (layer.id,))
        if await _built(conn, layer) == layer.version:
            return edges
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(edges))
        await conn.execute(sql.SQL(
            "CREATE TABLE {e} AS SELECT (row_number() OVER ())::bigint AS id, s.fid,"
            " ST_MakeLine(s.a, s.b) AS geom, NULL::bigint AS source, NULL::bigint AS target,"
            " ST_Length(ST_MakeLine(s.a, s.b)::geography) AS cost FROM ("
            " SELECT t._fid AS fid, ST_PointN(d.geom, n) AS a, ST_PointN(d.geom, n + 1) AS b"
            " FROM {t} t, ST_Dump(t.geom) d, generate_series(1, ST_NPoints(d.geom) - 1) n"
            " WHERE {alive}) s WHERE NOT ST_Equals(s.a, s.b)").format(
            e=edges, t=table_of(layer.id), alive=alive(False)))
        await conn.execute(sql.SQL(
            "CREATE TEMP TABLE _nodes ON COMMIT DROP AS SELECT (row_number() OVER ())::bigint"
            " AS id, x, y FROM (SELECT DISTINCT round(ST_X(p) * 1e7)::bigint AS x,"
            " round(ST_Y(p) * 1e7)::bigint AS y FROM (SELECT ST_StartPoint(geom) AS p FROM {e}"
            " UNION ALL SELECT ST_EndPoint(geom) FROM {e}) q) v").format(e=edges))
        await conn.execute("CREATE UNIQUE INDEX ON _nodes (x, y)")
        for end, fn in (("source", "ST_StartPoint"), ("target", "ST_EndPoint")):
            await conn.execute(sql.SQL(
                "UPDATE {e} e SET {end} = v.id FROM _nodes v"
                " WHERE v.x = round(ST_X({fn}(e.geom)) * 1e7)::bigint"
                " AND v.y = round(ST_Y({fn}(e.geom)) * 1e7)::bigint").format(
                e=edges, end=sql.Identifier(end), fn=sql.SQL(fn)))
        await conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (geom)").format(edges))
        await conn.execute(sql.SQL("CREATE INDEX ON {} (fid)").format(edges))
        await conn.execute(sql.SQL("ANALYZE {}").format(edges))
        cur = await conn.execute(sql.SQL("SELECT count(*), (SELECT count(*) FROM _nodes)"
                                         " FROM {}").format(edges))
        n_edges, n_nodes = await cur.fetchone()
        await conn.execute(
            "INSERT INTO onemap.graphs (layer_id, version, edges, nodes) VALUES (%s, %s, %s,"
            " %s) ON CONFLICT (layer_id) DO UPDATE SET version = EXCLUDED.version,"
            " edges = EXCLUDED.edges, nodes = EXCLUDED.nodes, built_at = now()",
            (layer.id, layer.version, n_edges, n_nodes))
    return edges


async def _built(conn: AsyncConnection, layer: Layer) -> int | None:
    cur = await conn.execute("SELECT version FROM onemap.graphs WHERE layer_id = %s",
                             (layer.id,))
    row = await cur.fetchone()
    return row[0] if row else None


def _usable(layer: Layer, r: Restriction, edges: sql.Identifier) -> tuple[sql.Composable, dict]:
    """``FROM <edges> e JOIN <layer> t ... WHERE`` the edges of current features the caller
    may read (within its area, the edges that touch the area), and the parameters."""
    limit, params = restrict.rows(layer, r, prefix="r")
    parts = [alive(False)]
    if limit is not None:
        parts.append(limit)
    if r.area_id is not None:
        parts.append(sql.SQL("ST_Intersects(e.geom, (SELECT geom FROM onemap.areas"
                             " WHERE id = %(r_area)s))"))
    return sql.SQL("FROM {e} e JOIN {t} t ON t._fid = e.fid WHERE {w}").format(
        e=edges, t=table_of(layer.id), w=sql.SQL(" AND ").join(parts)), params


_POINT = "ST_SetSRID(ST_MakePoint(%({0}_lon)s, %({0}_lat)s), 4326)"


async def _snap(conn: AsyncConnection, frm: sql.Composable, params: dict, name: str,
                lon: float, lat: float) -> dict[str, Any]:
    """The network's node nearest to a point (an end of the nearest edge the caller may
    use), and how far it is; Invalid when no edge lies within ``SNAP_M``."""
    pt = sql.SQL(_POINT.format(name))
    q = sql.SQL(
        "SELECT CASE WHEN ST_Distance(ST_StartPoint(e.geom)::geography, {pt}::geography)"
        " <= ST_Distance(ST_EndPoint(e.geom)::geography, {pt}::geography) THEN e.source"
        " ELSE e.target END AS node, ST_Distance(e.geom::geography, {pt}::geography) AS d"
        " {frm} ORDER BY e.geom <-> {pt} LIMIT 1").format(pt=pt, frm=frm)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, {**params, f"{name}_lon": lon, f"{name}_lat": lat})
        row = await cur.fetchone()
    if row is None or row["d"] > SNAP_M:
        raise Invalid(f"{name}: no way of the network within {SNAP_M} m of "
                      f"[{lon}, {lat}] that this caller may use")
    return row


async def _edges_sql(conn: AsyncConnection, frm: sql.Composable, params: dict,
                     box: tuple[float, float, float, float], margin_m: float) -> str:
    """The statement pgRouting reads the edges with, its values bound (it takes text)."""
    q = sql.SQL(
        "SELECT e.id, e.source, e.target, e.cost, e.cost AS reverse_cost {frm} AND e.geom &&"
        " ST_Expand(ST_MakeEnvelope(%(b0)s, %(b1)s, %(b2)s, %(b3)s, 4326), %(deg)s)"
    ).format(frm=frm)
    # Degrees of longitude shrink with latitude: the margin's degrees at the box's middle.
    lat = math.radians((box[1] + box[3]) / 2)
    deg = margin_m / 111_320.0 / max(math.cos(lat), 0.05)
    return AsyncClientCursor(conn).mogrify(q, {**params, "b0": box[0], "b1": box[1],
                                               "b2": box[2], "b3": box[3], "deg": deg})


async def route(conn: AsyncConnection, layer: Layer, r: Restriction,
                start: tuple[float, float], end: tuple[float, float]) -> dict[str, Any]:
    """The shortest way along the network from ``start`` to ``end`` (lon/lat): its edges
    in order, its length in metres, the features it runs along."""
    edges = await graph(conn, layer)
    frm, params = _usable(layer, r, edges)
    params = {**params, "r_area": r.area_id}
    a = await _snap(conn, frm, params, "start", *start)
    b = await _snap(conn, frm, params, "end", *end)
    box = (min(start[0], end[0]), min(start[1], end[1]), max(start[0], end[0]),
           max(start[1], end[1]))
    span = GEOD.inv(*start, *end)[2]
    text = await _edges_sql(conn, frm, params, box, max(MARGIN_M, span / 2))
    q = sql.SQL(
        "SELECT p.seq, p.node, p.edge, p.agg_cost, e.fid, ST_AsGeoJSON(e.geom, 7)::json AS g"
        " FROM pgr_dijkstra(%(edges)s, %(a)s::bigint, %(b)s::bigint, directed => false) p"
        " LEFT JOIN {e} e ON e.id = p.edge ORDER BY p.seq")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q.format(e=edges), {"edges": text, "a": a["node"], "b": b["node"]})
        steps = list(await cur.fetchall())
    if a["node"] == b["node"]:
        return {"lines": [], "length_m": 0.0, "fids": [], "snapped_m": [a["d"], b["d"]]}
    if not steps:
        raise NotFound(f"no way along {layer.id} joins the two points (for this caller)")
    walked = [s for s in steps if s["edge"] != -1]
    fids: list[str] = []
    for s in walked:
        if not fids or fids[-1] != s["fid"]:
            fids.append(s["fid"])
    return {"lines": [s["g"]["coordinates"] for s in walked],
            "length_m": float(steps[-1]["agg_cost"]), "fids": fids,
            "snapped_m": [a["d"], b["d"]]}


async def reach(conn: AsyncConnection, layer: Layer, r: Restriction, start: tuple[float, float],
                distances: list[float]) -> dict[str, Any]:
    """What lies within each distance of ``start`` along the network: for each, the nodes
    reached, the length of the ways wholly within it, and the shape around them."""
    edges = await graph(conn, layer)
    frm, params = _usable(layer, r, edges)
    params = {**params, "r_area": r.area_id}
    a = await _snap(conn, frm, params, "start", *start)
    far = max(distances)
    text = await _edges_sql(conn, frm, params, (*start, *start), far * 1.05 + 100)
    q = sql.SQL(
        "WITH d AS MATERIALIZED (SELECT node, agg_cost FROM pgr_drivingDistance(%(edges)s,"
        " %(a)s::bigint, %(far)s, directed => false)),"
        " b AS (SELECT unnest(%(breaks)s::float8[]) AS m)"
        " SELECT b.m, (SELECT count(*) FROM d WHERE d.agg_cost <= b.m) AS nodes,"
        " (SELECT coalesce(sum(e.cost), 0) {frm}"
        "  AND e.source IN (SELECT node FROM d WHERE d.agg_cost <= b.m)"
        "  AND e.target IN (SELECT node FROM d WHERE d.agg_cost <= b.m)) AS length_m,"
        " (SELECT ST_AsGeoJSON(ST_ConcaveHull(ST_Collect(p), 0.3), 7)::json FROM ("
        "  SELECT ST_StartPoint(e.geom) AS p FROM {e} e JOIN d ON d.node = e.source"
        "  WHERE d.agg_cost <= b.m UNION ALL SELECT ST_EndPoint(e.geom) FROM {e} e"
        "  JOIN d ON d.node = e.target WHERE d.agg_cost <= b.m) q) AS shape"
        " FROM b ORDER BY b.m").format(e=edges, frm=frm)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, {**params, "edges": text, "a": a["node"], "far": far,
                              "breaks": sorted(distances)})
        rows = list(await cur.fetchall())
    return {"breaks": rows, "snapped_m": a["d"], "node": a["node"]}

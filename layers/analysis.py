"""The statements of the analysis processes, each under the caller's limits on every layer
it reads (``layers.restrict``: area, filter, hidden and masked fields), as tiles, features
and images are. Distances are metres on the ellipsoid (PostGIS geography)."""

from __future__ import annotations

import math
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from pyproj import Transformer

from layers import restrict
from layers.catalog import Layer, table_of
from layers.errors import Forbidden, Invalid, TooCostly
from layers.restrict import Restriction
from layers.store import alive

NUMERIC = ("integer", "bigint", "double", "real", "numeric", "float", "int")
STATS = ("count", "sum", "mean", "min", "max", "length", "area")


def _limited(layer: Layer, r: Restriction, prefix: str) -> tuple[sql.Composable, dict]:
    """``FROM <table> t WHERE <current> AND <the caller's limits>``, and its parameters."""
    limit, params = restrict.rows(layer, r, prefix=prefix)
    where = alive(False) if limit is None else sql.SQL("{} AND {}").format(alive(False), limit)
    return sql.SQL("FROM {} t WHERE {}").format(table_of(layer.id), where), params


def _columns(layer: Layer, r: Restriction) -> sql.Composable:
    return sql.SQL("").join(sql.SQL(", ") + restrict.column(f.name, r)
                            for f in restrict.visible_fields(layer, r))


def readable_field(layer: Layer, r: Restriction, name: str, numeric: bool = False) -> str:
    """A field a process names: one the caller reads in clear (403 otherwise: a masked
    value summed or compared would tell what the mask hides)."""
    known = {f.name: f for f in layer.fields}
    if name not in known:
        raise Invalid(f"{layer.id} has no field {name!r}")
    if name in r.hidden or r.mask_of(name) is not None:
        raise Forbidden(f"field {name!r} of {layer.id} is not readable in clear by this caller")
    if numeric and not any(t in known[name].type.lower() for t in NUMERIC):
        raise Invalid(f"field {name!r} of {layer.id} is {known[name].type}, not a number")
    return name


async def locate(conn: AsyncConnection, layer: Layer, r: Restriction, lon: float,
                 lat: float, geometry: bool = False) -> list[dict[str, Any]]:
    """The features of a polygon layer that hold the point, with their fields."""
    frm, params = _limited(layer, r, "a")
    shape = sql.SQL(", ST_AsGeoJSON(t.geom, 7)::json AS _geometry") if geometry else sql.SQL("")
    q = sql.SQL("SELECT {fid} AS _fid{cols}{shape} {frm} AND t.geom && {pt}"
                " AND ST_Intersects(t.geom, {pt}) ORDER BY ST_Area(t.geom) LIMIT 50").format(
        fid=restrict.fid(layer, r), cols=_columns(layer, r), shape=shape, frm=frm,
        pt=sql.SQL("ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)"))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, {**params, "lon": lon, "lat": lat})
        return list(await cur.fetchall())


async def nearest(conn: AsyncConnection, layer: Layer, r: Restriction, lon: float, lat: float,
                  n: int, within: float | None) -> list[dict[str, Any]]:
    """The ``n`` nearest features to the point, nearest first, with their distance in
    metres. Candidates come from the index in Web Mercator (conformal, so near a point it
    ranks as distance does), and are ranked again by distance on the ellipsoid."""
    frm, params = _limited(layer, r, "a")
    pt = sql.SQL("ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)")
    near = sql.SQL("")
    if within is not None:
        near = sql.SQL(" AND ST_DWithin(t.geom::geography, {pt}::geography, %(within)s)"
                       ).format(pt=pt)
    q = sql.SQL(
        "SELECT * FROM (SELECT {fid} AS _fid{cols}, ST_AsGeoJSON(t.geom, 7)::json AS _geometry,"
        " ST_Distance(t.geom::geography, {pt}::geography) AS _distance {frm}{near}"
        " ORDER BY t._geom_3857 <-> ST_Transform({pt}, 3857) LIMIT %(pool)s) c"
        " ORDER BY _distance, _fid LIMIT %(n)s").format(
        fid=restrict.fid(layer, r), cols=_columns(layer, r), pt=pt, frm=frm, near=near)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, {**params, "lon": lon, "lat": lat, "n": n, "pool": n * 4 + 64,
                              "within": within})
        return list(await cur.fetchall())


async def buffer(conn: AsyncConnection, geojson: str, metres: float) -> dict[str, Any]:
    """A shape (GeoJSON, lon/lat) widened by ``metres`` on the ellipsoid, and its area."""
    cur = await conn.execute(
        "SELECT ST_AsGeoJSON(b, 7)::json, ST_Area(b::geography) FROM (SELECT"
        " ST_Buffer(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)::geography, %s)::geometry AS b) q",
        (geojson, metres))
    row = await cur.fetchone()
    return {"geometry": row[0], "area_m2": row[1]}


async def aggregate(conn: AsyncConnection, items: Layer, ri: Restriction, zones: Layer,
                    rz: Restriction, stat: str, field: str | None,
                    geometry: bool = False) -> list[dict[str, Any]]:
    """For each feature of ``zones`` (polygons), ``stat`` over the features of ``items``
    inside it: ``count``; ``sum``, ``mean``, ``min``, ``max`` of a numeric ``field``;
    ``length`` (lines) and ``area`` (polygons) of the part inside, in metres and m². Both
    layers are read under the caller's limits on each."""
    if stat not in STATS:
        raise Invalid(f"stat {stat!r} is not one of {', '.join(STATS)}")
    if stat in ("sum", "mean", "min", "max"):
        if not field:
            raise Invalid(f"stat {stat} needs a field")
        value = sql.SQL("{}(t.{})").format(sql.SQL({"mean": "avg"}.get(stat, stat)),
                                           sql.Identifier(readable_field(items, ri, field,
                                                                         numeric=True)))
    elif stat == "count":
        value = sql.SQL("count(*)")
    else:
        kind = "Line" if stat == "length" else "Polygon"
        if kind not in (items.geometry_type or ""):
            raise Invalid(f"stat {stat} needs a layer of {kind.lower()}s; {items.id} has "
                          f"{items.geometry_type}")
        measure = "ST_Length" if stat == "length" else "ST_Area"
        value = sql.SQL("coalesce(sum({}(ST_Intersection(t.geom, z.geom)::geography)), 0)"
                        ).format(sql.SQL(measure))
    from_items, pi = _limited(items, ri, "i")
    from_zones, pz = _limited(zones, rz, "z")
    shape = sql.SQL(", ST_AsGeoJSON(z.geom, 7)::json AS _geometry") if geometry else sql.SQL("")
    zone_cols = [restrict.column(f.name, rz) for f in restrict.visible_fields(zones, rz)]
    names = [f.name for f in restrict.visible_fields(zones, rz)]
    # The zones first, under their limits; then, per zone, the items inside it through
    # the items' index, under theirs.
    q = sql.SQL(
        "WITH z AS MATERIALIZED (SELECT {zfid} AS _fid, t.geom{zcols} {fz})"
        " SELECT z._fid{names}{shape}, a._value FROM z LEFT JOIN LATERAL"
        " (SELECT {value} AS _value {fi} AND t.geom && z.geom"
        " AND ST_Intersects(t.geom, z.geom)) a ON true ORDER BY z._fid").format(
        zfid=restrict.fid(zones, rz),
        zcols=sql.SQL("").join(sql.SQL(", ") + c for c in zone_cols), fz=from_zones,
        fi=from_items,
        names=sql.SQL("").join(sql.SQL(", z.") + sql.Identifier(n) for n in names),
        shape=shape, value=value)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, {**pi, **pz})
        return list(await cur.fetchall())


# ---- overlays: clip, intersect, dissolve ------------------------------------------------

# The dimension PostGIS extracts from an overlay's result (1 points, 2 lines, 3 polygons),
# and what is measured of each part on the ellipsoid.
MEASURES = {2: ("length_m", "ST_Length"), 3: ("area_m2", "ST_Area")}


def dimension(layer: Layer) -> int:
    kind = layer.geometry_type or ""
    return 3 if "Polygon" in kind else 2 if "Line" in kind else 1


def _measured(dim: int, expr: str = "q._x") -> sql.Composable:
    if dim not in MEASURES:
        return sql.SQL("")
    name, fn = MEASURES[dim]
    return sql.SQL(", {}({}::geography) AS {}").format(sql.SQL(fn), sql.SQL(expr),
                                                       sql.Identifier("_" + name))


def _capped(rows: list[dict[str, Any]], cap: int, what: str) -> list[dict[str, Any]]:
    if len(rows) > cap:
        raise TooCostly(f"{what} gives more than {cap} features; narrow it (a smaller "
                        "geometry, a filter on the layer) and ask again")
    return rows


async def _rows(conn: AsyncConnection, q: sql.Composable, params: dict) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, params)
        return list(await cur.fetchall())


async def clip(conn: AsyncConnection, layer: Layer, r: Restriction, geojson: str,
               cap: int) -> list[dict[str, Any]]:
    """The features of ``layer`` cut to a GeoJSON shape (lon/lat), each with the length
    or area of its part inside, in metres on the ellipsoid."""
    frm, params = _limited(layer, r, "a")
    dim = dimension(layer)
    q = sql.SQL(
        "WITH c AS MATERIALIZED (SELECT ST_MakeValid(ST_SetSRID(ST_GeomFromGeoJSON("
        "%(clip)s), 4326)) AS g)"
        " SELECT q.*, ST_AsGeoJSON(q._x, 7)::json AS _geometry{measure} FROM ("
        " SELECT {fid} AS _fid{cols}, ST_CollectionExtract(ST_Intersection({geom},"
        " (SELECT g FROM c)), {dim}) AS _x {frm} AND t.geom && (SELECT g FROM c)"
        " AND ST_Intersects(t.geom, (SELECT g FROM c))) q"
        " WHERE NOT ST_IsEmpty(q._x) ORDER BY q._fid LIMIT %(cap)s").format(
        measure=_measured(dim), fid=restrict.fid(layer, r), cols=_columns(layer, r),
        geom=restrict.clipped(sql.SQL("t.geom"), r), dim=sql.Literal(dim), frm=frm)
    rows = await _rows(conn, q, {**params, "clip": geojson, "cap": cap + 1,
                                 "_area": r.area_id})
    return _capped(rows, cap, f"clip of {layer.id}")


def _overlay_columns(layer: Layer, r: Restriction) -> tuple[sql.Composable, list[str]]:
    """The overlay's fields as the caller reads them, named ``overlay_<field>``."""
    out, names = [], []
    for f in restrict.visible_fields(layer, r):
        how = r.mask_of(f.name)
        col = sql.SQL("t.{}").format(sql.Identifier(f.name))
        if how is not None:
            col = sql.SQL("onemap.mask({}, {})").format(col, sql.Literal(how))
        names.append(f"overlay_{f.name}")
        out.append(sql.SQL(", {} AS {}").format(col, sql.Identifier(names[-1])))
    return sql.SQL("").join(out), names


async def intersect(conn: AsyncConnection, layer: Layer, r: Restriction, overlay: Layer,
                    ro: Restriction, cap: int) -> list[dict[str, Any]]:
    """Each part where a feature of ``layer`` meets one of ``overlay``: their common shape,
    the fields of both (the overlay's as ``overlay_<field>``), its length or area."""
    frm, params = _limited(layer, r, "a")
    frm_o, params_o = _limited(overlay, ro, "o")
    dim = min(dimension(layer), dimension(overlay))
    ocols, onames = _overlay_columns(overlay, ro)
    # The overlay's clip to the caller's area is its own; the layer's too.
    if ro.clip and ro.area_id is not None and not (r.clip and r.area_id == ro.area_id):
        raise Invalid(f"{overlay.id} and {layer.id} are limited to different areas for this "
                      "caller; intersect each with its area first")
    q = sql.SQL(
        "WITH o AS MATERIALIZED (SELECT {ofid} AS _overlay_fid, t.geom AS _og{ocols} {fo})"
        " SELECT q.*, ST_AsGeoJSON(q._x, 7)::json AS _geometry{measure} FROM ("
        " SELECT x.*{onames}, o._overlay_fid FROM o CROSS JOIN LATERAL ("
        "  SELECT {fid} AS _fid{cols}, ST_CollectionExtract(ST_Intersection({geom}, o._og),"
        "  {dim}) AS _x {frm} AND t.geom && o._og AND ST_Intersects(t.geom, o._og)) x) q"
        " WHERE NOT ST_IsEmpty(q._x) ORDER BY q._fid, q._overlay_fid LIMIT %(cap)s").format(
        ofid=restrict.fid(overlay, ro), ocols=ocols, fo=frm_o, measure=_measured(dim),
        onames=sql.SQL("").join(sql.SQL(", o.") + sql.Identifier(n) for n in onames),
        fid=restrict.fid(layer, r), cols=_columns(layer, r),
        geom=restrict.clipped(sql.SQL("t.geom"), r), dim=sql.Literal(dim), frm=frm)
    rows = await _rows(conn, q, {**params, **params_o, "cap": cap + 1, "_area": r.area_id})
    return _capped(rows, cap, f"intersect of {layer.id} and {overlay.id}")


async def dissolve(conn: AsyncConnection, layer: Layer, r: Restriction, field: str | None,
                   cap: int) -> list[dict[str, Any]]:
    """The features of ``layer`` merged into one shape per value of ``field`` (all into
    one without it), with how many each holds and its length or area."""
    frm, params = _limited(layer, r, "a")
    dim = dimension(layer)
    key = (sql.SQL("t.{}").format(sql.Identifier(readable_field(layer, r, field)))
           if field else sql.SQL("NULL::text"))
    q = sql.SQL(
        "SELECT q._key, q._count, ST_AsGeoJSON(q._x, 7)::json AS _geometry{measure} FROM ("
        " SELECT {key} AS _key, count(*) AS _count,"
        " ST_CollectionExtract(ST_UnaryUnion(ST_Collect({geom})), {dim}) AS _x {frm}"
        " GROUP BY 1) q ORDER BY q._key NULLS LAST LIMIT %(cap)s").format(
        measure=_measured(dim), key=key, geom=restrict.clipped(sql.SQL("t.geom"), r),
        dim=sql.Literal(dim), frm=frm)
    rows = await _rows(conn, q, {**params, "cap": cap + 1, "_area": r.area_id})
    return _capped(rows, cap, f"dissolve of {layer.id}")


# ---- density ------------------------------------------------------------------------------

MAX_CELLS = 100_000


async def density(conn: AsyncConnection, layer: Layer, r: Restriction,
                  bbox: tuple[float, float, float, float] | None, cell_m: float,
                  weight: str | None = None) -> tuple[list[dict[str, Any]], float]:
    """How many features (or the sum of ``weight``) fall in each square of a grid with
    sides of ``cell_m`` metres on the ground at the box's middle latitude (a Web Mercator
    grid: PostGIS's ``ST_Square`` cells), empty cells left out; and the grid's side in
    Web Mercator units. Lines and polygons count at a point on their surface."""
    if bbox is None:
        if layer.extent is None:
            return [], 0.0
        bbox = layer.extent
    x0, y0, x1, y1 = bbox
    if not (x0 < x1 and y0 < y1):
        raise Invalid("bbox: [min lon, min lat, max lon, max lat] with min < max is needed")
    mid = math.radians(max(-85.0, min(85.0, (y0 + y1) / 2)))
    side = cell_m / math.cos(mid)  # Web Mercator units of cell_m metres there
    lo, hi = _mercator(x0, y0), _mercator(x1, y1)
    cells = math.ceil((hi[0] - lo[0]) / side) * math.ceil((hi[1] - lo[1]) / side)
    if cells > MAX_CELLS:
        raise TooCostly(f"a grid of {cell_m:g} m cells over that box has {cells} cells; at "
                        f"most {MAX_CELLS}: take larger cells or a smaller bbox")
    frm, params = _limited(layer, r, "a")
    at = sql.SQL("t._geom_3857") if dimension(layer) == 1 else sql.SQL(
        "ST_PointOnSurface(t._geom_3857)")
    value = (sql.SQL("sum(t.{})").format(sql.Identifier(readable_field(layer, r, weight,
                                                                       numeric=True)))
             if weight else sql.SQL("count(*)"))
    q = sql.SQL(
        "SELECT g.i AS _i, g.j AS _j, g._value, ST_AsGeoJSON(ST_Transform("
        "ST_Square(%(side)s, g.i, g.j, {origin}), 4326), 7)::json AS _geometry,"
        " ST_Area(ST_Transform(ST_Square(%(side)s, g.i, g.j, {origin}), 4326)::geography) AS _area"
        " FROM (SELECT floor(ST_X(p) / %(side)s)::int AS i, floor(ST_Y(p) / %(side)s)::int AS j,"
        " {value} AS _value FROM (SELECT {at} AS p, t.* {frm} AND t._geom_3857 &&"
        " ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 3857)) t"
        " WHERE ST_X(p) BETWEEN %(x0)s AND %(x1)s AND ST_Y(p) BETWEEN %(y0)s AND %(y1)s"
        " GROUP BY 1, 2) g ORDER BY g.j, g.i").format(
        value=value, at=at, frm=frm, origin=sql.SQL("ST_SetSRID(ST_MakePoint(0, 0), 3857)"))
    rows = await _rows(conn, q, {**params, "side": side, "x0": lo[0], "y0": lo[1],
                                 "x1": hi[0], "y1": hi[1]})
    return rows, side


_TO_MERCATOR = Transformer.from_crs(4326, 3857, always_xy=True)


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    return _TO_MERCATOR.transform(lon, max(-85.05112878, min(85.05112878, lat)))


async def zones(conn: AsyncConnection, layer: Layer, r: Restriction, cap: int
                ) -> list[dict[str, Any]]:
    """The polygons of ``layer`` the caller sees (cut to its area where it says clip), with
    their fields, as GeoJSON, for statistics over a raster."""
    frm, params = _limited(layer, r, "a")
    q = sql.SQL("SELECT {fid} AS _fid{cols}, ST_AsGeoJSON({geom}, 9)::json AS _geometry {frm}"
                " ORDER BY 1 LIMIT %(cap)s").format(
        fid=restrict.fid(layer, r), cols=_columns(layer, r),
        geom=restrict.clipped(sql.SQL("t.geom"), r), frm=frm)
    rows = await _rows(conn, q, {**params, "cap": cap + 1, "_area": r.area_id})
    return _capped(rows, cap, f"zones of {layer.id}")

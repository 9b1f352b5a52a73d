"""The statements of the analysis processes, each under the caller's limits on every layer
it reads (``layers.restrict``: area, filter, hidden and masked fields), as tiles, features
and images are. Distances are metres on the ellipsoid (PostGIS geography)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from layers import restrict
from layers.catalog import Layer, table_of
from layers.errors import Forbidden, Invalid
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

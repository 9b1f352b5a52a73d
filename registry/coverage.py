"""What the fronts already watch: the duplicate check for a proposed front, and coverage
statistics per area (fronts by kind, share of a road layer within a camera's view).

A camera sees a point when the point is within its range and its bearing from the camera
is within half the field of view of the camera's direction (``WATCHING``: exact, on the
ellipsoid). Shares of roads and of a proposed view use the sector shapes of
``registry.sector`` (24 geodesic points per arc).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from layers.catalog import Layer, table_of
from layers.restrict import Restriction, rows
from registry.scope import EVERYTHING, Scope, statement

SAME_KIND_M = 50.0
# What the duplicate check and coverage decide on: a caller who may not read one of these
# gets neither.
DECIDES_ON = ("kind", "state", "direction", "fov", "range_m")
MAX_SAME_KIND_M = 1000.0

SAME_KIND = """
WITH s AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(site)s), 4490)::geography AS g)
SELECT f.code, f.kind, f.state, f.owner, ST_Distance(f.geom::geography, s.g) AS d
FROM s, registry.fronts f
WHERE f.kind = %(kind)s AND f.state <> 'retired'
  AND ST_DWithin(f.geom::geography, s.g, %(radius)s)
  AND {limits}
ORDER BY d, f.code"""

# A camera sees the site when the site is within its range and the bearing to it within
# half the field of view of the camera's direction (a site on the camera: bearing NULL).
WATCHING = """
WITH s AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(site)s), 4490)::geography AS g)
SELECT f.code, f.state, ST_Distance(f.geom::geography, s.g) AS d,
       degrees(ST_Azimuth(f.geom::geography, s.g)), f.direction, f.fov, f.range_m
FROM s, registry.fronts f,
     LATERAL (SELECT coalesce(degrees(ST_Azimuth(f.geom::geography, s.g)), f.direction)
                     - f.direction AS off) d
WHERE f.kind = 'camera' AND f.state = 'in_service' AND f.range_m IS NOT NULL
  AND f.fov IS NOT NULL AND (f.direction IS NOT NULL OR f.fov >= 360)
  AND ST_DWithin(f.geom::geography, s.g,
                 (SELECT max(range_m) FROM registry.fronts WHERE kind = 'camera'))
  AND ST_DWithin(f.geom::geography, s.g, f.range_m)
  AND (f.fov >= 360 OR abs(d.off - 360 * round(d.off / 360)) <= f.fov / 2)
  AND {limits}
ORDER BY d, f.code"""

# How much of a proposed camera's view the in-service cameras already watch.
OVERLAP = """
WITH s AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(site)s), 4490) AS p),
     v AS (SELECT registry.sector(s.p, %(direction)s::real, %(fov)s::real, %(range)s::real)
                  AS g, s.p::geography AS site FROM s),
     seen AS (SELECT ST_Union(registry.sector(f.geom, f.direction, f.fov, f.range_m)) AS g
              FROM v, registry.fronts f
              WHERE f.kind = 'camera' AND f.state = 'in_service'
                AND ST_DWithin(f.geom::geography, v.site, %(range)s + (
                    SELECT max(range_m) FROM registry.fronts WHERE kind = 'camera'))
                AND {limits})
SELECT CASE WHEN seen.g IS NULL THEN 0
            ELSE ST_Area(ST_Intersection(v.g, seen.g)::geography) / ST_Area(v.g::geography)
       END
FROM v, seen"""


def check_params(site: dict[str, Any], kind: str, radius_m: float) -> dict[str, Any]:
    if not 0 < radius_m <= MAX_SAME_KIND_M:
        raise ValueError(f"radius {radius_m} m is outside (0, {MAX_SAME_KIND_M:g}]")
    if kind not in ("camera", "sensor"):
        raise ValueError(f"kind {kind!r} is not camera or sensor")
    return {"site": json.dumps(site), "kind": kind, "radius": radius_m}


def view_params(direction: float | None, fov: float | None,
                range_m: float | None) -> dict[str, Any] | None:
    """A proposed camera's view, checked; None when not all three are given."""
    if direction is None or fov is None or range_m is None:
        return None
    if not (0 <= direction < 360 and 0 < fov <= 360 and 0 < range_m <= MAX_SAME_KIND_M):
        raise ValueError("direction must be in [0, 360), fov in (0, 360] and range in "
                         f"(0, {MAX_SAME_KIND_M:g}] metres")
    return {"direction": direction, "fov": fov, "range": range_m}


def duplicate_answer(site: dict[str, Any], params: dict[str, Any], same: list[tuple],
                     watching: list[tuple], overlap: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "site": site, "kind": params["kind"], "radius_m": params["radius"],
        "same_kind_nearby": [{"code": r[0], "kind": r[1], "state": r[2], "owner": r[3],
                              "distance_m": round(float(r[4]), 2)} for r in same],
        "watched_by": [{"code": r[0], "distance_m": round(float(r[2]), 2),
                        "bearing": None if r[3] is None else round(float(r[3]), 1),
                        "direction": r[4], "fov": r[5], "range_m": r[6]} for r in watching]}
    if overlap is not None:
        out["view_already_watched"] = round(float(overlap), 4)
    out["duplicate"] = bool(out["same_kind_nearby"]) or (
        params["kind"] == "camera" and bool(out["watched_by"]))
    return out


def statements(params: dict[str, Any], view: dict[str, Any] | None, scope: Scope
               ) -> list[tuple[sql.Composed, dict[str, Any]]]:
    """The duplicate check's statements (same kind; for a camera the cameras watching the
    site, and given a view how much of it is watched), for what the caller may see."""
    out = [SAME_KIND] + ([WATCHING] if params["kind"] == "camera" else [])
    out += [OVERLAP] if view is not None and params["kind"] == "camera" else []
    done = []
    for template in out:
        query, p = statement(template, scope, "f")
        done.append((query, {**params, **(view or {}), **p}))
    return done


def check_front(conn: psycopg.Connection, site: dict[str, Any], kind: str,
                radius_m: float = SAME_KIND_M, view: dict[str, Any] | None = None,
                scope: Scope = EVERYTHING) -> dict[str, Any]:
    """Existing fronts of the same kind near a proposed one; for a camera, the cameras
    whose view already covers the site, and (given its view) how much of it is watched."""
    params = check_params(site, kind, radius_m)
    found = [conn.execute(q, p).fetchall() for q, p in statements(params, view, scope)]
    return duplicate_answer(site, params, found[0], found[1] if len(found) > 1 else [],
                            found[2][0][0] if len(found) > 2 else None)


def _limited(layer: Layer, r: Restriction, alias: str) -> tuple[sql.Composable, dict]:
    """The current rows of a layer the caller may read, as ``alias``."""
    cond, params = rows(layer, r, prefix=alias)
    where = sql.SQL("t._valid_to IS NULL") if cond is None else sql.SQL(
        "t._valid_to IS NULL AND {}").format(cond)
    return (sql.SQL("(SELECT t.* FROM {} t WHERE {}) AS {}").format(
        table_of(layer.id), where, sql.Identifier(alias)), params)


def coverage_query(areas: Layer | None, label: str | None, roads: Layer | None,
                   areas_r: Restriction, roads_r: Restriction,
                   fronts: Scope = EVERYTHING) -> tuple[sql.Composable, dict[str, Any]]:
    """Per area (or once for everything): fronts in service by kind, road length, and
    road length within a camera's view. Fronts the caller may not see do not count."""
    limits, params = fronts.clause("f", "fronts_")
    if areas is not None:
        a_from, p = _limited(areas, areas_r, "a")
        params.update(p)
        name = (sql.SQL("a.{}::text").format(sql.Identifier(label)) if label
                else sql.SQL("a._fid::text"))
        area = sql.SQL("SELECT {} AS name, a.geom AS g FROM {}").format(name, a_from)
    else:
        area = sql.SQL("SELECT 'all'::text AS name, NULL::geometry AS g")
    if roads is not None:
        r_from, p = _limited(roads, roads_r, "r")
        params.update(p)
        road = sql.SQL("""
    SELECT sum(ST_Length(x.g::geography)) AS total,
           sum(ST_Length(ST_Intersection(x.g, cams.g)::geography)) AS seen
    FROM (SELECT CASE WHEN area.g IS NULL THEN r.geom
                      ELSE ST_Intersection(r.geom, area.g) END AS g
          FROM {} WHERE area.g IS NULL OR (r.geom && area.g
                AND ST_Intersects(r.geom, area.g))) x""").format(r_from)
    else:
        road = sql.SQL("SELECT NULL::float8 AS total, NULL::float8 AS seen")
    q = sql.SQL("""
WITH live AS MATERIALIZED (
         SELECT f.kind, f.geom, registry.sector(f.geom, f.direction, f.fov, f.range_m) AS view
         FROM registry.fronts f WHERE f.state = 'in_service'
         AND {limits})
SELECT area.name,
       (SELECT coalesce(json_object_agg(kind, n), '{{}}') FROM (
            SELECT f.kind, count(*) AS n FROM live f
            WHERE area.g IS NULL OR ST_Intersects(area.g, ST_SetSRID(f.geom, 4326))
            GROUP BY f.kind) k),
       road.total, road.seen
FROM ({area}) area,
     LATERAL (SELECT ST_Union(f.view) AS g FROM live f WHERE f.kind = 'camera'
              AND f.view IS NOT NULL AND (area.g IS NULL OR f.view && area.g)) cams,
     LATERAL ({road}) road
ORDER BY area.name""").format(area=area, road=road, limits=limits)
    return q, params


def coverage_rows(found: list[tuple]) -> list[dict[str, Any]]:
    out = []
    for name, kinds, total, seen in found:
        row: dict[str, Any] = {"area": name, "fronts": kinds or {}}
        if total is not None or seen is not None:
            total, seen = float(total or 0), float(seen or 0)
            row.update(road_m=round(total, 1), road_watched_m=round(seen, 1),
                       road_watched_share=round(seen / total, 4) if total else None)
        out.append(row)
    return out

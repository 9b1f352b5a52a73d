"""The analysis processes (OGC API – Processes): what each takes and gives (its process
description), its inputs checked, and its run on the layers through ``layers.analysis``.

A process names its layers by id; ``Resolve`` (given by the caller of ``execute``) finds a
layer with the caller's access, and a layer the caller may not read is the same NotFound
as one that does not exist. Nothing here knows HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import shapely
from psycopg import AsyncConnection

from layers import analysis, results, routing, surfaces
from layers.catalog import Layer, fetch_layers
from layers.errors import Invalid
from layers.meta import LayerMeta
from layers.rasters import RasterSource
from layers.restrict import Restriction, area_shape

# A layer of the catalog by id with the caller's limits on it: ``(id, kinds, shapes)``,
# ``shapes`` when the process hands out the layer's own shapes (the policy refuses base
# layers there: base data is served, not copied).
Resolve = Callable[[str, tuple[str, ...], bool], Awaitable[tuple[Layer, Restriction]]]
# A raster layer's source (its scenes at the layer's version).
Rasters = Callable[[Layer], Awaitable[RasterSource]]
MAX_NEAREST = 100
MAX_FEATURES = 10_000  # of an overlay's result
MAX_SAMPLES = 2_000  # of a profile
MAX_ZONES = 1_000  # of zonal statistics
MAX_VIEW_M = 20_000  # a viewshed's radius
MAX_BUFFER_M = 50_000
MAX_GEOJSON = 200_000  # characters of a GeoJSON input

_POINT = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
          "description": "[longitude, latitude] in WGS84 / CGCS2000"}
_LAYER = {"type": "string", "description": "a layer id of the catalog"}
_GEOMETRY = {"type": "object", "description": "a GeoJSON geometry (lon/lat)"}
MIN_CELL_M, MAX_CELL_M = 10, 100_000
_FC = {"type": "object", "contentMediaType": "application/geo+json",
       "description": "a GeoJSON FeatureCollection"}


@dataclass(frozen=True)
class Process:
    id: str
    title: str
    description: str
    inputs: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    output: str

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "description": self.description,
                "version": "1.0.0", "jobControlOptions": ["sync-execute", "async-execute",
                                                            "dismiss"],
                "outputTransmission": ["value"], "keywords": ["analysis"]}

    def describe(self) -> dict[str, Any]:
        return {**self.summary(),
                "inputs": {k: {"title": k, "description": v.get("description", ""),
                               "schema": {x: y for x, y in v.items() if x != "description"},
                               "minOccurs": 1 if k in self.required else 0, "maxOccurs": 1}
                           for k, v in self.inputs.items()},
                "outputs": {"result": {"title": "result", "description": self.output,
                                       "schema": _FC}}}


PROCESSES = {p.id: p for p in (
    Process("locate", "Which polygon holds a point",
            "The features of a polygon layer (districts, streets, grid cells) that hold the "
            "point, smallest first, with the fields the caller may read.",
            {"layer": _LAYER, "point": _POINT,
             "geometry": {"type": "boolean", "default": False,
                          "description": "return the polygons' shapes too"}},
            ("layer", "point"), "the polygons holding the point"),
    Process("nearest", "The nearest features to a point",
            "The n nearest features of a layer to a point, nearest first, each with its "
            "distance in metres on the ellipsoid.",
            {"layer": _LAYER, "point": _POINT,
             "n": {"type": "integer", "minimum": 1, "maximum": MAX_NEAREST, "default": 5},
             "within": {"type": "number", "minimum": 0,
                        "description": "only features within this many metres"}},
            ("layer", "point"), "the nearest features, with distance_m"),
    Process("buffer", "A shape widened by a distance",
            "A GeoJSON geometry widened by a distance in metres on the ellipsoid, with the "
            "area of the result in square metres.",
            {"geometry": {"type": "object", "description": "a GeoJSON geometry (lon/lat)"},
             "distance": {"type": "number", "minimum": 0, "maximum": MAX_BUFFER_M,
                          "description": "metres"}},
            ("geometry", "distance"), "the widened shape, with area_m2"),
    Process("aggregate", "Statistics of a layer by the polygons of another",
            "For each polygon of `by` (districts, grid cells), a statistic of the features "
            "of `layer` inside it: count; sum, mean, min or max of a numeric field; length "
            "of lines or area of polygons apportioned by the part inside (metres, m²).",
            {"layer": _LAYER, "by": _LAYER,
             "stat": {"type": "string", "enum": list(analysis.STATS), "default": "count"},
             "field": {"type": "string", "description": "the field of sum, mean, min, max"},
             "geometry": {"type": "boolean", "default": False}},
            ("layer", "by"), "each polygon of `by` with its value"),
    Process("clip", "A layer cut to a shape",
            "The features of a layer cut to a GeoJSON polygon (lon/lat), each with the "
            "length (length_m) or area (area_m2) of its part inside.",
            {"layer": _LAYER, "geometry": _GEOMETRY}, ("layer", "geometry"),
            "the features' parts inside the shape"),
    Process("intersect", "Where the features of two layers meet",
            "Each part where a feature of `layer` meets one of `overlay`: the common shape, "
            "the fields of both (the overlay's as overlay_<field>, its id as "
            "overlay_fid) and the part's length or area.",
            {"layer": _LAYER, "overlay": _LAYER}, ("layer", "overlay"),
            "the common parts"),
    Process("dissolve", "A layer merged by a field",
            "The features of a layer merged into one shape per value of `field` (into one "
            "without it), each with how many features it holds (count) and its length or "
            "area.",
            {"layer": _LAYER, "field": {"type": "string",
                                        "description": "the field whose values group"}},
            ("layer",), "one merged shape per value"),
    Process("density", "A grid of counts",
            "How many features of a layer (or the sum of a numeric `weight` field) fall in "
            "each square cell of `cell` metres (on the ground at the box's middle "
            "latitude), over `bbox` or the layer's extent; empty cells are left out; each "
            "cell with value and per_km2.",
            {"layer": _LAYER, "cell": {"type": "number", "minimum": MIN_CELL_M,
                                       "maximum": MAX_CELL_M, "description": "metres"},
             "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4,
                      "maxItems": 4, "description": "[min lon, min lat, max lon, max lat]"},
             "weight": {"type": "string", "description": "a numeric field to sum"}},
            ("layer", "cell"), "the grid's non-empty cells"),
    Process("zonal-statistics", "A raster's statistics over zones",
            "For each polygon of `zones` (a layer) or for `geometry`, the count, min, max, "
            "mean, sum and standard deviation of a raster band over the pixels whose "
            "centres lie inside.",
            {"raster": {**_LAYER, "description": "a raster layer"}, "zones": _LAYER,
             "geometry": _GEOMETRY, "band": {"type": "integer", "minimum": 1, "default": 1},
             "shapes": {"type": "boolean", "default": False,
                        "description": "return the zones' shapes too"}},
            ("raster",), "each zone with its statistics"),
    Process("profile", "Heights along a line",
            "Heights from an elevation layer at `samples` points spaced equally along a "
            "line on the ellipsoid, with their distances from its start, the line's "
            "length, lowest and highest point, and total ascent and descent.",
            {"raster": {**_LAYER, "description": "an elevation layer"},
             "line": {"type": "object", "description": "a GeoJSON LineString (lon/lat)"},
             "samples": {"type": "integer", "minimum": 2, "maximum": MAX_SAMPLES,
                         "default": 100}},
            ("raster", "line"), "the line with a height at each sample"),
    Process("viewshed", "What can be seen from a point",
            "The ground visible from `height` metres above a point, out to `radius` "
            "metres, over an elevation layer (GDAL's viewshed in the point's UTM zone, with "
            "the earth's curvature and refraction): the visible area as a shape, its m² "
            "and its share of the circle.",
            {"raster": {**_LAYER, "description": "an elevation layer"}, "point": _POINT,
             "height": {"type": "number", "minimum": 0, "maximum": 1000, "default": 1.7,
                        "description": "the observer's eye above the ground, metres"},
             "target": {"type": "number", "minimum": 0, "maximum": 1000, "default": 0,
                        "description": "the seen point's height above the ground"},
             "radius": {"type": "number", "minimum": 10, "maximum": MAX_VIEW_M,
                        "default": 1000}},
            ("raster", "point"), "the visible ground"),
    Process("route", "The shortest way along a network",
            "The shortest way from `start` to `end` along a line layer (roads, paths): "
            "ways meet where they share a vertex, each is walked both ways; its length in "
            "metres on the ellipsoid, the ids of the features it runs along, and how far "
            "each end lies from the network.",
            {"layer": {**_LAYER, "description": "a line layer: the network"},
             "start": _POINT, "end": _POINT}, ("layer", "start", "end"), "the way"),
    Process("service-area", "What lies within a distance along a network",
            "For each distance (metres along the network from `start`), the network's "
            "nodes reached, the length of the ways wholly within it and the shape around "
            "them (a concave hull).",
            {"layer": {**_LAYER, "description": "a line layer: the network"},
             "start": _POINT,
             "distances": {"type": "array", "minItems": 1, "maxItems": 10, "items": {
                 "type": "number", "minimum": 1, "maximum": routing.MAX_REACH_M}}},
            ("layer", "start", "distances"), "one area per distance"),
)}
# The inputs naming a layer whose own shapes a process hands out.
SHAPES = {"clip": ("layer",), "intersect": ("layer", "overlay"),
          "dissolve": ("layer",)}


def _point(inputs: dict[str, Any], name: str = "point") -> tuple[float, float]:
    p = inputs.get(name)
    if isinstance(p, dict) and p.get("type") == "Point":  # a GeoJSON point is taken too
        p = p.get("coordinates")
    if not (isinstance(p, list) and len(p) == 2
            and all(isinstance(v, int | float) and math.isfinite(v) for v in p)):
        raise Invalid(f"{name}: [longitude, latitude] is needed")
    lon, lat = float(p[0]), float(p[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise Invalid(f"{name}: [{lon}, {lat}] is not a longitude and latitude")
    return lon, lat


def _number(inputs: dict[str, Any], name: str, default: float | None, lo: float,
            hi: float | None = None, integer: bool = False) -> float | None:
    v = inputs.get(name, default)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, int | float) and math.isfinite(v)
    if isinstance(v, bool) or not ok or v < lo or (hi is not None and v > hi):
        raise Invalid(f"{name}: {'an integer' if integer else 'a number'} from {lo:g}"
                      + (f" to {hi:g}" if hi is not None else "") + " is needed")
    return v


def _plain(value: Any) -> Any:
    """Numbers as JSON numbers (PostgreSQL's sums are decimals), times as ISO text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _feature(row: dict[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    props = {k: _plain(v) for k, v in row.items() if not k.startswith("_")}
    for k in extra:
        props[k.lstrip("_")] = _plain(row[f"_{k.lstrip('_')}"])
    return {"type": "Feature", "id": row["_fid"], "geometry": row.get("_geometry"),
            "properties": props}


def _collection(features: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features, "numberReturned": len(features),
            **extra}


def _geojson(inputs: dict[str, Any], name: str, kinds: tuple[str, ...] = ()) -> str:
    g = inputs.get(name)
    text = json.dumps(g) if isinstance(g, dict) else ""
    if not text or "type" not in g or len(text) > MAX_GEOJSON:
        raise Invalid(f"{name}: a GeoJSON geometry of at most {MAX_GEOJSON} characters")
    if kinds and g.get("type") not in kinds:
        raise Invalid(f"{name}: a GeoJSON {' or '.join(kinds)} is needed, not {g['type']}")
    return text


def _shape(inputs: dict[str, Any], name: str, kinds: tuple[str, ...]) -> shapely.Geometry:
    text = _geojson(inputs, name, kinds)
    try:
        g = shapely.from_geojson(text)
    except shapely.errors.GEOSException as exc:
        raise Invalid(f"{name}: not a GeoJSON geometry ({exc})") from None
    if g.is_empty or not g.is_valid and "Polygon" in g.geom_type:
        g = shapely.make_valid(g)
    if g.is_empty:
        raise Invalid(f"{name}: the geometry is empty")
    return g


def _text(inputs: dict[str, Any], name: str) -> str | None:
    v = inputs.get(name)
    if v is not None and not isinstance(v, str):
        raise Invalid(f"{name}: a field name is needed")
    return v


def _unreadable(exc: Exception, name: str) -> Exception:
    """PostGIS could not read a GeoJSON input: the client's error, not the server's (a
    statement out of its budget, or a database gone, stays what it is)."""
    if isinstance(exc, psycopg.OperationalError):  # a cancelled statement is one too
        return exc
    if exc.__class__.__module__.startswith("psycopg"):
        return Invalid(f"{name}: not a GeoJSON geometry PostGIS reads "
                       f"({str(exc).splitlines()[0]})")
    return exc


def _measured(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(k for k in ("_length_m", "_area_m2") if k in row)


async def _locate(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    layer, r = await layers("layer")
    if "Polygon" not in (layer.geometry_type or ""):
        raise Invalid(f"locate needs a polygon layer; {layer.id} has {layer.geometry_type}")
    rows = await analysis.locate(conn, layer, r, *_point(inputs),
                                 geometry=inputs.get("geometry") is True)
    return _collection([_feature(x) for x in rows]), [layer.id]


async def _nearest(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    layer, r = await layers("layer")
    n = int(_number(inputs, "n", 5, 1, MAX_NEAREST, integer=True))
    within = _number(inputs, "within", None, 0)
    rows = await analysis.nearest(conn, layer, r, *_point(inputs), n, within)
    return _collection([_feature(x, ("distance_m",)) for x in
                        ({**x, "_distance_m": x["_distance"]} for x in rows)]), [layer.id]


async def _buffer(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    text = _geojson(inputs, "geometry")
    distance = _number(inputs, "distance", None, 0, MAX_BUFFER_M)
    try:
        out = await analysis.buffer(conn, text, float(distance))
    except Exception as exc:
        raise _unreadable(exc, "geometry") from None
    return {"type": "Feature", "geometry": out["geometry"],
            "properties": {"distance_m": distance, "area_m2": out["area_m2"]}}, []


async def _aggregate(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    items, ri = await layers("layer")
    zones, rz = await layers("by")
    if "Polygon" not in (zones.geometry_type or ""):
        raise Invalid(f"by: a polygon layer is needed; {zones.id} has {zones.geometry_type}")
    stat = inputs.get("stat", "count")
    field = _text(inputs, "field")
    rows = await analysis.aggregate(conn, items, ri, zones, rz, str(stat), field,
                                    inputs.get("geometry") is True)
    return _collection([_feature(x, ("value",)) for x in rows], stat=stat,
                       field=field), [items.id, zones.id]


async def _clip(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    text = _geojson(inputs, "geometry", ("Polygon", "MultiPolygon"))
    layer, r = await layers("layer")
    try:
        rows = await analysis.clip(conn, layer, r, text, MAX_FEATURES)
    except Exception as exc:
        raise _unreadable(exc, "geometry") from None
    return _collection([_feature(x, _measured(x)) for x in rows]), [layer.id]


async def _intersect(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    layer, r = await layers("layer")
    overlay, ro = await layers("overlay")
    rows = await analysis.intersect(conn, layer, r, overlay, ro, MAX_FEATURES)
    return _collection([_feature(x, ("overlay_fid", *_measured(x))) for x in rows]), [
        layer.id, overlay.id]


async def _dissolve(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    layer, r = await layers("layer")
    field = _text(inputs, "field")
    rows = await analysis.dissolve(conn, layer, r, field, MAX_FEATURES)
    out = []
    for n, x in enumerate(rows):
        props = {**({field: _plain(x["_key"])} if field else {}), "count": x["_count"]}
        props |= {k[1:]: x[k] for k in _measured(x)}
        out.append({"type": "Feature", "id": n + 1, "geometry": x["_geometry"],
                    "properties": props})
    return _collection(out, field=field), [layer.id]


async def _density(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    layer, r = await layers("layer")
    cell = float(_number(inputs, "cell", None, MIN_CELL_M, MAX_CELL_M))
    bbox = inputs.get("bbox")
    if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in bbox)):
        raise Invalid("bbox: [min lon, min lat, max lon, max lat] is needed")
    weight = _text(inputs, "weight")
    rows, side = await analysis.density(conn, layer, r, tuple(bbox) if bbox else None, cell,
                                        weight)
    cells = [{"type": "Feature", "id": f"{x['_i']},{x['_j']}", "geometry": x["_geometry"],
              "properties": {"i": x["_i"], "j": x["_j"], "value": _plain(x["_value"]),
                             "per_km2": float(x["_value"]) / (x["_area"] / 1e6)}}
             for x in rows]
    return _collection(cells, cell_m=cell, grid="EPSG:3857", side=side,
                       weight=weight), [layer.id]


async def _zonal(inputs, conn, layers, rasters) -> tuple[dict[str, Any], list[str]]:
    raster, rr = await layers("raster", ("raster",))
    band = int(_number(inputs, "band", 1, 1, None, integer=True))
    shapes = inputs.get("shapes") is True
    read = [raster.id]
    if ("zones" in inputs) == ("geometry" in inputs):
        raise Invalid("zonal-statistics takes either zones (a polygon layer) or geometry")
    if "geometry" in inputs:
        zones = [{"_fid": 1, "_geometry": json.loads(_geojson(inputs, "geometry")),
                  "_shape": _shape(inputs, "geometry", ("Polygon", "MultiPolygon"))}]
    else:
        zl, rz = await layers("zones")
        if "Polygon" not in (zl.geometry_type or ""):
            raise Invalid(f"zones: a polygon layer is needed; {zl.id} has {zl.geometry_type}")
        read.append(zl.id)
        zones = await analysis.zones(conn, zl, rz, MAX_ZONES)
        for z in zones:
            z["_shape"] = shapely.from_geojson(json.dumps(z["_geometry"]))
    area = await area_shape(conn, rr.area_id)
    source = await rasters(raster)
    stats = await asyncio.to_thread(surfaces.zone_stats, source, [z["_shape"] for z in zones],
                                    band, area)
    out = []
    for z, st in zip(zones, stats, strict=True):
        f = _feature({k: v for k, v in z.items() if k not in ("_shape", "_geometry")})
        f["geometry"] = z["_geometry"] if shapes else None
        f["properties"] |= st
        out.append(f)
    return _collection(out, band=band), read


async def _profile(inputs, conn, layers, rasters) -> tuple[dict[str, Any], list[str]]:
    raster, rr = await layers("raster", ("raster",))
    line = _shape(inputs, "line", ("LineString",))
    samples = int(_number(inputs, "samples", 100, 2, MAX_SAMPLES, integer=True))
    if line.length == 0:
        raise Invalid("line: its ends are the same point")
    area = await area_shape(conn, rr.area_id)
    source = await rasters(raster)
    points, dists = surfaces.along(line, samples)
    hs = await asyncio.to_thread(surfaces.heights, source, points, 1, area)
    known = [h for h in hs if h is not None]
    steps = [b - a for a, b in zip(hs, hs[1:], strict=False) if a is not None and b is not None]
    props = {"length_m": dists[-1], "distances_m": dists, "heights": hs,
             "min": min(known) if known else None, "max": max(known) if known else None,
             "ascent_m": sum(s for s in steps if s > 0),
             "descent_m": -sum(s for s in steps if s < 0), "samples": samples}
    coords = [[lon, lat, h] if h is not None else [lon, lat]
              for (lon, lat), h in zip(points, hs, strict=True)]
    return {"type": "Feature", "geometry": {"type": "LineString", "coordinates": coords},
            "properties": props}, [raster.id]


async def _route(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    layer, r = await layers("layer")
    start, end = _point(inputs, "start"), _point(inputs, "end")
    way = await routing.route(conn, layer, r, start, end)
    return {"type": "Feature", "geometry": {"type": "MultiLineString",
                                            "coordinates": way["lines"]},
            "properties": {"length_m": way["length_m"], "features": way["fids"],
                           "edges": len(way["lines"]), "snapped_m": way["snapped_m"]}
            }, [layer.id]


async def _service_area(inputs, conn, layers) -> tuple[dict[str, Any], list[str]]:
    layer, r = await layers("layer")
    start = _point(inputs, "start")
    d = inputs["distances"]
    if not (isinstance(d, list) and 1 <= len(d) <= 10 and all(
            isinstance(v, int | float) and not isinstance(v, bool)
            and 1 <= v <= routing.MAX_REACH_M for v in d)):
        raise Invalid(f"distances: 1 to 10 numbers of metres, each from 1 to "
                      f"{routing.MAX_REACH_M}, are needed")
    got = await routing.reach(conn, layer, r, start, [float(v) for v in d])
    return _collection([
        {"type": "Feature", "id": n + 1, "geometry": b["shape"],
         "properties": {"distance_m": b["m"], "nodes": b["nodes"],
                        "length_m": float(b["length_m"])}}
        for n, b in enumerate(got["breaks"])], snapped_m=got["snapped_m"]), [layer.id]


RUN = {"route": _route, "service-area": _service_area,
       "locate": _locate, "nearest": _nearest, "buffer": _buffer, "aggregate": _aggregate,
       "clip": _clip, "intersect": _intersect, "dissolve": _dissolve, "density": _density}
async def _viewshed(inputs, conn, layers, rasters) -> tuple[dict[str, Any], list[str]]:
    raster, rr = await layers("raster", ("raster",))
    lon, lat = _point(inputs)
    height = float(_number(inputs, "height", 1.7, 0, 1000))
    target = float(_number(inputs, "target", 0, 0, 1000))
    radius = float(_number(inputs, "radius", 1000, 10, MAX_VIEW_M))
    area = await area_shape(conn, rr.area_id)
    source = await rasters(raster)
    if not source.elevation:
        raise Invalid(f"raster: {raster.id} is not an elevation layer")
    seen = await asyncio.to_thread(surfaces.viewshed, source, lon, lat, height, target,
                                   radius, area)
    return {"type": "Feature", "geometry": seen["geometry"], "properties": {
        "visible_m2": seen["visible_m2"], "share": seen["visible_m2"] / seen["circle_m2"],
        "radius_m": radius, "height_m": height, "target_m": target,
        "pixel_m": seen["pixel_m"], "crs": seen["crs"]}}, [raster.id]


RUN_RASTER = {"zonal-statistics": _zonal, "profile": _profile, "viewshed": _viewshed}


async def execute(process_id: str, inputs: Any, conn: AsyncConnection, resolve: Resolve,
                  rasters: Rasters) -> tuple[dict[str, Any], list[str]]:
    """The result of a process, and the layers it read (for the audit)."""
    if not isinstance(inputs, dict):
        raise Invalid("inputs: an object of the process's inputs is needed")
    p = PROCESSES[process_id]
    unknown = sorted(set(inputs) - set(p.inputs))
    if unknown:
        raise Invalid(f"{process_id} takes no input {unknown[0]!r}; it takes "
                      f"{', '.join(p.inputs)}")
    missing = [k for k in p.required if k not in inputs]
    if missing:
        raise Invalid(f"{process_id} needs the input {missing[0]!r}")

    async def layers(name: str, kinds: tuple[str, ...] = ("vector",)
                     ) -> tuple[Layer, Restriction]:
        if not isinstance(inputs.get(name), str):
            raise Invalid(f"{name}: a layer id is needed")
        return await resolve(inputs[name], kinds, name in SHAPES.get(process_id, ()))

    if process_id in RUN_RASTER:
        return await RUN_RASTER[process_id](inputs, conn, layers, rasters)
    return await RUN[process_id](inputs, conn, layers)


def layer_inputs(inputs: Any) -> list[str]:
    """The layer ids an execution request names (for its audit before it runs)."""
    if not isinstance(inputs, dict):
        return []
    return [v for k, v in inputs.items() if k in LAYER_INPUTS and isinstance(v, str)]


LAYER_INPUTS = ("layer", "by", "overlay", "raster", "zones")


def by_reference(body: dict[str, Any]) -> bool:
    """Whether an execution request asks for its result as a reference (a new layer)
    rather than as a value: ``"outputs": {"result": {"transmissionMode": "reference"}}``."""
    out = body.get("outputs")
    if out is None:
        return False
    mode = out.get("result", {}).get("transmissionMode") if isinstance(out, dict) else None
    if mode not in (None, "value", "reference") or not isinstance(out, dict) or set(out) - {
            "result"}:
        raise Invalid("outputs: {\"result\": {\"transmissionMode\": \"value\" or "
                      "\"reference\"}} is the one output")
    return mode == "reference"


async def keep(conn: AsyncConnection, url: str, process_id: str, result: dict[str, Any],
               read: list[str], department: str, levels: tuple[str, ...], *, hours: float,
               detail_zoom: int, default_level: str) -> dict[str, Any]:
    """The result written as a new layer of ``department``'s, shared with no one, at the
    highest level of the layers it was computed from, until ``hours`` from now; the link
    to it, as the result by reference."""
    if result.get("type") != "FeatureCollection":
        raise Invalid(f"{process_id} gives one feature: ask for it as a value")
    found = await fetch_layers(conn, ids=read) if read else []
    ranks = [levels.index(ly.level) for ly in found if ly.level in levels]
    level = levels[max(ranks)] if ranks else default_level
    layer_id = f"result_{process_id.replace('-', '_')}_{secrets.token_hex(4)}"
    until = datetime.now(UTC) + timedelta(hours=hours)
    meta = LayerMeta(title=f"{process_id} of {', '.join(read) or 'inputs'}", role="thematic",
                     department=department, level=level, sharing_type="not_shared",
                     description=f"the result of the {process_id} process over "
                                 f"{', '.join(read) or 'its inputs'}, kept until "
                                 f"{until:%Y-%m-%d %H:%M} UTC")
    layer = await asyncio.to_thread(results.write, url, layer_id, result, meta, until,
                                    detail_zoom=detail_zoom, default_level=default_level)
    return {"href": f"/collections/{layer.id}", "rel": "item", "type": "application/json",
            "title": layer.title, "layer": layer.id, "level": layer.level,
            "count": layer.feature_count, "expires": until.isoformat()}

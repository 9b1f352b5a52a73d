"""The OpenAPI 3.0 document at /api, made from the routes the app really serves.

Every route of the app is in it (``document`` walks the routing table); what a route takes
and answers is said in ``_OPS`` beside it, so a route added without a word here still
appears, with its docstring for a summary. Responses carry schemas: GeoJSON, problem
JSON, JSON Schema, images and tiles as binary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from mapserver.features import DEFAULT_LIMIT, ITEMS_PARAMS, MAX_LIMIT, OPENAPI
from mapserver.ogc import base
from mapserver.records import RECORDS_PARAMS

GEOJSON = "application/geo+json"
JSON = "application/json"
SCHEMA = "application/schema+json"
XML = "application/xml"
MVT = "application/vnd.mapbox-vector-tile"
IMAGES = ("image/png", "image/webp", "image/jpeg")

# POST /layers's form (mapserver/publish.py).
UPLOAD_FORM = {"type": "object", "required": ["layer", "file"], "properties": {
    "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
    "layer": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
    **{k: {"type": "string"} for k in (
        "kind", "title", "description", "level", "sharing_type", "update_cycle",
        "attribution", "keywords", "department", "key", "source_layer", "source_crs",
        "where", "produced_field", "time", "nodata", "bands", "elevation")},
    "fields": {"type": "string", "description": "JSON: field -> {type, title, unit, "
                                                "description}"}}}

_Q = {
    "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                         "default": DEFAULT_LIMIT},
              "description": f"page size; larger values are served as {MAX_LIMIT}"},
    "offset": {"schema": {"type": "integer", "minimum": 0, "default": 0}},
    "after": {"schema": {"type": "string"},
              "description": "continue after this feature id (what next links carry)"},
    "bbox": {"style": "form", "explode": False,
             "schema": {"type": "array", "minItems": 4, "maxItems": 6,
                        "items": {"type": "number"}},
             "description": "lower-left and upper-right (west above east crosses the "
                            "antimeridian), in bbox-crs"},
    "datetime": {"schema": {"type": "string"},
                 "description": "an instant or interval (a/b, ../b, a/..)"},
    "as-of": {"schema": {"type": "string", "format": "date-time"},
              "description": "the layer as it stood at this moment"},
    "crs": {"schema": {"type": "string", "format": "uri"},
            "description": "CRS of the geometries returned (see the collection's crs list)"},
    "bbox-crs": {"schema": {"type": "string", "format": "uri"},
                 "description": "CRS of bbox, in its own axis order"},
    "filter": {"schema": {"type": "string"},
               "description": "a CQL2 filter over the queryables"},
    "filter-lang": {"schema": {"type": "string", "enum": ["cql2-text", "cql2-json"],
                               "default": "cql2-text"}},
    "filter-crs": {"schema": {"type": "string", "format": "uri"},
                   "description": "CRS of the filter's geometry literals"},
    "properties": {"style": "form", "explode": False,
                   "schema": {"type": "array", "items": {"type": "string"}},
                   "description": "only these properties in each feature"},
    "sortby": {"style": "form", "explode": False,
               "schema": {"type": "array", "items": {"type": "string"}},
               "description": "sortables, each with + (ascending) or - (descending)"},
    "ids": {"style": "form", "explode": False,
            "schema": {"type": "array", "items": {"type": "string"}}},
    "q": {"style": "form", "explode": False,
          "schema": {"type": "array", "items": {"type": "string"}},
          "description": "free text: any of the terms"},
    "type": {"schema": {"type": "string"}, "description": "dataset, or a layer kind"},
    "kind": {"schema": {"type": "string", "enum": ["vector", "raster", "3d"]}},
    "keywords": {"style": "form", "explode": False,
                 "schema": {"type": "array", "items": {"type": "string"}}},
    "department": {"schema": {"type": "string"}},
    "distributedSearch": {"schema": {"type": "boolean", "default": False},
                          "description": "ask every node of the federation live as well "
                                         "(OGC API - Records Part 4); each node's status "
                                         "is in onemap:nodes"},
    "f": {"schema": {"type": "string", "enum": ["json", "html"]}},
    "key": {"schema": {"type": "string"},
            "description": "an embedding key (read-only, limited to its layers and origins)"},
    "bidx": {"schema": {"type": "string"}, "description": "bands, e.g. 3,2,1"},
    "rescale": {"schema": {"type": "string"}, "description": "min,max per band"},
    "colormap_name": {"schema": {"type": "string"}},
    "algorithm": {"schema": {"type": "string", "enum": ["hillshade", "terrainrgb"]}},
    "format": {"schema": {"type": "string", "enum": ["png", "jpg", "webp"]}},
    "lon": {"schema": {"type": "number"}}, "lat": {"schema": {"type": "number"}},
    "radius": {"schema": {"type": "number"}, "description": "metres"},
    "at": {"schema": {"type": "string", "format": "date-time"}},
    "SERVICE": {"schema": {"type": "string", "enum": ["WMTS"]}},
    "REQUEST": {"schema": {"type": "string", "enum": ["GetCapabilities", "GetTile"]}},
    "next": {"schema": {"type": "string"}, "description": "a path of OneMap to go on to"},
    "code": {"schema": {"type": "string"}, "description": "the issuer's authorization code"},
    "state": {"schema": {"type": "string"}, "description": "the login in flight"},
}
# What the endpoints take, from the endpoints themselves: a parameter added there without a
# word in _Q fails the document's test.
_FEATURES = list(ITEMS_PARAMS)
_RECORDS = list(RECORDS_PARAMS)
_RASTER = ["datetime", "bidx", "rescale", "colormap_name", "algorithm"]
_INTEGER_PATH = {"z", "x", "y", "row", "col", "key_id", "grant_id", "id"}

# (path, method) -> (summary, query parameters, media type of a success, its status)
_OPS: dict[tuple[str, str], tuple[str, list[str], str, int]] = {
    ("/", "get"): ("Landing page (JSON with f=json; the viewer otherwise)", ["f"], JSON, 200),
    ("/conformance", "get"): ("Conformance classes", ["f"], JSON, 200),
    ("/api", "get"): ("This document", [], OPENAPI, 200),
    ("/healthz", "get"): ("Database reachable, audit log writing", [], JSON, 200),
    ("/collections", "get"): ("The collections: vector and raster layers, and the catalog",
                              ["f"], JSON, 200),
    ("/collections/{collectionId}", "get"): ("One collection", ["f"], JSON, 200),
    ("/collections/{collectionId}/queryables", "get"): (
        "What a filter may name, as JSON Schema", ["f"], SCHEMA, 200),
    ("/collections/{collectionId}/schema", "get"): (
        "The features' schema", ["f"], SCHEMA, 200),
    ("/collections/{collectionId}/items", "get"): (
        "Features, paged (a raster's: its scenes)", _FEATURES, GEOJSON, 200),
    ("/collections/{collectionId}/items", "post"): ("Add a feature", [], "", 201),
    ("/collections/{collectionId}/items/{featureId}", "get"): (
        "One feature", ["crs", "as-of", "f"], GEOJSON, 200),
    ("/collections/{collectionId}/items/{featureId}", "put"): (
        "Replace a feature (If-Match: its ETag)", [], "", 200),
    ("/collections/{collectionId}/items/{featureId}", "patch"): (
        "Change some properties or the geometry", [], "", 200),
    ("/collections/{collectionId}/items/{featureId}", "delete"): (
        "Close a feature; its history stays", [], "", 204),
    ("/collections/catalog", "get"): ("The catalog (OGC API - Records)", ["f"], JSON, 200),
    ("/collections/catalog/items", "get"): (
        "Search the catalog", _RECORDS, GEOJSON, 200),
    ("/collections/catalog/items/{recordId}", "get"): ("One record", ["f"], GEOJSON, 200),
    ("/collections/catalog/queryables", "get"): ("The catalog's queryables", ["f"], SCHEMA,
                                                 200),
    ("/collections/catalog/sortables", "get"): ("The catalog's sortables", ["f"], SCHEMA,
                                                200),
    ("/tiles/{layers}/{z}/{x}/{y}.{fmt}", "get"): (
        "A vector tile of one or more layers (fmt: mvt)", ["as-of"], MVT, 200),
    ("/tiles/{layers}/tilejson.json", "get"): ("TileJSON 3.0 of vector layers", [], JSON, 200),
    ("/tiles/{layer}/{tms}/{z}/{x}/{y}.{fmt}", "get"): (
        "A raster tile, or an image tile of vector layers in their style (fmt: png, webp, "
        "jpg)", _RASTER, "image", 200),
    ("/tiles/{layer}/{tms}/tilejson.json", "get"): (
        "TileJSON of a raster layer in a grid", [*_RASTER, "format"], JSON, 200),
    ("/rasters/{layer}/point", "get"): ("Values at a point", ["lon", "lat", "datetime"], JSON,
                                        200),
    ("/styles/{layers}/style.json", "get"): ("A MapLibre style", [], JSON, 200),
    ("/styles/{layer}", "get"): ("A layer's style layers, as the caller may see them", [],
                                 JSON, 200),
    ("/styles/{layer}", "put"): ("Set a layer's style (its publishers)", [], JSON, 200),
    ("/styles/{layer}", "delete"): ("Return a layer to its default look", [], "", 204),
    ("/styles/{layer}/legend.json", "get"): ("A layer's legend, read from its style", [],
                                             JSON, 200),
    ("/basemaps", "get"): ("The city's base maps the caller may read", [], JSON, 200),
    ("/basemaps/{basemap}", "get"): ("One base map: its layers, version and links", [], JSON,
                                     200),
    ("/basemaps/{basemap}/style.json", "get"): ("A base map's MapLibre style", [], JSON, 200),
    ("/basemaps/{basemap}/tilejson.json", "get"): ("A base map's TileJSON", [], JSON, 200),
    ("/basemaps/{basemap}/{z}/{x}/{y}.{fmt}", "get"): (
        "A vector base map's tile (every layer of it), WebMercatorQuad", [], MVT, 200),
    ("/basemaps/{basemap}/{tms}/{z}/{x}/{y}.{fmt}", "get"): (
        "A base map's tile as an image: imagery's newest slice, a vector map drawn in its "
        "style (WebMercatorQuad, CGCS2000Quad)", [], "image", 200),
    ("/fonts.json", "get"): ("The font stacks the styles may name", [], JSON, 200),
    ("/fonts/{stack}/{range}.pbf", "get"): ("A range of SDF glyphs (MapLibre's glyphs)", [],
                                            "application/x-protobuf", 200),
    ("/sprites/{name}", "get"): ("The icons: onemap.json, onemap.png and @2x", [], "image",
                                 200),
    ("/layers", "get"): ("The catalog with data dictionaries", [], JSON, 200),
    ("/layers/{layer}", "get"): ("One layer's catalog entry", [], JSON, 200),
    ("/layers", "post"): ("Publish a layer: its files and options as a multipart form, "
                          "queued as an ingest job (see /jobs/{job})", [], JSON, 201),
    ("/login", "get"): ("The sign-in page (the city's OpenID Connect issuer, or a key)",
                        ["next"], "text/html", 200),
    ("/login/oidc", "get"): ("Sign in through the OpenID Connect issuer: a redirect to it "
                             "(authorization code with PKCE)", ["next"], "", 303),
    ("/login/callback", "get"): ("The issuer's answer: the session cookie is set and the "
                                 "browser sent on", ["code", "state"], "", 303),
    ("/login/key", "post"): ("Sign in with an API key (form field key)", [], "", 303),
    ("/logout", "post"): ("Sign out: the session ends at once", [], "", 303),
    ("/session", "get"): ("Who this browser is signed in as, and its CSRF token", [], JSON,
                          200),
    ("/uploads", "post"): ("Open an upload of a large file, sent in chunks ({name, size})",
                           [], JSON, 201),
    ("/uploads/{upload}", "put"): ("One chunk of an upload, at its Content-Range (409: the "
                                   "offset to go on from; HEAD: Upload-Offset)", [], JSON,
                                   200),
    ("/jobs", "get"): ("The caller's jobs, newest first", ["limit"], JSON, 200),
    ("/jobs/{job}", "get"): ("A job: state, progress and, at its end, its report", [], JSON,
                             200),
    ("/jobs/{job}", "delete"): ("Dismiss a job: a waiting one never runs, a running one is "
                                "rolled back", [], JSON, 200),
    ("/federation", "get"): ("The federation's nodes: health, harvests, cascade counts "
                             "(administrators)", [], JSON, 200),
    ("/federation/nodes", "post"): ("A district joins with its city's one-time token "
                                    "({token, name, url, public_key, jurisdiction})", [],
                                    JSON, 201),
    ("/federation/nodes/{name}", "delete"): ("Remove a node: its layers leave the catalog "
                                             "at once (administrators)", [], "", 204),
    ("/federation/tokens", "post"): ("Issue a one-time join token ({hours}; administrators)",
                                     [], JSON, 201),
    ("/federation/notify", "post"): ("A node's signed notice that it published or changed "
                                     "its grants ({what})", [], "", 202),
    ("/federation/harvest", "post"): ("Harvest every district's catalog now "
                                      "(administrators)", [], JSON, 200),
    ("/federation/{node}/{path}", "get"): (
        "A node's tiles, features, styles, images or 3D tiles, asked of it for the caller "
        "(its grants decide) and kept by what it told", [], "tile", 200),
    ("/processes", "get"): ("The analysis processes (OGC API - Processes)", [], JSON, 200),
    ("/processes/{process}", "get"): ("A process's description: its inputs and output", [],
                                      JSON, 200),
    ("/processes/{process}/execution", "post"): (
        "Run a process on the layers, under the caller's grants ({inputs, response})", [],
        JSON, 200),
    ("/tileMatrixSets", "get"): ("The tile matrix sets", ["f"], JSON, 200),
    ("/tileMatrixSets/{tms}", "get"): ("One tile matrix set", ["f"], JSON, 200),
    ("/collections/{collectionId}/tiles", "get"): ("A collection's tilesets", ["f"], JSON,
                                                   200),
    ("/collections/{collectionId}/tiles/{tms}", "get"): ("One tileset", ["f"], JSON, 200),
    ("/collections/{collectionId}/tiles/{tms}/{z}/{row}/{col}", "get"): (
        "A tile (OGC API - Tiles)", ["datetime"], "tile", 200),
    ("/wmts", "get"): ("WMTS 1.0.0, key-value pairs (GetCapabilities, GetTile)",
                       ["SERVICE", "REQUEST"], XML, 200),
    ("/wmts/1.0.0/WMTSCapabilities.xml", "get"): ("WMTS capabilities (REST)", [], XML, 200),
    ("/wms", "get"): ("WMS 1.3.0 (GetCapabilities, GetMap, GetFeatureInfo, "
                      "GetLegendGraphic)", ["SERVICE", "REQUEST"], XML, 200),
    ("/collections/{collectionId}/map/tiles", "get"): (
        "A vector collection's map tilesets (drawn in its style)", ["f"], JSON, 200),
    ("/collections/{collectionId}/map/tiles/{tms}", "get"): ("One map tileset", ["f"], JSON,
                                                             200),
    ("/collections/{collectionId}/map/tiles/{tms}/{z}/{row}/{col}", "get"): (
        "A map tile (an image in the layer's style)", ["f"], "image", 200),
    ("/3dtiles", "get"): ("The 3D scenes the caller may read", [], JSON, 200),
    ("/3dtiles/{layer}/tileset.json", "get"): (
        "A 3D Tiles 1.1 tileset of extruded footprints", ["as-of"], JSON, 200),
    ("/3dtiles/{layer}/{z}/{x}/{y}.json", "get"): (
        "The external tileset of one tile", ["as-of"], JSON, 200),
    ("/3dtiles/{layer}/{z}/{x}/{y}.glb", "get"): ("One 3D tile (binary glTF)", ["as-of"],
                                                  "model/gltf-binary", 200),
    ("/codes/{code}", "get"): ("An entity by its city code or an alias", [], JSON, 200),
    ("/codes/{code}/history", "get"): ("An entity's state and events", ["at"], JSON, 200),
    ("/codes/{code}/events", "post"): ("Record a lifecycle event", [], JSON, 201),
    ("/registry/reuse", "get"): ("Carriers to reuse near a point", ["lon", "lat", "radius"],
                                 JSON, 200),
    ("/registry/reuse", "post"): ("Carriers to reuse along a site (GeoJSON)", [], JSON, 200),
}


def _path(template: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", template)


def _routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, str, Route]]:
    for r in routes:
        if isinstance(r, Route):
            for method in sorted((r.methods or {"GET"}) - {"HEAD"}):
                yield prefix + _path(r.path), method.lower(), r
        elif isinstance(r, Mount) and r.routes and not r.path.startswith("/static"):
            yield from _routes(r.routes, prefix + r.path)


def _content(media: str) -> dict:
    if media == "image":
        return {m: {"schema": {"type": "string", "format": "binary"}} for m in IMAGES}
    if media == "tile":
        return {m: {"schema": {"type": "string", "format": "binary"}} for m in (MVT, *IMAGES)}
    if media in (MVT, "model/gltf-binary", "application/x-protobuf"):
        return {media: {"schema": {"type": "string", "format": "binary"}}}
    if media == XML:
        return {XML: {"schema": {"type": "string"}}}
    if media == GEOJSON:
        return {GEOJSON: {"schema": {"$ref": "#/components/schemas/GeoJSON"}}}
    return {media or JSON: {"schema": {"type": "object"}}}


def _operation(path: str, method: str, route: Route) -> dict:
    summary, query, media, status = _OPS.get((path, method)) or (
        ((route.endpoint.__doc__ or route.name).strip().splitlines()[0]), [], JSON,
        201 if method == "post" else 200)
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "integer" if name in _INTEGER_PATH else "string"}}
              for name in re.findall(r"\{(\w+)\}", path)]
    params += [{"name": name, "in": "query", **_Q[name]} for name in query]
    problem = {"description": "problem JSON",
               "content": {"application/problem+json": {
                   "schema": {"$ref": "#/components/schemas/Problem"}}}}
    success: dict = {"description": "OK"}
    if status != 204 and media:
        success["content"] = _content(media)
    op_id = method + "".join(p.capitalize() for p in re.findall(r"[A-Za-z0-9]+", path)
                             if p not in ("json",)) or method + "Root"
    op = {"operationId": op_id, "summary": summary, "parameters": params,
          "responses": {str(status): success, "400": problem, "404": problem,
                        "503": problem}}
    if method in ("post", "put", "patch", "delete", "options") or path.startswith("/admin"):
        op["security"] = [{"bearer": []}, {}]
    if method in ("post", "put", "patch"):
        body = GEOJSON if path.startswith("/collections") else JSON
        schema: dict = {"type": "object"}
        if path == "/layers":
            body, schema = "multipart/form-data", UPLOAD_FORM
        elif path == "/login/key":
            body, schema = "application/x-www-form-urlencoded", {
                "type": "object", "required": ["key"],
                "properties": {"key": {"type": "string"}, "next": {"type": "string"}}}
        elif path == "/uploads/{upload}":
            body, schema = "application/octet-stream", {"type": "string", "format": "binary"}
        op["requestBody"] = {"required": True, "content": {body: {"schema": schema}}}
    if method == "options":
        op["responses"] = {"204": {"description": "the methods the caller may use, in Allow"},
                           "404": problem}
    return op


def document(routes: Iterable[BaseRoute], server: str) -> dict:
    paths: dict[str, dict] = {}
    for path, method, route in _routes(routes):
        paths.setdefault(path, {})[method] = _operation(path, method, route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "OneMap", "version": "0.1.0",
                 "description": "The city's one map. Send a key or an OpenID Connect token as "
                                "Authorization: Bearer; embedding keys go in ?key=. Without "
                                "one, only public layers exist."},
        "servers": [{"url": server}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {"type": "object", "required": ["status"], "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"},
                    "status": {"type": "integer"}, "detail": {"type": "string"}}},
                "GeoJSON": {"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "enum": ["Feature", "FeatureCollection"]},
                    "features": {"type": "array", "items": {"type": "object"}},
                    "numberMatched": {"type": "integer"},
                    "numberReturned": {"type": "integer"},
                    "links": {"type": "array", "items": {"type": "object"}}}},
            },
        },
    }


async def api(request: Request) -> Response:
    return JSONResponse(document(request.app.routes, base(request)), media_type=OPENAPI)

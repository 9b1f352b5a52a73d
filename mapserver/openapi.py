"""The OpenAPI 3.0 document at /api, made from the routes OneMap really serves."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mapserver.features import DEFAULT_LIMIT, MAX_LIMIT, OPENAPI
from mapserver.ogc import base

_P = {
    "collectionId": {"name": "collectionId", "in": "path", "required": True,
                     "schema": {"type": "string"}, "description": "a layer id"},
    "featureId": {"name": "featureId", "in": "path", "required": True,
                  "schema": {"type": "string"}},
    "limit": {"name": "limit", "in": "query", "style": "form", "explode": False,
              "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                         "default": DEFAULT_LIMIT},
              "description": f"page size; larger values are served as {MAX_LIMIT}"},
    "offset": {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0,
                                                            "default": 0}},
    "bbox": {"name": "bbox", "in": "query", "style": "form", "explode": False,
             "schema": {"type": "array", "minItems": 4, "maxItems": 6,
                        "items": {"type": "number"}},
             "description": "lower-left and upper-right longitude/latitude (CRS84)"},
    "datetime": {"name": "datetime", "in": "query", "schema": {"type": "string"},
                 "description": "an instant or interval (a/b, ../b, a/..) on the features' "
                                "produced time"},
    "as-of": {"name": "as-of", "in": "query", "schema": {"type": "string",
                                                          "format": "date-time"},
              "description": "the layer as it stood at this moment"},
    "crs": {"name": "crs", "in": "query", "schema": {"type": "string", "format": "uri"},
            "description": "CRS of the geometries returned (see the collection's crs list)"},
    "bbox-crs": {"name": "bbox-crs", "in": "query", "schema": {"type": "string",
                                                                "format": "uri"},
                 "description": "CRS of bbox, in its own axis order"},
    "filter": {"name": "filter", "in": "query", "schema": {"type": "string"},
               "description": "a CQL2 filter over the collection's queryables"},
    "filter-lang": {"name": "filter-lang", "in": "query",
                    "schema": {"type": "string", "enum": ["cql2-text", "cql2-json"],
                               "default": "cql2-text"}},
    "filter-crs": {"name": "filter-crs", "in": "query",
                   "schema": {"type": "string", "format": "uri"}},
    "properties": {"name": "properties", "in": "query", "style": "form", "explode": False,
                   "schema": {"type": "array", "items": {"type": "string"}},
                   "description": "only these properties in each feature"},
    "f": {"name": "f", "in": "query", "schema": {"type": "string", "enum": ["json", "html"]}},
    "z": {"name": "z", "in": "path", "required": True, "schema": {"type": "integer"}},
    "x": {"name": "x", "in": "path", "required": True, "schema": {"type": "integer"}},
    "y": {"name": "y", "in": "path", "required": True, "schema": {"type": "integer"}},
    "layers": {"name": "layers", "in": "path", "required": True,
               "schema": {"type": "string"}, "description": "layer ids, comma-separated"},
    "layer": {"name": "layer", "in": "path", "required": True,
              "schema": {"type": "string"}, "description": "a layer published as a 3D scene"},
}

_EDITS = {
    "/collections/{collectionId}/items": {"post": ("createFeature", "Add a feature", 201)},
    "/collections/{collectionId}/items/{featureId}": {
        "put": ("replaceFeature", "Replace a feature (If-Match: its ETag)", 200),
        "patch": ("updateFeature", "Change some properties or the geometry", 200),
        "delete": ("deleteFeature", "Close a feature; its history stays", 204)},
}

# path -> (operationId, summary, parameters, response media type)
_OPERATIONS = [
    ("/", "getLandingPage", "Landing page (JSON with f=json; the viewer otherwise)",
     ["f"], "application/json"),
    ("/conformance", "getConformanceDeclaration", "Conformance classes", [],
     "application/json"),
    ("/api", "getAPI", "This document", [], OPENAPI),
    ("/collections", "getCollections", "Feature collections: the vector layers", ["f"],
     "application/json"),
    ("/collections/{collectionId}", "describeCollection", "One collection",
     ["collectionId", "f"], "application/json"),
    ("/collections/{collectionId}/items", "getFeatures", "Features, paged",
     ["collectionId", "limit", "offset", "bbox", "bbox-crs", "datetime", "crs", "filter",
      "filter-lang", "filter-crs", "properties", "as-of", "f"], "application/geo+json"),
    ("/collections/{collectionId}/queryables", "getQueryables",
     "What a filter may name, as JSON Schema", ["collectionId"], "application/schema+json"),
    ("/collections/{collectionId}/items/{featureId}", "getFeature", "One feature",
     ["collectionId", "featureId", "crs", "as-of", "f"], "application/geo+json"),
    ("/layers", "getLayers", "The catalog with data dictionaries", [], "application/json"),
    ("/tiles/{layers}/{z}/{x}/{y}.mvt", "getTile", "A vector tile of one or more layers",
     ["layers", "z", "x", "y", "as-of"], "application/vnd.mapbox-vector-tile"),
    ("/tiles/{layers}/tilejson.json", "getTileJSON", "TileJSON 3.0", ["layers"],
     "application/json"),
    ("/styles/{layers}/style.json", "getStyle", "A MapLibre style", ["layers"],
     "application/json"),
    ("/3dtiles", "get3DScenes", "The 3D scenes the caller may read", [], "application/json"),
    ("/3dtiles/{layer}/tileset.json", "get3DTileset",
     "A 3D Tiles 1.1 tileset of extruded footprints", ["layer", "as-of"], "application/json"),
    ("/3dtiles/{layer}/{z}/{x}/{y}.json", "get3DExternalTileset",
     "The external tileset of one tile", ["layer", "z", "x", "y", "as-of"], "application/json"),
    ("/3dtiles/{layer}/{z}/{x}/{y}.glb", "get3DTile", "One 3D tile (binary glTF)",
     ["layer", "z", "x", "y", "as-of"], "model/gltf-binary"),
    ("/healthz", "getHealth", "Database reachable", [], "application/json"),
]


def document(server: str) -> dict:
    paths: dict = {}
    for path, op_id, summary, params, media in _OPERATIONS:
        responses = {"200": {"description": "OK", "content": {media: {}}}}
        if params:
            responses["400"] = {"description": "a parameter is malformed (problem JSON)"}
        if "{" in path:
            responses["404"] = {"description": "no such collection, layer or feature"}
        paths[path] = {"get": {"operationId": op_id, "summary": summary,
                               "parameters": [_P[p] for p in params],
                               "responses": responses}}
    for path, methods in _EDITS.items():
        for method, (op_id, summary, status) in methods.items():
            params = ["collectionId"] + (["featureId"] if "featureId" in path else [])
            paths[path][method] = {
                "operationId": op_id, "summary": summary,
                "security": [{"bearer": []}],
                "parameters": [_P[p] for p in params],
                "requestBody": {"content": {"application/geo+json": {}}}
                if method != "delete" else None,
                "responses": {str(status): {"description": "done; ETag names the version"},
                              "400": {"description": "the feature breaks the dictionary"},
                              "403": {"description": "no right to publish this layer"},
                              "404": {"description": "no such collection or feature"},
                              "412": {"description": "If-Match names an older version"}}}
            if method == "delete":
                del paths[path][method]["requestBody"]
    return {"openapi": "3.0.3",
            "info": {"title": "OneMap", "version": "0.1.0",
                     "description": "The city's one map. Send a key or an OpenID Connect "
                                    "token as Authorization: Bearer; embedding keys go in "
                                    "?key=. Without one, only public layers exist."},
            "components": {"securitySchemes": {"bearer": {"type": "http",
                                                          "scheme": "bearer"}}},
            "servers": [{"url": server}], "paths": paths}


async def api(request: Request) -> Response:
    return JSONResponse(document(base(request)), media_type=OPENAPI)

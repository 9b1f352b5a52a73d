"""OGC API – Features (Part 1: Core, GeoJSON) over the layer catalog.

The landing page shares ``/`` with the viewer: JSON for clients that ask for it
(``?f=json`` or ``Accept: application/json``), the viewer for browsers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from access.policy import LayerAccess
from layers import cql2sql, features, rasters, restrict
from layers.catalog import LAYER_ID, Layer, fetch_layers
from layers.summary import seen
from mapserver import ogctiles, processes, records
from mapserver.deps import access, app_state, db, note
from mapserver.html import alternate, listing, wants_html
from mapserver.html import page as _page
from mapserver.ogc import (
    GEOJSON,
    base,
    int_param,
    layer_links,
    page_link,
    parse_bbox,
    parse_datetime,
    parse_instant,
    parse_sortby,
    parse_terms,
    refuse_unknown,
)
from mapserver.replicas import VERSIONS

OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
CRS84 = features.CRS84.uri
# Collections list vector layers (features and tiles) and raster layers (tiles).
COLLECTION_KINDS = ("vector", "raster")
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
]
_SCHEMA_TYPES = {
    "integer": {"type": "integer"}, "number": {"type": "number"},
    "decimal": {"type": "number"}, "boolean": {"type": "boolean"},
    "string": {"type": "string"}, "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"}, "time": {"type": "string", "format": "time"},
    "geometry": {"format": "geometry-any"},
}
DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000


def landing(request: Request) -> Response:
    b = base(request)
    return JSONResponse({
        "title": "OneMap",
        "description": "The city's one map: layers as OGC API – Features, vector tiles and "
                       "styles.",
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{b}/?f=json"},
            {"rel": "alternate", "type": "text/html", "title": "the map viewer",
             "href": f"{b}/?f=html"},
            {"rel": "service-desc", "type": OPENAPI, "href": f"{b}/api"},
            {"rel": "conformance", "type": "application/json", "href": f"{b}/conformance"},
            {"rel": "data", "type": "application/json", "href": f"{b}/collections"},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/processes",
             "type": "application/json", "href": f"{b}/processes"},
        ],
    })


async def conformance(request: Request) -> Response:
    classes = (CONFORMANCE + records.CONFORMANCE + ogctiles.CONFORMANCE
               + processes.CONFORMANCE)
    if wants_html(request):
        return listing(request, "Conformance", [], columns=["Conformance class"],
                       description="The OGC standards, and the parts of them, that OneMap "
                                   "implements.",
                       rows=[[(c, c)] for c in classes])
    return JSONResponse({"conformsTo": classes, "links": [
        {"rel": "self", "type": "application/json", "href": f"{base(request)}/conformance"},
        alternate(request)]})


def collection_doc(request: Request, layer: Layer) -> dict:
    b = base(request)
    here = f"{b}/collections/{layer.id}"
    vector = layer.kind == "vector"
    doc = {
        "id": layer.id,
        "title": layer.title,
        "description": layer.description or layer.title,
        "keywords": list(layer.keywords),
        # A raster's items are its scenes' footprints; its pixels are its tiles.
        "itemType": "feature",
        **({"crs": list(features.SUPPORTED_CRS)} if vector else
           {"dataType": "map", "crs": [CRS84]}),
        "storageCrs": CRS84 if vector else f"http://www.opengis.net/def/crs/EPSG/0/"
                                           f"{layer.crs.split(':')[-1]}",
        "links": [{"rel": "self", "type": "application/json", "href": here},
                  {"rel": "alternate", "type": "text/html", "href": f"{here}?f=html"},
                  *layer_links(request, layer)],
    }
    if layer.extent:
        doc["extent"] = {"spatial": {"bbox": [list(layer.extent)], "crs": CRS84}}
    times = (layer.raster or {}).get("times")
    if times:
        doc.setdefault("extent", {})["temporal"] = {"interval": [[min(times), max(times)]],
                                                    "values": sorted(times)}
    return doc


async def _vector_layers(request: Request, layer_id: str | None = None,
                         kinds: tuple[str, ...] = ("vector",),
                         as_seen: bool = True) -> list[tuple[Layer, LayerAccess]]:
    """The layers of these kinds the caller may read, each as the caller sees it (or, with
    ``as_seen`` false, whole: the server applies the caller's limits itself)."""
    async with db(request, "items") as conn:
        found = await fetch_layers(conn, ids=None if layer_id is None else [layer_id])
        return [(await seen(conn, ly, a.restriction) if as_seen else ly, a)
                for ly, a in access(request).readable(found) if ly.kind in kinds]


async def collection_layer(request: Request, kinds: tuple[str, ...] = ("vector",)
                           ) -> tuple[Layer, LayerAccess]:
    """The collection in the path, whole, with the caller's access; 404 alike if it is
    missing or the caller may not read it. Whole, because a grant's own filter may name a
    field the grant hides from the caller: the server applies it all the same."""
    layer_id = request.path_params["collectionId"]
    note(request, [layer_id])
    found = (await _vector_layers(request, layer_id, kinds, as_seen=False)
             if LAYER_ID.match(layer_id) else [])
    if not found:
        raise HTTPException(404, f"no collection {layer_id!r}")
    return found[0]


async def collections(request: Request) -> Response:
    layers = [ly for ly, _ in await _vector_layers(request, kinds=COLLECTION_KINDS)]
    note(request, [ly.id for ly in layers])
    b = base(request)
    if wants_html(request):
        return _page(request, "collections.html", "Collections", [], layers=layers)
    return JSONResponse({
        "links": [{"rel": "self", "type": "application/json", "href": f"{b}/collections"},
                  alternate(request)],
        "collections": [*(collection_doc(request, ly) for ly in layers),
                        records.catalog_doc(request)],
    })


async def collection(request: Request) -> Response:
    layer_id = request.path_params["collectionId"]
    note(request, [layer_id])
    found = (await _vector_layers(request, layer_id, COLLECTION_KINDS)
             if LAYER_ID.match(layer_id) else [])
    if not found:
        raise HTTPException(404, f"no collection {layer_id!r}")
    layer = found[0][0]
    if wants_html(request):
        return _page(request, "collection.html", layer.title,
                     [("Collections", f"{base(request)}/collections?f=html")], layer=layer)
    return JSONResponse(collection_doc(request, layer))


async def queryables(request: Request) -> Response:
    layer, a = await collection_layer(request)
    url = f"{base(request)}/collections/{layer.id}/queryables"
    kinds = cql2sql.queryables(restrict.filterable(layer, a.restriction))
    props = {name: {"title": name, **_SCHEMA_TYPES.get(kind, {"type": "string"})}
             for name, kind in kinds.items()}
    if wants_html(request):
        here = f"{base(request)}/collections/{layer.id}"
        return listing(request, f"{layer.title}: queryables",
                       [("Collections", f"{base(request)}/collections?f=html"),
                        (layer.id, f"{here}?f=html")],
                       description="What the items can be filtered by (CQL2 filter= or "
                                   "name=value), and how.",
                       columns=["Queryable", "Type"],
                       rows=[[name, kind] for name, kind in kinds.items()])
    return JSONResponse({
        "links": [alternate(request)],
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": url,
        "type": "object", "title": layer.title, "properties": props,
        "additionalProperties": False,
    }, media_type="application/schema+json")


async def schema(request: Request) -> Response:
    """The features' schema (OGC API - Features Part 5): every property the caller reads,
    typed, the key marked, and the geometry."""
    layer, a = await collection_layer(request)
    here = f"{base(request)}/collections/{layer.id}"
    visible = restrict.visible_fields(layer, a.restriction)
    props: dict[str, dict] = {cql2sql.GEOMETRY: {"x-ogc-role": "primary-geometry",
                                              "format": "geometry-any"}}
    for f in visible:
        props[f.name] = {"title": f.source_name or f.name,
                         **_SCHEMA_TYPES.get(f.type, {"type": "string"}),
                         **({"maxLength": f.length} if f.length else {}),
                         **({"x-ogc-role": "id"} if f.key else {})}
    for name in features.TIME_PROPERTIES:
        props[name] = {"type": "string", "format": "date-time", "readOnly": True}
    props["_version"] = {"type": "integer", "readOnly": True}
    if wants_html(request):
        return listing(request, f"{layer.title}: schema",
                       [("Collections", f"{base(request)}/collections?f=html"),
                        (layer.id, f"{here}?f=html")],
                       columns=["Property", "Type", "Key"],
                       rows=[[f.name, f.type, "yes" if f.key else ""] for f in visible])
    return JSONResponse({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{here}/schema",
        "type": "object", "title": layer.title, "properties": props,
        "links": [alternate(request)],
    }, media_type="application/schema+json")


def parse_properties(request: Request, layer: Layer,
                     a: LayerAccess) -> tuple[str, ...] | None:
    raw = request.query_params.get("properties")
    if raw is None:
        return None
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    known = set(features.property_names(layer, a.restriction))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise HTTPException(400, f"unknown properties {unknown}; see the collection's "
                                 "queryables")
    return names


# What the items of a collection take besides property names (which filter by value).
ITEMS_PARAMS = ("limit", "offset", "after", "bbox", "bbox-crs", "crs", "datetime", "as-of",
                "filter", "filter-lang", "filter-crs", "properties", "sortby", "ids", "q", "f",
                "key")


def parse_filter(request: Request, layer: Layer, a: LayerAccess) -> tuple | None:
    """The caller's CQL2 filter and its property filters (``?name=value``, OGC API -
    Features Part 1, 7.15.5) as one WHERE clause over what the caller may filter on; any
    other parameter the items do not take is a 400 naming it."""
    allowed = restrict.filterable(layer, a.restriction)
    types = cql2sql.queryables(allowed)
    params = request.query_params
    refuse_unknown(request, ITEMS_PARAMS, "the items", also=list(types),
                   more=", and queryables by name (see the collection's queryables)")
    lang = params.get("filter-lang", "cql2-text")
    if lang not in ("cql2-text", "cql2-json"):
        raise HTTPException(400, f"filter-lang {lang!r} is not supported; use cql2-text or "
                                 "cql2-json")
    crs = parse_crs(request, "filter-crs")
    literal_crs = cql2sql.FilterCrs(crs.srid, crs.lat_first)
    parts = []
    for name in dict.fromkeys(k for k in params if k in types and k not in ITEMS_PARAMS):
        kind = types[name]
        if kind == "geometry":
            raise HTTPException(400, f"{name!r} cannot be matched by value: use bbox or a "
                                     "filter")
        value: object = params[name]
        if kind == "boolean":
            if value not in ("true", "false"):
                raise HTTPException(400, f"{name} {value!r} is not true or false")
            value = value == "true"
        parts.append({"op": "=", "args": [{"property": name}, value]})
    try:
        text = params.get("filter")
        if text is not None:
            parts.insert(0, cql2sql.parse(text, lang))
        if not parts:
            return None
        tree = parts[0] if len(parts) == 1 else {"op": "and", "args": parts}
        return cql2sql.to_sql(tree, allowed, crs=literal_crs)
    except cql2sql.FilterError as exc:
        raise HTTPException(400, str(exc)) from exc


def parse_crs(request: Request, name: str) -> features.Crs:
    raw = request.query_params.get(name)
    if raw is None:
        return features.CRS84
    uri = raw.strip("<>")
    if uri.upper().startswith("EPSG:"):  # the short form many clients send
        uri = f"http://www.opengis.net/def/crs/EPSG/0/{uri[5:]}"
    crs = features.SUPPORTED_CRS.get(uri)
    if crs is None:
        named = [c.uri for c in features.SUPPORTED_CRS.values()
                 if c.srid not in features.GAUSS_KRUGER]
        raise HTTPException(400, f"{name} {raw!r} is not supported; use one of "
                                 + ", ".join(named) + " or a CGCS2000 Gauss-Kruger zone, "
                                 "http://www.opengis.net/def/crs/EPSG/0/4491 to 4554")
    return crs


SCENE_PARAMS = ("limit", "offset", "bbox", "datetime", "f", "key")


async def _scene_items(request: Request, layer: Layer, a: LayerAccess) -> Response:
    """A raster layer's items: its scenes' footprints (the pixels are its tiles)."""
    refuse_unknown(request, SCENE_PARAMS, "a raster layer's items (its scenes)")
    limit = min(int_param(request, "limit", DEFAULT_LIMIT, 1), MAX_LIMIT)
    offset = int_param(request, "offset", 0, 0)
    instant, start, end = parse_datetime(request.query_params.get("datetime"))
    async with db(request, "items") as conn:
        rows, matched = await rasters.footprints(
            conn, layer, a.restriction, limit=limit, offset=offset,
            bbox=parse_bbox(request.query_params.get("bbox")),
            start=start or instant, end=end or instant)
    note(request, [layer.id], len(rows))
    return _feature_page(request, layer, features.Page(rows, matched, None, None), offset,
                         limit, None, features.CRS84)


async def items(request: Request) -> Response:
    layer, a = await collection_layer(request, COLLECTION_KINDS)
    if layer.kind == "raster":
        return await _scene_items(request, layer, a)
    limit = min(int_param(request, "limit", DEFAULT_LIMIT, 1), MAX_LIMIT)
    offset = int_param(request, "offset", 0, 0)
    policy = access(request).policy
    limit = policy.base_page(layer, limit, offset)  # base data: small pages, not too deep
    instant, start, end = parse_datetime(request.query_params.get("datetime"))
    as_of_raw = request.query_params.get("as-of")
    crs, bbox_crs = parse_crs(request, "crs"), parse_crs(request, "bbox-crs")
    q = features.ItemsQuery(limit=limit, offset=offset,
                            bbox=parse_bbox(request.query_params.get("bbox"), bbox_crs),
                            bbox_crs=bbox_crs, crs=crs,
                            instant=instant, start=start, end=end,
                            as_of=parse_instant(as_of_raw, as_of_raw) if as_of_raw else None,
                            where=parse_filter(request, layer, a),
                            properties=parse_properties(request, layer, a),
                            restriction=a.restriction, sortby=parse_sortby(
                                request.query_params.get("sortby"),
                                features.sortables(layer, a.restriction), "the items"),
                            ids=_ids(request, layer, a),
                            text=parse_terms(request, "q") or (),
                            after=request.query_params.get("after"))
    window = policy.paging_window(layer)
    # Pages continue after the last id, not at an offset: a deep page then costs what the
    # first does. Base data keeps offsets, whose depth its paging window bounds.
    by_key = features.keyset(q, layer) and window is None
    if q.after is not None and (not by_key or q.offset):
        raise HTTPException(400, "after continues the default order of ids the caller can "
                                 "see, without an offset" + (
                                     "; base data pages by offset" if window else ""))
    state = app_state(request)
    kind = "filters" if q.where is not None else "items"
    async with db(request, kind) as conn:
        who = None
        if layer.role == "base":
            who = f"{_caller(request)}|{layer.id}"
            p = access(request).principal
            used = await state.quota.used(
                conn, who, p.key_id, None if p.anonymous else p.name, [layer.id],
                request.client.host if request.client else None)
            policy.quota_left(layer, used)
        if state.replicas is None or q.as_of is not None:
            page = await features.items(conn, layer, q)
        else:  # read on a replica unless it is behind the primary on this layer
            page = await state.replicas.read(
                conn, [layer.id], state.settings.budget_ms(kind),
                lambda c: replica_page(c, layer, q), lambda made: made[1])
            page = page[0]
        if who is not None:
            await state.quota.add(conn, who, len(page.rows))
    note(request, [layer.id], len(page.rows))
    return _feature_page(request, layer, page, offset, limit, window, crs,
                         page.last if by_key else None)


async def replica_page(conn, layer: Layer, q: features.ItemsQuery
                       ) -> tuple[features.Page, dict[str, int]]:
    """A page made on a replica, with the version of the layer the replica holds."""
    cur = await conn.execute(VERSIONS, ([layer.id],))
    seen = {i: int(v) for i, v in await cur.fetchall()}
    return await features.items(conn, layer, q), seen


def _feature_page(request: Request, layer: Layer, page: features.Page, offset: int,
                  limit: int, window: int | None, crs: features.Crs,
                  after: str | None = None) -> Response:
    """A page of features as GeoJSON (or HTML), with its paging links: the next continues
    ``after`` a feature id where one is given, else at the next offset."""
    rows, matched = page.rows, page.matched
    links = [page_link(request, "self", offset, limit, request.query_params.get("after")),
             alternate(request),
             {"rel": "collection", "type": "application/json",
              "href": f"{base(request)}/collections/{layer.id}"}]
    more = (offset + len(rows) < matched if matched is not None and
            request.query_params.get("after") is None else len(rows) == limit)
    if more and (window is None or offset + limit < window):
        links.append(page_link(request, "next", offset + limit, limit, after))
    if offset > 0:
        links.append(page_link(request, "prev", max(0, offset - limit), limit))
    if wants_html(request):
        feats = [json.loads(r) for r in rows]
        columns = list(dict.fromkeys(k for f in feats for k in f["properties"]))
        link = {ln["rel"]: ln["href"] for ln in links}
        return _page(request, "items.html", f"{layer.title}: features",
                     [("Collections", f"{base(request)}/collections?f=html"),
                      (layer.id, f"{base(request)}/collections/{layer.id}?f=html")],
                     layer=layer, features=feats, columns=columns, matched=matched,
                     estimate=page.estimate,
                     returned=len(rows), next_url=link.get("next"),
                     prev_url=link.get("prev"))
    counted = ({"numberMatched": matched} if matched is not None else
               {"onemap:numberMatchedEstimate": page.estimate} if page.estimate else {})
    head = {"type": "FeatureCollection", **counted,
            "numberReturned": len(rows),
            "timeStamp": datetime.now(UTC).isoformat(timespec="seconds"), "links": links}
    body = json.dumps(head)[:-1] + ', "features": [' + ",".join(rows) + "]}"
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": f"<{crs.uri}>"})


def _ids(request: Request, layer: Layer, a: LayerAccess) -> tuple[str, ...] | None:
    ids = parse_terms(request, "ids")
    # Ids made of a concealed key are not looked up: the answer would reveal the values.
    if ids is not None and restrict.fid_concealed(layer, a.restriction):
        raise HTTPException(400, f"collection {layer.id!r} cannot be searched by id: its ids "
                                 "are made of a field hidden from you")
    return ids


def _caller(request: Request) -> str:
    """Whom a base-layer quota counts: the key, the principal, or the client's address."""
    p = access(request).principal
    if p.key_id:
        return f"key:{p.key_id}"
    if not p.anonymous:
        return f"principal:{p.name}"
    return f"address:{request.client.host if request.client else '-'}"


async def item(request: Request) -> Response:
    layer, a = await collection_layer(request, COLLECTION_KINDS)
    fid = request.path_params["featureId"]
    if layer.kind == "raster":
        rows: list[str] = []
        if fid.isdigit() and len(fid) < 18:
            async with db(request, "items") as conn:
                rows, _ = await rasters.footprints(conn, layer, a.restriction, limit=1,
                                                   scene=int(fid))
        if not rows:
            raise HTTPException(404, f"no scene {fid!r} in collection {layer.id!r}")
        note(request, [layer.id], 1, feature=fid)
        return Response(rows[0], media_type=GEOJSON)
    as_of_raw = request.query_params.get("as-of")
    as_of = parse_instant(as_of_raw, as_of_raw) if as_of_raw else None
    crs = parse_crs(request, "crs")
    found = None
    # An id made of a concealed key is not looked up: the answer would reveal the value.
    if not restrict.fid_concealed(layer, a.restriction):
        async with db(request, "items") as conn:
            found = await features.item(conn, layer, fid, as_of, crs, a.restriction)
    if found is None:
        raise HTTPException(404, f"no feature {fid!r} in collection {layer.id!r}")
    note(request, [layer.id], 1, feature=fid)
    here = f"{base(request)}/collections/{layer.id}"
    doc = json.loads(found[0])
    if wants_html(request):
        return _page(request, "item.html", f"{layer.title}: {fid}",
                     [("Collections", f"{base(request)}/collections?f=html"),
                      (layer.id, f"{here}?f=html"), ("features", f"{here}/items?f=html")],
                     layer=layer, feature=doc)
    doc["links"] = [
        {"rel": "self", "type": GEOJSON, "href": f"{here}/items/{quote(fid, safe='')}"},
        {"rel": "collection", "type": "application/json", "href": here},
        alternate(request),
    ]
    return Response(json.dumps(doc), media_type=GEOJSON,
                    headers={"Content-Crs": f"<{crs.uri}>", "ETag": etag_of(found[1])})


def etag_of(rid: int) -> str:
    """A feature version's ETag: its row id, which every change replaces."""
    return f'"r{rid}"'


routes = [
    Route("/conformance", conformance),
    Route("/collections", collections),
    Route("/collections/{collectionId}", collection),
    Route("/collections/{collectionId}/queryables", queryables),
    Route("/collections/{collectionId}/schema", schema),
    Route("/collections/{collectionId}/items", items),
    Route("/collections/{collectionId}/items/{featureId:path}", item),
]

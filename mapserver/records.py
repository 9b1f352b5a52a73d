"""The searchable catalog as OGC API – Records: every layer is a record in ``catalog``."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from access.policy import LayerAccess
from federation.cascade import rebase, search_nodes
from federation.keys import claims_of
from federation.nodes import record_levels, remote_records
from layers import cql2sql
from layers.catalog import LAYER_ID, Layer, fetch_layers
from layers.records import QUERYABLES, SORTABLES, RecordsQuery, filter_sql, search
from layers.restrict import visible
from layers.summary import seen
from mapserver.deps import access, app_state, db, note
from mapserver.html import alternate, listing, page, wants_html
from mapserver.ogc import (
    GEOJSON,
    base,
    int_param,
    layer_links,
    page_link,
    parse_bbox,
    parse_datetime,
    parse_sortby,
    parse_terms,
    refuse_unknown,
)

CATALOG_ID = "catalog"  # reserved in layers.catalog.RESERVED_IDS
_RECORDS = "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/"
# OGC API - Records - Part 1: Core, 1.0 (20-004r1): the record, the catalog collection, its
# query parameters, sorting and filtering, in JSON and HTML.
CONFORMANCE = [_RECORDS + c for c in (
    "record-core", "record-collection", "record-core-query-parameters", "record-api",
    "sorting", "json", "html", "searchable-catalog", "searchable-catalog-filtering",
    "searchable-catalog-sorting")]
RECORD_CORE = "http://www.opengis.net/spec/ogcapi-records-1/1.0/req/record-core"
_SCHEMA = {"string": {"type": "string"}, "integer": {"type": "integer"},
           "datetime": {"type": "string", "format": "date-time"}}
KINDS = ("vector", "raster", "3d")


def catalog_doc(request: Request) -> dict:
    here = f"{base(request)}/collections/{CATALOG_ID}"
    nodes = sorted(app_state(request).directory.nodes)
    federated = {"federatedCatalogs": [
        {"node": n, "href": f"{base(request)}/federation/{n}/collections/{CATALOG_ID}"}
        for n in nodes]} if nodes else {}
    return {**federated,
        "id": CATALOG_ID, "type": "Catalog", "itemType": "record",
        "title": "OneMap catalog",
        "description": "Every layer on OneMap, with its data dictionary, owner, update cycle, "
                       "sharing type, extent and the ways it is served.",
        "links": [{"rel": "self", "type": "application/json", "href": here},
                  {"rel": "alternate", "type": "text/html", "href": f"{here}?f=html"},
                  {"rel": "items", "type": GEOJSON, "href": f"{here}/items"},
                  {"rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                   "type": "application/schema+json", "href": f"{here}/queryables"},
                  {"rel": "http://www.opengis.net/def/rel/ogc/1.0/sortables",
                   "type": "application/schema+json", "href": f"{here}/sortables"}],
    }


def record(request: Request, layer: Layer, a: LayerAccess) -> dict:
    layer = visible(layer, a.restriction)
    geometry = None
    if layer.extent:
        x0, y0, x1, y1 = layer.extent
        geometry = {"type": "Polygon",
                    "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
    props = {
        "type": "dataset", "title": layer.title,
        "description": layer.description or layer.title,
        # Its own keywords, then what every layer can be found by: its kind, role, shape
        # and owner.
        "keywords": list(dict.fromkeys(k for k in (
            *layer.keywords, layer.kind, layer.role, layer.geometry_type,
            layer.department_name or layer.department) if k)),
        "created": layer.created_at.isoformat(), "updated": layer.updated_at.isoformat(),
        "onemap:kind": layer.kind, "onemap:role": layer.role,
        "onemap:department": layer.department,
        "onemap:updateCycle": layer.update_cycle, "onemap:sharingType": layer.sharing_type,
        "onemap:featureCount": layer.feature_count, "onemap:crs": layer.crs,
        "onemap:geometryType": layer.geometry_type, "onemap:key": layer.key_field,
        "onemap:version": layer.version, "onemap:level": layer.level,
        "onemap:dataDictionary": [f.as_dict() for f in layer.fields],
    }
    if layer.department:
        props["contacts"] = [{"organization": layer.department_name or layer.department,
                              "roles": ["owner"]}]
    if layer.attribution:
        props["rights"] = layer.attribution
    here = f"{base(request)}/collections/{CATALOG_ID}/items/{layer.id}"
    return {
        "id": layer.id, "type": "Feature", "conformsTo": [RECORD_CORE],
        "geometry": geometry, "time": {"interval": [layer.created_at.isoformat(), ".."]},
        "properties": props,
        "links": [{"rel": "self", "type": GEOJSON, "href": here},
                  {"rel": "collection", "type": "application/json",
                   "href": f"{base(request)}/collections/{CATALOG_ID}"},
                  *layer_links(request, layer)],
    }


async def catalog(request: Request) -> Response:
    doc = catalog_doc(request)
    if wants_html(request):
        here = f"{base(request)}/collections/{CATALOG_ID}"
        return listing(request, doc["title"], [("Collections", f"{base(request)}/collections"
                                                               "?f=html")],
                       description=doc["description"], columns=[], rows=[],
                       links=(("Search the records", f"{here}/items?f=html"),
                              ("Queryables", f"{here}/queryables?f=html"),
                              ("Sortables", f"{here}/sortables?f=html")))
    return JSONResponse(doc)


def _schema(request: Request, what: str, names: list[str]) -> Response:
    here = f"{base(request)}/collections/{CATALOG_ID}"
    if wants_html(request):
        return listing(request, f"OneMap catalog: {what}",
                       [("Collections", f"{base(request)}/collections?f=html"),
                        (CATALOG_ID, f"{here}?f=html")],
                       columns=[what.capitalize()[:-1], "Type"],
                       rows=[[n, QUERYABLES[n][0]] for n in names])
    return JSONResponse({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{here}/{what}",
        "type": "object", "title": f"OneMap catalog: {what}",
        "properties": {n: {"title": n, **_SCHEMA[QUERYABLES[n][0]]} for n in names},
        "additionalProperties": False, "links": [alternate(request)],
    }, media_type="application/schema+json")


async def catalog_queryables(request: Request) -> Response:
    return _schema(request, "queryables", list(QUERYABLES))


async def catalog_sortables(request: Request) -> Response:
    return _schema(request, "sortables", list(SORTABLES))


# What a search of the catalog takes (OGC API - Records, Part 1: core, sorting, filtering).
RECORDS_PARAMS = ("limit", "offset", "q", "bbox", "datetime", "type", "kind", "keywords",
                  "department", "ids", "sortby", "filter", "filter-lang", "f", "key",
                  "distributedSearch")
# What a distributed search passes on to each node (its first page there).
PASSED_ON = ("limit", "q", "bbox", "datetime", "type", "kind", "keywords", "sortby",
             "filter", "filter-lang")


def _records_filter(request: Request) -> tuple | None:
    text = request.query_params.get("filter")
    if text is None:
        return None
    try:
        return filter_sql(cql2sql.parse(text, request.query_params.get("filter-lang",
                                                                       "cql2-text")))
    except cql2sql.FilterError as exc:
        raise HTTPException(400, str(exc)) from exc


async def records(request: Request) -> Response:
    refuse_unknown(request, RECORDS_PARAMS, "the catalog's items")
    limit = min(int_param(request, "limit", 10, 1), 1000)
    offset = int_param(request, "offset", 0, 0)
    instant, start, end = parse_datetime(request.query_params.get("datetime"))
    # type is the record's type (every layer is a "dataset"); kind, the layer's.
    record_type = request.query_params.get("type")
    if record_type is not None and record_type != "dataset" and record_type not in KINDS:
        raise HTTPException(400, f"type {record_type!r} is not dataset (every record is one); "
                                 f"a layer's kind is one of {', '.join(KINDS)}")
    kind = request.query_params.get("kind") or (
        record_type if record_type in KINDS else None)
    if kind is not None and kind not in KINDS:
        raise HTTPException(400, f"kind {kind!r} is not one of {', '.join(KINDS)}")
    where = _records_filter(request)
    sortby = parse_sortby(request.query_params.get("sortby"), SORTABLES, "records")
    bbox = parse_bbox(request.query_params.get("bbox"))
    async with db(request, "items") as conn:
        pairs = access(request).readable(await fetch_layers(conn))
        readable = {ly.id: a for ly, a in pairs}
        harvested = [i for i, level, sharing in await record_levels(conn)
                     if access(request).sees_record(i, level, sharing)]
        # A caller who sees part of a layer finds it by the part it sees.
        partial = {ly.id: (await seen(conn, ly, a.restriction)).extent for ly, a in pairs
                   if bbox is not None and a.restriction.rows_limited}
    q = RecordsQuery(limit=limit, offset=offset, terms=parse_terms(request, "q") or (), bbox=bbox,
                     seen_extents=partial,
                     start=start or instant, end=end or instant,
                     keywords=parse_terms(request, "keywords") or (),
                     department=request.query_params.get("department"), kind=kind,
                     ids=(*readable, *harvested), where=where, sortby=sortby,
                     wanted=parse_terms(request, "ids") or None)
    async with db(request, "items") as conn:
        ids, matched = await search(conn, q)
        local = {ly.id: await seen(conn, ly, readable[ly.id].restriction)
                 for ly in await fetch_layers(conn, ids=[i for i in ids if i in readable])}
        remote = await remote_records(conn, [i for i in ids if i not in readable])
    entries = [local.get(i) or harvested_record(request, remote[i]) for i in ids
               if i in local or i in remote]
    searched = None
    if request.query_params.get("distributedSearch", "false").lower() == "true":
        entries, searched = await _distributed(request, entries)
    layers = [e for e in entries if isinstance(e, Layer)]
    note(request, [ly.id for ly in layers], len(layers))
    links = [page_link(request, "self", offset, limit), alternate(request)]
    if offset + len(entries) < matched:
        links.append(page_link(request, "next", offset + limit, limit))
    if wants_html(request):
        here = f"{base(request)}/collections/{CATALOG_ID}"
        nexts = [(f"next {limit}", ln["href"].replace("f=json", "f=html"))
                 for ln in links if ln["rel"] == "next"]
        return listing(request, "OneMap catalog: records",
                       [("Collections", f"{base(request)}/collections?f=html"),
                        (CATALOG_ID, f"{here}?f=html")],
                       description=f"{len(entries)} of {matched} records",
                       columns=["Record", "Title", "Kind", "Department", "Features",
                                "Updated"],
                       rows=[_row(here, e) for e in entries],
                       links=tuple(nexts), geojson=True)
    head = {"type": "FeatureCollection", "numberMatched": matched,
            "numberReturned": len(entries), "links": links,
            **({"onemap:nodes": searched} if searched is not None else {}),
            "features": [record(request, e, readable[e.id]) if isinstance(e, Layer) else e
                         for e in entries]}
    body = json.dumps(head).encode()
    # A harvesting node asks again with If-None-Match: unchanged, the answer is a 304.
    etag = f'"{hashlib.sha1(body).hexdigest()[:20]}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=GEOJSON, headers=headers)


async def _distributed(request: Request, entries: list) -> tuple[list, list[dict]]:
    """OGC API – Records Part 4's distributed search: the same search asked of every node
    live (each within the federation's timeout); a node that answered gives its records
    as they are now, one that did not keeps those last harvested, and each node's status
    is in the answer."""
    state = app_state(request)
    nodes = {n: r["url"] for n, r in state.directory.nodes.items()}
    p = access(request).principal
    if not nodes or p.node is not None:  # a node's own caller searches here only
        return entries, []
    query = urlencode([(k, v) for k, v in request.query_params.multi_items()
                       if k in PASSED_ON])
    found = await search_nodes(state.cascade, nodes, query,
                               {n: claims_of(p, n) for n in nodes},
                               state.settings.federation_timeout)
    answered = {n for n, (status, _) in found.items() if status["status"] == "ok"}
    kept = [e for e in entries if isinstance(e, Layer)
            or e["properties"].get("onemap:origin") not in answered]
    live = [harvested_record(request, {"node": n, "url": nodes[n], "id": f"{n}:{r.get('id')}",
                                       "record": r})
            for n in sorted(answered) for r in found[n][1] if ":" not in str(r.get("id"))]
    return kept + live, [status for status, _ in found.values()]


def _row(here: str, e: Layer | dict) -> list:
    if isinstance(e, Layer):
        return [(e.id, f"{here}/items/{e.id}?f=html"), e.title, e.kind,
                e.department_name or e.department, e.feature_count,
                e.updated_at.date().isoformat()]
    p = e["properties"]
    return [(e["id"], f"{here}/items/{e['id']}"), p.get("title"), p.get("onemap:kind"),
            f"{p.get('onemap:department')} ({p['onemap:origin']})",
            p.get("onemap:featureCount"), str(p.get("updated", ""))[:10]]


def harvested_record(request: Request, row: dict) -> dict:
    """A record harvested from a node, as this node serves it: its id ``node:layer``, its
    links to this node's cascade of that node (``/federation/{node}/...``)."""
    node, theirs = row["node"], row["url"].rstrip("/")
    ours = f"{base(request)}/federation/{node}"
    doc = json.loads(rebase(json.dumps(row["record"]).encode(), theirs, ours))
    doc["id"] = row["id"]
    doc["properties"]["onemap:origin"] = node
    for link in doc.get("links", []):
        if link.get("rel") == "self":
            link["href"] = f"{base(request)}/collections/{CATALOG_ID}/items/{row['id']}"
        elif link.get("rel") == "collection":
            link["href"] = f"{base(request)}/collections/{CATALOG_ID}"
    return doc


async def one_record(request: Request) -> Response:
    record_id = request.path_params["recordId"]
    note(request, [record_id])
    found = []
    if ":" in record_id:
        async with db(request, "items") as conn:
            rows = await remote_records(conn, [record_id])
        row = rows.get(record_id)
        if row is None or not access(request).sees_record(
                record_id, row["level"], row["record"]["properties"].get(
                    "onemap:sharingType", "unconditional")):
            raise HTTPException(404, f"no record {record_id!r}")
        return Response(json.dumps(harvested_record(request, row)), media_type=GEOJSON)
    if LAYER_ID.match(record_id):
        async with db(request, "items") as conn:
            found = [(await seen(conn, ly, a.restriction), a) for ly, a in
                     access(request).readable(await fetch_layers(conn, ids=[record_id]))]
    if not found:
        raise HTTPException(404, f"no record {record_id!r}")
    if wants_html(request):
        layer = visible(found[0][0], found[0][1].restriction)
        return page(request, "collection.html", layer.title,
                    [("Collections", f"{base(request)}/collections?f=html"),
                     (CATALOG_ID, f"{base(request)}/collections/{CATALOG_ID}?f=html")],
                    layer=layer)
    doc = record(request, *found[0])
    doc["links"].insert(1, alternate(request))
    return Response(json.dumps(doc), media_type=GEOJSON)


routes = [
    Route(f"/collections/{CATALOG_ID}", catalog),
    Route(f"/collections/{CATALOG_ID}/queryables", catalog_queryables),
    Route(f"/collections/{CATALOG_ID}/sortables", catalog_sortables),
    Route(f"/collections/{CATALOG_ID}/items", records),
    Route(f"/collections/{CATALOG_ID}/items/{{recordId}}", one_record),
]

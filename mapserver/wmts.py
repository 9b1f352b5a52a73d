"""WMTS 1.0.0 for GIS desktops: capabilities (KVP and REST) and KVP GetTile.

Raster layers are offered in every grid with a Time dimension; vector layers as MVT and as
images drawn in their style (PNG, JPEG, WebP) in WebMercatorQuad and CGCS2000Quad; base
maps (``basemap:emap``) as images in both. ResourceURL templates point
at the ``/tiles`` and ``/basemaps`` routes, so REST and KVP tiles are made by the same code
and are the same bytes. Errors are OWS exception reports, the form WMTS clients read. Only
layers the caller may read are listed.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import numpy as np
from rio_tiler.utils import render
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from layers.catalog import Layer, fetch_layers
from layers.errors import DomainError, OutOfRange
from layers.grids import (
    CGCS2000,
    GRIDS,
    MAX_LISTED_ZOOM,
    WEB_MERCATOR,
    WORLD_CRS84,
    grid,
    limits,
    matrix_size,
)
from layers.summary import seen
from mapserver.deps import access, db, note
from mapserver.errors import status_of
from mapserver.images import BASEMAP, IMAGE_GRIDS, map_tile, pins
from mapserver.ogc import base, union
from mapserver.tiles import MVT, vector_tile
from styles import basemaps

WMTS_NS = "http://www.opengis.net/wmts/1.0"
OWS_NS = "http://www.opengis.net/ows/1.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
ET.register_namespace("ows", OWS_NS)
ET.register_namespace("xlink", XLINK_NS)
ET.register_namespace("xsi", XSI_NS)

CRS_URN = {WEB_MERCATOR: "urn:ogc:def:crs:EPSG::3857", CGCS2000: "urn:ogc:def:crs:EPSG::4490",
           WORLD_CRS84: "urn:ogc:def:crs:OGC:1.3:CRS84"}
WELL_KNOWN = {WEB_MERCATOR: "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible"}
RASTER_FORMATS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
XML = "application/xml"


def _w(tag: str) -> str:
    return f"{{{WMTS_NS}}}{tag}"


def _o(tag: str) -> str:
    return f"{{{OWS_NS}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def exception_report(status: int, code: str, text: str, locator: str | None = None) -> Response:
    root = ET.Element(_o("ExceptionReport"), {"version": "1.1.0", "xml:lang": "en"})
    exc = _sub(root, _o("Exception"), exceptionCode=code,
               **({"locator": locator} if locator else {}))
    _sub(exc, _o("ExceptionText"), text)
    return Response(ET.tostring(root, xml_declaration=True, encoding="utf-8"),
                    status_code=status, media_type=XML)


def _limits(link: ET.Element, layer: Layer, tms_name: str) -> None:
    found = limits(grid(tms_name), layer.extent, layer.minzoom,  # type: ignore[arg-type]
                   min(layer.maxzoom, MAX_LISTED_ZOOM))
    if not found:
        return
    # The schema wants MaxTileRow and MaxTileCol above 0: a matrix whose limits would end at
    # row or column 0 (zoom 0's one tile) is left unlimited instead.
    found = [f for f in found if f[2] > 0 and f[4] > 0]
    if not found:
        return
    el = _sub(link, _w("TileMatrixSetLimits"))
    for z, r0, r1, c0, c1 in found:
        tl = _sub(el, _w("TileMatrixLimits"))
        for tag, value in (("TileMatrix", z), ("MinTileRow", r0), ("MaxTileRow", r1),
                           ("MinTileCol", c0), ("MaxTileCol", c1)):
            _sub(tl, _w(tag), str(value))


def _pinned(template: str, pin: dict[str, str] | None, ext: str) -> str:
    """A tile template with the version pin of its format (``images.pins``): tiles asked
    by it may be kept by a shared cache, and a change of data gives a new template."""
    if not pin or ext not in pin:
        return template
    return f"{template}{'&' if '?' in template else '?'}v={pin[ext]}"


def _layer(contents: ET.Element, request: Request, layer: Layer,
           pin: dict[str, str] | None = None) -> None:
    b = base(request)
    el = _sub(contents, _w("Layer"))
    _sub(el, _o("Title"), layer.title)
    if layer.description:
        _sub(el, _o("Abstract"), layer.description)
    if layer.extent:
        box = _sub(el, _o("WGS84BoundingBox"))
        _sub(box, _o("LowerCorner"), f"{layer.extent[0]} {layer.extent[1]}")
        _sub(box, _o("UpperCorner"), f"{layer.extent[2]} {layer.extent[3]}")
    _sub(el, _o("Identifier"), layer.id)
    style = _sub(el, _w("Style"), isDefault="true")
    _sub(style, _o("Identifier"), "default")
    if layer.kind == "raster":
        formats, grids = list(RASTER_FORMATS), GRIDS
    else:  # vector tiles, and images drawn in the layer's style in both grids
        formats, grids = [MVT, *RASTER_FORMATS], IMAGE_GRIDS
    for f in formats:
        _sub(el, _w("Format"), f)
    times = (layer.raster or {}).get("times", []) if layer.kind == "raster" else []
    if times:
        dim = _sub(el, _w("Dimension"))
        _sub(dim, _o("Identifier"), "Time")
        _sub(dim, _o("UOM"), "ISO8601")
        # UTC with Z: a "+00:00" would turn into a space in a query string.
        stamps = sorted((_utc(t) for t in times), reverse=True)
        _sub(dim, _w("Default"), stamps[0])
        for t in stamps:
            _sub(dim, _w("Value"), t)
    for g in grids:
        link = _sub(el, _w("TileMatrixSetLink"))
        _sub(link, _w("TileMatrixSet"), g)
        _limits(link, layer, g)
    for f in formats:
        ext = RASTER_FORMATS.get(f, "mvt")
        template = (f"{b}/tiles/{layer.id}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileCol}}/"
                    f"{{TileRow}}.{ext}" + ("?datetime={Time}" if times else ""))
        _sub(el, _w("ResourceURL"), format=f, resourceType="tile",
             template=_pinned(template, pin, ext))


def _basemap(contents: ET.Element, request: Request, bm, extent,
             pin: dict[str, str] | None = None) -> None:
    """A base map as a layer (``basemap:emap``): images in both grids, as Tianditu's
    ``vec``/``img``/``cva`` services in ``_w`` and ``_c``."""
    b = base(request)
    el = _sub(contents, _w("Layer"))
    _sub(el, _o("Title"), bm.title)
    if extent:
        box = _sub(el, _o("WGS84BoundingBox"))
        _sub(box, _o("LowerCorner"), f"{extent[0]} {extent[1]}")
        _sub(box, _o("UpperCorner"), f"{extent[2]} {extent[3]}")
    _sub(el, _o("Identifier"), BASEMAP + bm.id)
    style = _sub(el, _w("Style"), isDefault="true")
    _sub(style, _o("Identifier"), "default")
    for f in RASTER_FORMATS:
        _sub(el, _w("Format"), f)
    for g in IMAGE_GRIDS:
        link = _sub(el, _w("TileMatrixSetLink"))
        _sub(link, _w("TileMatrixSet"), g)
    for f, ext in RASTER_FORMATS.items():
        _sub(el, _w("ResourceURL"), format=f, resourceType="tile", template=_pinned(
            f"{b}/basemaps/{bm.id}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileCol}}/"
            f"{{TileRow}}.{ext}", pin, ext))


def _utc(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matrix_set(contents: ET.Element, name: str) -> None:
    tms = grid(name)
    assert tms is not None
    el = _sub(contents, _w("TileMatrixSet"))
    _sub(el, _o("Title"), tms.title or name)
    _sub(el, _o("Identifier"), name)
    _sub(el, _o("SupportedCRS"), CRS_URN[name])
    if name in WELL_KNOWN:
        _sub(el, _w("WellKnownScaleSet"), WELL_KNOWN[name])
    for z in range(0, MAX_LISTED_ZOOM + 1):
        m = tms.matrix(z)
        tm = _sub(el, _w("TileMatrix"))
        _sub(tm, _o("Identifier"), str(z))
        _sub(tm, _w("ScaleDenominator"), repr(m.scaleDenominator))
        # The corner in the CRS's own axis order: lat, lon for EPSG:4490.
        _sub(tm, _w("TopLeftCorner"), " ".join(repr(float(v)) for v in m.pointOfOrigin))
        _sub(tm, _w("TileWidth"), str(m.tileWidth))
        _sub(tm, _w("TileHeight"), str(m.tileHeight))
        w, h = matrix_size(tms, z)
        _sub(tm, _w("MatrixWidth"), str(w))
        _sub(tm, _w("MatrixHeight"), str(h))


def _operations(root: ET.Element, request: Request) -> None:
    ops = _sub(root, _o("OperationsMetadata"))
    for name in ("GetCapabilities", "GetTile"):
        op = _sub(ops, _o("Operation"), name=name)
        get = _sub(_sub(_sub(op, _o("DCP")), _o("HTTP")), _o("Get"),
                   **{f"{{{XLINK_NS}}}href": f"{base(request)}/wmts?"})
        constraint = _sub(get, _o("Constraint"), name="GetEncoding")
        allowed = _sub(constraint, _o("AllowedValues"))
        _sub(allowed, _o("Value"), "KVP")


async def capabilities(request: Request) -> Response:
    async with db(request, "tiles") as conn:
        layers = [await seen(conn, ly, a.restriction)
                  for ly, a in access(request).readable(await fetch_layers(conn))]
        every = await basemaps.fetch_all(conn)
        ids = {ly.id: ly for ly in layers}
        maps = [(bm, union([ids[i].extent for i in bm.layers])) for bm in every
                if all(i in ids for i in bm.layers)]
        pinned = await pins(request, conn, [ly.id for ly in layers if ly.kind == "vector"]
                            + [BASEMAP + bm.id for bm, _ in maps])
    note(request, [ly.id for ly in layers])
    root = ET.Element(_w("Capabilities"), {
        "version": "1.0.0",
        f"{{{XSI_NS}}}schemaLocation":
            f"{WMTS_NS} http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd"})
    ident = _sub(root, _o("ServiceIdentification"))
    _sub(ident, _o("Title"), "OneMap")
    _sub(ident, _o("Abstract"), "The city's one map: imagery, elevation and vector layers.")
    _sub(ident, _o("ServiceType"), "OGC WMTS")
    _sub(ident, _o("ServiceTypeVersion"), "1.0.0")
    _operations(root, request)
    contents = _sub(root, _w("Contents"))
    for layer in layers:
        if layer.kind in ("raster", "vector"):
            _layer(contents, request, layer, pinned.get(layer.id))
    for bm, extent in maps:
        _basemap(contents, request, bm, extent, pinned.get(BASEMAP + bm.id))
    for name in GRIDS:
        _matrix_set(contents, name)
    # ElementTree's prefixes are global and WMS has another default namespace: each
    # document names its own just before it is written (in one step of the event loop).
    ET.register_namespace("", WMTS_NS)
    body = ET.tostring(root, xml_declaration=True, encoding="utf-8")
    return Response(body, media_type=XML, headers={"Cache-Control": "private, no-cache"})


@functools.cache
def blank(fmt: str) -> bytes:
    """An empty tile as an image: transparent (white for JPEG, which has no alpha)."""
    size = 256
    if fmt == "jpg":
        return render(np.full((3, size, size), 255, np.uint8), img_format="JPEG")
    return render(np.zeros((1, size, size), np.uint8), mask=np.zeros((size, size), np.uint8),
                  img_format=fmt.upper())


# An address part out of range, as the parameter that named it.
_AXIS = {"zoom": "tilematrix", "column": "tilecol", "row": "tilerow"}
STYLES = ("default",)


async def kvp(request: Request) -> Response:
    q = {k.lower(): v for k, v in request.query_params.items()}
    if q.get("service", "").upper() != "WMTS":
        return exception_report(400, "MissingParameterValue" if "service" not in q
                                 else "InvalidParameterValue", "SERVICE must be WMTS", "service")
    op = q.get("request", "")
    if op.lower() == "getcapabilities":
        return await capabilities(request)
    if op.lower() != "gettile":
        return exception_report(501, "OperationNotSupported",
                                f"REQUEST {op!r} is not GetCapabilities or GetTile", "request")
    if q.get("version", "1.0.0") != "1.0.0":
        return exception_report(400, "InvalidParameterValue",
                                f"VERSION {q['version']!r}: this service is WMTS 1.0.0",
                                "version")
    for name in ("layer", "tilematrixset", "tilematrix", "tilerow", "tilecol", "format"):
        if not q.get(name):
            return exception_report(400, "MissingParameterValue", f"{name.upper()} is missing",
                                    name)
    # Every layer has the one style its capabilities list; a client may leave it out.
    if q.get("style", "default") not in STYLES and q.get("style") != "":
        return exception_report(400, "InvalidParameterValue",
                                f"STYLE {q['style']!r} is not one of {', '.join(STYLES)}",
                                "style")
    fmt = q["format"]
    try:
        if fmt == MVT:
            if q["tilematrixset"] not in IMAGE_GRIDS:
                return exception_report(400, "InvalidParameterValue", "vector tiles are "
                                        f"made in {' and '.join(IMAGE_GRIDS)}",
                                        "tilematrixset")
            return await vector_tile(request, q["layer"], q["tilematrix"], q["tilecol"],
                                     q["tilerow"], tms=q["tilematrixset"])
        if fmt not in RASTER_FORMATS:
            return exception_report(400, "InvalidParameterValue",
                                    f"FORMAT {fmt!r} is not one of "
                                    + ", ".join([*RASTER_FORMATS, MVT]), "format")
        params = QueryParams({"datetime": q["time"]} if q.get("time") else {})
        # A raster layer's own tile, or a vector layer or base map drawn as an image.
        answer = await map_tile(request, [q["layer"]], q["tilematrixset"], q["tilematrix"],
                                q["tilecol"], q["tilerow"], RASTER_FORMATS[fmt], params)
        if answer.status_code == 204:  # nothing there: an empty image, as clients expect
            return Response(blank(RASTER_FORMATS[fmt]), media_type=fmt,
                            headers={k: v for k, v in answer.headers.items()
                                     if k.lower() in ("etag", "cache-control", "vary")})
        return answer
    except OutOfRange as exc:
        return exception_report(400, "TileOutOfRange", str(exc), _AXIS.get(exc.axis))
    except (HTTPException, DomainError) as exc:
        # WMTS reports a missing (or unreadable) layer and a bad parameter as 400.
        status = status_of(exc)
        if status not in (400, 404):
            raise
        return exception_report(400, "InvalidParameterValue",
                                str(exc.detail if isinstance(exc, HTTPException) else exc),
                                "layer" if status == 404 else None)


routes = [
    Route("/wmts", kvp),
    Route("/wmts/1.0.0/WMTSCapabilities.xml", capabilities),
]

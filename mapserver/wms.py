"""WMS 1.3.0 (and 1.1.1 requests) at ``/wms``: GetCapabilities, GetMap, GetFeatureInfo and
GetLegendGraphic, for QGIS, ArcGIS, GDAL, OWSLib and every client of the protocol.

Layers are the catalog's, vector and raster, and the base maps (``basemap:emap``), listed by
department for the caller only; images are drawn by ``mapserver/images.py`` in each layer's
style; features under a pixel come from the features path (``layers/features.py``) with the
caller's limits. Errors are ServiceExceptionReport XML (1.3.0's schema), or drawn into the
image with ``EXCEPTIONS=INIMAGE``, or a blank image with ``BLANK``.
"""

from __future__ import annotations

import html
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from typing import Any

import anyio
import numpy as np
import pyproj
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from layers import features
from layers.catalog import Layer, fetch_layers
from layers.errors import DomainError, NotFound
from layers.features import GAUSS_KRUGER, ItemsQuery
from layers.restrict import filterable
from layers.summary import seen
from mapimages.draw import LONLAT, View, over
from mapimages.legend import legend_xml, message_xml
from mapserver import images
from mapserver.deps import access, app_state, db, note
from mapserver.errors import status_of
from mapserver.images import BASEMAP, Part
from mapserver.ogc import base, carry_key, union
from mapserver.tileresponse import cache_scope
from styles import basemaps, store
from styles.build import style_layers
from styles.legend import legend

WMS_NS = "http://www.opengis.net/wms"
OGC_NS = "http://www.opengis.net/ogc"  # WMS 1.3.0's exception reports
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XML = "text/xml"
FORMATS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
INFO_FORMATS = ("application/json", "application/geo+json", "text/html", "text/plain")
# CRS code -> (SRID, whether its first axis is northing in WMS 1.3.0)
CRSS: dict[str, tuple[int, bool]] = {
    "CRS:84": (4326, False), "EPSG:4326": (4326, True), "EPSG:4490": (4490, True),
    "EPSG:3857": (3857, False), "EPSG:900913": (3857, False),
    **{f"EPSG:{c}": (c, True) for c in GAUSS_KRUGER},
}
LISTED_CRS = [c for c in CRSS if c != "EPSG:900913"]
MERCATOR_LAT = 85.0511
ET.register_namespace("ogc", OGC_NS)
ET.register_namespace("xlink", XLINK_NS)
ET.register_namespace("xsi", XSI_NS)
INFO_TOLERANCE = 4  # pixels around the queried one


class WmsError(Exception):
    def __init__(self, code: str | None, text: str, status: int = 400,
                 locator: str | None = None) -> None:
        super().__init__(text)
        self.code, self.text, self.status, self.locator = code, text, status, locator


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{WMS_NS}}}{tag}", attrs)
    if text is not None:
        el.text = text
    return el


def _href(parent: ET.Element, tag: str, url: str) -> ET.Element:
    return _sub(parent, tag, **{f"{{{XLINK_NS}}}type": "simple",
                                f"{{{XLINK_NS}}}href": url})


def _xml(root: ET.Element) -> bytes:
    # ElementTree's prefixes are global and WMTS has another default namespace: each
    # document names its own just before it is written (in one step of the event loop).
    ET.register_namespace("", WMS_NS)
    return ET.tostring(root, xml_declaration=True, encoding="utf-8")


def exception_report(exc: WmsError) -> Response:
    root = ET.Element(f"{{{OGC_NS}}}ServiceExceptionReport", {
        "version": "1.3.0", f"{{{XSI_NS}}}schemaLocation":
            f"{OGC_NS} http://schemas.opengis.net/wms/1.3.0/exceptions_1_3_0.xsd"})
    attrs = {k: v for k, v in (("code", exc.code), ("locator", exc.locator)) if v}
    ET.SubElement(root, f"{{{OGC_NS}}}ServiceException", attrs).text = exc.text
    return Response(_xml(root), status_code=exc.status, media_type=XML)


@dataclass
class Params:
    """The request's parameters, names in any case (as WMS says)."""

    raw: dict[str, str]

    @classmethod
    def of(cls, request: Request) -> Params:
        return cls({k.upper(): v for k, v in request.query_params.items()})

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.raw.get(name, default)

    def need(self, name: str) -> str:
        value = self.raw.get(name)
        if value is None or value == "":
            raise WmsError("MissingParameterValue", f"parameter {name} is missing",
                           locator=name)
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        raw = self.need(name)
        try:
            value = int(raw)
        except ValueError:
            raise WmsError("InvalidParameterValue", f"{name} {raw[:40]!r} is not an integer",
                           locator=name) from None
        if not low <= value <= high:
            raise WmsError("InvalidParameterValue",
                           f"{name} {value} is outside {low}..{high}", locator=name)
        return value


async def wms(request: Request) -> Response:
    p = Params.of(request)
    try:
        service = p.get("SERVICE", "WMS")
        if service.upper() != "WMS":
            raise WmsError("InvalidParameterValue", f"SERVICE {service[:40]!r}: this is WMS",
                           locator="SERVICE")
        req = p.need("REQUEST").lower()
        handler = {"getcapabilities": capabilities, "getmap": get_map,
                   "getfeatureinfo": feature_info, "getlegendgraphic": legend_graphic
                   }.get(req)
        if handler is None:
            raise WmsError("OperationNotSupported", f"REQUEST {p.get('REQUEST')[:40]!r} is not "
                           "one of GetCapabilities, GetMap, GetFeatureInfo, GetLegendGraphic",
                           locator="REQUEST")
        return await handler(request, p)
    except WmsError as exc:
        return await _refuse(request, p, exc)
    except DomainError as exc:
        code = "LayerNotDefined" if isinstance(exc, NotFound) else None
        return await _refuse(request, p, WmsError(code, str(exc), status_of(exc) or 400))
    except HTTPException as exc:
        if exc.status_code >= 500:
            raise
        # What the shared readers refuse: a time without a slice, a bad raster parameter.
        time = "TIME" in p.raw and "time slice" in str(exc.detail)
        return await _refuse(request, p, WmsError(
            "InvalidDimensionValue" if time else "InvalidParameterValue", str(exc.detail),
            400, "TIME" if time else None))


async def _refuse(request: Request, p: Params, exc: WmsError) -> Response:
    how = (p.get("EXCEPTIONS") or "XML").upper().rsplit("_", 1)[-1]
    req = (p.get("REQUEST") or "").lower()
    fmt = FORMATS.get((p.get("FORMAT") or "").split(";")[0].strip())
    if req == "getmap" and how in ("INIMAGE", "BLANK") and fmt is not None:
        try:
            width = max(1, min(int(p.get("WIDTH", "256")), app_state(request).settings
                               .wms_max_width))
            height = max(1, min(int(p.get("HEIGHT", "256")), app_state(request).settings
                                .wms_max_height))
        except ValueError:
            return exception_report(exc)
        canvas = np.zeros((height, width, 4), np.uint8)
        if fmt == "jpg" or (p.get("TRANSPARENT") or "").upper() != "TRUE":
            canvas[...] = 255
        if how == "INIMAGE":
            canvas = await _error_image(request, canvas, exc.text)
        return Response(images.encode_rgba(canvas, fmt), media_type=_media(fmt),
                        headers={"Cache-Control": "no-store"})
    return exception_report(exc)


async def _error_image(request: Request, canvas: np.ndarray, text: str) -> np.ndarray:
    h, w = canvas.shape[:2]
    drawn = await app_state(request).images.draw_xml(message_xml(text, w, h), (0, 0, w, h),
                                                     w, h)
    return over(canvas, drawn)


def _media(fmt: str) -> str:
    return {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}[fmt]


# ---- GetCapabilities ------------------------------------------------------------------


def _bbox(parent: ET.Element, crs: str, extent: tuple[float, float, float, float]) -> None:
    srid, north_first = CRSS[crs]
    x0, y0, x1, y1 = extent
    if srid == 3857:
        y0, y1 = max(y0, -MERCATOR_LAT), min(y1, MERCATOR_LAT)
    if srid not in LONLAT:
        t = _to(srid)
        x0, y0, x1, y1 = t.transform_bounds(x0, y0, x1, y1, densify_pts=21)
    if north_first and crs != "CRS:84":
        x0, y0, x1, y1 = y0, x0, y1, x1
    digits = 8 if srid in LONLAT else 2
    _sub(parent, "BoundingBox", CRS=crs, minx=f"{x0:.{digits}f}", miny=f"{y0:.{digits}f}",
         maxx=f"{x1:.{digits}f}", maxy=f"{y1:.{digits}f}")


_TRANSFORMERS: dict[tuple[int, int], pyproj.Transformer] = {}


def _to(srid: int, source: int = 4326) -> pyproj.Transformer:
    key = (source, srid)
    if key not in _TRANSFORMERS:
        _TRANSFORMERS[key] = pyproj.Transformer.from_crs(
            4490 if srid in GAUSS_KRUGER and source == 4326 else source, srid, always_xy=True)
    return _TRANSFORMERS[key]


def gauss_kruger_zone(lon: float) -> int | None:
    """The CGCS2000 3-degree Gauss-Kruger CRS (by central meridian) a longitude lies in."""
    cm = round(lon / 3) * 3
    return 4534 + (cm - 75) // 3 if 75 <= cm <= 135 else None


def _geographic(parent: ET.Element, e: tuple[float, float, float, float]) -> None:
    g = _sub(parent, "EX_GeographicBoundingBox")
    for tag, v in (("westBoundLongitude", e[0]), ("eastBoundLongitude", e[2]),
                   ("southBoundLatitude", e[1]), ("northBoundLatitude", e[3])):
        _sub(g, tag, f"{v:.8f}")


def _extent_crss(e: tuple[float, float, float, float]) -> list[str]:
    zone = gauss_kruger_zone((e[0] + e[2]) / 2)
    return ["CRS:84", "EPSG:4326", "EPSG:4490", "EPSG:3857",
            *([f"EPSG:{zone}"] if zone else [])]


def _boxes(parent: ET.Element, extent: tuple[float, float, float, float] | None) -> None:
    """A layer's geographic box and its boxes in the CRSs it is offered in."""
    if extent:
        _geographic(parent, extent)
        for crs in _extent_crss(extent):
            _bbox(parent, crs, extent)


def _legend_url(request: Request, name: str) -> str:
    return carry_key(request, f"{base(request)}/wms?SERVICE=WMS&VERSION=1.3.0"
                              f"&REQUEST=GetLegendGraphic&FORMAT=image/png&LAYER={name}")


def _style(parent: ET.Element, request: Request, name: str) -> None:
    st = _sub(parent, "Style")
    _sub(st, "Name", "default")
    _sub(st, "Title", "As the map draws it")
    legend_el = _sub(st, "LegendURL", width="200", height="120")
    _sub(legend_el, "Format", "image/png")
    _href(legend_el, "OnlineResource", _legend_url(request, name))


def _layer(parent: ET.Element, request: Request, layer: Layer, times: list[str]) -> None:
    el = _sub(parent, "Layer", queryable="1" if layer.kind == "vector" else "0",
              opaque="1" if layer.kind == "raster" else "0")
    _sub(el, "Name", layer.id)
    _sub(el, "Title", layer.title)
    if layer.description:
        _sub(el, "Abstract", layer.description)
    if layer.keywords:
        kw = _sub(el, "KeywordList")
        for k in layer.keywords:
            _sub(kw, "Keyword", k)
    _boxes(el, layer.extent)
    if times:
        _sub(el, "Dimension", ",".join(times), name="time", units="ISO8601",
             default=times[0], nearestValue="1")
    if layer.attribution:
        attr = _sub(el, "Attribution")
        _sub(attr, "Title", layer.attribution)
    _style(el, request, layer.id)


async def capabilities(request: Request, p: Params) -> Response:
    state = app_state(request)
    async with db(request, "tiles") as conn:
        readable = access(request).readable(await fetch_layers(conn))
        shown = [(await seen(conn, ly, a.restriction), a) for ly, a in readable
                 if ly.kind in ("vector", "raster")]
        times = {}
        for ly, _ in shown:
            if ly.kind == "raster":
                src = await state.rasters.source(conn, ly)
                times[ly.id] = [t.isoformat().replace("+00:00", "Z") for t in src.times]
        every = await basemaps.fetch_all(conn)
    note(request, [ly.id for ly, _ in shown])
    ids = {ly.id: ly for ly, _ in shown}
    maps = [bm for bm in every if all(i in ids for i in bm.layers)]
    here = carry_key(request, f"{base(request)}/wms?")
    settings = state.settings
    root = ET.Element(f"{{{WMS_NS}}}WMS_Capabilities", {
        "version": "1.3.0", f"{{{XSI_NS}}}schemaLocation":
            f"{WMS_NS} http://schemas.opengis.net/wms/1.3.0/capabilities_1_3_0.xsd"})
    service = _sub(root, "Service")
    _sub(service, "Name", "WMS")
    _sub(service, "Title", "OneMap")
    _sub(service, "Abstract", "The city's one map: base maps, imagery and every department's "
                              "layers, drawn in their styles.")
    _href(service, "OnlineResource", f"{base(request)}/")
    _sub(service, "Fees", "none")
    _sub(service, "AccessConstraints", "Data are classified and served by grant.")
    _sub(service, "LayerLimit", str(settings.max_tile_layers))
    _sub(service, "MaxWidth", str(settings.wms_max_width))
    _sub(service, "MaxHeight", str(settings.wms_max_height))
    cap = _sub(root, "Capability")
    req = _sub(cap, "Request")
    for op, formats in (("GetCapabilities", [XML]), ("GetMap", list(FORMATS)),
                        ("GetFeatureInfo", list(INFO_FORMATS))):
        el = _sub(req, op)
        for f in formats:
            _sub(el, "Format", f)
        http = _sub(_sub(el, "DCPType"), "HTTP")
        _href(_sub(http, "Get"), "OnlineResource", here)
    exc = _sub(cap, "Exception")
    for f in ("XML", "INIMAGE", "BLANK"):
        _sub(exc, "Format", f)
    top = _sub(cap, "Layer")
    _sub(top, "Title", "OneMap")
    for crs in LISTED_CRS:
        _sub(top, "CRS", crs)
    _boxes(top, union([ly.extent for ly, _ in shown]))
    if maps:
        group = _sub(top, "Layer")
        _sub(group, "Title", "Base maps")
        for bm in maps:
            el = _sub(group, "Layer", queryable="0", opaque="1")
            _sub(el, "Name", BASEMAP + bm.id)
            _sub(el, "Title", bm.title)
            _boxes(el, union([ids[i].extent for i in bm.layers]))
            _style(el, request, BASEMAP + bm.id)
    by_department: dict[str, list[Layer]] = {}
    for ly, _ in shown:
        by_department.setdefault(ly.department_name or ly.department or "City", []).append(ly)
    for department in sorted(by_department):
        group = _sub(top, "Layer")
        _sub(group, "Title", department)
        for ly in sorted(by_department[department], key=lambda x: x.title):
            _layer(group, request, ly, times.get(ly.id, []))
    return Response(_xml(root), media_type=XML,
                    headers={"Cache-Control": f"{cache_scope(request)}, no-cache"})


# ---- GetMap -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MapAsk:
    names: list[str]
    view: View
    fmt: str
    transparent: bool
    bgcolor: str
    time: str | None


def _crs(p: Params) -> tuple[str, int, bool]:
    v13 = (p.get("VERSION") or "1.3.0") != "1.1.1"
    key = "CRS" if v13 else "SRS"
    raw = p.get(key) or p.get("SRS" if v13 else "CRS")
    if not raw:
        raise WmsError("MissingParameterValue", f"parameter {key} is missing", locator=key)
    crs = raw.upper()
    if crs not in CRSS:
        raise WmsError("InvalidCRS" if v13 else "InvalidSRS",
                       f"{key} {raw[:40]!r} is not offered; use CRS:84, EPSG:4326, EPSG:4490, "
                       "EPSG:3857 or a CGCS2000 Gauss-Kruger zone (EPSG:4491 to EPSG:4554)",
                       locator=key)
    srid, north_first = CRSS[crs]
    return crs, srid, north_first and v13


def _view(request: Request, p: Params) -> View:
    settings = app_state(request).settings
    crs, srid, swap = _crs(p)
    raw = p.need("BBOX")
    try:
        nums = [float(v) for v in raw.split(",")]
    except ValueError:
        nums = []
    if len(nums) != 4 or not all(math.isfinite(v) for v in nums):
        raise WmsError("InvalidParameterValue", f"BBOX {raw[:80]!r} is not four numbers",
                       locator="BBOX")
    x0, y0, x1, y1 = (nums[1], nums[0], nums[3], nums[2]) if swap else tuple(nums)
    if not (x0 < x1 and y0 < y1):
        raise WmsError("InvalidParameterValue", f"BBOX {raw[:80]!r} has no area (in {crs}, "
                       f"{'northing' if swap else 'easting'} first)", locator="BBOX")
    width = p.integer("WIDTH", 1, settings.wms_max_width)
    height = p.integer("HEIGHT", 1, settings.wms_max_height)
    if srid in LONLAT:
        lat = (y0 + y1) / 2
    elif srid == 3857:
        lat = math.degrees(math.atan(math.sinh((y0 + y1) / 2 / 6378137)))
    else:
        lat = _to(4490, srid).transform((x0 + x1) / 2, (y0 + y1) / 2)[1]
    return View(srid, (x0, y0, x1, y1), width, height, lat if math.isfinite(lat) else 0.0)


def _names(request: Request, p: Params, key: str) -> list[str]:
    names = [n for n in p.need(key).split(",") if n]
    most = app_state(request).settings.max_tile_layers
    if not names:
        raise WmsError("MissingParameterValue", f"parameter {key} is missing", locator=key)
    if len(names) > most:
        raise WmsError("InvalidParameterValue", f"{key} names {len(names)} layers; at most "
                       f"{most}", locator=key)
    return names


def _map_ask(request: Request, p: Params) -> MapAsk:
    names = _names(request, p, "LAYERS")
    styles_raw = p.get("STYLES")
    if styles_raw is None:
        raise WmsError("MissingParameterValue", "parameter STYLES is missing (empty is the "
                       "default style)", locator="STYLES")
    for s in styles_raw.split(","):
        if s not in ("", "default"):
            raise WmsError("StyleNotDefined", f"style {s[:40]!r} is not defined; each layer "
                           "has its style 'default' (or empty)", locator="STYLES")
    if styles_raw and len(styles_raw.split(",")) != len(names):
        raise WmsError("InvalidParameterValue", "STYLES names a style per layer in LAYERS",
                       locator="STYLES")
    view = _view(request, p)
    raw_fmt = p.need("FORMAT")
    fmt = FORMATS.get(raw_fmt.split(";")[0].strip().lower())
    if fmt is None:
        raise WmsError("InvalidFormat", f"FORMAT {raw_fmt[:40]!r} is not offered; use "
                       + ", ".join(FORMATS), locator="FORMAT")
    transparent = (p.get("TRANSPARENT") or "FALSE").upper() == "TRUE" and fmt != "jpg"
    bg = p.get("BGCOLOR") or "0xFFFFFF"
    if len(bg.removeprefix("0x").removeprefix("0X")) != 6 or not all(
            c in "0123456789abcdefABCDEF" for c in bg.removeprefix("0x").removeprefix("0X")):
        raise WmsError("InvalidParameterValue", f"BGCOLOR {bg[:20]!r} is not 0xRRGGBB",
                       locator="BGCOLOR")
    return MapAsk(names, view, fmt, transparent, bg, p.get("TIME"))


async def _parts(request: Request, conn, names: list[str], time: str | None) -> list[Part]:
    try:
        # A raster layer's rendering parameters ride along as in its tiles (rescale, ...).
        return await images.parts(request, conn, names, time, request.query_params)
    except NotFound as exc:
        raise WmsError("LayerNotDefined", str(exc), 404, locator="LAYERS") from None


async def get_map(request: Request, p: Params) -> Response:
    ask = _map_ask(request, p)
    async with db(request, "tiles") as conn:
        found = await _parts(request, conn, ask.names, ask.time)
        note(request, sorted({ly.id for part in found for ly, _ in part.layers}),
             wms="GetMap")
        body = await images.render(request, conn, found, ask.view, ask.transparent,
                                   ask.bgcolor, ask.fmt)
    return Response(body, media_type=_media(ask.fmt),
                    headers={"Cache-Control": f"{cache_scope(request)}, max-age=60"})


# ---- GetFeatureInfo ---------------------------------------------------------------------


async def feature_info(request: Request, p: Params) -> Response:
    ask = _map_ask(request, p)
    v13 = (p.get("VERSION") or "1.3.0") != "1.1.1"
    queried = _names(request, p, "QUERY_LAYERS")
    for q in queried:
        if q not in ask.names:
            raise WmsError("LayerNotQueryable", f"QUERY_LAYERS names {q[:60]!r}, which is "
                           "not in LAYERS", locator="QUERY_LAYERS")
    view = ask.view
    i = p.integer("I" if v13 else "X", 0, view.width - 1)
    j = p.integer("J" if v13 else "Y", 0, view.height - 1)
    fmt = (p.get("INFO_FORMAT") or "application/json").split(";")[0].strip()
    if fmt not in INFO_FORMATS:
        raise WmsError("InvalidFormat", f"INFO_FORMAT {fmt[:40]!r} is not offered; use "
                       + ", ".join(INFO_FORMATS), locator="INFO_FORMAT")
    count = p.integer("FEATURE_COUNT", 1, 50) if p.get("FEATURE_COUNT") else 1
    x0, y0, x1, y1 = view.bbox
    px, py = (x1 - x0) / view.width, (y1 - y0) / view.height
    cx, cy = x0 + (i + 0.5) * px, y1 - (j + 0.5) * py
    tol = INFO_TOLERANCE
    box = (cx - tol * px, cy - tol * py, cx + tol * px, cy + tol * py)
    crs = features.SUPPORTED_CRS[f"http://www.opengis.net/def/crs/EPSG/0/{view.srid}"] \
        if view.srid != 4326 else features.CRS84
    results: list[tuple[Layer, list[dict[str, Any]]]] = []
    async with db(request, "items") as conn:
        found = await _parts(request, conn, queried, ask.time)
        for part in found:
            if not part.vector or part.name.startswith(BASEMAP):
                raise WmsError("LayerNotQueryable", f"layer {part.name!r} is not queryable",
                               locator="QUERY_LAYERS")
            layer, a = part.layers[0]
            q = ItemsQuery(limit=count, bbox=box, bbox_crs=_unswapped(crs), crs=features.CRS84,
                           restriction=a.restriction)
            page = await features.items(conn, layer, q)
            results.append((layer, [json.loads(f) for f in page.rows]))
        note(request, [ly.id for ly, _ in results], wms="GetFeatureInfo",
             features=sum(len(f) for _, f in results))
    return _info_response(results, fmt)


def _unswapped(crs: features.Crs) -> features.Crs:
    """The CRS with easting first: the box is made in the image's own order."""
    return replace(crs, lat_first=False)


def _info_response(results: list[tuple[Layer, list[dict[str, Any]]]], fmt: str) -> Response:
    if fmt in ("application/json", "application/geo+json"):
        doc = {"type": "FeatureCollection", "features": [
            {**f, "layer": layer.id} for layer, fs in results for f in fs]}
        return Response(json.dumps(doc, ensure_ascii=False, default=str),
                        media_type="application/geo+json" if fmt != "application/json"
                        else "application/json")
    if fmt == "text/plain":
        lines = []
        for layer, fs in results:
            lines.append(f"Layer '{layer.id}' ({layer.title})")
            if not fs:
                lines.append("  no feature here")
            for f in fs:
                lines.append(f"  Feature {f.get('id')}:")
                lines += [f"    {k} = {v}" for k, v in (f.get("properties") or {}).items()]
        return Response("\n".join(lines) + "\n", media_type="text/plain; charset=utf-8")
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Features</title>"
             "<style>body{font:13px sans-serif}table{border-collapse:collapse;margin:6px 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"]
    for layer, fs in results:
        titles = {f.name: f.title or f.name for f in layer.fields}
        parts.append(f"<h3>{html.escape(layer.title)}</h3>")
        if not fs:
            parts.append("<p>No feature here.</p>")
        for f in fs:
            rows = "".join(f"<tr><th>{html.escape(titles.get(k, k))}</th>"
                           f"<td>{html.escape(str(v))}</td></tr>"
                           for k, v in (f.get("properties") or {}).items())
            parts.append(f"<table><caption>{html.escape(str(f.get('id')))}</caption>"
                         f"{rows}</table>")
    parts.append("</body></html>")
    return Response("".join(parts), media_type="text/html; charset=utf-8")


# ---- GetLegendGraphic -------------------------------------------------------------------


async def legend_graphic(request: Request, p: Params) -> Response:
    name = p.need("LAYER")
    raw_fmt = p.get("FORMAT") or "image/png"
    fmt = FORMATS.get(raw_fmt.split(";")[0].strip().lower())
    if fmt is None:
        raise WmsError("InvalidFormat", f"FORMAT {raw_fmt[:40]!r} is not offered; use "
                       + ", ".join(FORMATS), locator="FORMAT")
    style = p.get("STYLE") or ""
    if style not in ("", "default"):
        raise WmsError("StyleNotDefined", f"style {style[:40]!r} is not defined",
                       locator="STYLE")
    async with db(request, "tiles") as conn:
        found = (await _parts(request, conn, [name], None))[0]
        entries = []
        if found.vector and not name.startswith(BASEMAP):
            layer, a = found.layers[0]
            looks = await store.stored(conn, [layer.id])
            entries = legend(layer, style_layers(filterable(layer, a.restriction),
                                                 looks))["entries"]
    note(request, [ly.id for ly, _ in found.layers], wms="GetLegendGraphic")
    title = found.layers[0][0].title if len(found.layers) == 1 else name
    xml, width, height = legend_xml(title, entries)
    rgba = await app_state(request).images.draw_xml(xml, (0, 0, width, height), width, height)
    if fmt == "jpg":
        white = np.full_like(rgba, 255)
        rgba = over(white, rgba)
    body = await anyio.to_thread.run_sync(images.encode_rgba, rgba, fmt)
    return Response(body, media_type=_media(fmt),
                    headers={"Cache-Control": f"{cache_scope(request)}, max-age=60"})


routes = [Route("/wms", wms)]

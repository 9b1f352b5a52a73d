"""What every OGC API endpoint here shares: base URL, parameter parsing, paging links."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request

from layers import features
from layers.catalog import Layer
from layers.errors import Invalid
from mapserver.deps import access

GEOJSON = "application/geo+json"


def base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def carry_key(request: Request, url: str) -> str:
    """``url`` with the caller's embedding key, when it came in this request's URL: a map
    library given only a style or TileJSON URL then reaches every document and tile that
    URL leads to. Only an embedding key ever rides in a URL (an API key there is refused),
    and answers to a caller with a key are private, so no shared cache keeps one."""
    key = request.query_params.get("key")
    if key is None or not access(request).principal.embedded:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'key': key})}"


def layer_links(request: Request, layer: Layer) -> list[dict[str, str]]:
    """Every way a layer is served; shared by its collection and its catalog record. Tile
    templates are in its tilesets and its TileJSON, not here."""
    b = base(request)
    here = f"{b}/collections/{layer.id}"
    links = [
        {"rel": "items", "type": GEOJSON, "href": f"{here}/items",
         **({"title": "its scenes' footprints"} if layer.kind == "raster" else {})},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-" + (
            "map" if layer.kind == "raster" else "vector"), "type": "application/json",
         "href": f"{here}/tiles"},
        {"rel": "related", "type": "application/json", "title": "the layer in OneMap's catalog",
         "href": f"{b}/layers/{layer.id}"},
    ]
    if layer.kind == "raster":
        return [*links, {"rel": "tilejson", "type": "application/json",
                         "href": f"{b}/tiles/{layer.id}/WebMercatorQuad/tilejson.json"}]
    return [
        *links,
        {"rel": "describedby", "type": "application/schema+json", "title": "its features",
         "href": f"{here}/schema"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
         "type": "application/schema+json", "href": f"{here}/queryables"},
        {"rel": "tilejson", "type": "application/json",
         "href": f"{b}/tiles/{layer.id}/tilejson.json"},
        {"rel": "stylesheet", "type": "application/vnd.mapbox.style+json",
         "href": f"{b}/styles/{layer.id}/style.json"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-map",
         "type": "application/json", "title": "drawn in its style",
         "href": f"{here}/map/tiles"},
    ]


def union(extents: list) -> tuple[float, float, float, float] | None:
    """The box around lon/lat boxes (None ones left out); None for none."""
    found = [e for e in extents if e]
    if not found:
        return None
    return (min(e[0] for e in found), min(e[1] for e in found),
            max(e[2] for e in found), max(e[3] for e in found))


# The largest whole number a parameter may be: PostgreSQL's integer, so no value a client
# sends overflows a column or a LIMIT.
MAX_INT = 2 ** 31 - 1


def int_value(raw: str, name: str, low: int = 0, high: int = MAX_INT) -> int:
    """A whole number from a client, within low..high, or an Invalid naming it."""
    text = raw.strip()
    if not (text.isdigit() or text[:1] in "+-" and text[1:].isdigit()) or len(text) > 20:
        raise Invalid(f"{name} must be an integer, got {raw[:40]!r}")
    value = int(text)
    if value < low:
        raise Invalid(f"{name} must be at least {low}, got {value}")
    if value > high:
        raise Invalid(f"{name} must be at most {high}, got {value}")
    return value


def int_param(request: Request, name: str, default: int, low: int,
              high: int = MAX_INT) -> int:
    raw = request.query_params.get(name)
    return default if raw is None else int_value(raw, name, low, high)


def numbers(raw: str, name: str) -> list[float]:
    """Comma-separated finite numbers from a client (no NaN, no infinity)."""
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError as exc:
        raise Invalid(f"{name} {raw[:60]!r} is not a list of numbers") from exc
    if not all(math.isfinite(v) for v in values):
        raise Invalid(f"{name} {raw[:60]!r} holds numbers that are not finite numbers")
    return values


def number(raw: object, name: str) -> float:
    """One finite number, from a parameter's text or a JSON value."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise Invalid(f"{name} must be a number")
    values = numbers(str(raw), name)
    if len(values) != 1:
        raise Invalid(f"{name} must be one number, got {str(raw)[:60]!r}")
    return values[0]


def parse_bbox(raw: str | None,
               crs: features.Crs = features.CRS84) -> tuple[float, float, float, float] | None:
    if raw is None:
        return None
    values = numbers(raw, "bbox")
    if len(values) == 6:  # with heights, which 2D data ignores
        values = [values[0], values[1], values[3], values[4]]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise HTTPException(400, f"bbox {raw!r} needs 4 (or 6) finite numbers")
    x0, y0, x1, y1 = values
    lon, lat = ((y0, y1), (x0, x1)) if crs.lat_first else ((x0, x1), (y0, y1))
    # West above east is a box across the antimeridian (OGC API - Features, 7.15.3), in
    # longitude and latitude; south above north is never a box.
    if lat[0] > lat[1] or (lon[0] > lon[1] and crs.srid == 3857):
        raise HTTPException(400, f"bbox {raw!r} is not lower-left, upper-right")
    if crs.srid != 3857 and not (-180 <= min(lon) and max(lon) <= 180 and -90 <= lat[0]
                                 and lat[1] <= 90):
        raise HTTPException(400, f"bbox {raw!r} is outside -180..180 longitude, -90..90 "
                                 f"latitude (in {crs.uri} axis order)")
    return x0, y0, x1, y1


def refuse_unknown(request: Request, taken: Sequence[str], what: str,
                   also: Sequence[str] = (), more: str = "") -> None:
    """A 400 naming the first query parameter the endpoint does not take."""
    unknown = sorted(k for k in request.query_params if k not in taken and k not in also)
    if unknown:
        raise HTTPException(400, f"unknown parameter {unknown[0]!r}: {what} take "
                                 + ", ".join(taken) + more)


def parse_terms(request: Request, name: str, most: int = 100) -> tuple[str, ...] | None:
    """A comma-separated list (``q``, ``ids``, ``keywords``), at most ``most`` values."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    terms = tuple(v.strip() for v in raw.split(",") if v.strip())
    if len(terms) > most:
        raise HTTPException(400, f"{name} takes at most {most} values")
    return terms


def parse_sortby(raw: str | None, known: Sequence[str],
                 what: str) -> tuple[tuple[str, bool], ...]:
    """``sortby=name,-rank`` (OGC API - Records and Features sorting): each name, ascending
    (``+`` or nothing) or descending (``-``); at most 8 keys."""
    if raw is None:
        return ()
    out = []
    for part in raw.split(","):
        name = part.strip().lstrip("+")  # "+name" arrives as " name": a plus is a space
        desc = name.startswith("-")
        name = name.lstrip("-").strip()
        if name not in known:
            raise HTTPException(400, f"sortby {name!r} is not sortable; {what} sort by "
                                     + ", ".join(known))
        out.append((name, desc))
    if len(out) > 8:
        raise HTTPException(400, "sortby takes at most 8 keys")
    return tuple(out)


def parse_instant(raw: str, whole: str) -> datetime:
    try:
        t = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError as exc:
        raise HTTPException(400, f"datetime {whole!r} is not RFC 3339 (e.g. "
                                 "2024-05-01T08:00:00Z, or an interval a/b, ../b, a/..)") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_datetime(raw: str | None) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(instant, start, end) from an instant or an interval with open ends."""
    if raw is None:
        return None, None, None
    if "/" not in raw:
        return parse_instant(raw, raw), None, None
    a, _, b = raw.partition("/")
    start = None if a in ("", "..") else parse_instant(a, raw)
    end = None if b in ("", "..") else parse_instant(b, raw)
    if start and end and start > end:
        raise HTTPException(400, f"datetime {raw!r} ends before it starts")
    return None, start, end


def query_without_key(request: Request) -> dict[str, str]:
    """The request's parameters for links: an embedding key never goes back out."""
    return {k: v for k, v in request.query_params.items() if k != "key"}


def page_link(request: Request, rel: str, offset: int, limit: int,
              after: str | None = None) -> dict:
    """A link to another page of this query: at ``offset``, or continuing ``after`` a
    feature id."""
    params = query_without_key(request)
    params.pop("after", None)
    params.pop("offset", None)
    if after is not None:
        params["after"] = after
    elif offset:
        params["offset"] = str(offset)
    params["limit"] = str(limit)
    url = f"{base(request)}{request.url.path}?{urlencode(params)}"
    return {"rel": rel, "type": GEOJSON, "href": url}



"""What every tile route shares (vector, raster and 3D tiles): tile addresses, the token
that names a tile's bytes, ETags and ``304``, the cache scope and the tile response.

One module, so the routes do not import each other for it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from layers.errors import OutOfRange
from layers.grids import GRIDS, check_tile, grid, matrix_size
from layers.restrict import Restriction
from mapserver.deps import access, app_state

MAX_ZOOM = 24
# Changes whenever the way tiles are made changes, so cached tiles are never reused wrongly.
TILE_FORMAT = "1"


def parse_tile(z: str, x: str, y: str) -> tuple[int, int, int]:
    try:
        zi, xi, yi = int(z), int(x), int(y)
    except ValueError as exc:
        raise HTTPException(400, f"tile address {z}/{x}/{y} is not three integers") from exc
    if not 0 <= zi <= MAX_ZOOM:
        raise OutOfRange(f"zoom {zi} is outside 0..{MAX_ZOOM}")
    check_tile(zi, xi, yi, 1 << zi, 1 << zi)
    return zi, xi, yi


def version_token(versions: list[tuple[str, int, Restriction]], as_of: datetime | None,
                  grid: str = "WebMercatorQuad") -> str:
    """Names the bytes of a tile: the data versions read and the limits they were read
    under, so two principals with different limits never share a cached tile or ETag."""
    text = "|".join(f"{layer_id}:{version}:{r.token}" for layer_id, version, r in versions)
    text += f"|{as_of.isoformat() if as_of else ''}|{TILE_FORMAT}"
    if grid != "WebMercatorQuad":  # Web Mercator's tokens stay as they were
        text += f"|{grid}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def cache_scope(request: Request) -> str:
    """Responses for a signed-in caller are theirs alone: no shared cache may keep them."""
    return "public" if access(request).principal.anonymous else "private"


def cache_headers(request: Request, etag: str) -> dict[str, str]:
    pinned = request.query_params.get("v") == etag.strip('"')
    max_age = app_state(request).settings.tile_max_age
    scope = cache_scope(request)
    return {"ETag": etag, "Cache-Control": (f"{scope}, max-age={max_age}, immutable"
                                            if pinned else f"{scope}, no-cache")}


def not_modified(request: Request, etag: str) -> Response | None:
    """A 304 when the client's ``If-None-Match`` names this ETag."""
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=cache_headers(request, etag))
    return None


def tile_response(request: Request, etag: str, body: bytes, media: str, *,
                  report: str | None = None, cache: str | None = None) -> Response:
    """A tile with its ETag and cache headers, what it holds (``OneMap-Tile-Features``)
    and whether it came from the cache (``OneMap-Cache``)."""
    headers = cache_headers(request, etag)
    if report is not None:
        headers["OneMap-Tile-Features"] = report
    if cache:
        headers["OneMap-Cache"] = cache
    return Response(body, media_type=media, headers=headers)


def parse_cell(tms_name: str, z: str, x: str, y: str):
    """A cell of a named grid, checked against its matrix (a 404 for an unknown grid)."""
    tms = grid(tms_name)
    if tms is None:
        raise HTTPException(404, f"no tile matrix set {tms_name!r}; use one of "
                                 + ", ".join(GRIDS))
    try:
        zi, xi, yi = int(z), int(x), int(y)
    except ValueError as exc:
        raise HTTPException(400, f"tile address {z}/{x}/{y} is not three integers") from exc
    if not tms.minzoom <= zi <= tms.maxzoom:
        raise OutOfRange(f"zoom {zi} is outside {tms.minzoom}..{tms.maxzoom}")
    check_tile(zi, xi, yi, *matrix_size(tms, zi), f" in {tms_name}")
    return tms, zi, xi, yi

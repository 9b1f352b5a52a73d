"""Vector tile endpoints: MVT for one or several layers, and TileJSON 3.0."""

from __future__ import annotations

import hashlib
from datetime import datetime

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layers.catalog import LAYER_ID
from layers.registry import Resolved
from layers.tiles import params
from mapserver.deps import app_state
from mapserver.ogc import base, parse_instant

MVT = "application/vnd.mapbox-vector-tile"
MAX_ZOOM = 24
# Changes whenever the way tiles are made changes, so cached tiles are never reused wrongly.
TILE_FORMAT = "1"


def parse_ids(raw: str) -> list[str]:
    ids = raw.split(",")
    if not all(LAYER_ID.match(i) for i in ids) or len(ids) > 32:
        raise HTTPException(404, f"no layer set {raw!r}")
    return ids


def parse_tile(z: str, x: str, y: str) -> tuple[int, int, int]:
    try:
        zi, xi, yi = int(z), int(x), int(y)
    except ValueError as exc:
        raise HTTPException(400, f"tile address {z}/{x}/{y} is not three integers") from exc
    if not 0 <= zi <= MAX_ZOOM:
        raise HTTPException(400, f"zoom {zi} is outside 0..{MAX_ZOOM}")
    n = 1 << zi
    if not (0 <= xi < n and 0 <= yi < n):
        raise HTTPException(400, f"tile {zi}/{xi}/{yi} does not exist: x and y run 0..{n - 1}")
    return zi, xi, yi


def version_token(versions: list[tuple[str, int]], as_of: datetime | None) -> str:
    text = "|".join(f"{layer_id}:{version}" for layer_id, version in versions)
    text += f"|{as_of.isoformat() if as_of else ''}|{TILE_FORMAT}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def no_layers(ids: list[str]) -> HTTPException:
    return HTTPException(404, f"no layer set {','.join(ids)!r}")


async def resolve(request: Request, conn, ids: list[str]) -> list[Resolved]:
    resolved = await app_state(request).registry.resolve(conn, ids)
    if resolved is None:
        raise no_layers(ids)
    return resolved


async def tile(request: Request) -> Response:
    p = request.path_params
    if p["fmt"] not in ("mvt", "pbf"):
        raise HTTPException(404, f"no tile format {p['fmt']!r}; use .mvt")
    ids = parse_ids(p["layers"])
    z, x, y = parse_tile(p["z"], p["x"], p["y"])
    raw = request.query_params.get("as-of")
    as_of = parse_instant(raw, raw) if raw is not None else None
    state = app_state(request)
    inm = request.headers.get("if-none-match")
    async with state.pool.connection() as conn:
        sources = await state.registry.sources(conn, ids)
        if sources is None:
            raise no_layers(ids)
        # Generalized tiles are few and dear: worth a version check to serve them cached.
        cached = state.cache.enabled and z < min(s.detail_zoom for s in sources)
        if inm or cached:
            resolved = await resolve(request, conn, ids)
            token = version_token([(r.layer.id, r.version) for r in resolved], as_of)
            etag = f'"{token}"'
            if _matches(inm, etag):
                return Response(status_code=304, headers=_cache_headers(request, etag))
            hit = state.cache.get((token, z, x, y)) if cached else None
            if hit is not None:
                return _tile_response(request, etag, *hit, cache="hit")
        rows = await _render(conn, state.registry, ids, z, x, y, as_of)
    versions = [(layer_id, row[3]) for layer_id, row in zip(ids, rows, strict=True)]
    token = version_token(versions, as_of)
    body = b"".join(bytes(row[0] or b"") for row in rows)
    report = ", ".join(f"{layer_id};covered={row[1]};kept={row[2]};method={row[5]}"
                       for layer_id, row in zip(ids, rows, strict=True))
    if cached:
        state.cache.put((token, z, x, y), body, report)
    return _tile_response(request, f'"{token}"', body, report,
                          cache="miss" if cached else None)


def _tile_response(request: Request, etag: str, body: bytes, report: str,
                   cache: str | None) -> Response:
    headers = _cache_headers(request, etag)
    headers["OneMap-Tile-Features"] = report
    if cache:
        headers["OneMap-Cache"] = cache
    return Response(body, media_type=MVT, headers=headers)


def _cache_headers(request: Request, etag: str) -> dict[str, str]:
    pinned = request.query_params.get("v") == etag.strip('"')
    max_age = app_state(request).settings.tile_max_age
    return {"ETag": etag, "Cache-Control": (f"public, max-age={max_age}, immutable"
                                            if pinned else "public, no-cache")}


async def _render(conn, registry, ids: list[str], z: int, x: int, y: int,
                  as_of: datetime | None) -> list[tuple]:
    """Each layer's (mvt, covered, kept, version, schema_version, method)."""
    for _ in range(2):
        sources = await registry.sources(conn, ids)
        if sources is None:
            raise no_layers(ids)
        rows, stale = [], []
        for source in sources:
            query, method = source.query_bytes(z, as_of is not None, conn)
            cur = await conn.execute(query, params(source.id, z, x, y, as_of), prepare=True)
            row = await cur.fetchone()
            # No row: the layer was removed since its source was built.
            if row is None or row[4] != source.schema_version:
                stale.append(source.id)
            rows.append((*row, method) if row else None)
        if not stale:
            return rows
        await registry.reload(conn, stale)
    raise no_layers(ids)


def tile_url(request: Request, ids: list[str], token: str) -> str:
    return f"{base(request)}/tiles/{','.join(ids)}/{{z}}/{{x}}/{{y}}.mvt?v={token}"


async def tilejson(request: Request) -> Response:
    ids = parse_ids(request.path_params["layers"])
    state = app_state(request)
    async with state.pool.connection() as conn:
        resolved = await resolve(request, conn, ids)
    token = version_token([(r.layer.id, r.version) for r in resolved], None)
    return JSONResponse(tilejson_doc(request, resolved, token),
                        headers={"Cache-Control": "public, no-cache"})


def tilejson_doc(request: Request, resolved: list[Resolved], token: str) -> dict:
    extents = [r.layer.extent for r in resolved if r.layer.extent]
    bounds = ([min(e[0] for e in extents), min(e[1] for e in extents),
               max(e[2] for e in extents), max(e[3] for e in extents)]
              if extents else [-180, -85.0511, 180, 85.0511])
    minzoom = min(r.layer.minzoom for r in resolved)
    maxzoom = max(r.layer.maxzoom for r in resolved)
    center_zoom = max(minzoom, min(maxzoom, 12))
    return {
        "tilejson": "3.0.0",
        "name": ", ".join(r.layer.title for r in resolved),
        "description": "; ".join(r.layer.description or r.layer.title for r in resolved),
        "version": "1.0.0",
        "attribution": "; ".join(sorted({r.layer.attribution for r in resolved
                                         if r.layer.attribution})),
        "scheme": "xyz",
        "tiles": [tile_url(request, [r.layer.id for r in resolved], token)],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": bounds,
        "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, center_zoom],
        "vector_layers": [{
            "id": r.layer.id,
            "description": r.layer.title,
            "minzoom": r.layer.minzoom,
            "maxzoom": r.layer.maxzoom,
            "fields": {"_id": "String", "_count": "Number",
                       **{f.name: _tilejson_type(f.type) for f in r.layer.fields}},
        } for r in resolved],
    }


def _tilejson_type(t: str) -> str:
    return {"integer": "Number", "number": "Number", "decimal": "Number",
            "boolean": "Boolean"}.get(t, "String")


routes = [
    Route("/tiles/{layers}/tilejson.json", tilejson),
    Route("/tiles/{layers}/{z}/{x}/{y}.{fmt}", tile),
]

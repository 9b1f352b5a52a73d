"""Vector tile endpoints: MVT for one or several layers, and TileJSON 3.0."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from access.policy import LayerAccess
from layers import db as db_setup
from layers.catalog import LAYER_ID, Layer
from layers.errors import TooCostly
from layers.grids import CGCS2000, WEB_MERCATOR, fit_zoom
from layers.registry import Resolved
from layers.restrict import Restriction, narrowed
from layers.summary import seen
from layers.tiles import TileSource, params
from mapserver.deps import app_state, db, layer_access, note
from mapserver.ogc import base, carry_key, parse_instant
from mapserver.tileresponse import (
    cache_scope,
    not_modified,
    parse_cell,
    parse_tile,
    tile_response,
    version_token,
)
from onemap.settings import Settings

MVT = "application/vnd.mapbox-vector-tile"


def parse_ids(raw: str, most: int = 16) -> list[str]:
    ids = raw.split(",")
    if not all(LAYER_ID.match(i) for i in ids):
        raise HTTPException(404, f"no layer set {raw[:200]!r}")
    if len(ids) > most:
        raise TooCostly(f"a tile takes at most {most} layers, not {len(ids)}; split the "
                        "layer list over several sources")
    return ids


def check_as_of_cost(settings: Settings, z: int, layers: int) -> None:
    """An as-of tile is made from every row alive then, with no overview to help: below the
    low zoom it takes only a few layers."""
    if z < settings.as_of_low_zoom and layers > settings.as_of_low_zoom_layers:
        raise TooCostly(f"an as-of tile below zoom {settings.as_of_low_zoom} takes at most "
                        f"{settings.as_of_low_zoom_layers} layers, not {layers}; zoom in or "
                        "ask for fewer layers")


def no_layers(ids: list[str]) -> HTTPException:
    return HTTPException(404, f"no layer set {','.join(ids)!r}")


async def resolve(request: Request, conn,
                  ids: list[str]) -> list[tuple[Resolved, LayerAccess]]:
    """The layers with their current versions and what the caller may do with each; a
    layer the caller may not read makes the set not exist, exactly as a missing one."""
    note(request, ids)
    resolved = await app_state(request).registry.resolve(conn, ids)
    if resolved is None:
        raise no_layers(ids)
    return [(r, _readable(r.layer, request, ids)) for r in resolved]


def _readable(layer, request: Request, ids: list[str]) -> LayerAccess:
    found = layer_access(request, layer)
    if found is None:
        raise no_layers(ids)
    return found


def _limits(request: Request, sources: list[TileSource], ids: list[str],
            needs: dict | None = None) -> list[Restriction]:
    """The caller's limits on each layer; for a base map's tile, narrowed to what its
    style needs at the zoom (``styles.basemaps.needs``)."""
    out = []
    for s in sources:
        r = _readable(s.layer, request, ids).restriction
        need = needs.get(s.id) if needs is not None else None
        out.append(narrowed(s.layer, r, need.fields, need.rows) if need is not None else r)
    return out


async def tile(request: Request) -> Response:
    p = request.path_params
    if p["fmt"] not in ("mvt", "pbf"):
        raise HTTPException(404, f"no tile format {p['fmt']!r}; use .mvt")
    return await vector_tile(request, p["layers"], p["z"], p["x"], p["y"])


async def vector_tile(request: Request, layers: str, zs: str, xs: str, ys: str,
                      needs: Callable[[int], dict] | None = None,
                      tms: str = WEB_MERCATOR) -> Response:
    """MVT of one or several layers in WebMercatorQuad (or, ``tms``, CGCS2000Quad's
    lon/lat cells), whichever route asked; ``needs`` (a base map's) says for a zoom which
    layers its tile takes and what of each."""
    state = app_state(request)
    ids = parse_ids(layers, state.settings.max_tile_layers)
    geographic = tms == CGCS2000
    if geographic:
        _, z, x, y = parse_cell(tms, zs, xs, ys)
    else:
        z, x, y = parse_tile(zs, xs, ys)
    wanted = needs(z) if needs is not None else None
    if wanted is not None:
        ids = [i for i in ids if i in wanted]
        if not ids:  # nothing of the base map is drawn at this zoom
            return Response(status_code=204, headers={
                "Cache-Control": f"{cache_scope(request)}, max-age=3600"})
    raw = request.query_params.get("as-of")
    as_of = parse_instant(raw, raw) if raw is not None else None
    if as_of is not None:
        check_as_of_cost(state.settings, z, len(ids))
    inm = request.headers.get("if-none-match")
    note(request, ids, tile=f"{z}/{x}/{y}")
    async with db(request, "tiles") as conn:
        sources = await state.registry.sources(conn, ids)
        if sources is None:
            raise no_layers(ids)
        # Generalized tiles are few and dear: worth a version check to serve them cached.
        cached = state.cache.enabled and (z + geographic) < min(s.detail_zoom for s in sources)
        cell = (tms, z, x, y) if geographic else (z, x, y)
        if inm or cached:
            resolved = await resolve(request, conn, ids)
            limits = _limits(request, [r.source for r, _ in resolved], ids, wanted) \
                if wanted is not None else [a.restriction for _, a in resolved]
            token = version_token([(r.layer.id, r.version, lim)
                                   for (r, _), lim in zip(resolved, limits, strict=True)],
                                  as_of, tms)
            etag = f'"{token}"'
            if (unchanged := not_modified(request, etag)) is not None:
                return unchanged
            hit = state.cache.get((token, *cell)) if cached else None
            if hit is not None:
                note(request, ids, _kept(hit[1]), tile=f"{z}/{x}/{y}")
                return tile_response(request, etag, hit[0], MVT, report=hit[1], cache="hit")
        if state.replicas is None or as_of is not None:
            rows, limits = await _render(request, conn, ids, z, x, y, as_of, wanted,
                                         geographic)
        else:  # made on a replica unless it is behind the primary on one of the layers
            rows, limits = await state.replicas.read(
                conn, ids, state.settings.budget_ms("tiles"),
                lambda c: _render(request, c, ids, z, x, y, as_of, wanted, geographic),
                lambda made: {i: row[3] for i, row in zip(ids, made[0], strict=True)})
    versions = [(layer_id, row[3], r) for layer_id, row, r in zip(ids, rows, limits,
                                                                  strict=True)]
    token = version_token(versions, as_of, tms)
    body = b"".join(bytes(row[0] or b"") for row in rows)
    report = ", ".join(f"{layer_id};covered={row[1]};kept={row[2]};method={row[5]}"
                       for layer_id, row in zip(ids, rows, strict=True))
    note(request, ids, sum(int(row[2]) for row in rows), tile=f"{z}/{x}/{y}")
    if cached:
        state.cache.put((token, *cell), body, report)
    return tile_response(request, f'"{token}"', body, MVT, report=report,
                         cache="miss" if cached else None)


def _kept(report: str) -> int:
    return sum(int(part.split("=")[1]) for part in report.split(";")
               if part.startswith("kept="))


async def _render(request: Request, conn, ids: list[str], z: int, x: int, y: int,
                  as_of: datetime | None, needs: dict | None = None,
                  geographic: bool = False) -> tuple[list[tuple], list[Restriction]]:
    """Each layer's (mvt, covered, kept, version, schema_version, method), and the limits
    they were made under."""
    registry = app_state(request).registry
    for _ in range(2):
        sources = await registry.sources(conn, ids)
        if sources is None:
            raise no_layers(ids)
        limits = _limits(request, sources, ids, needs)
        rows, stale = [], []
        for source, limit in zip(sources, limits, strict=True):
            query, method, extra = source.query_bytes(z, as_of is not None, conn, limit,
                                                      geographic)
            cur = await conn.execute(query, {**params(source.id, z, x, y, as_of, geographic),
                                             **extra}, prepare=db_setup.PREPARE)
            row = await cur.fetchone()
            # No row: the layer was removed since its source was built.
            if row is None or row[4] != source.schema_version:
                stale.append(source.id)
            rows.append((*row, method) if row else None)
        if not stale:
            return rows, limits
        await registry.reload(conn, stale)
    raise no_layers(ids)


def tile_url(request: Request, path: str, token: str) -> str:
    return carry_key(request, f"{base(request)}{path}/{{z}}/{{x}}/{{y}}.mvt?v={token}")


async def tilejson(request: Request) -> Response:
    ids = parse_ids(request.path_params["layers"])
    async with db(request, "tiles") as conn:
        resolved = await resolve(request, conn, ids)
        shown = [await seen(conn, r.layer, a.restriction) for r, a in resolved]
    token = version_token([(r.layer.id, r.version, a.restriction) for r, a in resolved], None)
    return JSONResponse(tilejson_doc(request, shown, token),
                        headers={"Cache-Control": f"{cache_scope(request)}, no-cache"})


def tilejson_doc(request: Request, layers: list[Layer], token: str,
                 path: str | None = None) -> dict:
    """``layers`` as the caller sees them (``layers.summary.seen``): fields, bounds; their
    tiles under ``path`` (a base map's), else under /tiles/{ids}."""
    extents = [ly.extent for ly in layers if ly.extent]
    bounds = ([min(e[0] for e in extents), min(e[1] for e in extents),
               max(e[2] for e in extents), max(e[3] for e in extents)]
              if extents else [-180, -85.0511, 180, 85.0511])
    minzoom = min(ly.minzoom for ly in layers)
    maxzoom = max(ly.maxzoom for ly in layers)
    center_zoom = fit_zoom(bounds if extents else None, minzoom, maxzoom)
    return {
        "tilejson": "3.0.0",
        "name": ", ".join(ly.title for ly in layers),
        "description": "; ".join(ly.description or ly.title for ly in layers),
        "version": "1.0.0",
        "attribution": "; ".join(sorted({ly.attribution for ly in layers if ly.attribution})),
        "scheme": "xyz",
        "tiles": [tile_url(request, path or f"/tiles/{','.join(ly.id for ly in layers)}",
                           token)],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": bounds,
        "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, center_zoom],
        "vector_layers": [{
            "id": ly.id,
            "description": ly.title,
            "minzoom": ly.minzoom,
            "maxzoom": ly.maxzoom,
            "fields": {"_id": "String", "_count": "Number",
                       **{f.name: _tilejson_type(f.type) for f in ly.fields}},
        } for ly in layers],
    }


def _tilejson_type(t: str) -> str:
    return {"integer": "Number", "number": "Number", "decimal": "Number",
            "boolean": "Boolean"}.get(t, "String")


routes = [
    Route("/tiles/{layers}/tilejson.json", tilejson),
    Route("/tiles/{layers}/{z}/{x}/{y}.{fmt}", tile),
]

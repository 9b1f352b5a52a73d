"""Catalog and style endpoints: what layers there are, their dictionaries, their looks."""

from __future__ import annotations

from psycopg import sql
from psycopg.rows import dict_row
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layers.catalog import LAYER_ID, SELECT_LAYERS, layer_from_row
from mapserver.deps import app_state
from mapserver.tiles import parse_ids, resolve
from styles.build import build_style


def _links(request: Request, layer_id: str) -> list[dict[str, str]]:
    base = str(request.base_url).rstrip("/")
    return [
        {"rel": "tilejson", "href": f"{base}/tiles/{layer_id}/tilejson.json"},
        {"rel": "style", "href": f"{base}/styles/{layer_id}/style.json"},
        {"rel": "tiles", "href": f"{base}/tiles/{layer_id}/{{z}}/{{x}}/{{y}}.mvt"},
    ]


async def list_layers(request: Request) -> Response:
    async with app_state(request).pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SELECT_LAYERS + sql.SQL(" ORDER BY id"))
            layers = [layer_from_row(r) for r in await cur.fetchall()]
    return JSONResponse({"layers": [
        {**ly.as_dict(), "links": _links(request, ly.id)} for ly in layers]})


async def get_layer(request: Request) -> Response:
    layer_id = request.path_params["layer"]
    if not LAYER_ID.match(layer_id):
        raise HTTPException(404, f"no layer {layer_id!r}")
    async with app_state(request).pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SELECT_LAYERS + sql.SQL(" WHERE id = %s"), (layer_id,))
            row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no layer {layer_id!r}")
    layer = layer_from_row(row)
    return JSONResponse({**layer.as_dict(), "links": _links(request, layer.id)})


async def style(request: Request) -> Response:
    ids = parse_ids(request.path_params["layers"])
    async with app_state(request).pool.connection() as conn:
        resolved = await resolve(request, conn, ids)
    base = str(request.base_url).rstrip("/")
    doc = build_style([r.layer for r in resolved], f"{base}/tiles/{','.join(ids)}/tilejson.json")
    return JSONResponse(doc, headers={"Cache-Control": "public, no-cache"})


routes = [
    Route("/layers", list_layers),
    Route("/layers/{layer}", get_layer),
    Route("/styles/{layers}/style.json", style),
]

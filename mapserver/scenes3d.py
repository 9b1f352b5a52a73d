"""3D Tiles endpoints: a scene's tileset and its glTF tiles, under the caller's limits.

A scene is reached through its layer, so a layer the caller may not read has no scene
either (the same 404), an area-limited caller gets only the buildings in its area (cut at
the edge when its grant clips), and masked fields are masked in the tiles' properties.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from access.policy import LayerAccess
from layers.catalog import Layer, fetch_layers
from layers.summary import seen
from mapserver.deps import app_state, db, layer_access, note, page, readable_layer
from mapserver.ogc import base, parse_instant
from mapserver.tileresponse import not_modified, parse_tile, tile_response, version_token
from scenes3d import catalog, glb, source
from scenes3d.catalog import Scene
from scenes3d.mesh import extrude
from scenes3d.tileset import origin, part, split_zoom, tileset

GLB = "model/gltf-binary"
TILESET = "application/json"


@dataclass(frozen=True)
class Asked:
    """The scene in the path as the caller may see it, and the moment asked for."""

    layer: Layer
    access: LayerAccess
    scene: Scene
    as_of: datetime | None
    token: str  # names what the caller sees: layer version, limits, moment, definition


async def _scene(request: Request, conn) -> Asked:
    layer_id = request.path_params["layer"]
    layer, a = await readable_layer(request, conn, layer_id, ("vector",), "3D scene")
    found = await catalog.fetch(conn, layer.id)
    if not found:
        raise HTTPException(404, f"no 3D scene {layer_id!r}")
    raw = request.query_params.get("as-of")
    as_of = parse_instant(raw, raw) if raw is not None else None
    token = version_token([(layer.id, layer.version, a.restriction)], as_of)
    token = hashlib.sha1(f"{token}|{found[0]!r}".encode()).hexdigest()[:20]
    return Asked(layer, a, found[0], as_of, token)


def _cached(request: Request, key: tuple, etag: str, media: str) -> Response | None:
    """A 304, or the cached body with its feature report, or None."""
    if (unchanged := not_modified(request, etag)) is not None:
        return unchanged
    hit = app_state(request).cache.get(key)
    return None if hit is None else _response(request, etag, media, *hit)


def _response(request: Request, etag: str, media: str, body: bytes, report: str) -> Response:
    return tile_response(request, etag, body, media, report=report)


async def scenes(request: Request) -> Response:
    """The 3D scenes the caller may read."""
    async with db(request, "tiles") as conn:
        defined = await catalog.fetch(conn)
        ids = [s.layer_id for s in defined]
        layers = {ly.id: ly for ly in (await fetch_layers(conn, ids=ids) if ids else [])}
    out = []
    for s in defined:
        layer = layers.get(s.layer_id)
        if layer is None or layer_access(request, layer) is None:
            continue
        out.append({"id": layer.id, "title": layer.title, "attribution": layer.attribution,
                    "tileset": f"{base(request)}/3dtiles/{layer.id}/tileset.json"})
    note(request, [s["id"] for s in out])
    return JSONResponse({"scenes": out})


async def tileset_json(request: Request) -> Response:
    """The root tileset, or with z/x/y the external tileset of one tile at the split zoom."""
    state = app_state(request)
    p = request.path_params
    async with db(request, "tiles") as conn:
        q = await _scene(request, conn)
        layer, zoom = q.layer, q.scene.tile_zoom
        within = None
        if "z" in p:
            within = parse_tile(p["z"], p["x"], p["y"])
            if within[0] != split_zoom(zoom):
                raise HTTPException(404, f"scene {layer.id!r} has its tilesets at zoom "
                                         f"{split_zoom(zoom)}, not {within[0]}")
        etag, key = f'"{q.token}"', (q.token, "3d", within)
        hit = _cached(request, key, etag, TILESET)
        if hit is not None:
            return hit
        found = await source.cells(conn, layer, q.scene, q.access.restriction,
                                   zoom if within else split_zoom(zoom), within, q.as_of)
    kept = sum(c.count for c in found)
    note(request, [layer.id], kept, tiles=len(found))
    if within is not None and not found:
        # The root never points here for this caller: as missing as any other tileset.
        raise HTTPException(404, "no 3D tileset {}/{}/{} in scene {!r}".format(*within,
                                                                               layer.id))
    if within is None and not found:  # an empty tileset over what the caller may see
        async with db(request, "tiles") as conn:
            layer = await seen(conn, layer, q.access.restriction)
    doc = tileset(found, zoom, layer.extent) if within is None else part(found, zoom)
    body = JSONResponse(doc).body
    report = f"{layer.id};kept={kept};tiles={len(found)}"
    state.cache.put(key, body, report)
    return _response(request, etag, TILESET, body, report)


async def tile(request: Request) -> Response:
    p = request.path_params
    z, x, y = parse_tile(p["z"], p["x"], p["y"])
    state = app_state(request)
    async with db(request, "tiles") as conn:
        q = await _scene(request, conn)
        note(request, [q.layer.id], tile=f"{z}/{x}/{y}")
        if z != q.scene.tile_zoom:
            raise HTTPException(404, f"scene {q.layer.id!r} has its tiles at zoom "
                                     f"{q.scene.tile_zoom}, not {z}")
        etag, key = f'"{q.token}"', (q.token, "3d", z, x, y)
        hit = _cached(request, key, etag, GLB)
        if hit is not None:
            return hit
        found = await source.features(conn, q.layer, q.scene, q.access.restriction, x, y,
                                      q.as_of)
    note(request, [q.layer.id], len(found.fids), tile=f"{z}/{x}/{y}")
    if not found.fids:
        # The tileset never names such a tile: it is as missing as any other.
        raise HTTPException(404, f"no 3D tile {z}/{x}/{y} in scene {q.layer.id!r}")

    def build() -> bytes:
        mesh = extrude(found.footprints, found.heights, origin(z, x, y))
        return glb.encode(mesh, {"_fid": found.fids, **found.properties}, found.heights)

    body = await anyio.to_thread.run_sync(build)
    report = f"{q.layer.id};kept={len(found.fids)}"
    state.cache.put(key, body, report)
    return _response(request, etag, GLB, body, report)


routes = [
    Route("/scene3d", page("scene3d.html")),  # the scenes the caller may read, in CesiumJS
    Route("/3dtiles", scenes),
    Route("/3dtiles/{layer}/tileset.json", tileset_json),
    Route("/3dtiles/{layer}/{z}/{x}/{y}.json", tileset_json),
    Route("/3dtiles/{layer}/{z}/{x}/{y}.glb", tile),
]

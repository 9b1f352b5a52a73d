"""The glyphs and sprites every style names, served by OneMap itself (no CDN).

``/fonts/{stack}/{start}-{end}.pbf`` gives a range of SDF glyphs in MapLibre's format. A
request names a font stack as MapLibre writes it (``Noto Sans Regular,Arial Unicode MS``):
the first stack OneMap has is served, and a range it holds no glyph in is an empty range,
not an error, so a label in a script no font covers leaves a gap instead of failing the
map. ``/fonts.json`` lists the stacks; ``/sprites/onemap.json|png`` (and ``@2x``) are the
icons. All of it is made at setup (``scripts/map_assets.py``) under
``ONEMAP_MAP_ASSETS``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layers.errors import NotFound, Unavailable
from mapserver.deps import app_state
from mapserver.tileresponse import cache_scope

_RANGE = re.compile(r"(\d{1,5})-(\d{1,5})")
_SPRITE = re.compile(r"(onemap)(@2x)?\.(json|png)")
# Fonts and icons change only with a new setup: a day in any cache.
MAX_AGE = 86400


@cache
def _stacks(root: Path) -> tuple[str, ...]:
    listed = root / "fonts" / "stacks.json"
    if not listed.is_file():
        return ()
    return tuple(json.loads(listed.read_text()))


def _root(request: Request) -> Path:
    root = app_state(request).settings.map_assets
    if not _stacks(root):
        raise Unavailable("the map's fonts and icons are not built: run make setup "
                          "(or set ONEMAP_MAP_ASSETS)")
    return root


def _headers(request: Request) -> dict[str, str]:
    return {"Cache-Control": f"{cache_scope(request)}, max-age={MAX_AGE}"}


def _empty_range(stack: str, start: int) -> bytes:
    """A glyphs message with one font stack and no glyph (fields 1 name and 2 range)."""
    def field(number: int, value: bytes) -> bytes:
        return bytes([number << 3 | 2, len(value)]) + value
    inner = field(1, stack.encode()) + field(2, f"{start}-{start + 255}".encode())
    return field(1, inner)


async def fonts(request: Request) -> Response:
    return JSONResponse(list(_stacks(_root(request))), headers=_headers(request))


async def glyphs(request: Request) -> Response:
    root = _root(request)
    asked = request.path_params["stack"]
    m = _RANGE.fullmatch(request.path_params["range"])
    start = int(m.group(1)) if m else -1
    if not m or start % 256 or int(m.group(2)) != start + 255 or start > 65280:
        raise NotFound(f"glyph range {request.path_params['range']!r} is not one of "
                       "0-255, 256-511, ... 65280-65535")
    have = _stacks(root)
    stack = next((s.strip() for s in asked.split(",") if s.strip() in have), None)
    if stack is None:
        raise NotFound(f"no font stack {asked[:120]!r}: OneMap has " + ", ".join(have))
    path = root / "fonts" / stack / f"{start}-{start + 255}.pbf"
    body = path.read_bytes() if path.is_file() else _empty_range(stack, start)
    return Response(body, media_type="application/x-protobuf", headers=_headers(request))


async def sprite(request: Request) -> Response:
    m = _SPRITE.fullmatch(request.path_params["name"])
    if not m:
        raise NotFound(f"no sprite {request.path_params['name'][:80]!r}: OneMap has "
                       "onemap.json, onemap.png, onemap@2x.json, onemap@2x.png")
    path = _root(request) / "sprites" / m.group(0)
    media = "application/json" if m.group(3) == "json" else "image/png"
    return Response(path.read_bytes(), media_type=media, headers=_headers(request))


routes = [
    Route("/fonts.json", fonts),
    Route("/fonts/{stack}/{range}.pbf", glyphs),
    Route("/sprites/{name}", sprite),
]

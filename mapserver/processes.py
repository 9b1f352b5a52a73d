"""OGC API – Processes 1.0 over ``analysis.processes``: the list, each description, and
execution (synchronous), every layer read under the caller's grants."""

from __future__ import annotations

import json
from decimal import Decimal

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from analysis.processes import PROCESSES, execute
from layers.catalog import Layer
from layers.restrict import Restriction
from mapserver.deps import db, json_body, note, readable_layer
from mapserver.ogc import GEOJSON, base

_CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
CONFORMANCE = [_CONF + c for c in ("core", "ogc-process-description", "json")]
MAX_BODY = 256 * 1024  # bytes of an execution request


def _links(request: Request, pid: str) -> list[dict]:
    here = f"{base(request)}/processes/{pid}"
    return [{"rel": "self", "type": "application/json", "href": here},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/execute",
             "type": "application/json", "href": f"{here}/execution"}]


async def listing(request: Request) -> Response:
    return JSONResponse({
        "processes": [{**p.summary(), "links": _links(request, p.id)}
                      for p in PROCESSES.values()],
        "links": [{"rel": "self", "type": "application/json",
                   "href": f"{base(request)}/processes"}]})


def _process(request: Request) -> str:
    pid = request.path_params["process"]
    if pid not in PROCESSES:
        raise HTTPException(404, f"no process {pid!r}; there are {', '.join(PROCESSES)}")
    return pid


async def description(request: Request) -> Response:
    pid = _process(request)
    return JSONResponse({**PROCESSES[pid].describe(), "links": _links(request, pid)})


async def execution(request: Request) -> Response:
    pid = _process(request)
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise HTTPException(413, f"an execution request is at most {MAX_BODY // 1024} KB")
    body = await json_body(request)
    async with db(request, "items") as conn:
        async def resolve(layer_id: str, kinds: tuple[str, ...]) -> tuple[Layer, Restriction]:
            layer, a = await readable_layer(request, conn, layer_id, kinds, "layer")
            return layer, a.restriction

        result, layers = await execute(pid, body.get("inputs", {}), conn, resolve)
    note(request, layers, len(result.get("features", ())) or None)
    if body.get("response") == "raw":
        return Response(json.dumps(result, default=_plain), media_type=GEOJSON)
    return Response(json.dumps({"result": result}, default=_plain),
                    media_type="application/json")


def _plain(value: object) -> object:
    """Numbers as JSON numbers (PostgreSQL's sums are decimals), anything else as text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


routes = [
    Route("/processes", listing),
    Route("/processes/{process}", description),
    Route("/processes/{process}/execution", execution, methods=["POST"]),
]

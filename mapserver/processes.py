"""OGC API – Processes 1.0 over ``analysis.processes``: the list, each description, and
execution (synchronous), every layer read under the caller's grants."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from analysis.processes import PROCESSES, by_reference, execute, keep, layer_inputs
from jobs.queue import NOTIFY, SUBMIT, submit_params
from layers.catalog import Layer
from layers.db import database_url
from layers.errors import Forbidden, Invalid, Unauthenticated
from layers.rasters import RasterSource
from layers.restrict import Restriction
from mapserver.deps import access, app_state, db, json_body, note, readable_layer
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
    inputs = body.get("inputs", {})
    p = access(request).principal
    reference = by_reference(body)
    refusal = access(request).policy.keep_refusal(p) if reference else None
    if refusal:
        raise (Unauthenticated if p.anonymous else Forbidden)(refusal)
    if "respond-async" in request.headers.get("prefer", "") and not p.anonymous \
            and not p.embedded and p.node is None:
        return await _submit(request, pid, inputs, reference)
    async with db(request, "items") as conn:
        async def resolve(layer_id: str, kinds: tuple[str, ...], shapes: bool
                          ) -> tuple[Layer, Restriction]:
            layer, a = await readable_layer(request, conn, layer_id, kinds, "layer")
            refusal = access(request).policy.shapes_refusal(layer) if shapes else None
            if refusal:
                raise Forbidden(refusal)
            return layer, a.restriction

        async def rasters(layer: Layer) -> RasterSource:
            return await app_state(request).rasters.source(conn, layer)

        result, layers = await execute(pid, inputs, conn, resolve, rasters)
        if reference:
            settings = app_state(request).settings
            result = await keep(conn, database_url(settings), pid, result, layers,
                                str(p.department), settings.levels,
                                hours=settings.result_hours, detail_zoom=settings.detail_zoom,
                                default_level=settings.default_level)
            result["href"] = base(request) + result["href"]
    note(request, layers, len(result.get("features", ())) or None)
    if body.get("response") == "raw":
        return Response(json.dumps(result, default=_plain), media_type=GEOJSON)
    return Response(json.dumps({"result": result}, default=_plain),
                    media_type="application/json")


async def _submit(request: Request, pid: str, inputs: object, reference: bool) -> Response:
    """The run queued as a job (``Prefer: respond-async``) on the queue that publishes
    uploads; its worker reads the caller's grants again when it starts. Anonymous callers
    and embedding keys are answered at once (they have no jobs to come back to)."""
    if not isinstance(inputs, dict):
        raise Invalid("inputs: an object of the process's inputs is needed")
    p = access(request).principal
    layers = layer_inputs(inputs)
    async with db(request, "admin") as conn, conn.transaction():
        cur = await conn.execute(SUBMIT, submit_params(
            "process", p.id, p.name, p.department, None,
            {"process": pid, "inputs": inputs, "layers": layers, "reference": reference}))
        job_id = (await cur.fetchone())[0]
        await conn.execute(NOTIFY, (str(job_id),))
    note(request, layers, job=str(job_id))
    url = f"{base(request)}/jobs/{job_id}"
    return JSONResponse({"jobID": str(job_id), "processID": pid, "type": "process",
                         "status": "accepted",
                         "links": [{"rel": "monitor", "type": "application/json",
                                    "href": url}]},
                        status_code=201, headers={"Location": url,
                                                  "Preference-Applied": "respond-async"})


def _plain(value: object) -> object:
    return str(value)


routes = [
    Route("/processes", listing),
    Route("/processes/{process}", description),
    Route("/processes/{process}/execution", execution, methods=["POST"]),
]

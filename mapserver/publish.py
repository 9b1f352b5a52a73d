"""Publishing over HTTP: ``POST /layers`` takes a layer's files and options as a multipart
form, checks them and the caller's right to publish (``access/policy.py`` rule 10), keeps
the files in ``Settings.uploads`` and queues an ingest job (``jobs/``), answered at once
with ``201`` and the job's URL; ``onemap worker`` runs it through the same pipeline as
the command line. ``/jobs`` lists the caller's jobs, ``/jobs/{id}`` reports one (state,
progress and, at the end, the ingest report), ``DELETE /jobs/{id}`` dismisses it.

A large file may come first in chunks, resumably: ``POST /uploads {"name", "size"}`` opens
an upload, ``PUT /uploads/{id}`` with ``Content-Range: bytes START-END/SIZE`` appends each
chunk (a chunk at the wrong offset is a 409 that says where to go on), ``HEAD`` tells how
much has arrived (``Upload-Offset``), and ``POST /layers`` names it as ``upload`` (repeatable)
in place of ``file``. Only its principal sees an upload; it lapses after a day.

Form fields: ``file`` (one or more: a GeoPackage, a zipped or loose shapefile, GeoJSON,
FlatGeobuf, KML, GML, CSV, an OSM extract, a GeoTIFF, ...), ``layer`` (its id; a layer
that exists is updated incrementally when ``key`` names its key), ``kind``
(``vector``/``raster``, else from the file), the catalog's ``title``, ``description``,
``level``, ``sharing_type``, ``update_cycle``, ``attribution``, ``keywords`` (comma
separated or repeated), ``department`` (administrators only); the ingest's ``key``,
``source_layer``, ``source_crs``, ``where``, ``produced_field``; a raster's ``time``,
``nodata``, ``bands``, ``elevation``; and ``fields``, a JSON object of the dictionary:
``{"phone": {"type": "string", "title": "Phone", "unit": null, "description": "..."}}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest.errors import IngestError
from ingest.meta import check_target
from ingest.vector import ARROW_TYPES
from jobs.queue import DISMISS, GET, MINE, NOTIFY, SUBMIT, submit_params
from layers.catalog import NOTES, SHARING_TYPES, fetch_layers
from layers.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from layers.meta import LayerMeta
from mapserver.deps import access, app_state, db, json_body, note, parse_json
from mapserver.ogc import base

MAX_FILES = 16  # a shapefile's parts and the like
MAX_FIELDS = 64
CHUNK = 1024 * 1024
SAFE_NAME = re.compile(r"[^\w.\-]+")
TEXT = ("title", "description", "level", "sharing_type", "update_cycle", "attribution",
        "department", "key", "source_layer", "source_crs", "where", "produced_field", "time",
        "kind")
KINDS = ("vector", "raster")
NO_STORE = {"Cache-Control": "private, no-store"}


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if isinstance(value, UploadFile):
        raise Invalid(f"form field {name!r} must be text, not a file")
    value = value.strip()
    if "\x00" in value:
        raise Invalid(f"form field {name!r} holds a NUL character")
    return value or None


def _number(form: Any, name: str, kind: type) -> Any:
    raw = _text(form, name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise Invalid(f"form field {name!r}: {raw!r} is not a {kind.__name__}") from None


def _fields(raw: str | None) -> dict[str, dict[str, Any]]:
    """The ``fields`` form field: the dictionary's types and notes, checked."""
    if raw is None:
        return {}
    doc = parse_json(raw.encode(), "form field 'fields'")
    if not isinstance(doc, dict):
        raise Invalid("form field 'fields' must be a JSON object of field -> "
                      "{type, title, unit, description}")
    for name, said in doc.items():
        if not isinstance(said, dict):
            raise Invalid(f"form field 'fields': {name!r} must be an object")
        bad = sorted(set(said) - {"type", *NOTES})
        if bad:
            raise Invalid(f"form field 'fields': {name!r} has {bad[0]!r}, not one of type, "
                          + ", ".join(NOTES))
        if said.get("type") is not None and said["type"] not in ARROW_TYPES:
            raise Invalid(f"form field 'fields': {name!r} type {said['type']!r} is not one "
                          "of " + ", ".join(ARROW_TYPES))
        for k, v in said.items():
            if v is not None and not isinstance(v, str):
                raise Invalid(f"form field 'fields': {name!r} {k} must be text")
    return doc


def options(form: Any) -> tuple[dict[str, Any], LayerMeta, dict[str, Any]]:
    """The ingest's options, the catalog's values and the dictionary from the form."""
    t = {name: _text(form, name) for name in TEXT}
    if t["kind"] is not None and t["kind"] not in KINDS:
        raise Invalid(f"form field 'kind': {t['kind']!r} is not vector or raster")
    if t["sharing_type"] is not None and t["sharing_type"] not in SHARING_TYPES:
        raise Invalid(f"form field 'sharing_type': {t['sharing_type']!r} is not one of "
                      + ", ".join(SHARING_TYPES))
    keywords = [k.strip() for raw in form.getlist("keywords") if isinstance(raw, str)
                for k in raw.split(",") if k.strip()]
    bands = _text(form, "bands")
    try:
        band_list = [int(b) for b in bands.split(",")] if bands else None
    except ValueError:
        raise Invalid(f"form field 'bands': {bands!r} is not band numbers like 1,2,3") from None
    fields = _fields(_text(form, "fields"))
    opts = {k: t[k] for k in ("key", "source_layer", "source_crs", "where", "produced_field",
                              "time") if t[k] is not None}
    opts |= {"nodata": _number(form, "nodata", float), "bands": band_list,
             "elevation": (_text(form, "elevation") or "").lower() in ("1", "true", "yes")}
    notes = {n: {k: v for k, v in f.items() if k != "type"} for n, f in fields.items()}
    meta = LayerMeta(title=t["title"], description=t["description"], level=t["level"],
                     sharing_type=t["sharing_type"], update_cycle=t["update_cycle"],
                     attribution=t["attribution"], department=t["department"],
                     keywords=keywords or None,
                     field_notes={n: v for n, v in notes.items() if v} or None)
    return opts, meta, fields


def _store(files: list[UploadFile], folder: Path) -> list[str]:
    """The uploaded files written into ``folder`` under safe names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for f in files:
        name = SAFE_NAME.sub("_", Path(f.filename or "upload").name).lstrip(".") or "upload"
        if name in names:
            raise Invalid(f"two files are named {name!r}")
        with (folder / name).open("wb") as out:
            f.file.seek(0)
            shutil.copyfileobj(f.file, out, CHUNK)
        names.append(name)
    return names


UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
UPLOAD_HOURS = 24


def _parts(request: Request) -> Path:
    return app_state(request).settings.uploads / "parts"


def _upload(request: Request, upload_id: str) -> tuple[Path, dict[str, Any]]:
    """An open upload of the caller's: its folder and what it said; NotFound otherwise."""
    p = access(request).principal
    folder = _parts(request) / upload_id
    try:
        meta = json.loads((folder / "upload.json").read_text()) \
            if UPLOAD_ID.match(upload_id) else None
    except (OSError, ValueError):
        meta = None
    if meta is None or meta.get("principal_id") != p.id or meta["principal"] != p.name:
        raise NotFound(f"no upload {upload_id!r}")
    return folder, meta


def _received(folder: Path) -> int:
    data = folder / "data"
    return data.stat().st_size if data.exists() else 0


def _sweep(parts: Path) -> None:
    """Uploads nobody finished within a day are removed."""
    if not parts.is_dir():
        return
    cutoff = time.time() - UPLOAD_HOURS * 3600
    for folder in parts.iterdir():
        with contextlib.suppress(OSError):
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)


async def open_upload(request: Request) -> Response:
    """``POST /uploads {"name", "size"}``: an upload to send in chunks."""
    p = access(request).principal
    if p.anonymous:
        raise Unauthenticated("sign in to upload")
    body = await json_body(request)
    name, size = body.get("name"), body.get("size")
    limit = app_state(request).settings.upload_max_mb * 1024 * 1024
    if not isinstance(name, str) or not name.strip():
        raise Invalid("name the file (name)")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= limit:
        raise Invalid(f"size must be the file's size in bytes, at most {limit}")
    upload_id = secrets.token_hex(16)
    folder = _parts(request) / upload_id
    await anyio.to_thread.run_sync(_sweep, _parts(request))
    folder.mkdir(parents=True)
    (folder / "upload.json").write_text(json.dumps(
        {"principal_id": p.id, "principal": p.name, "name": name.strip(), "size": size}))
    url = f"{base(request)}/uploads/{upload_id}"
    return JSONResponse({"id": upload_id, "offset": 0, "size": size, "href": url},
                        status_code=201, headers={"Location": url, **NO_STORE})


def _append(folder: Path, start: int, chunk: bytes) -> int:
    """The chunk appended if the upload has exactly ``start`` bytes; the new size. Two
    chunks sent at once for the same offset: one is taken, the other told where to go on."""
    with (folder / "data").open("ab") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        at = out.seek(0, 2)
        if at != start:
            return at
        out.write(chunk)
        out.flush()
        return out.tell()


async def upload_chunk(request: Request) -> Response:
    """``PUT /uploads/{id}`` with ``Content-Range``; ``HEAD`` for how much has arrived."""
    folder, meta = _upload(request, request.path_params["upload"])
    if request.method == "HEAD":
        return Response(headers={"Upload-Offset": str(_received(folder)),
                                 "Upload-Length": str(meta["size"]), **NO_STORE})
    match = RANGE.match(request.headers.get("content-range", ""))
    if match is None:
        raise Invalid("send each chunk with Content-Range: bytes START-END/SIZE")
    start, end, size = map(int, match.groups())
    if size != meta["size"] or end < start or end >= size:
        raise Invalid(f"Content-Range {match.group(0)!r} does not fit the upload's "
                      f"{meta['size']} bytes")
    chunk = await request.body()  # bounded by the guard (mapserver/guard.py)
    if len(chunk) != end - start + 1:
        raise Invalid(f"the chunk holds {len(chunk)} bytes, Content-Range says "
                      f"{end - start + 1}")
    offset = await anyio.to_thread.run_sync(_append, folder, start, chunk)
    if offset != end + 1:
        raise Conflict(f"the upload has {offset} bytes: send the chunk from byte {offset}")
    return JSONResponse({"id": folder.name, "offset": offset, "size": size,
                         "complete": offset == size}, headers=NO_STORE)


def _take(folder: Path, meta: dict[str, Any], into: Path) -> str:
    """A complete upload linked into a job's folder (copied where a link cannot be); its
    safe name. The upload itself stays until its job is queued, so nothing is lost if
    queueing fails."""
    name = SAFE_NAME.sub("_", Path(meta["name"]).name).lstrip(".") or "upload"
    into.mkdir(parents=True, exist_ok=True)
    if (into / name).exists():
        raise Invalid(f"two files are named {name!r}")
    try:
        os.link(folder / "data", into / name)
    except OSError:
        shutil.copyfile(folder / "data", into / name)
    return name


async def publish(request: Request) -> Response:
    a = access(request)
    p = a.principal
    if p.anonymous:
        raise Unauthenticated("sign in to publish a layer")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise Invalid("publish a layer as multipart/form-data: its files as 'file' (or "
                      "finished uploads as 'upload'), its id as 'layer'")
    state = app_state(request)
    # Bounded by the guard (ONEMAP_UPLOAD_MAX_MB) before it is read; parts go to disk.
    async with request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS) as form:
        layer_id = _text(form, "layer")
        if layer_id is None:
            raise Invalid("form field 'layer' (the layer's id) is missing")
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        uploads = [_upload(request, u) for u in form.getlist("upload") if isinstance(u, str)]
        for folder, meta in uploads:
            if _received(folder) != meta["size"]:
                raise Invalid(f"upload {folder.name} has {_received(folder)} of its "
                              f"{meta['size']} bytes: send the rest first")
        if not files and not uploads:
            raise Invalid("form field 'file' is missing: send the layer's file(s), or "
                          "name finished uploads as 'upload'")
        opts, meta, fields = options(form)
        try:
            check_target(files[0].filename if files else uploads[0][1]["name"], layer_id,
                         meta, state.settings.levels)
        except IngestError as exc:
            raise Invalid(exc.reason) from None
        async with db(request, "admin") as conn:
            found = await fetch_layers(conn, ids=[layer_id])
        old = found[0] if found else None
        department = meta.department if a.administers else None
        refusal = a.publish_refusal(layer_id, old, meta.level, meta.department)
        if refusal is not None:
            raise Forbidden(refusal)
        kind = _text(form, "kind") or (old.kind if old is not None else None)
        if old is not None and old.kind != kind:
            raise Invalid(f"layer {layer_id!r} is a {old.kind} layer")
        if department is None:  # a new layer is its publisher's department's
            department = old.department if old is not None else p.department
        meta.department = department
        token = secrets.token_hex(12)
        folder = state.settings.uploads / token
        try:
            names = await anyio.to_thread.run_sync(_store, files, folder)
            for up, said in uploads:
                names.append(await anyio.to_thread.run_sync(_take, up, said, folder))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    params = {"dir": token, "files": names, "options": opts,
              "meta": {k: v for k, v in vars(meta).items() if v is not None},
              "fields": fields, **({"kind": kind} if kind else {})}
    try:
        async with db(request, "admin") as conn, conn.transaction():
            cur = await conn.execute(SUBMIT, submit_params(
                "ingest", p.id, p.name, department, layer_id, params))
            job_id = (await cur.fetchone())[0]
            await conn.execute(NOTIFY, (str(job_id),))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for up, _ in uploads:  # queued: the job's folder holds them now
        shutil.rmtree(up, ignore_errors=True)
    note(request, [layer_id], job=str(job_id), files=names)
    url = f"{base(request)}/jobs/{job_id}"
    return JSONResponse({"id": str(job_id), "state": "accepted", "layer": layer_id,
                         "links": [{"rel": "monitor", "href": url,
                                    "type": "application/json"}]},
                        status_code=201, headers={"Location": url})


def _shown(request: Request, row: tuple, columns: list[str]) -> dict[str, Any]:
    job = dict(zip(columns, row, strict=True))
    job["id"] = str(job["id"])
    job["status"] = job["state"]  # OGC API - Processes' name for it
    for k in ("created_at", "started_at", "finished_at"):
        job[k] = job[k].isoformat() if job[k] else None
    job["jobID"], job["type"] = job["id"], "process"  # OGC API - Processes' statusInfo
    job["links"] = [{"rel": "self", "href": f"{base(request)}/jobs/{job['id']}"}]
    if job["kind"] == "process":  # the result is read at /results, not with the status
        job["processID"] = (job.pop("result") or {}).get("process")
        if job["state"] == "successful":
            job["links"].append({"rel": "http://www.opengis.net/def/rel/ogc/1.0/results",
                                 "type": "application/json",
                                 "href": f"{base(request)}/jobs/{job['id']}/results"})
    if job["layer_id"] and job["state"] == "successful":
        job["links"].append({"rel": "related", "title": "the layer",
                             "href": f"{base(request)}/layers/{job['layer_id']}"})
    return job


async def _job(request: Request, conn: Any) -> dict[str, Any]:
    """The job in the path, if the caller submitted it (an administrator: any)."""
    a = access(request)
    if a.principal.anonymous:
        raise Unauthenticated("sign in to see your jobs")
    raw = request.path_params["job"]
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", raw):
        raise NotFound(f"no job {raw!r}")
    cur = await conn.execute(GET, (raw,))
    row = await cur.fetchone()
    columns = [c.name for c in cur.description]
    if row is None:
        raise NotFound(f"no job {raw!r}")
    job = _shown(request, row, columns)
    owner = dict(zip(columns, row, strict=True))
    if not a.administers and owner["principal"] != a.principal.name:
        raise NotFound(f"no job {raw!r}")  # another's job does not exist for the caller
    return job


async def job(request: Request) -> Response:
    async with db(request, "admin") as conn:
        found = await _job(request, conn)
        if request.method == "DELETE":
            await conn.execute(DISMISS, {"id": found["id"], "by": access(request).principal.name})
            await conn.commit()
            found = await _job(request, conn)
    note(request, [found["layer_id"]] if found["layer_id"] else [], job=found["id"])
    return JSONResponse(found, headers={"Cache-Control": "private, no-store"})


async def results(request: Request) -> Response:
    """A finished analysis job's result (OGC API - Processes), for the one who ran it."""
    async with db(request, "admin") as conn:
        found = await _job(request, conn)
        cur = await conn.execute("SELECT result FROM onemap.jobs WHERE id = %s",
                                 (found["id"],))
        row = await cur.fetchone()
    if found["kind"] != "process":
        raise NotFound(f"job {found['id']} is an upload: its report is the job itself")
    if found["state"] != "successful":
        raise NotFound(f"job {found['id']} has no result: it is {found['state']}"
                       + (f" ({found['message']})" if found["message"] else ""))
    note(request, list(row[0].get("layers", [])), job=found["id"])
    value = row[0]["value"]
    if isinstance(value, dict) and str(value.get("href", "")).startswith("/"):
        value = {**value, "href": base(request) + value["href"]}  # a result kept as a layer
    return JSONResponse({"result": value},
                        headers={"Cache-Control": "private, no-store"})


async def jobs(request: Request) -> Response:
    a = access(request)
    if a.principal.anonymous:
        raise Unauthenticated("sign in to see your jobs")
    limit = min(max(int(request.query_params.get("limit", "50") or 50), 1), 500) \
        if (request.query_params.get("limit", "50") or "50").isdigit() else None
    if limit is None:
        raise Invalid("limit must be a whole number")
    async with db(request, "admin") as conn:
        cur = await conn.execute(MINE, {"all": a.administers, "principal_id": a.principal.id,
                                        "limit": limit})
        rows = await cur.fetchall()
        columns = [c.name for c in cur.description]
    return JSONResponse({"jobs": [_shown(request, r, columns) for r in rows],
                         "links": [{"rel": "self", "href": f"{base(request)}/jobs"}]},
                        headers={"Cache-Control": "private, no-store"})


routes = [
    Route("/layers", publish, methods=["POST"]),
    Route("/uploads", open_upload, methods=["POST"]),
    Route("/uploads/{upload}", upload_chunk, methods=["PUT", "HEAD"]),
    Route("/jobs", jobs),
    Route("/jobs/{job}", job, methods=["GET", "DELETE"]),
    Route("/jobs/{job}/results", results),
]

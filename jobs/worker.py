"""``onemap worker``: runs the queue's jobs, one at a time per worker process.

A job of kind ``ingest`` is an upload published through the same pipeline as the command
line (``ingest.vector`` / ``ingest.raster``: one transaction, the layer as it was when it
fails); its files wait in ``Settings.uploads`` and are removed when the job ends. Each run
is audited as its principal. Workers wait on ``LISTEN onemap_jobs`` and poll besides, so a
job submitted while none listened is still found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from access.audit import Entry, write_now
from ingest.errors import IngestError
from ingest.raster import ingest_raster
from ingest.vector import ingest_vector
from jobs.queue import CHANNEL, Dismissed, beat, claim, finish
from layers import db as db_setup
from layers.db import database_url, direct_url
from layers.errors import DomainError, Forbidden
from layers.meta import LayerMeta
from onemap.settings import Settings

log = logging.getLogger("onemap.jobs")

POLL = 2.0  # seconds between looks at the queue when no notice comes
BEAT = 10.0  # seconds between heartbeats of a running job
SWEEP = 60.0  # seconds between looks for expired result layers
DISMISS_LOOK = 1.0  # seconds between looks whether a running process was dismissed
SHOWN_ISSUES = 1000  # a report keeps this many repaired or rejected features, and counts all
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt", ".png", ".jpg", ".jpeg")
# The file of a multi-file upload that GDAL opens (a shapefile's .shp, not its .dbf).
MAIN_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".kml", ".gml", ".csv",
                 ".tab", ".mif", ".gdb", ".sqlite", ".osm.pbf", ".pbf", ".zip", *RASTER_SUFFIXES)


def source_path(folder: Path, files: list[str]) -> str:
    """What GDAL opens of an upload: its one file, a zip as ``/vsizip/``, or the main file
    of several (a shapefile's .shp beside its .dbf, .shx and .prj)."""
    names = sorted(files)
    main = next((n for s in MAIN_SUFFIXES for n in names if n.lower().endswith(s)), names[0])
    path = str(folder / main)
    return f"/vsizip/{path}" if main.lower().endswith(".zip") else path


def is_raster(path: str) -> bool:
    return path.lower().endswith(RASTER_SUFFIXES)


class Run:
    """One claimed job: its progress reports (the heartbeat) and its end."""

    def __init__(self, url: str, job: dict[str, Any], worker: str) -> None:
        self.job, self.worker = job, worker
        self.conn = psycopg.connect(url, autocommit=True)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._progress = 0
        self.dismissed = False
        self._beater = threading.Thread(target=self._beat_loop, daemon=True)
        self._beater.start()

    def report(self, progress: int, message: str | None = None) -> None:
        """Progress in percent; raises Dismissed when the job was dismissed meanwhile."""
        with self._lock:
            self._progress = max(self._progress, min(99, int(progress)))
            try:
                beat(self.conn, self.job["id"], self.worker, self._progress, message)
            except Dismissed:
                self.dismissed = True
                raise

    def _beat_loop(self) -> None:
        # The bulk write after the last batch may take minutes: the job still lives.
        while not self._stop.wait(BEAT):
            try:
                self.report(self._progress)
            except (Dismissed, psycopg.Error):
                return

    def end(self, state: str, message: str | None, result: dict[str, Any] | None) -> None:
        self._stop.set()
        self._beater.join(timeout=BEAT + 5)
        with self._lock:
            if not finish(self.conn, self.job["id"], self.worker, state, message, result):
                log.info("job %s was dismissed or taken over; its end is not recorded",
                         self.job["id"])
            self.conn.close()


def refusal(settings: Settings, url: str, job: dict[str, Any]) -> str | None:
    """Why the job's principal may no longer publish it (rule 10, read again as the job
    starts: a right withdrawn, a principal disabled or moved, a layer reclassified since
    it was queued), or None. A job without a principal is the installation's own."""
    if job["principal_id"] is None:
        return None

    async def check() -> str | None:
        from access.credentials import CredentialError
        from access.directory import Directory
        from layers.catalog import fetch_layers

        async with await psycopg.AsyncConnection.connect(url) as conn:
            directory = Directory(settings.levels)
            await directory.refresh(conn)
            try:
                p = directory.principal(job["principal_id"])
            except CredentialError as exc:
                return f"{job['principal']}: {exc}"
            found = await fetch_layers(conn, ids=[job["layer_id"]])
        meta = job["params"].get("meta", {})
        layer = found[0] if found else None
        return directory.policy.publish_refusal(
            p, job["layer_id"], layer, meta.get("level"),
            meta.get("department") if layer is None else None)

    return asyncio.run(check())


def run_ingest(settings: Settings, job: dict[str, Any], run: Run) -> dict[str, Any]:
    """An upload published; the ingest report as the job's result."""
    refused = refusal(settings, database_url(settings), job)
    if refused is not None:
        raise Forbidden(f"no longer allowed to publish: {refused}")
    p = job["params"]
    folder = settings.uploads / p["dir"]
    path = source_path(folder, p["files"])
    o = p.get("options", {})
    meta = LayerMeta(**p.get("meta", {}))

    def progress(read: int, total: int | None) -> None:
        run.report(90 * read / total if total else 50, f"{read} features read")

    if p.get("kind") == "raster" or (p.get("kind") is None and is_raster(path)):
        run.report(10, "writing a Cloud-Optimized GeoTIFF")
        when = datetime.fromisoformat(o["time"]) if o.get("time") else None
        report = ingest_raster(path, job["layer_id"], settings=settings, time=when,
                               source_crs=o.get("source_crs"), nodata=o.get("nodata"),
                               elevation=bool(o.get("elevation")), bands=o.get("bands"),
                               meta=meta, progress=False)
        return {"kind": "raster", **report.as_dict(), "summary": report.summary()}
    types = {n: f["type"] for n, f in p.get("fields", {}).items() if f.get("type")}
    report = ingest_vector(path, job["layer_id"], settings=settings,
                           source_layer=o.get("source_layer"), source_crs=o.get("source_crs"),
                           key=o.get("key"), where=o.get("where"),
                           produced_field=o.get("produced_field"), meta=meta, progress=False,
                           field_types=types or None, on_progress=progress)
    out = report.as_dict()
    issues = out.pop("issues")
    return {"kind": "vector", **out, "summary": report.summary(),
            "issues": issues[:SHOWN_ISSUES], "issues_shown": min(len(issues), SHOWN_ISSUES),
            "issues_total": len(issues)}


def run_process(settings: Settings, job: dict[str, Any], run: Run) -> dict[str, Any]:
    """An analysis process run for its principal, as it stands now (its grants read again
    when the job starts, as rule 10's are for an upload), every layer under its limits."""
    from access.directory import Directory
    from access.policy import Access
    from analysis.processes import execute as run_analysis
    from analysis.processes import keep
    from layers.catalog import LAYER_ID, fetch_layers
    from layers.errors import Forbidden, NotFound
    from layers.rasters import RasterSource, RasterStore, fetch_scenes

    p = job["params"]

    async def go() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(
                database_url(settings), autocommit=True, **db_setup.CONNECT,
                options=f"-c statement_timeout={settings.budget_ms('jobs')}") as conn:
            if db_setup.transaction_pooled(settings):  # a pooler passes no start-up options
                await conn.set_autocommit(False)
                await conn.execute("SELECT set_config('statement_timeout', %s, true)",
                                   (f"{settings.budget_ms('jobs')}ms",))
            directory = Directory(settings.levels)
            await directory.refresh(conn)
            who = directory.principal(job["principal_id"])
            access = Access(who, directory.policy)

            async def resolve(layer_id: str, kinds: tuple[str, ...],  # noqa: ANN202
                              shapes: bool):
                found = await fetch_layers(conn, ids=[layer_id]) \
                    if LAYER_ID.match(layer_id) else []
                a = access.layer(found[0]) if found else None
                if not found or a is None or found[0].kind not in kinds:
                    raise NotFound(f"no layer {layer_id!r}")
                refusal = access.policy.shapes_refusal(found[0]) if shapes else None
                if refusal:
                    raise Forbidden(refusal)
                return found[0], a.restriction

            store = RasterStore(settings.raster_root)

            async def rasters(layer):  # noqa: ANN001, ANN202
                return RasterSource(layer, layer.version, await fetch_scenes(conn, layer.id),
                                    store)

            run.report(10, f"running {p['process']}")
            task = asyncio.ensure_future(run_analysis(p["process"], p["inputs"], conn,
                                                      resolve, rasters))
            while not task.done():  # dismissed meanwhile: its statement is cancelled
                await asyncio.wait({task}, timeout=DISMISS_LOOK)
                if task.done():
                    break
                try:  # a heartbeat that says whether it was dismissed, each second
                    await asyncio.to_thread(run.report, 10)
                except Dismissed:
                    await conn.cancel_safe(timeout=5)
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                        await task
                    raise
            result, layers = task.result()
            if p.get("reference"):
                refusal = access.policy.keep_refusal(who)
                if refusal:
                    raise Forbidden(refusal)
                run.report(80, "keeping the result as a layer")
                result = await keep(conn, database_url(settings), p["process"], result,
                                    layers, str(who.department), settings.levels,
                                    hours=settings.result_hours,
                                    detail_zoom=settings.detail_zoom,
                                    default_level=settings.default_level)
        n = len(result.get("features", ())) if isinstance(result, dict) else 0
        return {"kind": "process", "process": p["process"], "layers": layers,
                "value": result, "summary": f"{p['process']}: {n} features"}

    return asyncio.run(go())


KINDS = {"ingest": run_ingest, "process": run_process}


def audit(url: str, job: dict[str, Any], state: str, detail: dict[str, Any]) -> None:
    """The run in the audit log, as its principal."""
    entry = Entry(at=datetime.now(UTC), principal_id=job["principal_id"],
                  principal=job["principal"], department=job["department"], key_id=None,
                  action="publish" if job["kind"] == "ingest" else "process", method="JOB",
                  path=f"/jobs/{job['id']}",
                  layers=[job["layer_id"]] if job["layer_id"] else job["params"].get(
                      "layers", []),
                  detail={"job": str(job["id"]), "kind": job["kind"], "state": state,
                          **detail}, status=200 if state == "successful" else 422)
    with psycopg.connect(url, autocommit=True) as conn:
        write_now(conn, entry)


def execute(settings: Settings, url: str, job: dict[str, Any], worker: str) -> str:
    """Run one claimed job to its end; its state."""
    run = Run(url, job, worker)
    started = time.monotonic()
    state, message, result = "failed", None, None
    try:
        result = KINDS[job["kind"]](settings, job, run)
        state, message = "successful", result.get("summary")
    except Dismissed:
        state, message = "dismissed", "dismissed while it ran: nothing was written"
    except (IngestError, DomainError, ValueError, OSError) as exc:
        message = str(exc)
        if run.dismissed:
            state, message = "dismissed", "dismissed while it ran: nothing was written"
    except Exception as exc:  # a bug must not end the worker; the job says it failed
        log.exception("job %s failed", job["id"])
        message = f"failed: {type(exc).__name__}"
    if job["kind"] == "ingest":  # gone before the job says it ended
        shutil.rmtree(settings.uploads / job["params"]["dir"], ignore_errors=True)
    run.end(state, message, result)
    counts = {k: result[k] for k in ("inserted", "changed", "unchanged", "closed",
                                     "repaired", "rejected") if result and k in result}
    audit(url, job, state, {"message": message, "seconds": round(time.monotonic() - started,
                                                                  1), **counts})
    log.info("job %s (%s %s): %s: %s", job["id"], job["kind"], job["layer_id"], state,
             message)
    return state


def _expire(settings: Settings, url: str) -> None:
    """Results kept as layers whose time is up are withdrawn (any worker may do it)."""
    from layers.results import expire

    try:
        for layer_id in expire(url, settings.levels, lock_timeout_ms=settings.lock_timeout_ms,
                               statement_ms=settings.budget_ms("writes")):
            log.info("result layer %s expired and was withdrawn", layer_id)
    except (psycopg.Error, DomainError) as exc:  # the next sweep tries again
        log.warning("result layers could not be expired now: %s", exc)


def work(settings: Settings, *, once: bool = False, stop: threading.Event | None = None,
         name: str | None = None) -> int:
    """Claim and run jobs until ``stop`` is set (or, ``once``, until none waits); the number
    of jobs run."""
    url = database_url(settings)
    worker = name or f"{socket.gethostname()}:{os.getpid()}"
    stop = stop or threading.Event()
    done = 0
    with psycopg.connect(direct_url(settings), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        swept = 0.0
        while not stop.is_set():
            if time.monotonic() - swept > SWEEP:
                swept = time.monotonic()
                _expire(settings, url)
            job = claim(conn, worker, settings.job_stale_seconds)
            if job is None:
                if once:
                    break
                for _ in conn.notifies(timeout=POLL, stop_after=1):
                    pass
                continue
            log.info("job %s (%s %s) started", job["id"], job["kind"], job["layer_id"])
            execute(settings, url, job, worker)
            done += 1
    return done

"""The ``onemap`` command: serve, run the embedded database, list and ingest layers,
administer access."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from layers.catalog import ROLES, SHARING_TYPES
from onemap.settings import Settings

SHOWN_ISSUES = 20


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from layers.db import prepare

    prepare(settings)  # start and migrate before announcing the URL
    job_workers = 0 if args.no_worker else settings.job_workers
    # Job workers run beside the server, as processes of their own, and end with it.
    started = [subprocess.Popen([sys.executable, "-m", "onemap.cli",
                                 *(["-v"] if args.verbose else []), "worker"],
                                env={**os.environ, "ONEMAP_DATA_DIR": str(settings.data_dir)},
                                preexec_fn=_end_with_parent)
               for _ in range(job_workers)]
    print(f"OneMap at http://{settings.host}:{settings.port}/"
          + (f" ({job_workers} job worker{'s' if job_workers > 1 else ''})"
             if job_workers else ""), flush=True)
    try:
        _uvicorn(settings)
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def _end_with_parent() -> None:
    """In a job worker before it starts: told to stop (SIGTERM, it ends after its job)
    when the server that started it ends, however it ends — killed too (Linux)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _uvicorn(settings: Settings) -> None:
    import uvicorn

    from mapserver.app import create_app

    # A stop (SIGTERM) closes the socket, lets the requests in flight finish (for up to
    # this long), then flushes the audit queue.
    graceful = {"timeout_graceful_shutdown": 30, "proxy_headers": True, "log_level": "info"}
    if settings.workers > 1:  # each process builds its own app from the same ONEMAP_* env
        # One metrics directory for all of them, so a scrape adds up every process.
        shared = settings.data_dir / "metrics"
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
        uvicorn.run("mapserver.app:create_app", factory=True, host=settings.host,
                    port=settings.port, workers=settings.workers, **graceful)
    else:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **graceful)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from jobs.worker import work
    from layers.db import prepare

    prepare(settings)
    stop = threading.Event()
    # A stop ends the worker after its job: an ingest half done is rolled back anyway,
    # and another worker takes the job once this one has gone quiet.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    done = work(settings, once=args.once, stop=stop)
    if args.once:
        print(f"{done} job{'s' if done != 1 else ''} run")
    return 0


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from layers.db import embedded_cluster, prepare

    if settings.database_url:
        if args.action == "start":
            prepare(settings)
        print("using ONEMAP_DATABASE_URL; the embedded cluster is not used")
        return 0
    cluster = embedded_cluster(settings)
    if args.action == "start":
        prepare(settings)
    elif args.action == "stop":
        cluster.stop()
    print(cluster.status())
    return 0


def _layers(args: argparse.Namespace, settings: Settings) -> int:
    from layers.catalog import list_layers
    from layers.db import connect, prepare

    prepare(settings)
    with connect(settings) as conn:
        layers = list_layers(conn)
    if args.json:
        print(json.dumps([ly.as_dict() for ly in layers], ensure_ascii=False, indent=2))
        return 0
    if not layers:
        print("no layers")
    for ly in layers:
        print(f"{ly.id:24} v{ly.version:<4} {ly.kind:7} {ly.geometry_type or '-':16} "
              f"{ly.feature_count:>9} features  {ly.crs:10} {ly.title}")
    return 0


def _scene3d(args: argparse.Namespace, settings: Settings) -> int:
    from layers.catalog import get_layer
    from layers.db import connect, prepare
    from scenes3d.catalog import Scene, SceneError, publish, withdraw

    prepare(settings)
    with connect(settings) as conn:
        layer = get_layer(conn, args.layer)
        if layer is None:
            print(f"error: no layer {args.layer!r}", file=sys.stderr)
            return 2
        if args.withdraw:
            print(f"3D scene {args.layer} " + ("withdrawn" if withdraw(conn, args.layer)
                                               else "was not published"))
            return 0
        scene = Scene(args.layer, args.height, args.levels, args.storey, args.default,
                      args.zoom)
        try:
            publish(conn, scene, layer)
        except SceneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(f"3D scene {args.layer}: /3dtiles/{args.layer}/tileset.json")
    return 0


def _json_file(path: str) -> object:
    """A JSON file a command was given, or Invalid naming it (exit 2)."""
    from pathlib import Path

    from layers.errors import Invalid

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Invalid(f"{path}: not a readable JSON file ({exc})") from exc


def _basemap(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    import psycopg

    from layers.catalog import fetch_layers
    from layers.db import prepare
    from layers.errors import Invalid
    from styles import basemaps

    url = prepare(settings)
    if args.id is None and (args.style or args.imagery or args.labels_of or args.delete):
        raise Invalid("name the base map: onemap basemap ID ...")
    style = _json_file(args.style) if args.style else None

    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            if args.id is None:
                every = await basemaps.fetch_all(conn)
                return "\n".join(f"{b.id}\t{b.kind}\tv{b.version}\t{b.title}\t"
                                 f"{','.join(b.layers)}" for b in every) or "no base maps"
            if args.delete:
                await basemaps.delete(conn, args.id)
                return f"{args.id}: deleted"
            if not (style is not None or args.imagery or args.labels_of):
                found = await basemaps.fetch(conn, args.id)
                return json.dumps({**found.as_dict(), "style": found.style}, indent=2,
                                  ensure_ascii=False)
            catalog = {ly.id: ly for ly in await fetch_layers(conn)}
            title = args.title or args.id
            if style is not None:
                try:
                    layers, kept = await asyncio.to_thread(basemaps.checked, args.id, style,
                                                           catalog)
                except Invalid as exc:
                    raise Invalid(f"{args.style}: {exc}") from exc
                kind = "vector"
            elif args.imagery:
                layers = basemaps.checked_imagery(
                    [i.strip() for i in args.imagery.split(",") if i.strip()], catalog)
                kept, kind = [], "raster"
            else:
                layers, kept, kind = (), [], "vector"
            async with conn.transaction():
                version = await basemaps.put(conn, args.id, title, kind, layers, kept,
                                             "onemap basemap", labels_of=args.labels_of,
                                             background=args.background)
            return f"{args.id}: version {version}"

    print(asyncio.run(run()))
    return 0


def _style(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    import psycopg

    from layers.catalog import fetch_layers
    from layers.db import prepare
    from layers.errors import Invalid
    from styles import store
    from styles.build import style_layers

    url = prepare(settings)
    entries = _json_file(args.file) if args.file else None

    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            found = await fetch_layers(conn, ids=[args.layer])
            if not found or found[0].kind != "vector":
                raise Invalid(f"no vector layer {args.layer!r}")
            layer = found[0]
            if args.reset:
                done = await store.reset(conn, layer)
                return f"{layer.id}: " + ("back to its default look" if done
                                          else "already in its default look")
            if entries is not None:
                try:
                    kept = await asyncio.to_thread(store.checked, layer, entries)
                except Invalid as exc:
                    raise Invalid(f"{args.file}: {exc}") from exc
                version = await store.put(conn, layer, kept, "onemap style")
                return f"{layer.id}: style version {version}, {len(kept)} style layers"
            looks = await store.stored(conn, [layer.id])
            return json.dumps(style_layers(layer, looks), indent=2, ensure_ascii=False)

    print(asyncio.run(run()))
    return 0


def _ingest_vector(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.errors import IngestError
    from ingest.vector import ingest_vector
    from layers.db import prepare

    prepare(settings)
    meta = _meta(args)
    actor = _actor(settings, args)
    try:
        report = ingest_vector(args.path, args.layer, settings=settings,
                               source_layer=args.source_layer, source_crs=args.source_crs,
                               key=args.key, where=args.where,
                               produced_field=args.produced_field, meta=meta)
    except IngestError as exc:
        _audit_ingest(settings, actor, args.layer, "failed", {"message": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _audit_ingest(settings, actor, args.layer, "successful", report.counts())
    print(report.summary())
    for issue in report.issues[:SHOWN_ISSUES]:
        print(f"  feature {issue.feature} (id {issue.id}): {issue.action}: {issue.reason}")
    if len(report.issues) > SHOWN_ISSUES:
        print(f"  ... and {len(report.issues) - SHOWN_ISSUES} more"
              + ("" if args.report else " (write them all with --report FILE)"))
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(report.as_dict(), fh, ensure_ascii=False, indent=2)
    return 0


LEDGER_LAYERS = {"carrier": "carriers", "front": "fronts", "model": "device models"}


def _actor(settings: Settings, args: argparse.Namespace) -> tuple[int | None, str, str | None]:
    """Whom an ingest is made for: ``--as`` (a principal of the directory; Invalid if there
    is none), else the installation's administrator."""
    import psycopg

    from layers.db import database_url
    from layers.errors import Invalid

    name = getattr(args, "as_principal", None)
    if not name:
        return None, "administrator (command line)", None
    with psycopg.connect(database_url(settings)) as conn:
        row = conn.execute("SELECT id, department_id FROM onemap.principals WHERE name = %s"
                           " AND NOT disabled", (name,)).fetchone()
    if row is None:
        raise Invalid(f"--as {name!r}: no such principal (onemap auth list principals)")
    return int(row[0]), name, str(row[1])


def _audit_ingest(settings: Settings, actor: tuple[int | None, str, str | None], layer: str,
                  state: str, detail: dict) -> None:
    """The command line's ingest in the audit log, as its principal."""
    from datetime import UTC, datetime

    import psycopg

    from access.audit import Entry, write_now
    from layers.db import database_url

    with psycopg.connect(database_url(settings), autocommit=True) as conn:
        write_now(conn, Entry(at=datetime.now(UTC), principal_id=actor[0], principal=actor[1],
                              department=actor[2], key_id=None, action="publish",
                              method="CLI", path=f"ingest {layer}", layers=[layer],
                              detail={"state": state, **detail},
                              status=200 if state == "successful" else 400))


def _meta(args: argparse.Namespace):
    from layers.meta import LayerMeta

    return LayerMeta(title=args.title, role=args.role, description=args.description,
                     department=args.department, attribution=args.attribution,
                     update_cycle=args.update_cycle, sharing_type=args.sharing_type,
                     keywords=args.keyword or None, level=args.level,
                     field_titles=_titles(args.field_title))


def _titles(given: list[str] | None) -> dict[str, str] | None:
    """``--field-title name=Street name`` flags as a dictionary's titles."""
    from layers.errors import Invalid

    out = {}
    for item in given or []:
        name, sep, title = item.partition("=")
        if not sep or not name.strip() or not title.strip():
            raise Invalid(f"--field-title {item!r}: write it FIELD=TITLE")
        out[name.strip()] = title.strip()
    return out or None


def _ingest_raster(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import datetime

    from ingest.errors import IngestError
    from ingest.raster import ingest_raster
    from layers.db import prepare

    try:
        when = datetime.fromisoformat(args.time) if args.time else None
        bands = [int(b) for b in args.bands.split(",")] if args.bands else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prepare(settings)
    actor = _actor(settings, args)
    try:
        report = ingest_raster(args.path, args.layer, settings=settings, time=when,
                               source_crs=args.source_crs, nodata=args.nodata,
                               elevation=args.elevation, bands=bands, compress=args.compress,
                               meta=_meta(args))
    except IngestError as exc:
        _audit_ingest(settings, actor, args.layer, "failed", {"message": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _audit_ingest(settings, actor, args.layer, "successful", report.counts())
    print(report.summary())
    return 0


def _ingest_ledger(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg
    from pyogrio.errors import DataSourceError

    from layers.db import prepare
    from registry import ledger, osm
    from registry.publish import publish

    try:
        mapping = dict(m.split("=", 1) for m in args.map or [])
    except ValueError:
        print("error: --map is FIELD=COLUMN", file=sys.stderr)
        return 2
    from_osm = osm.is_osm(args.path)
    if from_osm and args.entity == "model":
        print("error: an OSM extract holds carriers and fronts, not device models",
              file=sys.stderr)
        return 2
    url = prepare(settings)
    actor = _actor(settings, args)
    try:
        rows = (osm.read(args.path, args.entity) if from_osm
                else ledger.read_table(args.path, mapping))
    except (ledger.RowError, OSError, ValueError, DataSourceError) as exc:
        print(f"error: {args.path}: {exc}", file=sys.stderr)
        return 2
    first = 1 if from_osm else 2
    with psycopg.connect(url) as conn:
        report = ledger.load(conn, args.entity, os.path.basename(args.path), rows,
                             first_row=first, owner=args.department)
        conn.commit()
    _audit_ingest(settings, actor, LEDGER_LAYERS[args.entity], "successful",
                  {"message": report.summary()})
    print(report.summary())
    for o in report.outcomes:
        if o.action in ("rejected", "duplicate"):
            where = (f"feature {o.n} (osm {rows[o.n - first]['osm_id']})" if from_osm
                     else f"row {o.n}")
            print(f"  {where}: {o.action}: {o.reason}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(report.as_dict(), fh, ensure_ascii=False, indent=2)
    if args.entity != "model":
        for layer, summary in publish(settings, _meta(args)).items():
            print(f"published {layer}: {summary}")
    return 0 if report.count("new") + report.count("updated") else 2


def _catalog_options(p: argparse.ArgumentParser, role_help: str) -> None:
    p.add_argument("--title")
    p.add_argument("--role", choices=ROLES, help=role_help)
    p.add_argument("--description")
    p.add_argument("--department", help="owning department")
    p.add_argument("--attribution", help="credit shown with the data, e.g. its license")
    p.add_argument("--keyword", action="append", help="catalog keyword (repeatable)")
    p.add_argument("--update-cycle", help="e.g. daily, monthly, yearly, irregular")
    p.add_argument("--sharing-type", choices=SHARING_TYPES)
    p.add_argument("--level", help="classification, one of ONEMAP_LEVELS (default "
                                   "ONEMAP_DEFAULT_LEVEL, internal)")
    p.add_argument("--field-title", action="append", metavar="FIELD=TITLE",
                   help="a field's title in the data dictionary (repeatable), e.g. "
                        "name=Street name")
    p.add_argument("--as", dest="as_principal", metavar="PRINCIPAL",
                   help="the principal this ingest is made for, in the audit log (default: "
                        "the installation's administrator)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onemap", description="OneMap: the city's one map.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve tiles, styles, the catalog and the viewer")
    s.add_argument("--host", help="address to listen on (ONEMAP_HOST, default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (ONEMAP_PORT, default 8080)")
    s.add_argument("--workers", type=int,
                   help="server processes (ONEMAP_WORKERS, default 1; one per core for rasters)")
    s.add_argument("--no-worker", action="store_true",
                   help="start no job worker beside the server (ONEMAP_JOB_WORKERS, default "
                        "1): run `onemap worker` elsewhere")
    s.set_defaults(func=_serve)

    w = sub.add_parser("worker", help="run queued jobs (uploads published over HTTP)")
    w.add_argument("--once", action="store_true", help="run the jobs waiting now, then stop")
    w.set_defaults(func=_worker)

    d = sub.add_parser("db", help="the embedded PostgreSQL cluster under ONEMAP_DATA_DIR")
    d.add_argument("action", choices=["start", "stop", "status"])
    d.set_defaults(func=_db)

    ly = sub.add_parser("layers", help="list the layer catalog")
    ly.add_argument("--json", action="store_true", help="full entries with data dictionaries")
    ly.set_defaults(func=_layers)

    i = sub.add_parser("ingest", help="load data into a layer")
    isub = i.add_subparsers(dest="kind", required=True)
    v = isub.add_parser(
        "vector", help="GeoJSON, GeoPackage, Shapefile (.shp or .zip), FlatGeobuf, OSM PBF, CSV",
        description="Load a vector file into a layer in one transaction. With --key, a "
                    "re-ingest is an incremental update; every past state stays queryable.")
    v.add_argument("path")
    v.add_argument("--layer", required=True, help="layer id: a-z, 0-9, _")
    v.add_argument("--source-layer", help="layer inside the file (e.g. points for OSM PBF)")
    v.add_argument("--source-crs", help="CRS of the data if the file has none or a wrong one "
                                        "(EPSG:xxxx, WKT, PROJ, or GCJ02)")
    v.add_argument("--key", help="field(s) that identify a feature, comma-separated")
    v.add_argument("--where", help="OGR SQL filter on the source, e.g. \"highway='street_lamp'\"")
    v.add_argument("--produced-field", help="field holding each feature's production time "
                                            "(default: the file's modification time)")
    _catalog_options(v, "base layers (the e-map) are served with item quotas, never in bulk")
    v.add_argument("--report", help="write the full ingest report as JSON to this file")
    v.set_defaults(func=_ingest_vector)
    r = isub.add_parser(
        "raster", help="GeoTIFF or any GDAL raster: a scene of an imagery or elevation layer",
        description="Add a raster as a scene of a layer: warped to lon/lat and written as a "
                    "Cloud-Optimized GeoTIFF to the raster store (ONEMAP_RASTER_STORE). "
                    "Scenes with the same --time form one time slice of the mosaic.")
    r.add_argument("path")
    r.add_argument("--layer", required=True, help="layer id: a-z, 0-9, _")
    r.add_argument("--time", help="acquisition time, ISO 8601 (default: the TIFF's "
                                  "DATETIME tag, else the file's modification time)")
    r.add_argument("--source-crs", help="CRS if the file has none or a wrong one")
    r.add_argument("--nodata", type=float, help="value meaning no data, if the file has none")
    r.add_argument("--elevation", action="store_true",
                   help="heights in metres: served as terrain-RGB, hillshade and point heights")
    r.add_argument("--bands", help="bands shown by default, e.g. 3,2,1 (default 1,2,3 or 1)")
    r.add_argument("--compress", default="auto",
                   choices=["auto", "webp", "jpeg", "deflate", "lerc_deflate"],
                   help="auto: WebP for 8-bit RGB imagery, DEFLATE otherwise")
    _catalog_options(r, "base layers (imagery) are served, never handed out in bulk")
    r.set_defaults(func=_ingest_raster)

    lg = isub.add_parser(
        "ledger", help="a CSV/XLSX ledger or an OSM extract of carriers, fronts or device "
                       "models into the registry",
        description="Load a ledger: every row checked, bad rows reported by row number "
                    "while good rows load; known aliases update their entity, rows of the "
                    "same kind within 3 m are flagged as duplicates; new entities get city "
                    "codes. An OSM extract (.osm.pbf) gives carriers (street lamps, traffic "
                    "signals, masts, power poles) or fronts (surveillance and speed "
                    "cameras) with their OSM ids as aliases. The registry is then published "
                    "as the carriers and fronts layers.")
    lg.add_argument("path")
    lg.add_argument("--entity", required=True, choices=["carrier", "front", "model"])
    lg.add_argument("--map", action="append", metavar="FIELD=COLUMN",
                    help="the ledger's column for a field, e.g. lon=X or asset_no=资产编号")
    lg.add_argument("--report", help="write every row's outcome as JSON to this file")
    _catalog_options(lg, "registry layers are thematic")
    lg.set_defaults(func=_ingest_ledger)

    s3 = sub.add_parser(
        "scene3d", help="publish a polygon layer as 3D Tiles of extruded footprints",
        description="Publish (or --withdraw) a polygon layer as an OGC 3D Tiles scene: each "
                    "footprint extruded to its height, read from the layer's fields at "
                    "request time, so edits and ingests show at once. A field may be "
                    "FIELD:TAG to read one tag of an OSM tag set (other_tags:height).")
    s3.add_argument("layer")
    s3.add_argument("--height", help="field (or FIELD:TAG) holding the height in metres")
    s3.add_argument("--levels", help="field (or FIELD:TAG) holding the number of storeys")
    s3.add_argument("--storey", type=float, default=3.0, help="metres per storey (3)")
    s3.add_argument("--default", type=float, default=6.0,
                    help="metres when a feature has neither (6)")
    s3.add_argument("--zoom", type=int, default=16,
                    help="Web Mercator zoom of the content tiles, 12..19 (16)")
    s3.add_argument("--withdraw", action="store_true", help="stop serving the scene")
    s3.set_defaults(func=_scene3d)

    st = sub.add_parser(
        "style", help="show, set or reset a layer's style",
        description="A layer's style is kept in the catalog as MapLibre style layers (fill, "
                    "line, circle, symbol, fill-extrusion, heatmap; the source is OneMap's). "
                    "With no option, print it; --file sets it from a JSON list of style "
                    "layers or a style document, checked by the MapLibre style "
                    "specification's validator; --reset returns it to the default look.")
    st.add_argument("layer")
    how = st.add_mutually_exclusive_group()
    how.add_argument("--file", help="JSON file of style layers, or a MapLibre style")
    how.add_argument("--reset", action="store_true", help="back to the default look")
    st.set_defaults(func=_style)

    bm = sub.add_parser(
        "basemap", help="list, show, define or delete a base map",
        description="A base map is a named, versioned composition of catalog layers served "
                    "at /basemaps/ID (style.json, tilejson.json, tiles). --style defines a "
                    "vector base map from MapLibre style layers, each naming the catalog "
                    "layer it draws as its source-layer; --imagery one of raster layers at "
                    "their newest time slice; --labels-of one made of another vector base "
                    "map's labels (an annotation over imagery). With only an ID, print it; "
                    "with nothing, list them.")
    bm.add_argument("id", nargs="?")
    what = bm.add_mutually_exclusive_group()
    what.add_argument("--style", help="JSON file of style layers, or a MapLibre style")
    what.add_argument("--imagery", help="raster layer ids, comma-separated, first on top")
    what.add_argument("--labels-of", help="a vector base map whose labels this one is")
    what.add_argument("--delete", action="store_true")
    bm.add_argument("--title")
    bm.add_argument("--background", help="the ground colour, e.g. #f2efe9")
    bm.set_defaults(func=_basemap)

    from access.cli import add_parser
    from federation.cli import add_parser as add_federation

    add_parser(sub)
    add_federation(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from onemap.logs import configure

    configure(args.verbose, os.environ.get("ONEMAP_LOG_FORMAT", "text"))
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "workers")}
    try:
        settings = Settings.from_env(**overrides)
        from layers.db import configure

        configure(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import errno

    import psycopg

    from layers.cluster import ClusterError
    from layers.errors import DomainError, Unavailable

    try:
        return int(args.func(args, settings))
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except DomainError as exc:  # bad input the domain named: a file, a row, a department
        print(f"error: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, Unavailable) else 2
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: the database is not reachable ({first}); nothing was changed. "
              "Start it (onemap db start) or check ONEMAP_DATABASE_URL", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"error: no space left where OneMap writes ({exc.filename or 'disk'}); "
                  "nothing was kept. Free space and run again", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())

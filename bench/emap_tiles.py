"""E-map tiles: every layer of the city e-map in one tile, z10 to z16 over the demo city.

The demo's e-map (scripts/demo_emap.py over the Helsinki extract: roads, buildings, rail,
land cover and water, places, points of interest) is built in a private cluster; every
tile of ``/basemaps/emap/{z}/{x}/{y}.mvt`` covering the extract at each zoom is requested
by wrk with 8 connections from OneMap with 2 worker processes, twice: with its tile cache
off (every tile made by PostGIS) and as deployed (generalized tiles, below each layer's
detail zoom, made once per layer version). No peer serves a multi-layer base map from
PostGIS with a style (tipg serves one collection per tile), so the figures are absolute;
the sizes are checked against the bound of 500 KB a tile. Usage:

    make bench-emap      # or: .venv/bin/python bench/emap_tiles.py [--rounds 3]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import mercantile
import psycopg
from harness import ROOT, Server, bench_args, few, free_port, summarize_wrk, write_figures, wrk

from ingest.vector import ingest_vector
from layers.cluster import Cluster
from layers.meta import LayerMeta
from layers.migrate import migrate
from onemap.settings import Settings

CONCURRENCY = 8
WORKERS = 2
ZOOMS = range(10, 17)
MAX_BYTES = 500 * 1024
PBF = ROOT / "data" / "samples" / "helsinki-centre.osm.pbf"


@contextlib.contextmanager
def city(workdir: str | None) -> Iterator[tuple[str, tuple[float, ...]]]:
    """A private cluster holding the demo's e-map: (database url, the e-map's bounds)."""
    root = Path(workdir or tempfile.mkdtemp(prefix="onemap-bench-emap-"))
    made = (root / "pg").exists()
    cluster = Cluster(root / "pg", free_port(), durable=False)
    cluster.start()
    try:
        env = {**os.environ, "ONEMAP_DATABASE_URL": cluster.url, "ONEMAP_DATA_DIR": str(root),
               "ONEMAP_DEFAULT_LEVEL": "public"}
        if not made:
            with psycopg.connect(cluster.url, autocommit=True) as conn:
                migrate(conn)
            settings = Settings(database_url=cluster.url, data_dir=root, default_level="public")
            osm = LayerMeta(attribution="© OpenStreetMap contributors, ODbL")
            ingest_vector(PBF, "roads", source_layer="lines", where="highway IS NOT NULL",
                          key="osm_id", settings=settings, meta=osm, progress=False)
            ingest_vector(PBF, "buildings", source_layer="multipolygons",
                          where="building IS NOT NULL", key="osm_id,osm_way_id",
                          settings=settings, meta=osm, progress=False)
            subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_emap.py"), str(PBF)],
                           env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        with psycopg.connect(cluster.url) as conn:
            row = conn.execute(
                "SELECT min(extent[1]), min(extent[2]), max(extent[3]), max(extent[4])"
                " FROM onemap.layers WHERE id IN (SELECT unnest(layers) FROM onemap.basemaps"
                " WHERE id = 'emap')").fetchone()
        yield cluster.url, tuple(row)
    finally:
        cluster.stop()
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    args = bench_args(__doc__, "emap_tiles.json")
    results: dict = {}
    with city(args.workdir) as (url, bounds):
        env = {"ONEMAP_DATABASE_URL": url, "ONEMAP_ACCESS_NOTICES": "1"}
        servers = {
            "computed": Server("computed", "mapserver.app:create_app",
                               {**env, "ONEMAP_TILE_CACHE_MB": "0"}, factory=True,
                               workers=WORKERS),
            "cached": Server("cached", "mapserver.app:create_app", env, factory=True,
                             workers=WORKERS),
        }
        try:
            for s in servers.values():
                s.start("/healthz")
            for z in few(ZOOMS):
                cells = list(mercantile.tiles(*bounds, zooms=[z]))
                paths = [f"/basemaps/emap/{t.z}/{t.x}/{t.y}.mvt" for t in cells]
                sizes = []
                for p in paths:
                    r = httpx.get(servers["computed"].url + p, timeout=60)
                    if r.status_code != 200:
                        raise RuntimeError(f"{p}: {r.status_code} {r.text[:200]}")
                    sizes.append(len(r.content))
                for s in servers.values():
                    wrk(s.url, paths, CONCURRENCY, 1)  # warm
                runs: dict[str, list[dict]] = {n: [] for n in servers}
                for i in range(args.rounds):
                    for name in list(servers)[i % 2:] + list(servers)[:i % 2]:
                        runs[name].append(wrk(servers[name].url, paths, CONCURRENCY,
                                              args.seconds))
                row = {n: summarize_wrk(rs, sizes) for n, rs in runs.items()}
                results[f"z{z}"] = {"tiles": len(cells), **row}
                print(f"z{z} ({len(cells):2} tiles, median {statistics.median(sizes) / 1024:6.1f}"
                      f" KB, max {max(sizes) / 1024:6.1f} KB) " + " | ".join(
                          f"{n} {v['rps']:7.1f}/s p50 {v['p50_ms']:6.1f} p99 {v['p99_ms']:6.1f}"
                          for n, v in row.items()), flush=True)
                if max(sizes) > MAX_BYTES:
                    raise RuntimeError(f"z{z}: a tile of {max(sizes)} bytes, over the bound")
        finally:
            for s in servers.values():
                s.stop()
    write_figures(args.out, {"tiles": results, "rounds": args.rounds, "workers": WORKERS,
                             "concurrency": CONCURRENCY, "seconds": args.seconds})


if __name__ == "__main__":
    main()

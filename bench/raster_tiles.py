"""Raster tiles: OneMap against titiler on the same COG, the same tile lists, side by side.

The Olinda Landsat 7 scene is ingested once (a lon/lat COG in OneMap's store); titiler reads
that same file. Every tile of the scene at zooms 12, 14 and 16 (bands 3,2,1, PNG and WebP)
is requested from both, each server with 2 worker processes, by wrk with 8 connections;
rounds alternate the servers. OneMap runs twice: with its tile cache off (every tile read and
encoded, as titiler does) and as deployed (cache on: a tile is made once per
layer version). Usage:

    make bench-raster      # or: .venv/bin/python bench/raster_tiles.py [--rounds 3]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mercantile
import psycopg
from harness import ROOT, Server, bench_args, few, free_port, write_figures, wrk

from ingest.raster import ingest_raster
from layers.cluster import Cluster
from layers.meta import LayerMeta
from layers.migrate import migrate
from onemap.settings import Settings

CONCURRENCY = 8
WORKERS = 2
ZOOMS = (12, 14, 16)
FORMATS = ("png", "webp")
LAYER = "olinda"
SAMPLE = ROOT / "data" / "samples" / "olinda-landsat7.tif"


@contextlib.contextmanager
def scene() -> Iterator[tuple[str, str, str, tuple[float, ...]]]:
    """A private cluster with the scene ingested: (database url, store, COG path, bounds)."""
    root = Path(tempfile.mkdtemp(prefix="onemap-bench-raster-"))
    cluster = Cluster(root / "pg", free_port(), durable=False)
    cluster.start()
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            migrate(conn)
        store = str(root / "rasters")
        settings = Settings(database_url=cluster.url, data_dir=root, raster_store=store)
        ingest_raster(SAMPLE, LAYER, settings=settings, bands=[3, 2, 1], progress=False,
                      time=datetime(2001, 8, 1, tzinfo=UTC),
                      meta=LayerMeta(level="public", title="Olinda"))
        with psycopg.connect(cluster.url) as conn:
            path, bounds = conn.execute("SELECT path, bounds FROM onemap.scenes").fetchone()
        yield cluster.url, store, os.path.join(store, path), tuple(bounds)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def tiles(bounds: tuple[float, ...], z: int) -> list[mercantile.Tile]:
    return list(mercantile.tiles(*bounds, zooms=[z]))


def main() -> None:
    args = bench_args(__doc__, "raster_tiles.json")
    results: dict = {}
    with scene() as (url, store, cog, bounds):
        base_env = {"ONEMAP_DATABASE_URL": url, "ONEMAP_RASTER_STORE": store}
        servers = {
            "onemap": Server("onemap", "mapserver.app:create_app",
                             {**base_env, "ONEMAP_TILE_CACHE_MB": "0"}, factory=True,
                             workers=WORKERS),
            "onemap_cached": Server("onemap_cached", "mapserver.app:create_app", base_env,
                                    factory=True, workers=WORKERS),
            "titiler": Server("titiler", "titiler.application.main:app", {}, workers=WORKERS),
        }
        try:
            for s in servers.values():
                s.start("/healthz")
            for z in few(ZOOMS):
                cells = tiles(bounds, z)
                for fmt in few(FORMATS):
                    paths = {
                        "onemap": [f"/tiles/{LAYER}/WebMercatorQuad/{t.z}/{t.x}/{t.y}.{fmt}"
                                   for t in cells],
                        "titiler": [f"/cog/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.{fmt}"
                                    f"?url={cog}&bidx=3&bidx=2&bidx=1" for t in cells],
                    }
                    paths["onemap_cached"] = paths["onemap"]
                    for name, s in servers.items():
                        r = httpx.get(s.url + paths[name][len(cells) // 2], timeout=60)
                        if r.status_code != 200:
                            raise RuntimeError(f"{name}: {r.status_code} {r.text[:200]}")
                        wrk(s.url, paths[name], CONCURRENCY, 2)  # warm
                    runs: dict[str, list[dict]] = {n: [] for n in servers}
                    for i in range(args.rounds):
                        order = list(servers)[i % 3:] + list(servers)[:i % 3]
                        for name in order:
                            runs[name].append(wrk(servers[name].url, paths[name], CONCURRENCY,
                                                  args.seconds))
                    row = {n: {"rps": statistics.median(r["rps"] for r in rs),
                               "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                               "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                               "errors": sum(r["errors"] for r in rs)}
                           for n, rs in runs.items()}
                    for n in row:
                        row[n]["vs_titiler"] = row[n]["rps"] / row["titiler"]["rps"]
                    results[f"z{z}.{fmt}"] = {"tiles": len(cells), **row}
                    print(f"z{z} {fmt:4} ({len(cells):3} tiles) " + " | ".join(
                        f"{n} {v['rps']:7.1f}/s p50 {v['p50_ms']:6.1f} p99 {v['p99_ms']:6.1f}"
                        f" x{v['vs_titiler']:.2f}" for n, v in row.items()), flush=True)
        finally:
            for s in servers.values():
                s.stop()
    write_figures(args.out, {"tiles": results, "rounds": args.rounds, "workers": WORKERS,
                             "concurrency": CONCURRENCY, "seconds": args.seconds})


if __name__ == "__main__":
    main()

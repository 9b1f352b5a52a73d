"""3D scenes: how fast the 100,000 generated footprints become a tileset and glTF tiles.

The benchmark's polygon layer (100,000 footprints over Beijing, storeys 1-29) is published
as a 3D scene at zoom 16; one OneMap server with its cache off (every tileset and tile is
made from the rows, as after an ingest) answers the root tileset a number of times and
each external tileset once, then wrk cycles through every content tile they name. No peer
of the benchmarks serves 3D Tiles from PostGIS, so the figures stand alone. Usage:

    make bench-3d      # or: .venv/bin/python bench/scenes3d.py [--seconds 10]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx
import psycopg
from dataset import dataset
from harness import Server, bench_args, write_figures, wrk

from access import admin
from access.admin import Actor
from layers.catalog import get_layer
from onemap.settings import Settings
from scenes3d.catalog import Scene, publish

LAYER = "bench_polygons"
CONCURRENCY = 8


def leaves(node: dict) -> list[str]:
    own = [node["content"]["uri"]] if "content" in node else []
    return own + [u for child in node.get("children", []) for u in leaves(child)]


async def classify(url: str) -> None:
    """Public, so that anonymous requests read it, as on a public e-map."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await admin.classify(conn, Actor("bench"), Settings().levels, layer=LAYER,
                             level="public")


def timed(url: str, times: int) -> tuple[float, httpx.Response]:
    """Median milliseconds of ``times`` requests, and the last response."""
    ms, r = [], None
    for _ in range(times):
        t0 = time.perf_counter()
        r = httpx.get(url, timeout=300)
        ms.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return statistics.median(ms), r


def main() -> None:
    args = bench_args(__doc__, "scenes3d.json")
    with dataset(args.workdir, args.port) as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            publish(conn, Scene(LAYER, levels_field="floors"), get_layer(conn, LAYER))
        asyncio.run(classify(url))
        server = Server("onemap", "mapserver.app:create_app",
                        {"ONEMAP_DATABASE_URL": url, "ONEMAP_TILE_CACHE_MB": "0"}, factory=True)
        server.start("/healthz")
        try:
            base = f"{server.url}/3dtiles/{LAYER}/"
            root_ms, root = timed(base + "tileset.json", max(3, args.rounds * 2))
            parts = [u for u in leaves(root.json()["root"])]
            part_ms, sizes_part, paths = [], [], []
            for u in parts:
                ms, r = timed(base + u, 1)
                part_ms.append(ms)
                sizes_part.append(len(r.content))
                paths += [f"/3dtiles/{LAYER}/" + t.removeprefix("../../")
                          for t in leaves(r.json()["root"])]
            sizes = []
            for p in paths:
                r = httpx.get(server.url + p, timeout=120)
                r.raise_for_status()
                sizes.append(len(r.content))
            runs = [wrk(server.url, paths, CONCURRENCY, args.seconds) for _ in range(args.rounds)]
        finally:
            server.stop()
    result = {
        "root_ms_median": root_ms, "root_kb": len(root.content) / 1024,
        "external_tilesets": len(parts), "external_ms_median": statistics.median(part_ms),
        "external_kb_median": statistics.median(sizes_part) / 1024,
        "external_kb_max": max(sizes_part) / 1024, "tiles": len(paths),
        "tile_rps": statistics.median(r["rps"] for r in runs),
        "tile_p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "tile_p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "tile_kb_median": statistics.median(sizes) / 1024, "tile_kb_max": max(sizes) / 1024}
    print(json.dumps(result, indent=2))
    write_figures(args.out, result)


if __name__ == "__main__":
    main()

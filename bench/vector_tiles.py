"""Vector tiles: OneMap against tipg on the same PostGIS tables, and the database floor.

Loads 1,000,000 points and 100,000 polygons in the Beijing area through ``onemap ingest``,
then serves the same tile lists (zoom 10, 12, 14 and mixed) from OneMap and from tipg, and
sends OneMap's tile SQL straight through psycopg as the floor. Usage:

    make bench            # or: .venv/bin/python bench/vector_tiles.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import httpx
import mapbox_vector_tile
import morecantile
import numpy as np
import psycopg
import shapely
from harness import ROOT, Server, Summary, drive, free_port, summarize_wrk, wrk
from psycopg_pool import AsyncConnectionPool

from layers.catalog import get_layer
from layers.cluster import Cluster
from layers.migrate import migrate
from layers.tiles import PostgisSource, params
from mapserver.app import SESSION

TMS = morecantile.tms.get("WebMercatorQuad")
BBOX = (116.0, 39.6, 116.8, 40.2)  # Beijing's urban area
N_POINTS = 1_000_000
N_POLYGONS = 100_000
LISTS = {"z10": [10], "z12": [12], "z14": [14], "mixed": [10, 11, 12, 13, 14, 15, 16]}
REQUESTS = {"z10": 60, "z12": 200, "z14": 400, "mixed": 300}
CONCURRENCY = 8
SEED = 20261122


def city(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat scattered like a city: dense centres over a thinner spread."""
    centres = rng.uniform(BBOX[:2], BBOX[2:], size=(40, 2))
    which = rng.integers(0, len(centres), n)
    spread = rng.uniform(0.005, 0.04, len(centres))[which]
    xy = centres[which] + rng.normal(0, 1, (n, 2)) * spread[:, None]
    uniform = rng.random(n) < 0.3
    xy[uniform] = rng.uniform(BBOX[:2], BBOX[2:], size=(uniform.sum(), 2))
    xy = np.clip(xy, BBOX[:2], BBOX[2:])
    return xy[:, 0], xy[:, 1]


def make_data(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(SEED)
    x, y = city(N_POINTS, rng)
    kinds = np.array(["camera", "lamp", "sensor", "signal", "hydrant", "bin"])
    points = gpd.GeoDataFrame({
        "code": [f"P{i:07d}" for i in range(N_POINTS)],
        "kind": kinds[rng.integers(0, len(kinds), N_POINTS)],
        "height": np.round(rng.uniform(3, 12, N_POINTS), 1),
        "year": rng.integers(1995, 2026, N_POINTS),
    }, geometry=shapely.points(x, y), crs=4326)
    px, py = city(N_POLYGONS, rng)
    w = rng.uniform(0.0001, 0.0006, N_POLYGONS)
    h = rng.uniform(0.0001, 0.0005, N_POLYGONS)
    uses = np.array(["residential", "commercial", "industrial", "public", "green"])
    polygons = gpd.GeoDataFrame({
        "code": [f"B{i:06d}" for i in range(N_POLYGONS)],
        "landuse": uses[rng.integers(0, len(uses), N_POLYGONS)],
        "floors": rng.integers(1, 30, N_POLYGONS),
    }, geometry=shapely.box(px, py, px + w, py + h), crs=4326)
    p1, p2 = folder / "points.fgb", folder / "polygons.fgb"
    points.to_file(p1, driver="FlatGeobuf")
    polygons.to_file(p2, driver="FlatGeobuf")
    return p1, p2


def ingest(url: str, path: Path, layer: str) -> dict:
    """Through the real command line; reports time and the ingest process's peak memory."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "onemap.cli", "ingest", "vector", str(path),
                             "--layer", layer, "--key", "code"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"ONEMAP_DATABASE_URL": url, "PATH": "/usr/bin:/bin"})
    out, err = proc.stdout.read(), proc.stderr.read()  # the CLI is quiet off a terminal
    # wait4 on this child alone: its own peak memory, not any other child's.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(err)
    return {"seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "summary": out.splitlines()[0]}


def tile_lists(rng: random.Random) -> dict[str, list[morecantile.Tile]]:
    out = {}
    for name, zooms in LISTS.items():
        tiles = []
        for _ in range(REQUESTS[name]):
            z = rng.choice(zooms)
            # Tiles under the data, picked where the data is: a random point's tile.
            lon, lat = rng.uniform(BBOX[0], BBOX[2]), rng.uniform(BBOX[1], BBOX[3])
            tiles.append(TMS.tile(lon, lat, z))
        out[name] = tiles
    return out


def features_in(data: bytes) -> int:
    return sum(len(v["features"]) for v in mapbox_vector_tile.decode(data).values())


def size_sweep(url: str, layer_id: str, zooms: range) -> dict[int, dict]:
    """Every tile over the data at each zoom, made by OneMap's SQL: the largest and count."""
    out = {}
    with psycopg.connect(url, autocommit=True, options=SESSION) as conn:
        source = PostgisSource(get_layer(conn, layer_id), 14)
        for z in zooms:
            q, _ = source.query_bytes(z, False, conn)
            sizes = [len(conn.execute(q, params(layer_id, t.z, t.x, t.y, None), prepare=True)
                         .fetchone()[0] or b"") for t in TMS.tiles(*BBOX, zooms=[z])]
            out[z] = {"tiles": len(sizes), "max_kb": round(max(sizes) / 1024, 1)}
            print(f"sweep {layer_id} z{z}: {len(sizes)} tiles, largest "
                  f"{out[z]['max_kb']} KB", flush=True)
    return out


async def measure(args: argparse.Namespace, url: str) -> dict:
    # The comparison: every tile computed. The cache is measured on its own.
    onemap = Server("onemap", "mapserver.app:create_app",
                    {"ONEMAP_DATABASE_URL": url, "ONEMAP_TILE_CACHE_MB": "0"}, factory=True)
    cached = Server("onemap+cache", "mapserver.app:create_app",
                    {"ONEMAP_DATABASE_URL": url, "ONEMAP_TILE_CACHE_MB": "256"}, factory=True)
    tipg = Server("tipg", "tipg.main:app", {"DATABASE_URL": url,
                                            "TIPG_DB_SCHEMAS": '["onemap_data"]'})
    servers = {"onemap": onemap, "tipg": tipg, "onemap+cache": cached}
    for server in servers.values():
        server.start("/healthz")
    layers = {"points": ("bench_points", "code,kind,height,year"),
              "polygons": ("bench_polygons", "code,landuse,floors")}
    lists = tile_lists(random.Random(SEED))
    results: dict = {}
    pool = AsyncConnectionPool(url, min_size=CONCURRENCY, max_size=CONCURRENCY,
                               kwargs={"autocommit": True, "options": SESSION}, open=False)
    await pool.open(wait=True)
    try:
        with psycopg.connect(url) as conn:
            sources = {k: PostgisSource(get_layer(conn, lid), 14)
                       for k, (lid, _) in layers.items()}
        async with httpx.AsyncClient(timeout=120) as client:
            for kind, (layer_id, props) in layers.items():
                source = sources[kind]
                for name, tiles in lists.items():
                    paths = {
                        "onemap": [f"/tiles/{layer_id}/{t.z}/{t.x}/{t.y}.mvt" for t in tiles],
                        "tipg": [f"/collections/onemap_data.{layer_id}/tiles/WebMercatorQuad/"
                                 f"{t.z}/{t.x}/{t.y}?properties={props}" for t in tiles],
                    }
                    paths["onemap+cache"] = paths["onemap"]
                    # Every tile once from each server: sizes, features, a warm cache.
                    sizes: dict[str, list[int]] = {}
                    features: dict[str, float] = {}
                    for peer, server in servers.items():
                        bodies = {}
                        for path in dict.fromkeys(paths[peer]):
                            resp = await client.get(server.url + path)
                            resp.raise_for_status()
                            bodies[path] = resp.content
                        sizes[peer] = [len(bodies[p]) for p in paths[peer]]
                        features[peer] = float(np.median(
                            [features_in(bodies[p]) for p in paths[peer][:20]]))

                    def floor_calls(tiles=tiles, layer_id=layer_id, source=source):
                        def make(t):
                            async def call() -> int:
                                async with pool.connection() as conn:
                                    q, _ = source.query_bytes(t.z, False, conn)
                                    cur = await conn.execute(q, params(layer_id, t.z, t.x,
                                                                       t.y, None),
                                                             prepare=True, binary=True)
                                    row = await cur.fetchone()
                                return len(row[0] or b"")
                            return call
                        return [make(t) for t in tiles]

                    await drive(floor_calls(), CONCURRENCY)
                    runs: dict[str, list] = {peer: [] for peer in (*servers, "floor")}
                    for _ in range(args.rounds):
                        for peer, server in servers.items():
                            runs[peer].append(wrk(server.url, paths[peer], CONCURRENCY,
                                                  args.seconds))
                        runs["floor"].append(await drive(floor_calls(), CONCURRENCY))
                    key = f"{kind}/{name}"
                    results[key] = {peer: {**summarize_wrk(runs[peer], sizes[peer]),
                                           "median_features": features[peer]}
                                    for peer in servers}
                    results[key]["floor"] = vars(Summary.of(runs["floor"]))
                    o, t = results[key]["onemap"], results[key]["tipg"]
                    c, f = results[key]["onemap+cache"], results[key]["floor"]
                    print(f"{key:16} onemap {o['rps']:6.1f}/s p50 {o['p50_ms']:6.1f} p99 "
                          f"{o['p99_ms']:6.1f} ms {o['median_bytes'] / 1024:6.1f} KB (max "
                          f"{o['max_bytes'] / 1024:4.0f}) | tipg {t['rps']:6.1f}/s p50 "
                          f"{t['p50_ms']:6.1f} p99 {t['p99_ms']:6.1f} ms "
                          f"{t['median_bytes'] / 1024:6.1f} KB | floor {f['rps']:6.1f}/s | "
                          f"cached {c['rps']:6.1f}/s | x{o['rps'] / t['rps']:.2f}", flush=True)
    finally:
        await pool.close()
        for server in servers.values():
            server.stop()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6, help="length of one wrk run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "vector_tiles.json"))
    ap.add_argument("--workdir", help="keep the cluster and data here and reuse them next time")
    ap.add_argument("--port", type=int, help="the cluster's port (default: a free one)")
    ap.add_argument("--generate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        make_data(Path(args.generate))
        return
    keep = args.workdir is not None
    root = Path(args.workdir or tempfile.mkdtemp(prefix="onemap-bench-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    cluster = Cluster(root / "pg", args.port or free_port())
    loaded = cluster.initialized()
    cluster.start()
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            migrate(conn)
            loaded = loaded and get_layer(conn, "bench_polygons") is not None
        loads: dict = {}
        if not loaded:
            t0 = time.perf_counter()
            # In a child process, so this process stays small and the ingests' peak memory,
            # measured for child processes, is the ingests' own.
            subprocess.run([sys.executable, __file__, "--generate", str(root)], check=True)
            points, polygons = root / "points.fgb", root / "polygons.fgb"
            print(f"generated data in {time.perf_counter() - t0:.0f} s", flush=True)
            loads = {"points": ingest(cluster.url, points, "bench_points"),
                     "polygons": ingest(cluster.url, polygons, "bench_polygons")}
            for k, v in loads.items():
                print(f"ingest {k}: {v}", flush=True)
        sweep = size_sweep(cluster.url, "bench_points", range(0, 15))
        results = asyncio.run(measure(args, cluster.url)) if args.rounds else {}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"ingest": loads, "sweep": sweep, "tiles": results,
                                   "rounds": args.rounds, "concurrency": CONCURRENCY},
                                  indent=2))
        print(f"wrote {out}")
    finally:
        cluster.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

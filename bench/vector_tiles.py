"""Vector tiles: OneMap against tipg and MapServer on the same PostGIS tables, and the
database floor.

Loads 1,000,000 points and 100,000 polygons in the Beijing area through ``onemap ingest``,
then serves the same tile lists (zoom 10, 12, 14 and mixed) from OneMap, tipg and UMN
MapServer 8 (the system's, under lighttpd's FastCGI), and sends OneMap's tile SQL straight
through psycopg as the floor. ``--peers`` picks who runs; ``onemap-reads`` is OneMap reading
the access version on every request instead of hearing its notices. Usage:

    make bench            # or: .venv/bin/python bench/vector_tiles.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random

import httpx
import mapbox_vector_tile
import morecantile
import numpy as np
import psycopg
from dataset import BBOX, SEED, dataset
from harness import Server, Summary, bench_args, drive, few, summarize_wrk, write_figures, wrk
from psycopg_pool import AsyncConnectionPool
from umn_mapserver import MapServer

from layers.catalog import get_layer
from layers.tiles import PostgisSource, params
from mapserver.app import SESSION

TMS = morecantile.tms.get("WebMercatorQuad")
LISTS = {"z10": [10], "z12": [12], "z14": [14], "mixed": [10, 11, 12, 13, 14, 15, 16]}
REQUESTS = {"z10": 60, "z12": 200, "z14": 400, "mixed": 300}
CONCURRENCY = 8


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
            q, _, _ = source.query_bytes(z, False, conn)
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
    reads = Server("onemap-reads", "mapserver.app:create_app",
                   {"ONEMAP_DATABASE_URL": url, "ONEMAP_TILE_CACHE_MB": "0",
                    "ONEMAP_ACCESS_NOTICES": "0"}, factory=True)
    layers = {"points": ("bench_points", "code,kind,height,year"),
              "polygons": ("bench_polygons", "code,landuse,floors")}
    mapserver = MapServer("mapserver", url, {
        table: (kind, props, BBOX) for kind, (table, props) in layers.items()},
        processes=CONCURRENCY)
    every = {"onemap": onemap, "tipg": tipg, "mapserver": mapserver, "onemap+cache": cached,
             "onemap-reads": reads}
    servers = {k: every[k] for k in args.peers}
    for server in servers.values():
        server.start("/healthz" if isinstance(server, Server) else None)
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
                for name, tiles in ((n, lists[n]) for n in few(args.lists)):
                    paths = {
                        "onemap": [f"/tiles/{layer_id}/{t.z}/{t.x}/{t.y}.mvt" for t in tiles],
                        "tipg": [f"/collections/onemap_data.{layer_id}/tiles/WebMercatorQuad/"
                                 f"{t.z}/{t.x}/{t.y}?properties={props}" for t in tiles],
                    }
                    paths["mapserver"] = [MapServer.tile(layer_id, t.z, t.x, t.y)
                                          for t in tiles]
                    paths["onemap+cache"] = paths["onemap-reads"] = paths["onemap"]
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
                                    q, _, _ = source.query_bytes(t.z, False, conn)
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
                    print(f"{key:16} " + " | ".join(
                        f"{peer} {r['rps']:6.1f}/s p50 {r['p50_ms']:5.1f} p99 "
                        f"{r['p99_ms']:6.1f} ms {r['median_bytes'] / 1024:5.1f} KB"
                        for peer, r in results[key].items()), flush=True)
    finally:
        await pool.close()
        for server in servers.values():
            server.stop()
    return results


PEERS = ["onemap", "tipg", "mapserver", "onemap+cache", "onemap-reads"]
DEFAULT_PEERS = PEERS[:4]  # onemap-reads measures one choice of OneMap's: asked for by name


def main() -> None:
    args = bench_args(__doc__, "vector_tiles.json", lists=(
        list(LISTS), "tile lists to run (default: all)"), peers=(
        PEERS, "servers to run (default: all but onemap-reads; mapserver needs cgi-mapserver "
               "and lighttpd)"), default_peers=DEFAULT_PEERS)
    with dataset(args.workdir, args.port) as (url, loads):
        sweep = size_sweep(url, "bench_points", range(0, 15))
        results = asyncio.run(measure(args, url)) if args.rounds else {}
    write_figures(args.out, {"ingest": loads, "sweep": sweep, "tiles": results,
                             "rounds": args.rounds, "concurrency": CONCURRENCY,
                             "seconds": args.seconds})


if __name__ == "__main__":
    main()

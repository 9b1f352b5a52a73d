"""Past one process: the same tile list through nginx with its cache warm (the shipped
docker/nginx.conf) against OneMap direct, and one OneMap node against two behind nginx
(its cache off, so every tile is made), side by side in one run on the 1M-point layer.

Tiles are asked by their version-pinned URLs (``?v=<etag>``), as the viewer and TileJSON
give them, so the shared cache may keep them. Usage:

    make bench-scaling     # or: .venv/bin/python bench/scaling.py [--rounds 3]
"""

from __future__ import annotations

import random
import shutil

import httpx
from dataset import dataset
from harness import Server, bench_args, nginx, stop_nginx, summarize_wrk, write_figures, wrk
from vector_tiles import tile_lists

CONCURRENCY = 16
WORKERS = 2  # each node's processes


def main() -> None:
    args = bench_args(__doc__, "scaling.json")
    if shutil.which("nginx") is None or shutil.which("wrk") is None:
        raise SystemExit("nginx and wrk are needed: make bench-scaling")
    results: dict = {}
    with dataset(args.workdir, args.port) as (url, _):
        env = {"ONEMAP_DATABASE_URL": url, "ONEMAP_ACCESS_NOTICES": "1"}
        one = Server("node1", "mapserver.app:create_app", env, factory=True, workers=WORKERS)
        two = Server("node2", "mapserver.app:create_app", env, factory=True, workers=WORKERS)
        fronts = []
        try:
            one.start("/livez")
            two.start("/livez")
            hosts = [s.url.removeprefix("http://") for s in (one, two)]
            fronts = [nginx(hosts[:1], cache=True), nginx(hosts, cache=False)]
            cached, spread = fronts[0][1], fronts[1][1]
            tiles = tile_lists(random.Random(11))["mixed"]
            paths = []
            for t in tiles:
                base = f"/tiles/bench_points/{t.z}/{t.x}/{t.y}.mvt"
                r = httpx.get(one.url + base, timeout=60)
                paths.append(f"{base}?v={r.headers['etag'].strip(chr(34))}")
            wrk(cached, paths, CONCURRENCY, max(args.seconds, 1))  # warms the shared cache
            # Asked as wrk asks (no Accept-Encoding: the cache keeps one copy per encoding).
            with httpx.Client(timeout=60) as plain:
                plain.headers.pop("accept-encoding", None)
                seen = [plain.get(cached + p) for p in paths[:50]]
            hits = sum(r.headers.get("x-cache-status") == "HIT" for r in seen)
            print(f"shared cache warm: {hits} of {len(seen)} asked again were hits "
                  f"({sorted({(r.status_code, r.headers.get('cache-control')) for r in seen})})",
                  flush=True)
            results["warm_hits"] = [hits, len(seen)]
            cases = {"OneMap direct (1 node)": (one.url, paths),
                     "nginx, cache warm": (cached, paths),
                     "2 nodes behind nginx, no cache": (spread, paths)}
            runs: dict[str, list[dict]] = {c: [] for c in cases}
            for i in range(args.rounds):
                order = list(cases)[i % len(cases):] + list(cases)[:i % len(cases)]
                for c in order:
                    runs[c].append(wrk(cases[c][0], cases[c][1], CONCURRENCY, args.seconds))
            for c, rs in runs.items():
                results[c] = summarize_wrk(rs, [0])
                print(f"{c:34} {results[c]['rps']:8.0f}/s p50 {results[c]['p50_ms']:6.1f} ms"
                      f" p99 {results[c]['p99_ms']:6.1f} ms", flush=True)
            direct = results["OneMap direct (1 node)"]["rps"]
            results["ratios"] = {
                "nginx warm / direct": round(results["nginx, cache warm"]["rps"] / direct, 2),
                "2 nodes / 1 node": round(results["2 nodes behind nginx, no cache"]["rps"]
                                          / direct, 2)}
            print(results["ratios"], flush=True)
        finally:
            for front in fronts:
                stop_nginx(front)
            one.stop()
            two.stop()
    write_figures(args.out, {"scaling": results, "rounds": args.rounds,
                             "concurrency": CONCURRENCY, "seconds": args.seconds,
                             "workers_per_node": WORKERS, "tiles": len(paths)})


if __name__ == "__main__":
    main()

"""Cascaded tiles: the district's e-map tiles asked through the city, against the same tiles
asked of the district directly, cached and uncached, in one run.

The district holds the demo's e-map (the Helsinki extract, as bench/emap_tiles.py builds
it); the city is a second database in the same cluster and knows the district as a node
(joined with a token, as `onemap federation join` does). wrk keeps 8 requests in flight
over every e-map tile of the extract at each zoom. Cached: the district as deployed (its
tile cache warm) directly, against the city with its cascade's answers warm. Uncached: a
district server with its tile cache off directly, against a city server that keeps
nothing (``ONEMAP_FEDERATION_CACHE_MB=0``), so every tile goes city → district → PostGIS.
Each OneMap runs 2 worker processes; the servers alternate between rounds. Usage:

    make bench-federation   # or: .venv/bin/python bench/federation.py [--rounds 3]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import mercantile
import psycopg
from emap_tiles import city as emap_cluster
from harness import ROOT, Server, bench_args, few, summarize_wrk, write_figures, wrk
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from layers.migrate import migrate

CONCURRENCY = 8
WORKERS = 2
ZOOMS = (14, 15, 16)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "onemap.cli", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"onemap {' '.join(args)}: {done.stderr[-1000:]}")
    return done.stdout.strip()


def main() -> None:
    args = bench_args(__doc__, "federation.json")
    results: dict = {}
    with emap_cluster(args.workdir) as (district_url, bounds):
        info = conninfo_to_dict(district_url)
        with psycopg.connect(district_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'city'").fetchone():
                conn.execute("CREATE DATABASE city")
        city_url = make_conninfo(**{**info, "dbname": "city"})
        with psycopg.connect(city_url, autocommit=True) as conn:
            migrate(conn)
            conn.execute("DELETE FROM onemap.nodes")
        with psycopg.connect(district_url, autocommit=True) as conn:
            conn.execute("DELETE FROM onemap.nodes")
        root = Path(tempfile.mkdtemp(prefix="onemap-bench-fed-"))
        common = {"ONEMAP_ACCESS_NOTICES": "1", "ONEMAP_DEFAULT_LEVEL": "public",
                  "ONEMAP_JOB_WORKERS": "0"}
        servers: dict[str, Server] = {}

        def node(name: str, db: str, role: str, data: str, **env: str) -> Server:
            s = Server(name, "mapserver.app:create_app", {}, factory=True, workers=WORKERS)
            s.env = {**common, "ONEMAP_DATABASE_URL": db, "ONEMAP_NODE_ROLE": role,
                     "ONEMAP_DATA_DIR": str(root / data), "ONEMAP_PUBLIC_URL": s.url, **env}
            servers[name] = s
            return s

        district = node("district", district_url, "district", "district",
                        ONEMAP_NODE_NAME="helsinki")
        raw = node("district_raw", district_url, "district", "district",
                   ONEMAP_NODE_NAME="helsinki_raw", ONEMAP_TILE_CACHE_MB="0")
        cascade = node("cascade", city_url, "city", "city", ONEMAP_NODE_NAME="city")
        cascade_raw = node("cascade_raw", city_url, "city", "city", ONEMAP_NODE_NAME="city",
                           ONEMAP_FEDERATION_CACHE_MB="0")
        try:
            for s in servers.values():
                s.start("/healthz")
            for d in (district, raw):  # each district server joins as a node of its own
                token = _cli(cascade.env, "federation", "token")
                _cli(d.env, "federation", "join", cascade.url, "--token", token)
            pairs = {"cached": (district, cascade, "helsinki"),
                     "uncached": (raw, cascade_raw, "helsinki_raw")}
            for z in few(ZOOMS):
                cells = list(mercantile.tiles(*bounds, zooms=[z]))
                paths = [f"/basemaps/emap/{t.z}/{t.x}/{t.y}.mvt" for t in cells]
                for case, (direct, through, name) in few(pairs.items()):
                    lists = {"direct": (direct, paths),
                             "cascade": (through, [f"/federation/{name}{p}" for p in paths])}
                    for label, (s, ps) in lists.items():  # the same tiles, both ways
                        a = httpx.get(s.url + ps[len(ps) // 2], timeout=60)
                        b = httpx.get(direct.url + paths[len(ps) // 2], timeout=60)
                        if a.status_code != 200 or a.content != b.content:
                            raise RuntimeError(f"{label} {ps[len(ps) // 2]}: {a.status_code}"
                                               f" {a.text[:200]}")
                        wrk(s.url, ps, CONCURRENCY, 1)  # warm
                    runs: dict[str, list[dict]] = {n: [] for n in lists}
                    for i in range(args.rounds):
                        for label in list(lists)[i % 2:] + list(lists)[:i % 2]:
                            s, ps = lists[label]
                            runs[label].append(wrk(s.url, ps, CONCURRENCY, args.seconds))
                    row = {n: summarize_wrk(rs, [1]) for n, rs in runs.items()}
                    row["ratio"] = row["cascade"]["rps"] / row["direct"]["rps"]
                    row["ratio_rounds"] = [c["rps"] / d["rps"] for c, d in zip(
                        runs["cascade"], runs["direct"], strict=True)]
                    results[f"z{z} {case}"] = {"tiles": len(cells), **row}
                    print(f"z{z} {case:8} ({len(cells):3} tiles) direct "
                          f"{row['direct']['rps']:7.1f}/s p50 {row['direct']['p50_ms']:5.1f} |"
                          f" cascade {row['cascade']['rps']:7.1f}/s p50 "
                          f"{row['cascade']['p50_ms']:5.1f} | x{row['ratio']:.2f} (rounds "
                          f"{', '.join(f'{r:.2f}' for r in row['ratio_rounds'])})", flush=True)
        finally:
            for s in servers.values():
                s.stop()
            shutil.rmtree(root, ignore_errors=True)
    ratios = {k: v["ratio"] for k, v in results.items() if "ratio" in v}
    write_figures(args.out, {"tiles": results, "rounds": args.rounds, "workers": WORKERS,
                             "concurrency": CONCURRENCY, "seconds": args.seconds,
                             "median_ratio": statistics.median(ratios.values())
                             if ratios else None}, default=str)


if __name__ == "__main__":
    main()

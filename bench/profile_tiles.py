"""Where a small tile's time goes in the server process: one OneMap server under cProfile
(tile cache off), wrk on the z14 polygon list of the tile benchmark, then the functions
that took the event loop's time, by their own time and by what they called. Usage:

    .venv/bin/python bench/profile_tiles.py [--seconds 15] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import random
import signal
import subprocess
import sys
import tempfile
import time

import httpx
from dataset import dataset
from harness import ROOT, free_port, wrk
from vector_tiles import tile_lists


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--workdir")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    with dataset(args.workdir, None) as (url, _), tempfile.TemporaryDirectory() as tmp:
        port, out = free_port(), os.path.join(tmp, "prof.out")
        server = subprocess.Popen(
            [sys.executable, "-m", "cProfile", "-o", out, "-m", "uvicorn", "--factory",
             "mapserver.app:create_app", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env={**os.environ, "ONEMAP_DATABASE_URL": url,
                           "ONEMAP_TILE_CACHE_MB": "0"})
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        tiles = tile_lists(random.Random(1))["z14"]
        result = wrk(base, [f"/tiles/bench_polygons/{t.z}/{t.x}/{t.y}.mvt" for t in tiles],
                     8, args.seconds)
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        print(f"{result['rps']:.1f} req/s over {args.seconds:.0f} s")
        text = io.StringIO()
        stats = pstats.Stats(out, stream=text)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(r"mapserver|access|layers", args.top)
        print(text.getvalue())


if __name__ == "__main__":
    main()

"""The benchmarks' data: 1,000,000 points and 100,000 polygons in Beijing, in a private
cluster, loaded through ``onemap ingest``; kept in a work directory for reuse if asked."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import psycopg
import shapely
from harness import ROOT, free_port, scaled

from layers.catalog import get_layer
from layers.cluster import Cluster
from layers.migrate import migrate

BBOX = (116.0, 39.6, 116.8, 40.2)  # Beijing's urban area
N_POINTS = scaled(1_000_000)
N_POLYGONS = scaled(100_000)
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
                             "--layer", layer, "--key", "code",
                             # public: the peers read the tables without any login
                             "--level", "public"], cwd=ROOT, text=True,
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


@contextlib.contextmanager
def dataset(workdir: str | None, port: int | None) -> Iterator[tuple[str, dict]]:
    """The cluster's URL with both layers loaded, and the ingest figures if it loaded them."""
    keep = workdir is not None
    root = Path(workdir or tempfile.mkdtemp(prefix="onemap-bench-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    cluster = Cluster(root / "pg", port or free_port())
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
            subprocess.run([sys.executable, __file__, str(root)], check=True)
            print(f"generated data in {time.perf_counter() - t0:.0f} s", flush=True)
            loads = {"points": ingest(cluster.url, root / "points.fgb", "bench_points"),
                     "polygons": ingest(cluster.url, root / "polygons.fgb", "bench_polygons")}
            for k, v in loads.items():
                print(f"ingest {k}: {v}", flush=True)
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            # Data loaded by an earlier version of this script may carry the default level.
            conn.execute("UPDATE onemap.layers SET level = 'public', version = version + 1"
                         " WHERE id IN ('bench_points', 'bench_polygons') AND level <> 'public'")
        yield cluster.url, loads
    finally:
        cluster.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    make_data(Path(sys.argv[1]))

"""Analysis processes: `locate`, `nearest` and `aggregate` over HTTP, against the same
computation done with geopandas in the benchmark's own process (pygeoapi ships no such
processes), in one run on the same data.

The benchmark's 1,000,000 points (bench/dataset.py), Beijing's 16 districts (the sample
file) and a grid of 100,000 cells over the same area. OneMap runs with 2 worker processes;
each `locate` and `nearest` is one POST to /processes/{id}/execution, asked one after the
other (latency, not load), at random points; geopandas answers the same questions from
frames already in memory with their spatial index built (its load time is reported
apart). `aggregate` counts the million points in each district, three times. Goals (the
issue's): locate p99 under 5 ms over HTTP; the aggregate under 2 s. Usage:

    make bench-analysis   # or: .venv/bin/python bench/analysis.py [--rounds 3]
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
import psycopg
import shapely
from dataset import BBOX, dataset
from harness import ROOT, SCALE, Server, bench_args, scaled, write_figures

from ingest.vector import ingest_vector
from onemap.settings import Settings

# pandas warns of a DBAPI connection that is not SQLAlchemy's; psycopg's reads fine.
warnings.filterwarnings("ignore", message=".*pandas only supports SQLAlchemy.*")
DISTRICTS = ROOT / "data" / "samples" / "beijing-districts-cgcs2000.geojson"
N_CELLS = scaled(100_000)
QUERIES = max(50, int(2000 * min(1.0, SCALE * 100)))
WORKERS = 2


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "n": len(samples)}


def cells_file(folder: Path) -> Path:
    side = int(np.ceil(np.sqrt(N_CELLS)))
    xs = np.linspace(BBOX[0], BBOX[2], side + 1)
    ys = np.linspace(BBOX[1], BBOX[3], side + 1)
    boxes = [shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1])
             for i in range(side) for j in range(side)][:N_CELLS]
    path = folder / "cells.fgb"
    gpd.GeoDataFrame({"cell": [f"G{i:06d}" for i in range(len(boxes))]}, geometry=boxes,
                     crs=4326).to_file(path, driver="FlatGeobuf")
    return path


def main() -> None:
    args = bench_args(__doc__, "analysis.json")
    rng = np.random.default_rng(7)
    out: dict = {"queries": QUERIES, "cells": N_CELLS}
    with dataset(args.workdir, args.port) as (url, _):
        folder = Path(args.workdir or "/tmp")
        settings = Settings(database_url=url, default_level="public", data_dir=folder)
        with psycopg.connect(url) as conn:
            have = {r[0] for r in conn.execute("SELECT id FROM onemap.layers")}
        if "bench_districts" not in have:
            ingest_vector(DISTRICTS, "bench_districts", key="gb", settings=settings,
                          progress=False)
        if "bench_cells" not in have:
            ingest_vector(cells_file(folder), "bench_cells", key="cell", settings=settings,
                          progress=False)
        t0 = time.perf_counter()
        points = gpd.read_postgis("SELECT code, geom FROM onemap_data.bench_points WHERE"
                                  " _valid_to IS NULL", psycopg.connect(url), geom_col="geom")
        districts = gpd.read_file(DISTRICTS).to_crs(4326)
        cells = gpd.read_postgis("SELECT cell, geom FROM onemap_data.bench_cells WHERE"
                                 " _valid_to IS NULL", psycopg.connect(url), geom_col="geom")
        for frame in (points, districts, cells):
            frame.sindex  # noqa: B018 (built here, not in the timings)
        out["geopandas_load_s"] = round(time.perf_counter() - t0, 1)
        server = Server("onemap", "mapserver.app:create_app",
                        {"ONEMAP_DATABASE_URL": url, "ONEMAP_JOB_WORKERS": "0"},
                        factory=True, workers=WORKERS)
        server.start("/healthz")
        try:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                def ask(pid: str, inputs: dict) -> dict:
                    r = http.post(f"/processes/{pid}/execution", json={"inputs": inputs})
                    r.raise_for_status()
                    return r.json()["result"]

                pts = rng.uniform(BBOX[:2], BBOX[2:], size=(QUERIES, 2))
                for layer, frame, key in (("bench_districts", districts, "gb"),
                                          ("bench_cells", cells, "cell")):
                    ask("locate", {"layer": layer, "point": list(pts[0])})  # warm
                    ours, theirs = [], []
                    for x, y in pts:
                        t = time.perf_counter()
                        got = ask("locate", {"layer": layer, "point": [x, y]})
                        ours.append(time.perf_counter() - t)
                        t = time.perf_counter()
                        hit = frame.sindex.query(shapely.Point(x, y), predicate="within")
                        want = sorted(frame[key].iloc[hit])
                        theirs.append(time.perf_counter() - t)
                        if sorted(f["properties"][key] for f in got["features"]) != want:
                            raise RuntimeError(f"locate {layer} at {x}, {y}: {got} != {want}")
                    out[f"locate {layer}"] = {"onemap": percentiles(ours),
                                              "geopandas": percentiles(theirs)}
                ours, theirs = [], []
                for x, y in pts[: max(20, QUERIES // 4)]:
                    t = time.perf_counter()
                    got = ask("nearest", {"layer": "bench_points", "point": [x, y], "n": 5})
                    ours.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    points.sindex.nearest(shapely.Point(x, y), return_all=False)
                    theirs.append(time.perf_counter() - t)
                    if len(got["features"]) != 5:
                        raise RuntimeError(f"nearest at {x}, {y}: {got}")
                out["nearest bench_points"] = {"onemap": percentiles(ours),
                                               "geopandas": percentiles(theirs)}
                ours, theirs = [], []
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    got = ask("aggregate", {"layer": "bench_points", "by": "bench_districts"})
                    ours.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    joined = gpd.sjoin(points, districts, predicate="intersects")
                    want = joined.groupby("gb").size().to_dict()
                    theirs.append(time.perf_counter() - t)
                counted = {f["properties"]["gb"]: f["properties"]["value"]
                           for f in got["features"] if f["properties"]["value"]}
                if counted != want:
                    raise RuntimeError(f"aggregate: {counted} != {want}")
                out["aggregate bench_points by district"] = {
                    "onemap_s": round(statistics.median(ours), 3),
                    "geopandas_s": round(statistics.median(theirs), 3),
                    "points": len(points)}
        finally:
            server.stop()
    for case, v in out.items():
        if isinstance(v, dict):
            print(f"{case:40} {json.dumps(v)}", flush=True)
    write_figures(args.out, out)


if __name__ == "__main__":
    main()

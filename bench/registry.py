"""Reuse lookups and camera duplicate checks on a city-sized registry.

1,000,000 carriers (1-3 mounting slots each) spread over 51 x 44 km of central Beijing
(about 440 per km2, so a 500 m circle holds ~350), 2,000,000 fronts (1,500,000 mounted on
slots, the rest on walls; 60% cameras with a view), 20,000 live reservations; seeded. Each
lookup runs the statement the ``/registry/reuse`` endpoint runs, and the assessment of
every carrier found, on one connection; latency per lookup, p50 and p99.

    .venv/bin/python bench/registry.py [--lookups 400] [--warm 300] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import free_port, scaled, write_figures  # noqa: E402
from layers.cluster import Cluster  # noqa: E402
from layers.migrate import migrate  # noqa: E402
from registry import codes, coverage, reuse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CARRIERS, FRONTS, MOUNTED, CLAIMS = (scaled(n) for n in (1_000_000, 2_000_000, 1_500_000,
                                                          20_000))
BBOX = (116.1, 39.7, 116.7, 40.1)
SEED = 20261122
KINDS = ("street_lamp", "traffic_pole", "smart_pole")


def _copy(conn: psycopg.Connection, table: str, columns: str, rows) -> None:
    with conn.cursor().copy(f"COPY registry.{table} ({columns}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


def _codes(conn: psycopg.Connection, kind: str, n: int) -> list[str]:
    conn.execute("UPDATE registry.code_rules SET next_serial = %s WHERE kind = %s",
                 (n + 1, kind))
    rule = codes.rules(conn)[kind]
    out = [codes.make(rule.region, rule.cls, i, rule.width) for i in range(1, n + 1)]
    _copy(conn, "codes", "code, kind", ((c, kind) for c in out))
    return out


def generate(conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(SEED)
    with open(ROOT / "data" / "samples" / "device-models.csv", newline="") as fh:
        models = list(csv.DictReader(fh))
    _copy(conn, "device_models", "id, maker, model, category, power_w, weight_kg,"
          " needs_24h, network",
          ((m["id"], m["maker"], m["model"], m["category"], m["power_w"], m["weight_kg"],
            m["needs_24h"] == "yes", m["network"] or None) for m in models))
    kind = rng.choice(len(KINDS), CARRIERS, p=[0.7, 0.2, 0.1])
    ccodes: list[str] = []
    for k, name in enumerate(KINDS):
        ccodes += _codes(conn, name, int((kind == k).sum()))
    kind = np.sort(kind)  # codes were issued kind by kind
    lon = rng.uniform(BBOX[0], BBOX[2], CARRIERS)
    lat = rng.uniform(BBOX[1], BBOX[3], CARRIERS)
    supply = rng.choice(["24h", "dusk_to_dawn", "none"], CARRIERS, p=[0.5, 0.45, 0.05])
    watts = rng.choice([0, 40, 80, 150, 300], CARRIERS)
    network = rng.choice(["", "ethernet", "fiber", "lte"], CARRIERS)
    ports = rng.integers(0, 5, CARRIERS)
    status = rng.choice(["in_service", "faulty", "planned"], CARRIERS, p=[0.94, 0.04, 0.02])
    print("carriers ...", flush=True)
    _copy(conn, "carriers", "code, kind, geom, status, power_supply, power_w, network, ports,"
          " produced_at",
          ((ccodes[i], KINDS[kind[i]], f"SRID=4490;POINT({lon[i]:.7f} {lat[i]:.7f})",
            status[i], supply[i], int(watts[i]), network[i] or None,
            int(ports[i]) if network[i] else 0, "2024-01-01") for i in range(CARRIERS)))
    nslots = rng.integers(1, 4, CARRIERS)
    print("slots ...", flush=True)
    _copy(conn, "slots", "carrier, slot, height_min, height_max, load_kg",
          ((ccodes[i], s, 2.0 + 1.5 * s, 3.0 + 1.5 * s, 15)
           for i in range(CARRIERS) for s in range(1, int(nslots[i]) + 1)))
    # Mounted fronts fill slots in a shuffled order of (carrier, slot).
    slots = np.repeat(np.arange(CARRIERS), nslots)
    slot_no = np.concatenate([np.arange(1, n + 1) for n in nslots])
    order = rng.permutation(len(slots))
    mounted = order[:MOUNTED]
    camera = rng.random(FRONTS) < 0.6
    ncam = int(camera.sum())
    fcodes = np.empty(FRONTS, dtype=object)
    fcodes[camera] = _codes(conn, "camera", ncam)
    fcodes[~camera] = _codes(conn, "sensor", FRONTS - ncam)
    flon = rng.uniform(BBOX[0], BBOX[2], FRONTS)
    flat = rng.uniform(BBOX[1], BBOX[3], FRONTS)
    flon[:MOUNTED], flat[:MOUNTED] = lon[slots[mounted]], lat[slots[mounted]]
    cam_models = [m["id"] for m in models if m["category"] == "camera"]
    sen_models = [m["id"] for m in models if m["category"] != "camera"]
    direction = rng.integers(0, 360, FRONTS)
    fov = rng.choice([60, 90, 360], FRONTS)
    reach = rng.choice([30, 60, 120], FRONTS)
    print("fronts ...", flush=True)
    _copy(conn, "fronts", "code, kind, model, geom, direction, fov, range_m, produced_at",
          ((fcodes[i], "camera" if camera[i] else "sensor",
            (cam_models if camera[i] else sen_models)[i % 4],
            f"SRID=4490;POINT({flon[i]:.7f} {flat[i]:.7f})",
            int(direction[i]) if camera[i] else None, int(fov[i]) if camera[i] else None,
            int(reach[i]) if camera[i] else None, "2024-01-01") for i in range(FRONTS)))
    print("deployments ...", flush=True)
    _copy(conn, "deployments", "front, carrier, slot, valid_from",
          ((fcodes[j], ccodes[slots[m]], int(slot_no[m]), "2024-01-01")
           for j, m in enumerate(mounted)))
    # Claims are made by a department of the directory, as every owner and holder is.
    conn.execute("INSERT INTO onemap.departments (id, name) VALUES ('transport', 'Transport')"
                 " ON CONFLICT DO NOTHING")
    _copy(conn, "reservations", "carrier, slot, department, model",
          ((ccodes[slots[m]], int(slot_no[m]), "transport", "aq-sensor-lte")
           for m in order[MOUNTED:MOUNTED + CLAIMS]))
    conn.execute("ANALYZE")


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(a.max()), 2), "n": len(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lookups", type=int, default=400, help="lookups per case")
    ap.add_argument("--warm", type=int, default=300, help="lookups at other sites first")
    ap.add_argument("--workdir", help="keep the cluster and data here and reuse them")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "registry.json"))
    args = ap.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="onemap-bench-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root / "pg", free_port())
    cluster.start()
    results: dict = {}
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            migrate(conn)
            if conn.execute("SELECT count(*) FROM registry.carriers").fetchone()[0] == 0:
                t0 = time.perf_counter()
                with conn.transaction():
                    generate(conn)
                print(f"generated in {time.perf_counter() - t0:.0f} s", flush=True)
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM registry.carriers),"
                " (SELECT count(*) FROM registry.fronts),"
                " (SELECT count(*) FROM registry.deployments)").fetchone()
            print(f"carriers {counts[0]:,}, fronts {counts[1]:,}, mounted {counts[2]:,}")
            rng = np.random.default_rng(SEED + 1)
            needs = [reuse.Needs(), reuse.needs_of_model(conn, "cam-bullet-poe", 4.5),
                     reuse.needs_of_model(conn, "aq-sensor-lte")]
            # Warm the cache at other sites first: a running server has the registry in
            # memory (about 1 GB with its indexes); the first lookups after a restart read disk.
            for _ in range(args.warm):
                reuse.lookup(conn, {"type": "Point", "coordinates": [
                    float(rng.uniform(BBOX[0], BBOX[2])), float(rng.uniform(BBOX[1], BBOX[3]))]},
                    1000.0, needs[0])
            cases = [("reuse 500 m", 500.0), ("reuse 200 m", 200.0), ("reuse 1000 m", 1000.0)]
            for name, radius in cases:
                ms, found = [], []
                for i in range(args.lookups):
                    site = {"type": "Point", "coordinates": [
                        float(rng.uniform(BBOX[0] + 0.02, BBOX[2] - 0.02)),
                        float(rng.uniform(BBOX[1] + 0.02, BBOX[3] - 0.02))]}
                    t0 = time.perf_counter()
                    got = reuse.lookup(conn, site, radius, needs[i % len(needs)])
                    json.dumps(got)
                    ms.append((time.perf_counter() - t0) * 1000)
                    found.append(len(got["candidates"]) + len(got["excluded"]))
                results[name] = {**percentiles(ms),
                                 "carriers_per_lookup": statistics.median(found)}
                print(f"{name}: {results[name]}", flush=True)
            ms, watched = [], []
            for _ in range(args.lookups):
                site = {"type": "Point", "coordinates": [
                    float(rng.uniform(BBOX[0] + 0.02, BBOX[2] - 0.02)),
                    float(rng.uniform(BBOX[1] + 0.02, BBOX[3] - 0.02))]}
                t0 = time.perf_counter()
                got = coverage.check_front(conn, site, "camera", 50.0,
                                           {"direction": 90.0, "fov": 90.0, "range": 60.0})
                ms.append((time.perf_counter() - t0) * 1000)
                watched.append(len(got["watched_by"]))
            results["camera duplicate check"] = {**percentiles(ms),
                                                 "watching_median": statistics.median(watched)}
            print(f"camera duplicate check: {results['camera duplicate check']}", flush=True)
    finally:
        cluster.stop()
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    write_figures(args.out, {"counts": {"carriers": CARRIERS, "fronts": FRONTS,
                                        "mounted": MOUNTED, "claims": CLAIMS},
                             "lookups": args.lookups, "warm": args.warm,
                             "results": results})


if __name__ == "__main__":
    main()

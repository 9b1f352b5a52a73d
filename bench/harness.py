"""What every benchmark shares: a private cluster, servers in subprocesses, a load loop.

Peers are measured side by side in one run, on the same data and the same tile lists,
in alternating rounds so that the machine's noise falls on all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Shrinks every benchmark's data: the test suite runs each one at 0.001, so that a benchmark
# that no longer runs is found before anyone needs its figures.
SCALE = float(os.environ.get("ONEMAP_BENCH_SCALE", "1"))


# And its cases: the suite runs one of each list (``ONEMAP_BENCH_CASES=1``), since what it
# checks is that every part still runs, not how fast.
CASES = int(os.environ.get("ONEMAP_BENCH_CASES", "0")) or None


def scaled(n: int) -> int:
    return max(20, int(n * SCALE))


def few(cases):
    """``cases`` (a sequence, or a dict's items), or only the first ``CASES`` of them."""
    cases = list(cases)
    return cases[:CASES] if CASES else cases


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx(upstreams: list[str], cache: bool) -> tuple[subprocess.Popen, str, Path]:
    """nginx from the system's packages in front of ``upstreams`` ("host:port"), as
    shipped (``docker/nginx.conf``), its shared cache on or off: its process, its URL and
    its folder (``stop_nginx``)."""
    run = Path(tempfile.mkdtemp(prefix="onemap-bench-nginx-"))
    (run / "cache").mkdir()
    for d in (run, run / "cache"):
        d.chmod(0o777)
    port = free_port()
    text = (ROOT / "docker" / "nginx.conf").read_text()
    text = (text.replace("ONEMAP_UPSTREAMS", " ".join(f"server {u};" for u in upstreams))
            .replace("ONEMAP_CACHE_DIR", str(run / "cache")).replace("ONEMAP_RUN_DIR", str(run))
            .replace("ONEMAP_LISTEN", f"127.0.0.1:{port}"))
    if not cache:
        text = text.replace("proxy_cache onemap;", "proxy_cache off;")
    (run / "nginx.conf").write_text(text)
    proc = subprocess.Popen(["nginx", "-c", str(run / "nginx.conf"), "-p", str(run),
                             "-e", str(run / "err"), "-g", "daemon off;"],
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}", run


def stop_nginx(front: tuple[subprocess.Popen, str, Path]) -> None:
    proc, _, run = front
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(run, ignore_errors=True)


@dataclass
class Server:
    """A server in its own process, started with uvicorn like its users run it."""

    name: str
    app: str
    env: dict[str, str]
    factory: bool = False
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, health: str = "/") -> None:
        cmd = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(self.workers), "--log-level", "warning",
               "--no-access-log"]
        if self.factory:
            cmd.append("--factory")
        self.proc = subprocess.Popen(cmd, env={**os.environ, **self.env}, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.proc.stderr.read().decode()}")
            try:
                if httpx.get(self.url + health, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@dataclass
class Run:
    """One pass over a request list: wall time, per-request latency and body sizes."""

    seconds: float
    latencies: list[float]
    sizes: list[int]
    errors: int

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def drive(calls: Sequence[Callable[[], Awaitable[int]]], concurrency: int) -> Run:
    """Runs the calls with at most ``concurrency`` in flight; each returns a body size."""
    queue = list(enumerate(calls))
    latencies = [0.0] * len(calls)
    sizes = [0] * len(calls)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while queue:
            i, call = queue.pop()
            t0 = time.perf_counter()
            try:
                sizes[i] = await call()
            except Exception:  # a failed request is counted, not fatal to the run
                errors += 1
            latencies[i] = time.perf_counter() - t0

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(time.perf_counter() - start, latencies, sizes, errors)


def wrk(base: str, paths: Sequence[str], concurrency: int, seconds: float,
        headers: dict[str, str] | None = None) -> dict:
    """Load from wrk (C, epoll), so the load generator takes little of the machine."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(paths) + "\n")
    try:
        proc = subprocess.run(
            ["wrk", "-t", "2", "-c", str(concurrency), "-d", f"{round(seconds)}s", "--latency",
             "--timeout", "60s",
             *[a for k, v in (headers or {}).items() for a in ("-H", f"{k}: {v}")],
             "-s", str(ROOT / "bench" / "paths.lua"), base, "--", fh.name],
            capture_output=True, text=True, check=True)
    finally:
        os.unlink(fh.name)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def summarize_wrk(runs: list[dict], sizes: list[int]) -> dict:
    """Medians over rounds (rate, p50, p99), and the sizes of the tiles served."""
    return {"rps": statistics.median(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "median_bytes": float(statistics.median(sizes)), "max_bytes": max(sizes),
            "errors": sum(r["errors"] for r in runs)}


@dataclass
class Summary:
    rps: float  # median over rounds
    p50_ms: float
    p99_ms: float
    median_bytes: float
    max_bytes: int
    errors: int

    @classmethod
    def of(cls, runs: list[Run]) -> Summary:
        lat = np.array([x for r in runs for x in r.latencies]) * 1000
        sizes = [s for r in runs for s in r.sizes]
        return cls(statistics.median(r.rps for r in runs), float(np.percentile(lat, 50)),
                   float(np.percentile(lat, 99)), float(statistics.median(sizes)),
                   max(sizes), sum(r.errors for r in runs))


def bench_args(doc: str, result: str, lists: tuple[list[str], str] | None = None,
               peers: tuple[list[str], str] | None = None,
               default_peers: list[str] | None = None) -> argparse.Namespace:
    """The options every benchmark takes; figures go to bench/results/<result>. ``lists``
    (choices, help) adds ``--lists`` for benchmarks that run several request lists, and
    ``peers`` adds ``--peers``, the servers to run."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6, help="length of one wrk run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / result))
    ap.add_argument("--workdir", help="keep the cluster and data here and reuse them next time")
    ap.add_argument("--port", type=int, help="the cluster's port (default: a free one)")
    if lists is not None:
        choices, text = lists
        ap.add_argument("--lists", nargs="+", choices=choices, default=choices, help=text)
    if peers is not None:
        choices, text = peers
        ap.add_argument("--peers", nargs="+", choices=choices, default=default_peers or choices,
                        help=text)
    return ap.parse_args()


def write_figures(path: str | Path, doc: dict,
                  default: Callable[[Any], Any] | None = None) -> None:
    """A benchmark's figures as JSON (bench/results/<name>.json by default); ``default``
    turns what JSON cannot hold into something it can."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=default))
    print(f"wrote {out}")

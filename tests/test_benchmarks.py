"""Every benchmark runs, at a thousandth of its size and on one case of each list:
figures nobody can reproduce are worth nothing, so a benchmark that breaks is found here,
not on the day it is needed. What they measure is in docs/benchmarks.md; nothing here is
timed. Benchmarks of one dataset share its cluster (``--workdir``, as a second run of a
benchmark does): it is made by the first of them and reused by the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

RUNS = {
    "vector_tiles": ["--rounds", "1", "--seconds", "1"],
    "features": ["--rounds", "1", "--seconds", "1"],
    "authorization": ["--rounds", "1", "--seconds", "1", "--lists", "z14"],
    "raster_tiles": ["--rounds", "1", "--seconds", "1"],
    "emap_tiles": ["--rounds", "1", "--seconds", "1"],
    "federation": ["--rounds", "1", "--seconds", "1"],
    "analysis": ["--rounds", "1"],
    "scaling": ["--rounds", "1", "--seconds", "1"],
    "map_images": ["--rounds", "1", "--seconds", "1"],
    "scenes3d": ["--rounds", "1", "--seconds", "1"],
    "registry": ["--lookups", "5", "--warm", "2"],
    "profile_tiles": ["--seconds", "1"],  # prints its profile; writes no figures
}
# The dataset each benchmark reads, where it has a ``--workdir`` to keep it in.
DATASETS = {
    **dict.fromkeys(("analysis", "authorization", "features", "map_images", "profile_tiles",
                     "scaling", "scenes3d", "vector_tiles"), "points"),
    **dict.fromkeys(("emap_tiles", "federation"), "emap"),
}


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    return {d: tmp_path_factory.mktemp(f"bench-{d}") for d in set(DATASETS.values())}


def _numbers(doc: object) -> list[float]:
    if isinstance(doc, dict):
        return [n for v in doc.values() for n in _numbers(v)]
    if isinstance(doc, list):
        return [n for v in doc for n in _numbers(v)]
    return [float(doc)] if isinstance(doc, int | float) and not isinstance(doc, bool) else []


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_benchmark_runs(name, tmp_path, workdirs):
    out = tmp_path / f"{name}.json"
    writes = name != "profile_tiles"
    shared = ["--workdir", str(workdirs[DATASETS[name]])] if name in DATASETS else []
    run = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *RUNS[name],
                          *shared, *(["--out", str(out)] if writes else [])],
                         capture_output=True,
                         text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "ONEMAP_BENCH_SCALE": "0.001",
                              "ONEMAP_BENCH_CASES": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    if not writes:
        assert "req/s" in run.stdout and "mapserver/tiles.py" in run.stdout, run.stdout[-2000:]
        return
    figures = json.loads(out.read_text())
    assert figures and any(n > 0 for n in _numbers(figures)), figures
    counted = name not in ("registry", "scenes3d", "analysis")  # these raise on an error
    assert '"errors": 0' in json.dumps(figures) or not counted, figures
    if name in ("vector_tiles", "features"):  # MapServer runs beside OneMap on every case
        cases = figures["tiles" if name == "vector_tiles" else "items"]
        assert all("mapserver" in peers for case, peers in cases.items()
                   if "filter" not in case), cases
    if name == "map_images":  # both peers draw every case; the shared cache answered
        cases = {k: v for k, v in figures["images"].items() if "ratio" in v}
        assert cases and all({"mapserver", "qgis"} <= set(v) for v in cases.values()), cases
        assert figures["images"]["image tiles, nginx cache"]["onemap"]["rps"] > 0, figures

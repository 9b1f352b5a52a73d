"""The cost of authorization on tiles: the same tiles, anonymous and as signed-in principals.

On the 1,000,000-point layer (classified public), one OneMap server (tile cache off, so
every tile is computed) serves the same tile lists to: anonymous callers; a principal with
an API key and no limits (authentication, the access check, the audit row); a principal
whose grant masks a field (a different statement); a principal limited to an area (half
the data's extent: tiles read only its rows; low zooms read the overview's cells inside
the area and make the cells along its edge on the fly). Rounds interleave the four, each
round starting with the next caller. Usage:

    make bench-auth      # or: .venv/bin/python bench/authorization.py [--rounds 3]
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import httpx
import psycopg
from dataset import BBOX, SEED, dataset
from harness import Server, bench_args, write_figures, wrk
from vector_tiles import LISTS, tile_lists

from access import admin
from access.admin import Actor
from onemap.settings import Settings

CONCURRENCY = 8
LAYER = "bench_points"


async def principals(url: str) -> dict[str, str]:
    """Keys for the signed-in callers; the layer is public."""
    levels = Settings().levels
    x0, y0, x1, y1 = BBOX
    half = {"type": "Polygon", "coordinates": [[[x0, y0], [(x0 + x1) / 2, y0],
                                                [(x0 + x1) / 2, y1], [x0, y1], [x0, y0]]]}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        actor = Actor("bench")
        await conn.execute("DELETE FROM onemap.grants")
        await conn.execute("UPDATE onemap.keys SET revoked_at = now()")
        await admin.classify(conn, actor, levels, layer=LAYER, level="public")
        found = await conn.execute("SELECT 1 FROM onemap.departments WHERE id = 'bench'")
        if await found.fetchone() is None:
            await admin.create_department(conn, actor, levels, id="bench", name="Bench")
            for name in ("plain", "masked", "area"):
                await admin.create_principal(conn, actor, name=name, kind="service",
                                             department="bench")
        area = await admin.create_area(conn, actor, name="west half", geojson=half)
        await admin.grant(conn, actor, levels, to="masked", layers=LAYER,
                          masked={"code": "middle"})
        await admin.grant(conn, actor, levels, to="area", layers=LAYER, area_id=area)
        return {name: (await admin.create_key(conn, actor, principal=name, rate_limit=0))["key"]
                for name in ("plain", "masked", "area")}


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Medians over rounds, and each caller's ratio to anonymous round by round: the two
    ran minutes apart at most, so the spread of those ratios is the machine's noise."""
    anon = [r["rps"] for r in runs["anonymous"]]
    out = {}
    for caller, rs in runs.items():
        ratios = [r["rps"] / a for r, a in zip(rs, anon, strict=True)]
        out[caller] = {"rps": statistics.median(r["rps"] for r in rs),
                       "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                       "errors": sum(r["errors"] for r in rs),
                       "vs_anonymous": statistics.median(ratios),
                       "ratio_low": min(ratios), "ratio_high": max(ratios),
                       "rounds_rps": [round(r["rps"], 1) for r in rs]}
    return out


def drain(url: str, path: str) -> None:
    """Returns once the server answers an anonymous tile promptly again."""
    for _ in range(120):
        t0 = time.perf_counter()
        httpx.get(url + path, timeout=120)
        if time.perf_counter() - t0 < 0.25:
            return


def main() -> None:
    args = bench_args(__doc__, "authorization.json",
                      lists=(list(LISTS), "tile lists to run (default: all)"))
    results: dict = {}
    with dataset(args.workdir, args.port) as (url, _):
        keys = asyncio.run(principals(url))
        server = Server("onemap", "mapserver.app:create_app",
                        {"ONEMAP_DATABASE_URL": url, "ONEMAP_TILE_CACHE_MB": "0"}, factory=True)
        server.start("/healthz")
        callers = {"anonymous": {}, **{k: {"Authorization": f"Bearer {v}"}
                                       for k, v in keys.items()}}
        try:
            lists = tile_lists(random.Random(SEED))
            for name in args.lists:
                paths = [f"/tiles/{LAYER}/{t.z}/{t.x}/{t.y}.mvt" for t in lists[name]]
                for caller, headers in callers.items():
                    status = httpx.get(server.url + paths[0], headers=headers).status_code
                    if status != 200:
                        raise RuntimeError(f"{caller} got {status} for {paths[0]}")
                for headers in callers.values():  # warm: every tile once per caller
                    wrk(server.url, paths, CONCURRENCY, 2, headers)
                runs: dict[str, list[dict]] = {c: [] for c in callers}
                order = list(callers)
                for i in range(args.rounds):
                    # Each round starts with a different caller, so none is always first.
                    for caller in order[i % len(order):] + order[:i % len(order)]:
                        headers = callers[caller]
                        runs[caller].append(wrk(server.url, paths, CONCURRENCY, args.seconds,
                                                headers))
                        # Slow requests still running when wrk stops would load the next
                        # caller's run: let them finish first.
                        drain(server.url, paths[0])
                results[name] = row = summarize(runs)
                print(f"{name:6} " + " | ".join(
                    f"{c} {v['rps']:6.1f}/s x{v['vs_anonymous']:.3f} "
                    f"[{v['ratio_low']:.2f}-{v['ratio_high']:.2f}]" for c, v in row.items()),
                    flush=True)
        finally:
            server.stop()
    write_figures(args.out, {"tiles": results, "rounds": args.rounds,
                             "concurrency": CONCURRENCY, "seconds": args.seconds})


if __name__ == "__main__":
    main()

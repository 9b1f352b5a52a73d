"""OGC API – Features items: OneMap against tipg, pygeoapi and MapServer on the same
PostGIS table.

Pages through the 1,000,000-point layer with limit 100 and 1000, with and without a bbox
and a CQL2 filter, asking every server for the same attributes. MapServer 8.0 (the
system's) has no filter in its OGC API, so it runs the cases without one. Usage:

    make bench-features    # or: .venv/bin/python bench/features.py [--rounds 3]
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import httpx
from dataset import dataset
from harness import Server, bench_args, few, free_port, summarize_wrk, write_figures, wrk
from umn_mapserver import MapServer

CONCURRENCY = 8
PROPS = "code,kind,height,year"
# A quarter of the city (about 25 x 22 km: enough features for every page of every case),
# and a filter that keeps a sixth of the points.
BOX = "116.2,39.8,116.5,40.0"
FILTER = "kind = 'camera'"
CASES = {
    "limit100": {"limit": 100},
    "limit1000": {"limit": 1000},
    "limit100+bbox": {"limit": 100, "bbox": BOX},
    "limit1000+bbox": {"limit": 1000, "bbox": BOX},
    "limit100+filter": {"limit": 100, "filter": FILTER},
    "limit100+bbox+filter": {"limit": 100, "bbox": BOX, "filter": FILTER},
}
PEERS = ["onemap", "tipg", "pygeoapi", "mapserver"]
PAGES = 40  # the first 40 pages, each from the one before's next link


def pygeoapi_config(url: str, port: int, folder: Path) -> dict[str, str]:
    """pygeoapi's YAML config and OpenAPI document for the points table."""
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(url)
    config = {
        "server": {"bind": {"host": "127.0.0.1", "port": port},
                   "url": f"http://127.0.0.1:{port}", "mimetype": "application/json",
                   "encoding": "utf-8", "language": "en-US", "pretty_print": False,
                   "limits": {"default_items": 10, "max_items": 10000},
                   "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                           "attribution": "OSM"}},
        "logging": {"level": "ERROR"},
        "metadata": {"identification": {"title": "bench", "description": "bench",
                                        "keywords": ["bench"], "terms_of_service": "",
                                        "url": "http://127.0.0.1"},
                     "license": {"name": "none", "url": "http://127.0.0.1"},
                     "provider": {"name": "bench", "url": "http://127.0.0.1"},
                     "contact": {"name": "bench"}},
        "resources": {"bench_points": {
            "type": "collection", "title": "points", "description": "points",
            "keywords": ["points"],
            "extents": {"spatial": {"bbox": [116.0, 39.6, 116.8, 40.2],
                                    "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
            "providers": [{"type": "feature", "name": "PostgreSQL",
                           "data": {"host": info["host"], "port": int(info["port"]),
                                    "dbname": info["dbname"], "user": info["user"],
                                    "password": "", "search_path": ["onemap_data"]},
                           "id_field": "_fid", "table": "bench_points",
                           "geom_field": "geom"}]}},
    }
    cfg = folder / "pygeoapi.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    api = folder / "openapi.yml"
    env = {"PYGEOAPI_CONFIG": str(cfg), "PYGEOAPI_OPENAPI": str(api), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(Path(sys.executable).parent / "pygeoapi"), "openapi", "generate",
                          str(cfg), "--output-file", str(api)], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return env


def paths(peer: str, case: dict, server_url: str) -> list[str]:
    """The pages a client reads paging through: the first, then each page's ``next`` link,
    as each server writes it (an offset for some, the last id for others)."""
    items = {"onemap": "/collections/bench_points/items",
             "tipg": "/collections/onemap_data.bench_points/items",
             "pygeoapi": "/collections/bench_points/items",
             "mapserver": MapServer.items("bench_points")}[peer]
    # pygeoapi 0.21 calls its (pygeofilter) CQL2 text "cql-text"; the filter reads the same.
    extra = {"f": "json"} if peer in ("pygeoapi", "mapserver") else {}
    if peer == "pygeoapi" and "filter" in case:
        extra["filter-lang"] = "cql-text"
    # MapServer serves the attributes its mapfile names: the same four.
    props = {} if peer == "mapserver" else {"properties": PROPS}
    url: str | None = f"{server_url}{items}?{urlencode({**case, **props, **extra})}"
    out = []
    while url and len(out) < PAGES:
        out.append(url.removeprefix(server_url))
        doc = httpx.get(url, timeout=120).raise_for_status().json()
        url = next((ln["href"] for ln in doc["links"] if ln["rel"] == "next"
                    and ln.get("type", "application/geo+json") in (
                        "application/geo+json", "application/json")), None)
        if url and not url.startswith(server_url):  # a server that links by its own name
            url = server_url + url[url.index("/collections/"):]
        if url and "bbox" in case and "bbox=" not in url:
            # MapServer 8.0's next link drops the bbox: a client pages on within the box.
            url += f"&{urlencode({'bbox': case['bbox']})}"
    random.Random(1).shuffle(out)
    return out


def main() -> None:
    args = bench_args(__doc__, "features.json", peers=(
        PEERS, "servers to run (default: all; mapserver needs cgi-mapserver and lighttpd)"))
    results: dict = {}
    with dataset(args.workdir, args.port) as (url, _), \
            tempfile.TemporaryDirectory() as tmp:
        pg_port = free_port()
        servers = {
            "onemap": Server("onemap", "mapserver.app:create_app",
                             {"ONEMAP_DATABASE_URL": url}, factory=True),
            "tipg": Server("tipg", "tipg.main:app",
                           {"DATABASE_URL": url, "TIPG_DB_SCHEMAS": '["onemap_data"]',
                            "TIPG_MAX_FEATURES_PER_QUERY": "10000"}),
            "pygeoapi": Server("pygeoapi", "pygeoapi.starlette_app:APP",
                               pygeoapi_config(url, pg_port, Path(tmp)), port=pg_port),
        }
        if "mapserver" in args.peers:
            servers["mapserver"] = MapServer("mapserver", url, {
                "bench_points": ("points", PROPS, (116.0, 39.6, 116.8, 40.2))},
                processes=CONCURRENCY)
        servers = {k: v for k, v in servers.items() if k in args.peers}
        for name, server in servers.items():
            server.start({"pygeoapi": "/collections", "mapserver": None}.get(name, "/"))
        try:
            for case_name, case in few(CASES.items()):
                peers = {p: s for p, s in servers.items()
                         if not (p == "mapserver" and "filter" in case)}
                lists = {peer: paths(peer, case, server.url)
                         for peer, server in peers.items()}
                sizes, matched = {}, {}
                for peer, server in peers.items():
                    bodies = [httpx.get(server.url + p, timeout=120) for p in lists[peer][:8]]
                    for b in bodies:
                        b.raise_for_status()
                    sizes[peer] = [len(b.content) for b in bodies]
                    first = bodies[0].json()
                    matched[peer] = (first.get("numberMatched"), len(first["features"]))
                runs: dict[str, list] = {peer: [] for peer in peers}
                for _ in range(args.rounds):
                    for peer, server in peers.items():
                        runs[peer].append(wrk(server.url, lists[peer], CONCURRENCY,
                                              args.seconds))
                results[case_name] = {peer: {**summarize_wrk(runs[peer], sizes[peer]),
                                             "matched_returned": matched[peer]}
                                      for peer in peers}
                r = results[case_name]
                print(f"{case_name:22} " + " | ".join(
                    f"{p} {r[p]['rps']:6.1f}/s p50 {r[p]['p50_ms']:6.1f} p99 "
                    f"{r[p]['p99_ms']:6.1f} ms {r[p]['median_bytes'] / 1024:6.1f} KB "
                    f"{r[p]['matched_returned']}" for p in peers), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    write_figures(args.out, {"items": results, "rounds": args.rounds,
                             "seconds": args.seconds, "concurrency": CONCURRENCY})


if __name__ == "__main__":
    main()

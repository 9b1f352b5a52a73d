"""Map images: WMS GetMap of the 1M-point and 100k-polygon layers, categorized and labelled,
at city, district and street scales, 256 x 256 and 1024 x 768, OneMap against MapServer 8
(the system's ``mapserv`` under lighttpd's FastCGI) and QGIS Server 3 (``qgis-server``,
the same way, over a project PyQGIS makes: ``qgis_project.py``) on the same PostGIS
tables, side by side in one run; and OneMap's image tiles from its cache.

All draw the same style: points as circles coloured by ``kind`` (6 classes), polygons
filled by ``landuse`` (5 classes) with an outline, labels from ``code`` with a halo, kept
apart, from a street's scale up (``LABEL_ZOOM``; labelling every feature of a city is
minutes of collisions for MapServer); all read the current rows in Web Mercator. Every
request of a case is another box (shifted over the city), so none serves a repeat.
OneMap runs 2 server processes (each drawing in its 2 image processes), MapServer and
QGIS Server 8 FastCGI processes each; wrk keeps 8 requests in flight (2, for three times
as long, at the city's scale, where one image takes seconds). Image tiles: the z12 to
z15 cells over the centre, cached after a first pass, from OneMap itself and through
nginx's shared cache in front of it (as deployed, ``docker/nginx.conf``: version-pinned
URLs). Usage:

    make bench-images      # or: .venv/bin/python bench/map_images.py [--rounds 3]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import httpx
import mercantile
import numpy as np
from dataset import BBOX, dataset
from harness import (
    ROOT,
    Server,
    bench_args,
    few,
    nginx,
    stop_nginx,
    summarize_wrk,
    write_figures,
    wrk,
)
from pyproj import Transformer
from qgis_server import QgisServer
from qgis_server import available as qgis_available
from umn_mapserver import MapServer, available, wms_mapfile

CONCURRENCY = 8
CITY_CONCURRENCY, CITY_LONGER = 2, 3
WORKERS = 2
KINDS = {"camera": "#e6550d", "lamp": "#3182bd", "sensor": "#31a354", "signal": "#756bb1",
         "hydrant": "#de2d26", "bin": "#636363"}
USES = {"residential": "#f2b77a", "commercial": "#e07b91", "industrial": "#9e9ac8",
        "public": "#6baed6", "green": "#74c476"}
LAYERS = {
    "bench_points": {"kind": "POINT", "field": "kind", "label": "code", "classes": KINDS},
    "bench_polygons": {"kind": "POLYGON", "field": "landuse", "label": "code",
                       "classes": USES},
}
# Labels from this zoom up (a street's scale), in both: MapServer's scale denominator at
# its 72 dpi for the same Web Mercator pixel. A label per feature of a whole city is a
# page of collisions neither should draw.
LABEL_ZOOM = 14
LABEL_SCALE = round(2 * math.pi * 6378137 / 512 / 2 ** LABEL_ZOOM * 72 / 0.0254)
for _st in LAYERS.values():
    _st["label_scale"] = LABEL_SCALE
# The box's width in metres of Web Mercator at each scale.
SCALES = {"city": 70_000, "district": 6_000, "street": 800}
SIZES = {"256x256": (256, 256), "1024x768": (1024, 768)}
BOXES = 24  # distinct boxes per case
TILE_ZOOMS = range(12, 16)


def style(table: str) -> list[dict]:
    """OneMap's style for a table: the mapfile's, in MapLibre's terms."""
    st = LAYERS[table]
    pairs = [x for value, colour in st["classes"].items() for x in (value, colour)]
    colour = ["match", ["get", st["field"]], *pairs, "#000000"]
    label = {"id": f"{table}-label", "type": "symbol", "minzoom": LABEL_ZOOM, "layout": {
        "text-field": ["get", st["label"]], "text-size": 11, "text-font": ["Noto Sans Regular"],
        "text-padding": 2, **({"text-offset": [0, 0.8], "text-anchor": "top"}
                              if st["kind"] == "POINT" else {})},
        "paint": {"text-color": "#333333", "text-halo-color": "#ffffff",
                  "text-halo-width": 2}}
    if st["kind"] == "POINT":
        drawn = [{"id": table, "type": "circle", "paint": {
            "circle-radius": 3.5, "circle-color": colour, "circle-stroke-color": "#ffffff",
            "circle-stroke-width": 1}}]
    else:
        drawn = [{"id": f"{table}-fill", "type": "fill", "paint": {
            "fill-color": colour, "fill-opacity": 0.85}},
                 {"id": f"{table}-line", "type": "line", "paint": {
                     "line-color": colour, "line-width": 1}}]
    return drawn + [label]


def boxes(scale: str, size: tuple[int, int], rng: np.random.Generator
          ) -> list[tuple[float, float, float, float]]:
    t = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = t.transform(BBOX[0], BBOX[1])
    x1, y1 = t.transform(BBOX[2], BBOX[3])
    w = SCALES[scale]
    h = w * size[1] / size[0]
    out = []
    for _ in range(BOXES):
        if scale == "city":  # the whole city, shifted a little
            cx, cy = (x0 + x1) / 2 + rng.uniform(-2000, 2000), (y0 + y1) / 2 + rng.uniform(
                -2000, 2000)
        else:  # somewhere in the middle half of the city, where it is dense
            cx = rng.uniform(x0 + (x1 - x0) / 4, x1 - (x1 - x0) / 4)
            cy = rng.uniform(y0 + (y1 - y0) / 4, y1 - (y1 - y0) / 4)
        out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return out


def getmap(prefix: str, table: str, box: tuple[float, ...], size: tuple[int, int]) -> str:
    return (f"{prefix}SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS={table}&STYLES="
            f"&CRS=EPSG:3857&BBOX={','.join(f'{v:.1f}' for v in box)}&WIDTH={size[0]}"
            f"&HEIGHT={size[1]}&FORMAT=image/png&TRANSPARENT=TRUE")


def set_styles(url: str) -> None:
    env = {**os.environ, "ONEMAP_DATABASE_URL": url}
    for table in LAYERS:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump({"layers": style(table)}, fh)
        try:
            subprocess.run([sys.executable, "-m", "onemap.cli", "style", table, "--file",
                            fh.name], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        finally:
            os.unlink(fh.name)


def png_pins(url: str) -> dict[str, str]:
    """Each table's PNG tile pin (``?v=``) from the WMTS capabilities OneMap serves."""
    caps = ET.fromstring(httpx.get(url + "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities",
                                   timeout=60).content)
    ns = {"w": "http://www.opengis.net/wmts/1.0", "o": "http://www.opengis.net/ows/1.1"}
    out = {}
    for table in LAYERS:
        layer = next(el for el in caps.iterfind("w:Contents/w:Layer", ns)
                     if el.findtext("o:Identifier", namespaces=ns) == table)
        template = next(r.get("template") for r in layer.iterfind("w:ResourceURL", ns)
                        if r.get("format") == "image/png")
        out[table] = template.rsplit("?v=", 1)[1]
    return out


def main() -> None:
    args = bench_args(__doc__, "map_images.json")
    if not available() or shutil.which("nginx") is None:
        raise SystemExit("MapServer (cgi-mapserver), lighttpd and nginx are needed: "
                         "make bench-images")
    rng = np.random.default_rng(7)
    results: dict = {}
    with dataset(args.workdir, args.port) as (url, _):
        set_styles(url)
        onemap = Server("onemap", "mapserver.app:create_app",
                        {"ONEMAP_DATABASE_URL": url, "ONEMAP_ACCESS_NOTICES": "1"},
                        factory=True, workers=WORKERS)
        ms = MapServer("mapserver", url, {}, processes=CONCURRENCY)
        ms.text = wms_mapfile(url, LAYERS, f"{ms.url}/mapserv?map=bench&")
        peers = {"onemap": (onemap, "/wms?"), "mapserver": (ms, "/mapserv?map=bench&")}
        # QGIS Server where it installs; DPI=72 puts its scale where MapServer's is (the
        # labels' scale), its sizes being in pixels.
        qgis = QgisServer("qgis", url, LAYERS, LABEL_SCALE, processes=CONCURRENCY) \
            if qgis_available() else None
        if qgis is not None:
            peers["qgis"] = (qgis, "/qgis?DPI=72&")
        else:
            print("QGIS Server (qgis-server) is not installed: not run", flush=True)
        try:
            onemap.start("/healthz")
            ms.start("/mapserv?map=bench&SERVICE=WMS&REQUEST=GetCapabilities")
            if qgis is not None:
                qgis.start("/qgis?SERVICE=WMS&REQUEST=GetCapabilities")
            for table in LAYERS:
                for scale in few(SCALES):
                    for size_name, size in few(SIZES.items()):
                        case = f"{table} {scale} {size_name}"
                        cells = boxes(scale, size, rng)
                        paths = {n: [getmap(prefix, table, b, size) for b in cells]
                                 for n, (_, prefix) in peers.items()}
                        sizes = {}
                        for n, (srv, _) in peers.items():
                            r = httpx.get(srv.url + paths[n][0], timeout=120)
                            if r.status_code != 200 or not r.headers.get(
                                    "content-type", "").startswith("image/png"):
                                raise RuntimeError(f"{n} {case}: {r.status_code} "
                                                   f"{r.text[:300]}")
                            sizes[n] = [len(r.content)]
                        # A city's image takes seconds: two at a time (one per core),
                        # for long enough that some end.
                        conc, secs = ((CITY_CONCURRENCY, args.seconds * CITY_LONGER)
                                      if scale == "city" else (CONCURRENCY, args.seconds))
                        runs: dict[str, list[dict]] = {n: [] for n in peers}
                        for i in range(args.rounds):
                            k = i % len(peers)
                            for n in list(peers)[k:] + list(peers)[:k]:
                                runs[n].append(wrk(peers[n][0].url, paths[n], conc, secs))
                        row = {n: summarize_wrk(rs, sizes[n]) for n, rs in runs.items()}
                        row["ratio"] = round(row["onemap"]["rps"]
                                             / max(row["mapserver"]["rps"], 1e-9), 2)
                        if "qgis" in row:  # none when it drew no image in the time
                            row["ratio_qgis"] = round(row["onemap"]["rps"] / row["qgis"][
                                "rps"], 2) if row["qgis"]["rps"] else None
                        results[case] = row
                        print(f"{case:34} " + " | ".join(
                            f"{n} {v['rps']:6.1f}/s p50 {v['p50_ms']:7.1f} ms"
                            for n, v in row.items() if n in peers)
                            + f" | x{row['ratio']}"
                            + (f" (x{row['ratio_qgis']} QGIS)" if "qgis" in row else ""),
                            flush=True)
            tiles = [f"/tiles/{t}/WebMercatorQuad/{c.z}/{c.x}/{c.y}.png" for t in LAYERS
                     for z in TILE_ZOOMS
                     for c in mercantile.tiles(116.3, 39.85, 116.5, 40.0, zooms=[z])][:400]
            wrk(onemap.url, tiles, CONCURRENCY, max(args.seconds, 4))  # fills the cache
            cached = summarize_wrk([wrk(onemap.url, tiles, CONCURRENCY, args.seconds)
                                    for _ in range(args.rounds)], [0])
            results["image tiles, cached"] = {"onemap": cached, "tiles": len(tiles)}
            print(f"image tiles, cached ({len(tiles)}): {cached['rps']:.1f}/s "
                  f"p50 {cached['p50_ms']:.1f} ms", flush=True)
            # As deployed: nginx's shared cache in front (docker/nginx.conf), which keeps
            # version-pinned URLs; the tiles asked as a WMTS client asks them, by the
            # templates (with their pins) of the capabilities.
            pin = png_pins(onemap.url)
            pinned = [f"{p}?v={pin[p.split('/')[2]]}" for p in tiles]
            front = nginx([onemap.url.removeprefix("http://")], cache=True)
            try:
                wrk(front[1], pinned, CONCURRENCY, max(args.seconds, 4))  # fills it
                with httpx.Client(timeout=60) as plain:
                    plain.headers.pop("accept-encoding", None)  # as wrk asks
                    hits = sum(plain.get(front[1] + p).headers.get("x-cache-status") == "HIT"
                               for p in pinned[:50])
                shared = summarize_wrk([wrk(front[1], pinned, CONCURRENCY, args.seconds)
                                        for _ in range(args.rounds)], [0])
            finally:
                stop_nginx(front)
            best = max(row["mapserver"]["rps"] for k, row in results.items() if "ratio" in row)
            results["image tiles, nginx cache"] = {
                "onemap": shared, "tiles": len(pinned), "warm_hits": [hits, 50],
                "over_mapserver_best": round(shared["rps"] / max(best, 1e-9), 1)}
            print(f"image tiles through nginx's cache ({hits} of 50 hits): "
                  f"{shared['rps']:.1f}/s p50 {shared['p50_ms']:.1f} ms, "
                  f"x{shared['rps'] / max(best, 1e-9):.1f} MapServer's best", flush=True)
        finally:
            onemap.stop()
            ms.stop()
            if qgis is not None:
                qgis.stop()
    write_figures(args.out, {"images": results, "rounds": args.rounds,
                             "concurrency": CONCURRENCY, "seconds": args.seconds,
                             "onemap_workers": WORKERS})


if __name__ == "__main__":
    main()

"""UMN MapServer 8 as a peer: the system's ``mapserv`` under lighttpd's FastCGI, over the
benchmark's own tables.

One mapfile names each table twice: ``<layer>`` in Web Mercator for MVT tiles (the
``_geom_3857`` column OneMap's tiles read, ``mode=tile``) and ``<layer>_ll`` in lon/lat for
OGC API – Features (``/mapserv/bench/ogcapi/collections/<layer>_ll/items``). Both read the
current rows only and the same attributes the other peers are asked for. MapServer answers
one request per process, so it gets as many FastCGI processes as the load has connections:
it never waits for a process where an asynchronous server would take the next request.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from harness import free_port

MAPSERV = Path("/usr/lib/cgi-bin/mapserv")  # Debian's cgi-mapserver
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
TYPES = {"points": "POINT", "polygons": "POLYGON"}


def available() -> bool:
    return MAPSERV.exists() and Path(LIGHTTPD).exists()


def _connection(url: str) -> str:
    u = urlsplit(url)
    return (f"host={u.hostname} port={u.port} dbname={u.path.lstrip('/')} "
            f"user={u.username}")


def _layer(name: str, kind: str, column: str, srid: int, attrs: str, conn: str,
           extent: tuple[float, ...]) -> str:
    cols = ", ".join(["_rid", "_fid", *attrs.split(","), column])
    table = name.removesuffix("_ll")
    # MapServer runs this query; every name in it is this benchmark's own.
    data = (f"{column} FROM (SELECT {cols} FROM onemap_data.{table}"  # noqa: S608
            f" WHERE _valid_to IS NULL) AS t USING UNIQUE _rid USING SRID={srid}")
    return f"""
  LAYER
    NAME "{name}"
    TYPE {TYPES[kind]}
    STATUS ON
    TEMPLATE "void"
    CONNECTIONTYPE POSTGIS
    CONNECTION "{conn}"
    PROCESSING "CLOSE_CONNECTION=DEFER"
    DATA "{data}"
    EXTENT {' '.join(map(str, extent))}
    PROJECTION "init=epsg:{srid}" END
    METADATA
      "ows_title" "{name}"
      "gml_include_items" "{attrs}"
      "gml_featureid" "_fid"
      "gml_types" "auto"
      "oga_max_limit" "10000"
    END
    CLASS STYLE COLOR 200 60 60 SIZE 4 END END  # drawn (so tiled) and queryable (so served)
  END"""


def mapfile(url: str, layers: dict[str, tuple[str, str, tuple[float, ...]]],
            online: str) -> str:
    """``layers``: table -> (kind, attributes, lon/lat extent)."""
    conn = _connection(url)
    parts = []
    for table, (kind, attrs, ll) in layers.items():
        merc = _mercator(ll)
        parts.append(_layer(table, kind, "_geom_3857", 3857, attrs, conn, merc))
        parts.append(_layer(f"{table}_ll", kind, "geom", 4326, attrs, conn, ll))
    return f"""MAP
  NAME "bench"
  EXTENT {' '.join(map(str, next(iter(layers.values()))[2]))}
  SIZE 256 256
  PROJECTION "init=epsg:4326" END
  WEB
    METADATA
      "ows_title" "bench"
      "ows_enable_request" "*"
      "oga_enable_request" "*"
      "oga_onlineresource" "{online}"
      "ows_srs" "EPSG:4326 EPSG:3857"
    END
  END
  OUTPUTFORMAT
    NAME "mvt"
    DRIVER MVT
    FORMATOPTION "EXTENT=4096"
    FORMATOPTION "EDGE_BUFFER=64"
  END
{''.join(parts)}
END
"""


def _mercator(ll: tuple[float, ...]) -> tuple[float, ...]:
    from pyproj import Transformer

    t = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = t.transform(ll[0], ll[1])
    x1, y1 = t.transform(ll[2], ll[3])
    return (round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1))


@dataclass
class FastCgiPeer:
    """A peer run as FastCGI processes under lighttpd (``lighttpd``), with its files in a
    folder of its own; same interface as harness.Server."""

    name: str
    database_url: str
    port: int = field(default_factory=free_port, kw_only=True)
    folder: Path | None = field(default=None, kw_only=True)
    proc: subprocess.Popen | None = field(default=None, kw_only=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_lighttpd(self.proc, self.folder)


@dataclass
class MapServer(FastCgiPeer):
    """lighttpd with ``processes`` FastCGI ``mapserv``."""

    layers: dict[str, tuple[str, str, tuple[float, ...]]]
    processes: int = 8
    # A mapfile of its own (a styled WMS, ``wms_mapfile``) instead of the tiles' and items'.
    text: str | None = None

    @staticmethod
    def tile(table: str, z: int, x: int, y: int) -> str:
        return (f"/mapserv?map=bench&mode=tile&tilemode=gmap&tile={x}+{y}+{z}"
                f"&layers={table}&map.imagetype=mvt")

    @staticmethod
    def items(table: str) -> str:
        return f"/mapserv/bench/ogcapi/collections/{table}_ll/items"

    def start(self, health: str | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="onemap-bench-mapserver-"))
        f = self.folder
        (f / "bench.map").write_text(self.text or mapfile(
            self.database_url, self.layers, f"{self.url}/mapserv/bench/ogcapi"))
        (f / "fonts.txt").write_text(f"noto {FONT}\n")
        (f / "mapserver.conf").write_text(
            f'CONFIG\n  ENV\n    MS_MAP_NO_PATH "1"\n  END\n'
            f'  MAPS\n    bench "{f / "bench.map"}"\n  END\nEND\n')
        self.proc = lighttpd(f, self.port, "/mapserv", MAPSERV, self.processes,
                             {"MAPSERVER_CONFIG_FILE": str(f / "mapserver.conf")})
        wait_for(self.proc, self.url + (health or self.items(next(iter(self.layers)))
                                        + "?f=json&limit=1"), "mapserver")


def lighttpd(folder: Path, port: int, route: str, program: Path, processes: int,
             env: dict[str, str]) -> subprocess.Popen:
    """lighttpd from the system's packages on ``port``, running ``processes`` FastCGI
    ``program`` at ``route`` with ``env``; its configuration and logs in ``folder``."""
    envs = ", ".join(f'"{k}" => "{v}"' for k, v in env.items())
    (folder / "lighttpd.conf").write_text(f"""
server.document-root = "{folder}"
server.port = {port}
server.bind = "127.0.0.1"
server.modules += ("mod_fastcgi")
server.errorlog = "{folder / 'error.log'}"
server.max-connections = 256
fastcgi.server = ("{route}" => ((
  "bin-path" => "{program}",
  "socket" => "{folder / 'fcgi.sock'}",
  "check-local" => "disable",
  "max-procs" => {processes},
  "bin-environment" => ({envs})
)))
""")
    # A session of its own: stopping it stops its FastCGI processes too.
    return subprocess.Popen([LIGHTTPD, "-D", "-f", str(folder / "lighttpd.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for(proc: subprocess.Popen, probe: str, name: str, seconds: float = 30) -> None:
    """Until ``probe`` answers 200 (an error if it answers otherwise, or lighttpd ends)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lighttpd exited: {proc.stderr.read().decode()}")
        try:
            r = httpx.get(probe, timeout=30)
            if r.status_code == 200:
                return
            raise RuntimeError(f"{name} answered {r.status_code}: {r.text[:500]}")
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not start")


def stop_lighttpd(proc: subprocess.Popen | None, folder: Path | None) -> None:
    if proc and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


FONT = "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"


def wms_mapfile(url: str, layers: dict[str, dict], online: str) -> str:
    """A WMS over the benchmark's tables, styled as OneMap's (bench/map_images.py): for each
    table, ``kind`` (POINT or POLYGON), ``field`` and its ``classes`` (value -> colour), and
    the ``label`` field, drawn in the same font with a halo, labels kept apart, at scales up
    to ``label_scale`` (MapServer's, at its 72 dpi)."""
    conn = _connection(url)
    parts = []
    for table, st in layers.items():
        cols = ", ".join(["_rid", st["field"], st["label"], "_geom_3857"])
        data = (f"_geom_3857 FROM (SELECT {cols} FROM onemap_data.{table}"  # noqa: S608
                f" WHERE _valid_to IS NULL) AS t USING UNIQUE _rid USING SRID=3857")
        classes = []
        for value, colour in st["classes"].items():
            r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
            if st["kind"] == "POINT":
                draw = (f"STYLE SYMBOL 'circle' SIZE 7 COLOR {r} {g} {b}"
                        " OUTLINECOLOR 255 255 255 WIDTH 1 END")
            else:
                draw = (f"STYLE COLOR {r} {g} {b} OPACITY 85 END"
                        f" STYLE OUTLINECOLOR {r // 2} {g // 2} {b // 2} WIDTH 1 END")
            classes.append(f"""
    CLASS
      EXPRESSION "{value}"
      {draw}
      LABEL TYPE TRUETYPE FONT "noto" SIZE 8 COLOR 51 51 51 OUTLINECOLOR 255 255 255
        MAXSCALEDENOM {st['label_scale']}
        OUTLINEWIDTH 2 POSITION {'lc' if st['kind'] == 'POINT' else 'cc'} OFFSET 0 6
        PARTIALS FALSE MINDISTANCE 20 BUFFER 2 END
    END""")
        parts.append(f"""
  LAYER
    NAME "{table}"
    TYPE {st['kind']}
    STATUS ON
    CONNECTIONTYPE POSTGIS
    CONNECTION "{conn}"
    PROCESSING "CLOSE_CONNECTION=DEFER"
    DATA "{data}"
    PROJECTION "init=epsg:3857" END
    CLASSITEM "{st['field']}"
    LABELITEM "{st['label']}"
    METADATA "wms_title" "{table}" END
{''.join(classes)}
  END""")
    return f"""MAP
  NAME "bench"
  EXTENT -20037508 -20037508 20037508 20037508
  SIZE 256 256
  FONTSET "fonts.txt"
  PROJECTION "init=epsg:3857" END
  SYMBOL NAME "circle" TYPE ELLIPSE FILLED TRUE POINTS 1 1 END END
  WEB
    METADATA
      "wms_title" "bench"
      "wms_enable_request" "*"
      "wms_onlineresource" "{online}"
      "wms_srs" "EPSG:3857 EPSG:4326"
    END
  END
  OUTPUTFORMAT
    NAME "png"
    DRIVER AGG/PNG
    MIMETYPE "image/png"
    IMAGEMODE RGBA
    EXTENSION "png"
    TRANSPARENT ON
  END
{''.join(parts)}
END
"""

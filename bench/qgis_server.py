"""QGIS Server 3 as a peer: the system's ``qgis_mapserv.fcgi`` under lighttpd's FastCGI,
serving a project made by PyQGIS over the benchmark's own tables (``qgis_project.py``).

Like MapServer, it answers one request per process, so it gets as many FastCGI processes
as the load has connections.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from harness import ROOT
from umn_mapserver import LIGHTTPD, FastCgiPeer, lighttpd, wait_for

QGIS_MAPSERV = Path("/usr/lib/cgi-bin/qgis_mapserv.fcgi")  # Debian's qgis-server
SYSTEM_PYTHON = "/usr/bin/python3"  # where Debian's python3-qgis lives


def available() -> bool:
    return QGIS_MAPSERV.exists() and Path(LIGHTTPD).exists() and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True).returncode == 0


@dataclass
class QgisServer(FastCgiPeer):
    """lighttpd with ``processes`` FastCGI QGIS Servers of one project. ``layers`` and
    ``label_scale`` as ``qgis_project.py`` takes them."""

    layers: dict[str, dict]
    label_scale: float
    processes: int = 8

    def start(self, health: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="onemap-bench-qgis-"))
        f = self.folder
        u = urlsplit(self.database_url)
        spec = {"db": {"host": u.hostname, "port": u.port, "dbname": u.path.lstrip("/"),
                       "user": u.username},
                "label_scale": self.label_scale, "layers": self.layers}
        (f / "spec.json").write_text(json.dumps(spec))
        made = subprocess.run([SYSTEM_PYTHON, str(ROOT / "bench" / "qgis_project.py"),
                               str(f / "spec.json"), str(f / "bench.qgs")],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
        if made.returncode != 0:
            raise RuntimeError(f"the QGIS project was not made: {made.stderr[-2000:]}")
        (f / "home").mkdir()
        self.proc = lighttpd(f, self.port, "/qgis", QGIS_MAPSERV, self.processes, {
            "QGIS_PROJECT_FILE": str(f / "bench.qgs"), "QT_QPA_PLATFORM": "offscreen",
            "HOME": str(f / "home"), "XDG_RUNTIME_DIR": str(f / "home"),
            "QGIS_SERVER_LOG_LEVEL": "2", "QGIS_SERVER_LOG_STDERR": "1"})
        wait_for(self.proc, self.url + health, self.name, seconds=60)
        # Each process reads the project at its first request: all of them, before any
        # request is timed.
        with ThreadPoolExecutor(self.processes) as pool:
            list(pool.map(lambda _: httpx.get(self.url + health, timeout=120),
                          range(self.processes * 2)))

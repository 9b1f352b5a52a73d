"""A private PostgreSQL + PostGIS cluster under OneMap's data directory.

Used when no ``ONEMAP_DATABASE_URL`` is set, and by the test suite. PostgreSQL refuses to
run as root, so as root the cluster belongs to the ``postgres`` system user.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

log = logging.getLogger("onemap.cluster")

DB_NAME = "onemap"
DB_USER = "onemap"


class ClusterError(RuntimeError):
    """The embedded cluster could not be set up or started."""


# A backend whose client died (a killed ingest) notices within seconds, even mid-statement,
# and lets go of the layer's lock; a silent network peer is dropped after about 25 s.
RECOVERY = [
    "client_connection_check_interval = '2s'",
    "tcp_keepalives_idle = 10",
    "tcp_keepalives_interval = 5",
    "tcp_keepalives_count = 3",
]


def find_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (``ONEMAP_PG_BINDIR`` wins)."""
    explicit = os.environ.get("ONEMAP_PG_BINDIR")
    if explicit:
        return Path(explicit)
    versions = [Path(p).parent.parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    versions = [v for v in versions if v.name.isdigit()]
    if versions:
        return max(versions, key=lambda v: int(v.name)) / "bin"
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise ClusterError(
        "PostgreSQL server binaries not found: install postgresql and postgis "
        "(make setup does) or set ONEMAP_DATABASE_URL"
    )


class Cluster:
    """initdb/pg_ctl around one data directory, listening on loopback and a socket."""

    def __init__(self, root: Path, port: int, durable: bool = True) -> None:
        self.root = Path(root).absolute()
        self.pgdata = self.root / "data"
        self.port = port
        self.durable = durable
        self.bindir = find_bindir()
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def logfile(self) -> Path:
        return self.root / "postgresql.log"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{args[0]} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
                + (f"\nsee {self.logfile}" if self.logfile.exists() else "")
            )
        return proc

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            # postgres must be able to reach its directory from /.
            for parent in self.root.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        os.chmod(self.root, 0o700)

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized():
            return
        self._prepare_root()
        log.info("initdb %s", self.pgdata)
        self._run("initdb", "-D", str(self.pgdata), "-U", DB_USER, "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8")
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.root}'",
            "shared_buffers = '256MB'",
            "work_mem = '32MB'",
            "maintenance_work_mem = '256MB'",
            "max_connections = 100",
            "jit = off",
            *RECOVERY,
        ]
        if not self.durable:
            conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.pgdata / "postgresql.auto.conf", "a") as fh:
            fh.write("\n".join(conf) + "\n")

    def running(self) -> bool:
        if not self.initialized():
            return False
        if self._run("pg_ctl", "-D", str(self.pgdata), "status", check=False).returncode != 0:
            return False
        # A killed postmaster nobody reaped yet (a zombie) still answers to its pid.
        try:
            pid = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def _settings_current(self) -> None:
        """Clusters made before a setting of RECOVERY was added get it too."""
        auto = self.pgdata / "postgresql.auto.conf"
        text = auto.read_text() if auto.exists() else ""
        missing = [line for line in RECOVERY if line.split(" =")[0] not in text]
        if missing:
            with open(auto, "a") as fh:
                fh.write("\n".join(missing) + "\n")

    def orphans(self) -> list[int]:
        """Server processes of this data directory left running by a killed postmaster
        (their working directory is the data directory); they hold its shared memory."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "cwd")) == self.pgdata.resolve():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def _clear_orphans(self, wait: float = 10.0) -> None:
        pids = self.orphans()
        if not pids:
            return
        log.warning("ending %d PostgreSQL processes left by a stopped server: %s",
                    len(pids), pids)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait / 2
            while time.monotonic() < deadline and self.orphans():
                time.sleep(0.1)
            pids = self.orphans()
            if not pids:
                return
        raise ClusterError(f"PostgreSQL processes {pids} of {self.pgdata} would not end")

    def start(self) -> None:
        self.init()
        if self.running():
            return
        self._settings_current()
        # A killed postmaster leaves its backends until they notice; they would keep the
        # new one from starting ("pre-existing shared memory block is still in use").
        self._clear_orphans()
        # No process works in the data directory now: a lock file left by a killed
        # postmaster (whose pid may linger as an unreaped zombie) is stale.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        (self.root / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)
        log.info("starting PostgreSQL on 127.0.0.1:%s", self.port)
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.logfile), "-w",
                  "-t", "60", "-o", f"-p {self.port}", "start")
        self._ensure_database()

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")

    def status(self) -> str:
        if not self.initialized():
            return f"not initialized ({self.pgdata})"
        if self.running():
            return f"running at {self.url} (data {self.pgdata})"
        return f"stopped (data {self.pgdata})"

    def _ensure_database(self) -> None:
        import psycopg

        admin = f"postgresql://{DB_USER}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DB_NAME}")  # constant name, not input

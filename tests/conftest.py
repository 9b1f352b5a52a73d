"""A throwaway PostgreSQL + PostGIS cluster for the session, and OneMap served over HTTP."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import jwt
import psycopg
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg.conninfo import conninfo_to_dict

from ingest.vector import ingest_vector
from layers.cluster import Cluster, find_bindir
from layers.migrate import migrate
from mapserver.app import create_app
from onemap.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
# The OGC XML schemas, resolved offline through their catalog; set before lxml loads.
SCHEMAS = (ROOT.parent / "shared" / "schemas").resolve()
os.environ.setdefault("XML_CATALOG_FILES", str(SCHEMAS / "catalog.xml"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def own_cluster(prefix: str) -> Iterator[Cluster]:
    """A migrated PostgreSQL + PostGIS cluster in a folder of its own, removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    c = Cluster(root / "pg", free_port(), durable=False)
    c.start()
    with psycopg.connect(c.url, autocommit=True) as conn:
        migrate(conn)
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with own_cluster("onemap-test-") as c:
        yield c


@dataclass
class Issuer:
    """An OpenID Connect issuer for the tests: its signing key, served as a JWKS over HTTP."""

    url: str
    key: Any
    kid: str = "test-key"
    audience: str = "onemap"

    def token(self, sub: str, *, expires_in: int = 300, audience: str | None = None,
              key: Any = None, issuer: str | None = None) -> str:
        now = int(time.time())
        claims = {"sub": sub, "iss": issuer or self.url, "aud": audience or self.audience,
                  "iat": now, "exp": now + expires_in}
        return jwt.encode(claims, key or self.key, algorithm="RS256",
                          headers={"kid": self.kid})


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    """The issuer also signs people in as a browser would see it: discovery, an
    authorization page (a user name is enough here) that answers with a code, and a token
    endpoint that checks the PKCE verifier and gives an ID token with the login's nonce."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "test-key", "use": "sig", "alg": "RS256"}]})
    codes: dict[str, dict[str, str]] = {}
    issued: list[Issuer] = []

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, content: bytes, kind: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(content)

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/.well-known/openid-configuration":
                me = issued[0].url
                self._send(200, json.dumps({
                    "issuer": me, "authorization_endpoint": f"{me}/authorize",
                    "token_endpoint": f"{me}/token", "jwks_uri": f"{me}/jwks.json",
                    "code_challenge_methods_supported": ["S256"]}).encode())
            elif url.path == "/authorize":
                hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" '
                                 f'value="{html.escape(v)}">' for k, v in q.items())
                self._send(200, (
                    "<!doctype html><title>City sign-in</title><h1>City sign-in</h1>"
                    f'<form method="post" action="/authorize">{hidden}'
                    '<label>User <input name="username" id="username"></label>'
                    '<button id="go" type="submit">Sign in</button></form>').encode(),
                    "text/html; charset=utf-8")
            else:
                self._send(200, body.encode())

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            if self.path == "/authorize":
                code = secrets.token_urlsafe(16)
                codes[code] = form
                target = form["redirect_uri"] + "?" + urllib.parse.urlencode(
                    {"code": code, "state": form.get("state", "")})
                self._send(302, b"", headers={"Location": target})
                return
            login = codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if login is None or login.get("code_challenge") != challenge \
                    or login.get("redirect_uri") != form.get("redirect_uri"):
                self._send(400, b'{"error": "invalid_grant"}')
                return
            me = issued[0]
            now = int(time.time())
            token = jwt.encode({"sub": login["username"], "iss": me.url,
                                "aud": login["client_id"], "iat": now, "exp": now + 300,
                                "nonce": login.get("nonce")}, key, algorithm="RS256",
                               headers={"kid": me.kid})
            self._send(200, json.dumps({"id_token": token, "token_type": "Bearer",
                                        "access_token": "unused"}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    issued.append(Issuer(f"http://127.0.0.1:{srv.server_address[1]}", key))
    yield issued[0]
    srv.shutdown()


@pytest.fixture(scope="session")
def settings(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory,
             issuer: Issuer) -> Settings:
    # Layers made by tests are public unless a test says otherwise; the access tests
    # classify their own.
    return Settings(database_url=cluster.url, data_dir=tmp_path_factory.mktemp("var"),
                    ingest_batch_size=1000, default_level="public",
                    oidc_issuer=issuer.url, oidc_audience=issuer.audience,
                    oidc_jwks_url=f"{issuer.url}/jwks.json")


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """OneMap under uvicorn on a free loopback port, while the block runs."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("OneMap did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@dataclass
class Live:
    """OneMap as its own process (``onemap serve``): a crash shows as a crash."""

    url: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def server_process(settings: Settings, log: Path, port: int | None = None,
                   **env: str) -> Iterator[Live]:
    """``onemap serve`` on a free port (or ``port``) against the test cluster, its output
    in ``log``; ``env`` adds ONEMAP_* settings."""
    port = port or free_port()
    environ = {**os.environ, "ONEMAP_DATABASE_URL": str(settings.database_url),
               "ONEMAP_DATA_DIR": str(settings.data_dir), "ONEMAP_PORT": str(port),
               "ONEMAP_DEFAULT_LEVEL": "public", **env}
    out = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "onemap.cli", "serve"], cwd=ROOT,
                            env=environ, stdout=out, stderr=subprocess.STDOUT)
    live = Live(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 60
    try:
        while True:
            if not live.alive():
                raise RuntimeError(f"onemap serve exited: {live.log_text()[-2000:]}")
            try:
                if httpx.get(f"{live.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("onemap serve did not start")
            time.sleep(0.1)
        yield live
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()


@pytest.fixture(scope="session")
def server(settings: Settings) -> Iterator[str]:
    """OneMap over HTTP for as long as the session runs."""
    with serving(settings) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def sample_layers(settings: Settings) -> dict[str, str]:
    """The demo's layers, loaded once from the real sample files."""
    from layers.meta import LayerMeta

    pbf = SAMPLES / "helsinki-centre.osm.pbf"
    osm = LayerMeta(attribution="© OpenStreetMap contributors, ODbL")
    ingest_vector(SAMPLES / "beijing-districts-cgcs2000.geojson", "districts", key="gb",
                  settings=settings)
    ingest_vector(pbf, "lamps", source_layer="points", where="highway = 'street_lamp'",
                  key="osm_id", settings=settings, meta=osm)
    ingest_vector(pbf, "roads", source_layer="lines", where="highway IS NOT NULL",
                  key="osm_id", settings=settings, meta=osm)
    ingest_vector(pbf, "buildings", source_layer="multipolygons",
                  where="building IS NOT NULL", key="osm_id,osm_way_id", settings=settings,
                  meta=osm)
    return {"pbf": str(pbf)}


def read_source(path: Path | str, **kw) -> gpd.GeoDataFrame:
    return gpd.read_file(path, **kw)


def ensure_departments(settings: Settings, departments: dict[str, str]) -> None:
    """Departments (id -> name) in the directory, made if missing: layers and registry
    entities are owned by departments, so tests make them before they ingest."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for dept_id, name in departments.items():
            conn.execute("INSERT INTO onemap.departments (id, name) VALUES (%s, %s)"
                         " ON CONFLICT (id) DO NOTHING", (dept_id, name))
        conn.execute("UPDATE onemap.access_state SET version = version + 1")


def department_keys(settings: Settings, users: dict[str, str]) -> dict[str, str]:
    """API keys for users (name -> department), creating the departments they need."""
    import asyncio

    from access import admin
    from access.admin import Actor

    async def create() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            actor, out = Actor("test"), {}
            for dept in dict.fromkeys(users.values()):
                known = await conn.execute("SELECT 1 FROM onemap.departments WHERE id = %s",
                                           (dept,))
                if await known.fetchone() is None:
                    await admin.create_department(conn, actor, settings.levels, id=dept,
                                                  name=dept)
            for name, dept in users.items():
                await admin.create_principal(conn, actor, name=name, kind="user",
                                             department=dept)
                out[name] = (await admin.create_key(conn, actor, principal=name))["key"]
            return out

    return asyncio.run(create())


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def replica(settings):
    """A streaming replica of the test cluster (pg_basebackup -R), on a port of its own;
    ``stop`` kills it."""
    info = conninfo_to_dict(str(settings.database_url))
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="onemap-replica-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", free_port()
    done = subprocess.run(_as_postgres([
        str(bindir / "pg_basebackup"), "-h", info.get("host", "127.0.0.1"), "-p",
        str(info["port"]), "-U", info["user"], "-D", str(data), "-R", "-X", "stream",
        "-c", "fast"]), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(data / "postgresql.auto.conf", "a") as fh:
        fh.write(f"\nport = {port}\nunix_socket_directories = '{root}'\nhot_standby = on\n")
    ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w"]
    subprocess.run(_as_postgres([*ctl, "start"]), check=True, capture_output=True, timeout=60)
    url = f"postgresql://{info['user']}@127.0.0.1:{port}/{info['dbname']}"
    try:
        yield {"url": url, "stop": lambda: subprocess.run(
            _as_postgres([*ctl, "stop", "-m", "immediate"]), capture_output=True, timeout=60)}
    finally:
        subprocess.run(_as_postgres([*ctl, "stop", "-m", "immediate"]), capture_output=True,
                       timeout=60)
        subprocess.run(["rm", "-rf", str(root)], check=False)



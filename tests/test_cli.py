"""The command line's embedded cluster: what `make demo` runs when no database is configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import SAMPLES, free_port


def onemap(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onemap.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_embedded_cluster_lifecycle():
    root = Path(tempfile.mkdtemp(prefix="onemap-cli-"))
    os.chmod(root, 0o755)
    env = {"PATH": os.environ["PATH"], "ONEMAP_DATA_DIR": str(root / "var"),
           "ONEMAP_DB_PORT": str(free_port()), "ONEMAP_DB_DURABLE": "false"}
    try:
        assert "not initialized" in onemap("db", "status", env=env).stdout
        started = onemap("db", "start", env=env)
        assert started.returncode == 0, started.stderr
        assert "running at postgresql://onemap@127.0.0.1:" in started.stdout
        assert onemap("layers", env=env).stdout.strip() == "no layers"
        loaded = onemap("ingest", "vector", str(SAMPLES / "beijing-districts-cgcs2000.geojson"),
                        "--layer", "districts", "--key", "gb", "--role", "base", env=env)
        assert loaded.returncode == 0, loaded.stderr
        listing = onemap("layers", env=env).stdout
        assert "districts" in listing and "EPSG:4490" in listing and "16 features" in listing
        entry = json.loads(onemap("layers", "--json", env=env).stdout)[0]
        assert (entry["id"], entry["role"], entry["key"]) == ("districts", "base", "gb")
        # A second start finds the cluster running and the schema migrated.
        assert onemap("db", "start", env=env).returncode == 0
        assert "stopped" in onemap("db", "stop", env=env).stdout
    finally:
        onemap("db", "stop", env=env)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_every_command_has_help():
    env = {"PATH": os.environ["PATH"]}
    for args in ([], ["serve"], ["db"], ["layers"], ["ingest"], ["ingest", "vector"]):
        out = onemap(*args, "--help", env=env)
        assert out.returncode == 0 and "usage: onemap" in out.stdout


def test_bad_setting_is_a_clear_error():
    out = onemap("layers", env={"PATH": os.environ["PATH"], "ONEMAP_DB_PORT": "lots"})
    assert out.returncode == 2
    assert "ONEMAP_DB_PORT must be an integer, got 'lots'" in out.stderr

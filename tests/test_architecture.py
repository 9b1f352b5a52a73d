"""The house rules on who may import whom, read from the code itself: storage never imports
loaders or HTTP, decisions know no HTTP, the registry writes through the layers' writer and
not through the file ingest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    """Each module of a package -> the top-level names of what it imports."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
        out[str(path.relative_to(ROOT))] = found
    return out


FORBIDDEN = {
    # storage: no loaders, no HTTP, no decisions about callers
    "layers": ("ingest", "mapserver", "registry", "access", "starlette", "uvicorn"),
    "access": ("mapserver", "ingest", "registry", "starlette", "uvicorn"),
    "registry": ("ingest", "mapserver", "starlette", "uvicorn", "pyogrio.raw"),
    "ingest": ("mapserver", "registry", "access", "starlette"),
    "scenes3d": ("mapserver", "ingest", "starlette"),
    # jobs: run ingest and the like outside requests; no HTTP
    "jobs": ("mapserver", "registry", "starlette", "uvicorn"),
    # federation: talks to other nodes as an HTTP client, never serves; no loaders
    "federation": ("mapserver", "ingest", "registry", "starlette", "uvicorn"),
    # analysis: processes over the layers' statements; no HTTP, no decisions of its own
    "analysis": ("mapserver", "ingest", "registry", "access", "starlette", "uvicorn"),
    # drawing: knows styles and pixels, not callers, storage or HTTP
    "mapimages": ("mapserver", "ingest", "registry", "access", "layers", "starlette"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_may(package):
    bad = []
    for module, names in _imports(package).items():
        for name in sorted(names):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{module} imports {name}")
    assert not bad, "\n".join(bad)


def test_http_statuses_are_chosen_in_one_place():
    """Domain errors carry no HTTP status: outside mapserver/ nothing names one."""
    bad = []
    for package in ("layers", "access", "registry", "ingest", "scenes3d", "mapimages", "jobs",
                    "analysis"):
        for module in _imports(package):
            text = (ROOT / module).read_text(encoding="utf-8")
            for word in ("status_code", "HTTPException", "starlette"):
                if word in text:
                    bad.append(f"{module} mentions {word}")
    assert not bad, "\n".join(bad)

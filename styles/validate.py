"""Every style OneMap stores or serves passes the MapLibre style specification's own
validator: npm's ``@maplibre/maplibre-gl-style-spec``, run by Node.js, as installed under
``.tools/`` by ``make setup`` (``ONEMAP_TOOLS_DIR`` elsewhere)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from layers.errors import Unavailable

TOOLS = Path(os.environ.get("ONEMAP_TOOLS_DIR", Path(__file__).resolve().parents[1] / ".tools"))
SPEC = TOOLS / "node_modules" / "@maplibre" / "maplibre-gl-style-spec"
# Reads a JSON list of styles on stdin; writes a list of each style's error messages.
_SCRIPT = """
const spec = require(process.argv[1]);
let input = "";
process.stdin.on("data", (d) => { input += d; });
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((s) => spec.validateStyleMin(s).map((e) => e.message));
  process.stdout.write(JSON.stringify(out));
});
"""


def problems(styles: list[dict[str, Any]]) -> list[list[str]]:
    """Each style's errors by the specification's validator (empty: valid)."""
    node = shutil.which("node")
    if node is None or not SPEC.is_dir():
        raise Unavailable("the MapLibre style validator is not installed here "
                          "(make setup installs Node.js and it under .tools/)")
    run = subprocess.run([node, "-e", _SCRIPT, str(SPEC)], input=json.dumps(styles),
                         capture_output=True, text=True, timeout=60)
    if run.returncode:
        raise Unavailable(f"the MapLibre style validator failed: {run.stderr[-300:]}")
    return json.loads(run.stdout)

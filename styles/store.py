"""Each layer's style, kept in the catalog (``onemap.styles``): MapLibre style layers that
draw it, without their source (filled in when a style is served). A layer with no stored
style is drawn in its default look (``styles.build.default_layers``).

A style given by its owner is checked before it is kept: each entry a MapLibre layer of a
type that draws vector data, ids unique and named after the layer, and the whole passing
the MapLibre style specification's validator (``styles.validate``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from layers.catalog import Layer
from layers.errors import Invalid
from styles.build import style_doc
from styles.validate import problems

# What a style layer of a vector layer may be.
TYPES = ("fill", "line", "circle", "symbol", "fill-extrusion", "heatmap")
MAX_ENTRIES = 64  # style layers per layer
MAX_BYTES = 256 * 1024  # of one layer's style (also the body PUT /styles/{layer} takes)


async def stored(conn: AsyncConnection, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    cur = await conn.execute("SELECT layer_id, layers FROM onemap.styles"
                             " WHERE layer_id = ANY(%s)", (ids,))
    return {r[0]: r[1] for r in await cur.fetchall()}


def checked(layer: Layer, entries: Any) -> list[dict[str, Any]]:
    """The owner's style layers as they will be kept, or Invalid naming what is wrong."""
    if isinstance(entries, dict) and "layers" in entries:
        entries = entries["layers"]  # a whole style document: its layers are the style
    if not isinstance(entries, list) or not entries:
        raise Invalid("a style is a non-empty list of MapLibre style layers (or a style "
                      "document with them under 'layers')")
    size = len(json.dumps(entries))
    if size > MAX_BYTES:
        raise Invalid(f"a layer's style takes at most {MAX_BYTES // 1024} KB of JSON, "
                      f"not {size // 1024} KB")
    if len(entries) > MAX_ENTRIES:
        raise Invalid(f"a layer's style has at most {MAX_ENTRIES} style layers, "
                      f"not {len(entries)}")
    out, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise Invalid(f"style layer {i} is not a JSON object")
        kind, ident = entry.get("type"), entry.get("id")
        if kind not in TYPES:
            raise Invalid(f"style layer {i} ({ident!r}) has type {kind!r}; a vector layer is "
                          f"drawn with {', '.join(TYPES)}")
        if not isinstance(ident, str) or not ident:
            raise Invalid(f"style layer {i} has no id")
        # Named after the layer, so no two layers' style layers meet in one document.
        ident = ident if ident == layer.id or ident.startswith(f"{layer.id}-") \
            else f"{layer.id}-{ident}"
        if ident in seen:
            raise Invalid(f"style layer {i}: id {ident!r} is used twice")
        seen.add(ident)
        kept = {k: v for k, v in entry.items() if k not in ("source", "source-layer")}
        out.append({**kept, "id": ident})
    errors = problems([style_doc([layer], "https://onemap.invalid/tilejson.json",
                                 {layer.id: out})])[0]
    if errors:
        def named(e: str) -> str:  # the document's layers[n] is the style layer out[n - 1]
            return re.sub(r"layers\[(\d+)\]",
                          lambda m: f"style layer {out[int(m[1]) - 1]['id']!r}"
                          if 0 < int(m[1]) <= len(out) else m[0], e)
        raise Invalid("the style does not pass the MapLibre style specification: "
                      + "; ".join(named(e) for e in errors[:10]))
    return out


async def put(conn: AsyncConnection, layer: Layer, entries: list[dict[str, Any]],
              by: str) -> int:
    """Keeps ``entries`` (from ``checked``) as the layer's style; returns its version."""
    cur = await conn.execute(
        "INSERT INTO onemap.styles (layer_id, layers, set_by) VALUES (%s, %s, %s)"
        " ON CONFLICT (layer_id) DO UPDATE SET layers = excluded.layers,"
        " set_by = excluded.set_by, version = onemap.styles.version + 1, updated_at = now()"
        " RETURNING version", (layer.id, Jsonb(entries), by))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def reset(conn: AsyncConnection, layer: Layer) -> bool:
    """Back to the default look; True if there was a style to remove."""
    cur = await conn.execute("DELETE FROM onemap.styles WHERE layer_id = %s", (layer.id,))
    return cur.rowcount > 0

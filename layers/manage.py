"""A layer's catalog entry changed without its data: titles and notes, keywords, sharing,
classification, withdrawal and restoration. Through the layer's writer lock, like every
write, so it never interleaves with an ingest or an edit; the catalog version moves, so
every cached answer about the layer is renewed. Nothing of the data is touched: a
withdrawn layer keeps its rows and history, and is served again once restored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from layers import writer
from layers.bulk import annotate
from layers.catalog import SHARING_TYPES, Layer, get_layer, write_layer
from layers.errors import Invalid, NotFound

# What a caller may set here, with the check each value gets.
TEXT = ("title", "description", "attribution", "update_cycle")
MAX_TEXT = 4000


def _checked(values: dict[str, Any], levels: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in TEXT:
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                raise Invalid(f"{name} must be text of at most {MAX_TEXT} characters")
            if name == "title" and not (value or "").strip():
                raise Invalid("a layer's title cannot be empty")
            out[name] = value.strip() if isinstance(value, str) else None
        elif name == "keywords":
            if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                raise Invalid("keywords must be a list of text")
            out[name] = [k.strip() for k in value if k.strip()][:50]
        elif name == "sharing_type":
            if value not in SHARING_TYPES:
                raise Invalid(f"sharing_type {value!r} is not one of "
                              + ", ".join(SHARING_TYPES))
            out[name] = value
        elif name == "level":
            if value not in levels:
                raise Invalid(f"level {value!r} is not one of " + ", ".join(levels))
            out[name] = value
        else:
            raise Invalid(f"{name!r} is not set here; set one of "
                          + ", ".join((*TEXT, "keywords", "sharing_type", "level", "fields")))
    return out


def change(url: str, layer_id: str, levels: tuple[str, ...], *,
           values: dict[str, Any] | None = None,
           notes: dict[str, dict[str, str]] | None = None, withdrawn: bool | None = None,
           by: str, lock_timeout_ms: int, statement_ms: int,
           abandoned: Callable[[], bool] | None = None) -> tuple[Layer, Layer]:
    """Apply the change; the layer before and after. ``withdrawn``: True withdraws, False
    restores, None leaves it."""
    checked = _checked(values or {}, levels)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{statement_ms}ms",))
        writer.lock(conn, layer_id, lock_timeout_ms)
        old = get_layer(conn, layer_id)
        if old is None:
            raise NotFound(f"no layer {layer_id!r}")
        if notes:
            checked["fields"] = Jsonb([f.as_dict() for f in annotate(list(old.fields),
                                                                     notes)])
        if checked:
            write_layer(conn, layer_id, checked, new=False)
        if withdrawn is not None and withdrawn != (old.withdrawn_at is not None):
            conn.execute("UPDATE onemap.layers SET withdrawn_at = CASE WHEN %s THEN now() END,"
                         " withdrawn_by = CASE WHEN %s THEN %s END WHERE id = %s",
                         (withdrawn, withdrawn, by, layer_id))
        if checked or withdrawn is not None:
            conn.execute("UPDATE onemap.layers SET version = version + 1 WHERE id = %s",
                         (layer_id,))
        new = get_layer(conn, layer_id)
        assert new is not None
        writer.commit(conn, abandoned)
    return old, new

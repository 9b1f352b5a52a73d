"""What every write to a layer shares, whoever writes: a vector or raster ingest, a feature
edit, the registry publishing its entities.

- ``lock``: one writer per layer at a time (a transaction-scoped advisory lock); a writer
  that may not wait long (an HTTP edit) gives a timeout and gets ``Unavailable``.
- ``content_hash``: a version's content hash, the same for an ingested and an edited row,
  so writing equal data again is no change.
- ``commit``: the end of a write, refused (rolled back) when the one who asked has gone.

The checks of the shapes (``layers/geometry.py``) and of the dictionary (``layers/edit.py``,
``layers/store.py``) and the catalog version and overview upkeep live beside it in
``layers/``; the ingest's loaders only read files into it.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from layers.errors import Unavailable

# How long a refused writer is asked to wait before trying again, in seconds.
RETRY_AFTER = 5


def lock(conn: psycopg.Connection, layer_id: str, timeout_ms: int | None = None) -> None:
    """Take the layer's write lock for this transaction; with ``timeout_ms``, wait no
    longer than that (then Unavailable, and the transaction is to be rolled back)."""
    if timeout_ms is not None:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{timeout_ms}ms",))
    try:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"onemap.layer:{layer_id}",))
    except psycopg.errors.LockNotAvailable as exc:
        raise Unavailable(f"layer {layer_id!r} is being written by another change (an ingest "
                          "or an edit); nothing was changed, try again",
                          retry_after=RETRY_AFTER) from exc
    if timeout_ms is not None:
        conn.execute("SELECT set_config('lock_timeout', '0', true)")


def content_hash(row: sql.Composable, geom: sql.Composable) -> sql.Composable:
    """The content hash of a version: its fields (a ROW) and its shape, without the shape's
    SRID label (rows from a file are staged without one, an edit's and the registry's carry
    theirs), so equal content hashes equal whichever writer wrote it."""
    return sql.SQL("decode(md5(concat_ws('|', {}::text,"
                   " encode(ST_AsEWKB(ST_SetSRID({}, 0)), 'hex'))), 'hex')").format(row, geom)


def commit(conn: psycopg.Connection, abandoned: Callable[[], bool] | None = None) -> None:
    """Commit, unless whoever asked for the write has gone: then roll back, so no change
    lands that nobody is told of."""
    if abandoned is not None and abandoned():
        conn.rollback()
        raise Unavailable("the client went away before the change was committed; nothing "
                          "was changed")
    conn.commit()

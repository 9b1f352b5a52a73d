"""Feature tables with complete history.

Every layer is one table in ``onemap_data``. A row is one version of one feature, alive from
``_valid_from`` until ``_valid_to`` (NULL while current). Nothing is deleted: a change
closes the current row and adds the next version, so any past state can be read back.
Geometry is lon/lat (SRID 4326); ``_geom_3857`` is a derived copy for tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from layers import writer
from layers.catalog import PG_TYPES, Field, table_of

STAGING = sql.Identifier("_onemap_staging")
INCOMING = sql.Identifier("_onemap_incoming")
CLOSED = sql.Identifier("_onemap_closed")

# Clip to Web Mercator's latitude range so the derived column is defined for any lon/lat.
_GEOM_3857 = (
    "ST_Transform(CASE WHEN ST_YMin(geom) >= -85.05 AND ST_YMax(geom) <= 85.05 THEN geom"
    " ELSE ST_ClipByBox2D(geom, ST_MakeEnvelope(-180, -85.05, 180, 85.05, 4326)) END, 3857)"
)


_DICT_TYPES = {pg: name for name, pg in PG_TYPES.items()} | {
    "timestamp with time zone": "datetime", "time without time zone": "time"}


def _column_defs(fields: Sequence[Field]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(PG_TYPES[f.type]))
        for f in fields
    )


def vector_tables(conn: psycopg.Connection) -> list[str]:
    """Vector layers whose table exists."""
    return [r[0] for r in conn.execute(
        "SELECT id FROM onemap.layers WHERE kind = 'vector'"
        " AND to_regclass(format('%I.%I', 'onemap_data', id)) IS NOT NULL ORDER BY id")]


def table_exists(conn: psycopg.Connection, layer_id: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                       (f'onemap_data."{layer_id}"',)).fetchone()
    return bool(row and row[0])


def create_table(conn: psycopg.Connection, layer_id: str, fields: Sequence[Field]) -> None:
    extra = sql.SQL(", ") + _column_defs(fields) if fields else sql.SQL("")
    conn.execute(sql.SQL(
        "CREATE TABLE {t} ("
        " _rid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " _fid text NOT NULL,"
        " _version integer NOT NULL,"
        " _valid_from timestamptz NOT NULL,"
        " _valid_to timestamptz,"
        " _produced_at timestamptz,"
        " _ingested_at timestamptz NOT NULL,"
        " _updated_at timestamptz NOT NULL,"
        " _hash bytea NOT NULL,"
        " geom geometry(Geometry, 4326) NOT NULL,"
        " _geom_3857 geometry(Geometry, 3857) GENERATED ALWAYS AS (" + _GEOM_3857 + ") STORED"
        "{extra})"
    ).format(t=table_of(layer_id), extra=extra))


# Tiles search _geom_3857; features (bbox, CQL2 spatial filters) search geom.
_INDEXES = (
    ("cur_fid", "CREATE UNIQUE INDEX IF NOT EXISTS {n} ON {t} (_fid) WHERE _valid_to IS NULL"),
    ("fid_ver", "CREATE INDEX IF NOT EXISTS {n} ON {t} (_fid, _version)"),
    ("cur_gix", "CREATE INDEX IF NOT EXISTS {n} ON {t} USING gist (_geom_3857)"
                " WHERE _valid_to IS NULL"),
    ("all_gix", "CREATE INDEX IF NOT EXISTS {n} ON {t} USING gist (_geom_3857)"),
    ("cur_geo", "CREATE INDEX IF NOT EXISTS {n} ON {t} USING gist (geom)"
                " WHERE _valid_to IS NULL"),
    ("all_geo", "CREATE INDEX IF NOT EXISTS {n} ON {t} USING gist (geom)"),
    ("valid", "CREATE INDEX IF NOT EXISTS {n} ON {t} (_valid_from, _valid_to)"),
)


def create_indexes(conn: psycopg.Connection, layer_id: str) -> list[str]:
    """Builds the layer's missing indexes; returns their names.

    Run after the first bulk load (faster than maintaining them during it), and at
    start-up for layers loaded before an index was added here.
    """
    have = {r[0] for r in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'onemap_data' AND tablename = %s",
        (layer_id,))}
    built = []
    for suffix, stmt in _INDEXES:
        name = f"{layer_id[:40]}_{suffix}"
        if name not in have:
            conn.execute(sql.SQL(stmt).format(n=sql.Identifier(name), t=table_of(layer_id)))
            built.append(name)
    return built


def existing_columns(conn: psycopg.Connection, layer_id: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (f'onemap_data."{layer_id}"',),
    ).fetchall()
    return dict(rows)


def widest(a: str, b: str) -> str:
    """The dictionary type that holds values of both types."""
    if a == b:
        return a
    if {a, b} <= {"integer", "number", "decimal"}:
        return "decimal" if "decimal" in (a, b) else "number"
    if {a, b} == {"date", "datetime"}:
        return "datetime"
    return "string"


def add_or_widen_columns(conn: psycopg.Connection, layer_id: str,
                         fields: Sequence[Field]) -> tuple[dict[str, str], bool]:
    """Bring the table's columns up to the incoming dictionary.

    Returns each field's type in the table and whether the table changed. A field whose
    type changed is widened to a type that holds both, so every past version stays readable.
    """
    have = {name: _DICT_TYPES.get(pg, "string")
            for name, pg in existing_columns(conn, layer_id).items()}
    changed = False
    types: dict[str, str] = {}
    t = table_of(layer_id)
    for f in fields:
        col = sql.Identifier(f.name)
        if f.name not in have:
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                t, col, sql.SQL(PG_TYPES[f.type])))
            types[f.name], changed = f.type, True
            continue
        wide = widest(have[f.name], f.type)
        if wide != have[f.name]:
            pg = sql.SQL(PG_TYPES[wide])
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
                t, col, pg, col, pg))
            changed = True
        types[f.name] = wide
    return types, changed


def create_staging(conn: psycopg.Connection, fields: Sequence[Field]) -> list[str]:
    """A temporary table the source is copied into; returns its column order for COPY."""
    extra = sql.SQL(", ") + _column_defs(fields) if fields else sql.SQL("")
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE {s} (_n bigint NOT NULL, _fid text, _produced_at timestamptz,"
        " geom geometry NOT NULL{extra}) ON COMMIT DROP"
    ).format(s=STAGING, extra=extra))
    return ["_n", "_fid", "_produced_at", "geom", *[f.name for f in fields]]


def copy_statement(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        STAGING, sql.SQL(", ").join(sql.Identifier(c) for c in columns))


def staging_duplicates(conn: psycopg.Connection) -> list[tuple[int, str, int]]:
    """Rows whose key repeats an earlier row's: (row number, key, first row number)."""
    rows = conn.execute(sql.SQL(
        "SELECT _n, _fid, first_n FROM (SELECT _n, _fid,"
        " min(_n) OVER (PARTITION BY _fid) AS first_n FROM {s}) d WHERE _n <> first_n"
    ).format(s=STAGING)).fetchall()
    if rows:
        conn.execute(sql.SQL(
            "DELETE FROM {s} d USING (SELECT _fid, min(_n) AS first_n FROM {s} GROUP BY _fid) f"
            " WHERE d._fid = f._fid AND d._n <> f.first_n").format(s=STAGING))
    return [(int(n), str(k), int(first)) for n, k, first in rows]


def merge(conn: psycopg.Connection, layer_id: str, fields: Sequence[Field]) -> dict[str, int]:
    """Merge staging into the layer as of this transaction's time; returns counts."""
    t = table_of(layer_id)
    cols = sql.SQL("").join(sql.SQL(", ") + sql.Identifier(f.name) for f in fields)
    row = (sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(f.name) for f in fields))
           if fields else sql.SQL("ROW()"))
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE {i} ON COMMIT DROP AS SELECT _fid, _produced_at,"
        " ST_SetSRID(geom, 4326) AS geom{cols},"
        # The file-level produced time is left out: a new copy of unchanged data is no change.
        " {hash} AS _hash FROM {s}"
    ).format(i=INCOMING, s=STAGING, cols=cols,
             hash=writer.content_hash(row, sql.SQL("geom"))))
    conn.execute(sql.SQL("CREATE INDEX ON {} (_fid)").format(INCOMING))
    conn.execute(sql.SQL("ANALYZE {}").format(INCOMING))
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE {c} ON COMMIT DROP AS SELECT _fid FROM {t} WHERE false"
    ).format(c=CLOSED, t=t))
    # Close current versions that vanished or changed.
    conn.execute(sql.SQL(
        "WITH c AS (UPDATE {t} AS cur SET _valid_to = now() WHERE cur._valid_to IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM {i} i WHERE i._fid = cur._fid AND i._hash = cur._hash)"
        " RETURNING cur._fid) INSERT INTO {c} SELECT _fid FROM c"
    ).format(t=t, i=INCOMING, c=CLOSED))
    # Add a version for every incoming feature that has no identical current one.
    inserted = conn.execute(sql.SQL(
        "WITH ins AS (INSERT INTO {t} (_fid, _version, _valid_from, _produced_at, _ingested_at,"
        " _updated_at, _hash, geom{cols})"
        " SELECT i._fid, coalesce(h.v, 0) + 1, now(), i._produced_at, coalesce(h.first, now()),"
        " now(), i._hash, i.geom{icols} FROM {i} i"
        # Set-based, so the first load of a still unindexed table stays linear.
        " LEFT JOIN (SELECT _fid, max(_version) AS v, min(_ingested_at) AS first FROM {t}"
        "  WHERE _fid IN (SELECT _fid FROM {i}) GROUP BY _fid) h ON h._fid = i._fid"
        " WHERE NOT EXISTS (SELECT 1 FROM {t} cur WHERE cur._fid = i._fid"
        "  AND cur._valid_to IS NULL)"
        " RETURNING _version)"
        " SELECT count(*) FILTER (WHERE _version = 1), count(*) FILTER (WHERE _version > 1)"
        " FROM ins"
    ).format(t=t, i=INCOMING, cols=cols,
             icols=sql.SQL("").join(sql.SQL(", i.") + sql.Identifier(f.name) for f in fields))
    ).fetchone()
    assert inserted is not None  # an aggregate always has its row
    new, changed_or_back = int(inserted[0]), int(inserted[1])
    # A closed feature that came back in this ingest was changed, not vanished.
    totals = conn.execute(sql.SQL(
        "SELECT (SELECT count(*) FROM {c}), (SELECT count(*) FROM {i}),"
        " (SELECT count(*) FROM {c} c JOIN {i} i USING (_fid))").format(c=CLOSED, i=INCOMING)
    ).fetchone()
    assert totals is not None
    closed, n_in, n_changed = (int(v) for v in totals)
    return {
        "inserted": new + (changed_or_back - n_changed),
        "changed": n_changed,
        "closed": closed - n_changed,
        "unchanged": n_in - new - changed_or_back,
    }


def layer_stats(conn: psycopg.Connection, layer_id: str) -> dict[str, Any]:
    row = conn.execute(sql.SQL(
        "SELECT n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), types FROM"
        " (SELECT count(*) AS n, ST_Extent(geom) AS e,"
        "  array_agg(DISTINCT ST_GeometryType(geom)) AS types"
        "  FROM {t} WHERE _valid_to IS NULL) s"
    ).format(t=table_of(layer_id))).fetchone()
    assert row is not None
    count, *ext, types = row
    return {"feature_count": int(count or 0),
            "extent": ext if ext[0] is not None else None,
            "geometry_types": sorted(types or [])}


def alive(as_of: bool) -> sql.Composable:
    """Rows ``t`` current now, or (``as_of``) alive at the moment bound as ``%(as_of)s``."""
    return (sql.SQL("t._valid_from <= %(as_of)s AND (t._valid_to IS NULL"
                    " OR t._valid_to > %(as_of)s)") if as_of else sql.SQL("t._valid_to IS NULL"))


def features(conn: psycopg.Connection, layer_id: str, fields: Sequence[Field],
             as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Current features, or the layer as it stood at ``as_of``, as GeoJSON-like dicts."""
    t = table_of(layer_id)
    cols = sql.SQL("").join(sql.SQL(", ") + sql.Identifier(f.name) for f in fields)
    when = alive(as_of is not None)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(
            "SELECT _fid, _version, _valid_from, _valid_to, _produced_at, _ingested_at,"
            " _updated_at, ST_AsText(geom) AS wkt{cols} FROM {t} t WHERE {when} ORDER BY _fid"
        ).format(cols=cols, t=t, when=when), {"as_of": as_of})
        out = []
        for r in cur:
            out.append({
                "id": r.pop("_fid"), "wkt": r.pop("wkt"),
                "meta": {k: r.pop(k) for k in ("_version", "_valid_from", "_valid_to",
                                               "_produced_at", "_ingested_at", "_updated_at")},
                "properties": r,
            })
        return out

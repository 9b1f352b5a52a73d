"""The layer catalog: one row per layer in ``onemap.layers``, read into immutable records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from layers.errors import Invalid

LAYER_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Collection ids the OGC API uses for itself (the records catalog).
RESERVED_IDS = frozenset({"catalog"})
# The values the catalog's CHECK constraints admit.
ROLES = ("base", "thematic")
LAYER_KINDS = ("vector", "raster", "3d")
SHARING_TYPES = ("unconditional", "conditional", "not_shared")
DATA_SCHEMA = "onemap_data"
OVERVIEW_SCHEMA = "onemap_overview"

# System columns of every layer table; source fields never take these names.
SYSTEM_COLUMNS = ("_rid", "_fid", "_version", "_valid_from", "_valid_to", "_produced_at",
                  "_ingested_at", "_updated_at", "_hash", "geom", "_geom_3857")

# Dictionary type -> PostgreSQL type.
PG_TYPES = {"integer": "bigint", "number": "double precision", "string": "text",
            "boolean": "boolean", "date": "date", "datetime": "timestamptz", "time": "time",
            "decimal": "numeric"}


# What people write about a field in the dictionary, beside what ingest measures.
NOTES = ("title", "unit", "description")


@dataclass(frozen=True)
class Field:
    """One entry of a layer's data dictionary."""

    name: str
    type: str
    length: int | None = None
    nullable: bool = True
    key: bool = False
    source_name: str | None = None
    level: str | None = None  # its classification, when above the layer's
    title: str | None = None  # what people call it (a popup's, a form's label)
    unit: str | None = None  # of a measure: m, m², kW, people
    description: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type, "length": self.length,
               "nullable": self.nullable, "key": self.key,
               "source_name": self.source_name or self.name}
        if self.level:
            out["level"] = self.level
        for note in NOTES:
            if getattr(self, note):
                out[note] = getattr(self, note)
        return out


@dataclass(frozen=True)
class Layer:
    id: str
    kind: str
    role: str  # "base" (served, never handed out in bulk) or "thematic"
    title: str
    description: str | None
    department: str | None
    attribution: str | None
    keywords: tuple[str, ...]
    update_cycle: str
    sharing_type: str
    level: str  # classification: what clearance reading it needs
    crs: str
    source_crs: str | None
    source: str | None
    geometry_type: str | None
    key_field: str | None
    fields: tuple[Field, ...]
    feature_count: int
    extent: tuple[float, float, float, float] | None
    detail_zoom: int | None
    minzoom: int
    maxzoom: int
    version: int
    schema_version: int
    produced_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Raster layers: bands, elevation, statistics, default rendering (layers.rasters).
    raster: dict[str, Any] | None = None
    department_name: str | None = None  # the owning department's name in the directory
    withdrawn_at: datetime | None = None  # served to no one since (access/policy.py)

    @property
    def table(self) -> sql.Identifier:
        return table_of(self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "role": self.role, "title": self.title,
            "description": self.description, "department": self.department,
            "department_name": self.department_name,
            **({"withdrawn_at": _iso(self.withdrawn_at)} if self.withdrawn_at else {}),
            "attribution": self.attribution,
            "keywords": list(self.keywords), "update_cycle": self.update_cycle,
            "sharing_type": self.sharing_type, "level": self.level, "crs": self.crs,
            "source_crs": self.source_crs,
            "geometry_type": self.geometry_type, "key": self.key_field,
            "fields": [f.as_dict() for f in self.fields], "feature_count": self.feature_count,
            "extent": list(self.extent) if self.extent else None,
            "minzoom": self.minzoom, "maxzoom": self.maxzoom, "version": self.version,
            "produced_at": _iso(self.produced_at), "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            **({"raster": self.raster} if self.raster is not None else {}),
        }


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def table_of(layer_id: str) -> sql.Identifier:
    if not LAYER_ID.match(layer_id):
        raise ValueError(f"invalid layer id {layer_id!r}: use a-z, 0-9 and _, starting a-z")
    return sql.Identifier(DATA_SCHEMA, layer_id)


def overview_of(layer_id: str) -> sql.Identifier:
    table_of(layer_id)  # same rules for the id
    return sql.Identifier(OVERVIEW_SCHEMA, layer_id)


def layer_from_row(row: dict[str, Any]) -> Layer:
    return Layer(
        id=row["id"], kind=row["kind"], role=row["role"], title=row["title"],
        description=row["description"],
        department=row["department"], attribution=row["attribution"],
        keywords=tuple(row["keywords"] or ()),
        update_cycle=row["update_cycle"], sharing_type=row["sharing_type"],
        level=row["level"], crs=row["crs"],
        source_crs=row["source_crs"], source=row["source"], geometry_type=row["geometry_type"],
        key_field=row["key_field"], fields=tuple(Field(**f) for f in row["fields"]),
        feature_count=row["feature_count"],
        extent=tuple(row["extent"]) if row["extent"] else None,  # type: ignore[arg-type]
        detail_zoom=row["detail_zoom"], minzoom=row["minzoom"], maxzoom=row["maxzoom"],
        version=row["version"], schema_version=row["schema_version"],
        produced_at=row["produced_at"], created_at=row["created_at"],
        updated_at=row["updated_at"], raster=row.get("raster"),
        department_name=row.get("department_name"), withdrawn_at=row.get("withdrawn_at"),
    )


def department_id(conn: psycopg.Connection, raw: str | None) -> str | None:
    """The directory's department that ``raw`` names (its id, or its name in any case);
    Invalid when none does: an owner is a department, never a free name."""
    if raw is None or not str(raw).strip():
        return None
    text = str(raw).strip()
    row = conn.execute(
        "SELECT id FROM onemap.departments WHERE id = %s OR id = lower(%s)"
        " OR lower(name) = lower(%s) ORDER BY id = %s DESC, id LIMIT 1",
        (text, text, text, text)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute(
            "SELECT id FROM onemap.departments ORDER BY id LIMIT 30")]
        raise Invalid(f"no department {text!r} in the directory (known: "
                      f"{', '.join(known) or 'none yet'}); add it with "
                      "`onemap auth department ID --name NAME`")
    return str(row[0])


def write_layer(conn: psycopg.Connection, layer_id: str, values: dict[str, Any],
                new: bool) -> None:
    """Insert or update a catalog entry; the column names are ours, the values bound. The
    owning department is resolved to the directory's id (Invalid if unknown)."""
    if values.get("department") is not None:
        values = {**values, "department": department_id(conn, values["department"])}
    cols = [sql.Identifier(c) for c in values]
    if new:
        conn.execute(sql.SQL("INSERT INTO onemap.layers (id, {}) VALUES (%s, {})").format(
            sql.SQL(", ").join(cols), sql.SQL(", ").join(sql.Placeholder() * len(cols))),
            [layer_id, *values.values()])
    else:
        conn.execute(sql.SQL("UPDATE onemap.layers SET {}, updated_at = now() WHERE id = %s")
                     .format(sql.SQL(", ").join(sql.SQL("{} = %s").format(c) for c in cols)),
                     [*values.values(), layer_id])


# With the owning department's name beside its id (the id is what rules compare).
SELECT_LAYERS = sql.SQL("SELECT l.*, (SELECT d.name FROM onemap.departments d"
                        " WHERE d.id = l.department) AS department_name FROM onemap.layers l")
# A layer's data and schema versions, and what names its style's state ('': the default
# look; a style reset and set again starts its version anew, its time does not).
SELECT_VERSIONS = sql.SQL(
    "SELECT l.id, l.version, l.schema_version,"
    " coalesce(s.version || '@' || s.updated_at, '') FROM onemap.layers l"
    " LEFT JOIN onemap.styles s ON s.layer_id = l.id WHERE l.id = ANY(%s)")


def list_layers(conn: psycopg.Connection) -> list[Layer]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SELECT_LAYERS + sql.SQL(" ORDER BY id"))
        return [layer_from_row(r) for r in cur.fetchall()]


def get_layer(conn: psycopg.Connection, layer_id: str) -> Layer | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SELECT_LAYERS + sql.SQL(" WHERE id = %s"), (layer_id,))
        row = cur.fetchone()
        return layer_from_row(row) if row else None


async def fetch_layers(conn: AsyncConnection, *, ids: list[str] | None = None,
                       kind: str | None = None) -> list[Layer]:
    """Catalog entries by id order: all, or those with these ids, or of this kind."""
    clauses, params = [], []
    if ids is not None:
        clauses.append(sql.SQL("id = ANY(%s)"))
        params.append(ids)
    if kind is not None:
        clauses.append(sql.SQL("kind = %s"))
        params.append(kind)
    where = (sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)) if clauses else sql.SQL("")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SELECT_LAYERS + where + sql.SQL(" ORDER BY id"), params)
        return [layer_from_row(r) for r in await cur.fetchall()]

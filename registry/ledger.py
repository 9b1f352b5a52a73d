"""Ledger import: carriers and fronts from departments' CSV/XLSX ledgers and OSM extracts.

Every row is checked on its own; a bad row is reported with its row number and reason
while the good rows load. A row whose alias (asset number, OSM id, serial) is already
known updates that entity under its code; a row of the same kind within ``DUPLICATE_M``
of an existing entity without a shared alias is flagged, not doubled. New entities get a
code from their kind's rule, their aliases, slots and an installation event, all in one
transaction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg import sql

from layers.catalog import department_id
from layers.errors import Invalid
from registry import codes

DUPLICATE_M = 3.0
STATES = ("planned", "in_service", "faulty", "retired")
POWER = ("24h", "dusk_to_dawn", "none")
ALIASES = {"asset_no": "asset", "osm_id": "osm", "serial": "serial"}
NUMBERS = {"height_m", "power_w", "direction", "fov", "range_m"}
INTEGERS = {"ports", "slot"}
CARRIER_FIELDS = ("height_m", "owner", "operator", "status", "power_supply", "power_w",
                  "network", "ports", "cabinet", "built_at")
FRONT_FIELDS = ("model", "serial", "state", "owner", "direction", "fov", "range_m",
                "protocol")
# "3-4:15; 5.5-6:10": slots from 3 to 4 m carrying 15 kg, from 5.5 to 6 m carrying 10 kg.
SLOT = re.compile(r"^\s*([0-9.]+)\s*-\s*([0-9.]+)\s*:\s*([0-9.]+)\s*$")


class RowError(ValueError):
    pass


@dataclass
class Row:
    """One ledger row, checked: what it says of one carrier or front."""

    n: int  # as the user sees it: the spreadsheet's row number (header = 1)
    kind: str
    lon: float
    lat: float
    values: dict[str, Any]
    aliases: list[tuple[str, str]]
    slots: list[tuple[float, float, float]] = field(default_factory=list)
    carrier: str | None = None  # fronts: the carrier's code, or scheme:alias
    slot: int | None = None


@dataclass
class Outcome:
    n: int
    action: str  # new, updated, duplicate, rejected
    code: str | None
    reason: str = ""


@dataclass
class LedgerReport:
    entity: str
    source: str
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for o in self.outcomes if o.action == action)

    def summary(self) -> str:
        return (f"{self.source}: {len(self.outcomes)} rows: {self.count('new')} new, "
                f"{self.count('updated')} updated, {self.count('duplicate')} flagged as "
                f"duplicates, {self.count('rejected')} rejected")

    def as_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "source": self.source,
                "rows": [o.__dict__ for o in self.outcomes]}


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == ""


def _number(name: str, v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError) as exc:
        raise RowError(f"{name} {v!r} is not a number") from exc
    if not math.isfinite(x) or x < 0:
        raise RowError(f"{name} {v!r} must be a number >= 0")
    return x


def parse_slots(text: str) -> list[tuple[float, float, float]]:
    out = []
    for part in str(text).split(";"):
        if not part.strip():
            continue
        m = SLOT.match(part)
        if not m:
            raise RowError(f"slot {part.strip()!r} is not height_min-height_max:load_kg")
        lo, hi, load = (float(g) for g in m.groups())
        if hi < lo:
            raise RowError(f"slot {part.strip()!r} ends below where it starts")
        out.append((lo, hi, load))
    return out


def check_row(n: int, raw: dict[str, Any], entity: str, kinds: dict[str, codes.Rule]) -> Row:
    """A ledger row (already renamed to OneMap's field names) as a Row, or RowError."""
    kind = str(raw.get("kind") or "").strip()
    rule = kinds.get(kind)
    if rule is None or rule.entity != entity:
        known = ", ".join(k for k, r in kinds.items() if r.entity == entity)
        raise RowError(f"kind {kind!r} is not a {entity} kind ({known})")
    try:
        lon, lat = float(raw.get("lon")), float(raw.get("lat"))
    except (TypeError, ValueError) as exc:
        raise RowError(f"position {raw.get('lon')!r}, {raw.get('lat')!r} is not two "
                       "numbers (lon, lat)") from exc
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise RowError(f"position {lon}, {lat} is not a longitude/latitude")
    names = CARRIER_FIELDS if entity == "carrier" else FRONT_FIELDS
    values: dict[str, Any] = {}
    for name in names:
        v = raw.get(name)
        if _blank(v):
            continue
        if name in NUMBERS:
            values[name] = _number(name, v)
        elif name in INTEGERS:
            values[name] = int(_number(name, v))
        elif name == "built_at":
            try:
                values[name] = date.fromisoformat(str(v)[:10])
            except ValueError as exc:
                raise RowError(f"built_at {v!r} is not a date (YYYY-MM-DD)") from exc
        else:
            values[name] = str(v).strip()
    state = "status" if entity == "carrier" else "state"
    if values.get(state, "in_service") not in STATES:
        raise RowError(f"{state} {values[state]!r} is not one of {', '.join(STATES)}")
    if values.get("power_supply", "none") not in POWER:
        raise RowError(f"power_supply {values['power_supply']!r} is not one of "
                       + ", ".join(POWER))
    if "direction" in values and values["direction"] >= 360:
        raise RowError(f"direction {values['direction']} must be below 360 degrees")
    if "fov" in values and not 0 < values["fov"] <= 360:
        raise RowError(f"fov {values['fov']} must be in (0, 360] degrees")
    aliases = [(scheme, str(raw[col]).strip()) for col, scheme in ALIASES.items()
               if not _blank(raw.get(col))]
    aliases = [(s, v[:-2] if v.endswith(".0") else v) for s, v in aliases]
    row = Row(n, kind, lon, lat, values, aliases)
    if entity == "carrier" and not _blank(raw.get("slots")):
        row.slots = parse_slots(raw["slots"])
    if entity == "front" and not _blank(raw.get("carrier")):
        row.carrier = str(raw["carrier"]).strip()
        row.slot = int(_number("slot", raw.get("slot"))) if not _blank(raw.get("slot")) else 1
    return row


def resolve(conn: psycopg.Connection, ref: str) -> str | None:
    """A code, or ``scheme:value`` of an alias, to the code it names."""
    if ":" in ref:
        return _alias(conn, *ref.split(":", 1))
    c = codes.check(ref)
    row = conn.execute("SELECT code FROM registry.codes WHERE code = %s", (c,)).fetchone()
    return row[0] if row else None


ALIAS = "SELECT code FROM registry.aliases WHERE scheme = %s AND value = %s"


def _alias(conn: psycopg.Connection, scheme: str, value: str) -> str | None:
    row = conn.execute(ALIAS, (scheme, value)).fetchone()
    return row[0] if row else None


# An alias names an entity of this register only: an OSM node that is both a street lamp
# and a camera is one alias, held by the lamp; the camera is then matched by position.
KNOWN = ("SELECT a.code FROM registry.aliases a JOIN registry.codes k ON k.code = a.code"
         " JOIN registry.code_rules r ON r.kind = k.kind"
         " WHERE a.scheme = %s AND a.value = %s AND r.entity = %s")


def _known(conn: psycopg.Connection, aliases: list[tuple[str, str]],
           entity: str) -> str | None:
    for scheme, value in aliases:
        row = conn.execute(KNOWN, (scheme, value, entity)).fetchone()
        if row is not None:
            return row[0]
    return None


def _near(conn: psycopg.Connection, table: str, kind: str, lon: float,
          lat: float) -> tuple[str, float] | None:
    row = conn.execute(sql.SQL(
        "SELECT code, ST_Distance(geom::geography, p::geography) FROM {},"
        " ST_SetSRID(ST_MakePoint(%s, %s), 4490) p WHERE kind = %s"
        " AND ST_DWithin(geom::geography, p::geography, %s) ORDER BY 2 LIMIT 1").format(
            sql.Identifier("registry", table)), (lon, lat, kind, DUPLICATE_M)).fetchone()
    return (row[0], float(row[1])) if row else None


def _write(conn: psycopg.Connection, entity: str, row: Row, code: str, new: bool,
           produced: datetime) -> None:
    table = sql.Identifier("registry", "carriers" if entity == "carrier" else "fronts")
    names = [sql.Identifier(n) for n in ("kind", *row.values)]
    values = [row.kind, *row.values.values()]
    if new:
        conn.execute(sql.SQL(
            "INSERT INTO {} (code, {}, geom, produced_at) VALUES (%s, {},"
            " ST_SetSRID(ST_MakePoint(%s, %s), 4490), %s)").format(
                table, sql.SQL(", ").join(names),
                sql.SQL(", ").join(sql.Placeholder() * len(names))),
            [code, *values, row.lon, row.lat, produced])
    else:
        sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(n) for n in names)
        conn.execute(sql.SQL(
            "UPDATE {} SET {}, geom = ST_SetSRID(ST_MakePoint(%s, %s), 4490),"
            " produced_at = %s, updated_at = now() WHERE code = %s").format(table, sets),
            [*values, row.lon, row.lat, produced, code])
    for scheme, value in row.aliases:
        conn.execute("INSERT INTO registry.aliases (scheme, value, code) VALUES (%s, %s, %s)"
                     " ON CONFLICT (scheme, value) DO NOTHING", (scheme, value, code))
    if entity == "carrier" and row.slots:
        taken = {r[0] for r in conn.execute(
            "SELECT slot FROM registry.deployments WHERE carrier = %s AND valid_to IS NULL",
            (code,))}
        if taken and len(row.slots) < max(taken):
            raise RowError(f"the ledger lists {len(row.slots)} slots, but slot {max(taken)} "
                           "holds a front")
        for i, (lo, hi, load) in enumerate(row.slots, start=1):
            conn.execute(
                "INSERT INTO registry.slots (carrier, slot, height_min, height_max, load_kg)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (carrier, slot) DO UPDATE SET"
                " height_min = excluded.height_min, height_max = excluded.height_max,"
                " load_kg = excluded.load_kg", (code, i, lo, hi, load))
    if entity == "front" and row.carrier:
        carrier = resolve(conn, row.carrier)
        if carrier is None:
            raise RowError(f"carrier {row.carrier!r} is not in the registry")
        current = conn.execute(
            "SELECT carrier, slot FROM registry.deployments WHERE front = %s"
            " AND valid_to IS NULL", (code,)).fetchone()
        if current != (carrier, row.slot):
            conn.execute("UPDATE registry.deployments SET valid_to = %s WHERE front = %s"
                         " AND valid_to IS NULL", (produced, code))
            try:
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO registry.deployments (front, carrier, slot, valid_from)"
                        " VALUES (%s, %s, %s, %s)", (code, carrier, row.slot, produced))
            except psycopg.errors.UniqueViolation as exc:
                raise RowError(f"slot {row.slot} of {carrier} already holds a front") from exc
            except psycopg.errors.ForeignKeyViolation as exc:
                raise RowError(f"carrier {carrier} has no slot {row.slot}") from exc
    if new:
        when = row.values.get("built_at")
        conn.execute(
            "INSERT INTO registry.events (code, event, actual_at, note) VALUES"
            " (%s, 'installation', %s, 'from the ledger')",
            (code, datetime.combine(when, datetime.min.time(), UTC) if when else produced))


MODEL_FIELDS = ("id", "maker", "model", "category", "power_w", "weight_kg", "needs_24h",
                "network")
YES, NO = {"true", "yes", "1", "t", "y"}, {"false", "no", "0", "f", "n"}


def check_model(raw: dict[str, Any]) -> list[Any]:
    """A device-model row's values in MODEL_FIELDS order, or RowError."""
    out: list[Any] = []
    for name in MODEL_FIELDS:
        v = raw.get(name)
        if name in ("id", "category") and _blank(v):
            raise RowError(f"{name} is empty")
        if name in ("power_w", "weight_kg"):
            out.append(0.0 if _blank(v) else _number(name, v))
        elif name == "needs_24h":
            text = "true" if _blank(v) else str(v).strip().lower()
            if text not in YES | NO:
                raise RowError(f"needs_24h {v!r} is not yes or no")
            out.append(text in YES)
        else:
            out.append(None if _blank(v) else str(v).strip())
    return out


def _load_models(conn: psycopg.Connection, report: LedgerReport, rows: list[dict[str, Any]],
                 first_row: int) -> LedgerReport:
    names = sql.SQL(", ").join(map(sql.Identifier, MODEL_FIELDS))
    sets = sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n))
                              for n in MODEL_FIELDS[1:])
    upsert = sql.SQL("INSERT INTO registry.device_models ({}) VALUES ({}) ON CONFLICT (id)"
                     " DO UPDATE SET {} RETURNING xmax = 0").format(
        names, sql.SQL(", ").join(sql.Placeholder() * len(MODEL_FIELDS)), sets)
    for i, raw in enumerate(rows):
        try:
            values = check_model(raw)
            new = conn.execute(upsert, values).fetchone()[0]
            report.outcomes.append(Outcome(first_row + i, "new" if new else "updated",
                                           values[0]))
        except RowError as exc:
            report.outcomes.append(Outcome(first_row + i, "rejected", None, str(exc)))
    return report


def load(conn: psycopg.Connection, entity: str, source: str, rows: list[dict[str, Any]],
         first_row: int = 2, produced: datetime | None = None,
         owner: str | None = None) -> LedgerReport:
    """Load ledger rows (field names already mapped) in the caller's transaction. An
    owner is a department of the directory (its id or name; ``owner`` for rows naming
    none); a row naming an unknown one is rejected."""
    if entity not in ("carrier", "front", "model"):
        raise ValueError(f"entity {entity!r} is not carrier, front or model")
    produced = produced or datetime.now(UTC)
    report = LedgerReport(entity, source)
    if entity == "model":
        return _load_models(conn, report, rows, first_row)
    kinds = codes.rules(conn)
    table = "carriers" if entity == "carrier" else "fronts"
    for i, raw in enumerate(rows):
        n = first_row + i
        try:
            row = check_row(n, raw, entity, kinds)
            try:
                found = department_id(conn, row.values.get("owner") or owner)
            except Invalid as exc:
                raise RowError(f"owner: {exc}") from exc
            if found is not None:
                row.values["owner"] = found
            with conn.transaction():
                code = _known(conn, row.aliases, entity)
                if code is None:
                    near = _near(conn, table, row.kind, row.lon, row.lat)
                    if near is not None:
                        report.outcomes.append(Outcome(
                            n, "duplicate", near[0], f"a {row.kind} already stands "
                            f"{near[1]:.1f} m away ({near[0]}) with no shared identifier"))
                        continue
                    code = codes.issue(conn, row.kind)[0]
                    _write(conn, entity, row, code, True, produced)
                    report.outcomes.append(Outcome(n, "new", code))
                else:
                    _write(conn, entity, row, code, False, produced)
                    report.outcomes.append(Outcome(n, "updated", code, "known alias"))
        except (RowError, codes.CodeError) as exc:
            report.outcomes.append(Outcome(n, "rejected", None, str(exc)))
    return report


def read_table(path: str, mapping: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A CSV or XLSX ledger's rows (GDAL reads both), renamed by ``mapping`` (OneMap field
    -> the ledger's column)."""
    import pyogrio

    df = pyogrio.read_dataframe(path, read_geometry=False)
    rename = {col: name for name, col in (mapping or {}).items()}
    missing = sorted(set(rename) - set(df.columns))
    if missing:
        raise RowError(f"{path}: no column {', '.join(missing)} (columns: "
                       f"{', '.join(df.columns)})")
    return df.rename(columns=rename).to_dict("records")

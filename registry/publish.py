"""Carriers and fronts as layers like any other: the registry's current state is merged
into the ``carriers`` and ``fronts`` layers by the layers' own writer, keyed by code, so
tiles, features, the catalog, history (``as-of``) and authorization serve them unchanged.

The whole register is written straight from the registry's tables into the writer's staging
table (one INSERT … SELECT) and merged as any ingest is (``layers.bulk``): lock, history,
overview, dictionary and version. One entity that changed (a lifecycle event) is published
alone, as one edit of its feature: merging a city-sized register again for it would take
minutes. Both read the same field list, so both give the same feature.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from layers import bulk, edit, store, writer
from layers.catalog import Field, get_layer
from layers.db import database_url
from layers.errors import Conflict, NotFound
from layers.meta import LayerMeta
from layers.report import IngestReport, log_ingest
from onemap.settings import Settings

# The registry's coordinates are CGCS2000 lon/lat, as every layer's are.
CRS = "EPSG:4490"


@dataclass(frozen=True)
class Published:
    """One registry table as a layer: its title, the table (aliased ``e``) and each field
    with its dictionary type and the SQL that gives it."""

    title: str
    table: str
    fields: tuple[tuple[str, str, str], ...]

    def dictionary(self) -> list[Field]:
        return [Field(name, kind, nullable=name != "code", key=name == "code")
                for name, kind, _ in self.fields]

    def values(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL(expr) for _, _, expr in self.fields)

    def source(self) -> sql.Composable:
        return sql.SQL("FROM {} e").format(sql.Identifier("registry", self.table))


LAYERS = {
    "carriers": Published("Carriers (poles and masts)", "carriers", (
        ("code", "string", "e.code"), ("kind", "string", "e.kind"),
        ("height_m", "number", "e.height_m"), ("owner", "string", "e.owner"),
        ("operator", "string", "e.operator"), ("status", "string", "e.status"),
        ("power_supply", "string", "e.power_supply"), ("power_w", "number", "e.power_w"),
        ("network", "string", "e.network"), ("ports", "integer", "e.ports"),
        ("cabinet", "string", "e.cabinet"), ("built_at", "date", "e.built_at"),
        ("slots", "integer",
         "(SELECT count(*) FROM registry.slots s WHERE s.carrier = e.code)"),
        ("slots_taken", "integer", "(SELECT count(*) FROM registry.deployments d"
                                   " WHERE d.carrier = e.code AND d.valid_to IS NULL)"))),
    "fronts": Published("Sensing fronts", "fronts", (
        ("code", "string", "e.code"), ("kind", "string", "e.kind"),
        ("model", "string", "e.model"), ("state", "string", "e.state"),
        ("owner", "string", "e.owner"), ("direction", "number", "e.direction"),
        ("fov", "number", "e.fov"), ("range_m", "number", "e.range_m"),
        ("protocol", "string", "e.protocol"),
        ("carrier", "string", "(SELECT d.carrier FROM registry.deployments d"
                              " WHERE d.front = e.code AND d.valid_to IS NULL)"))),
}


def publish(settings: Settings, meta: LayerMeta | None = None) -> dict[str, str]:
    """Merge the registry into its layers; returns each written layer's summary. A table
    with no entities yet leaves its layer as it is."""
    url = database_url(settings)
    out = {}
    for layer_id, published in LAYERS.items():
        report = _publish(url, settings, layer_id, published, meta or LayerMeta())
        if report is not None:
            out[layer_id] = report.summary()
    return out


def _publish(url: str, settings: Settings, layer_id: str, published: Published,
             meta: LayerMeta) -> IngestReport | None:
    source = f"registry.{published.table}"
    report = IngestReport(layer=layer_id, source=source)
    started = datetime.now(UTC)
    fields = published.dictionary()
    try:
        with psycopg.connect(url) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            writer.lock(conn, layer_id)
            old = get_layer(conn, layer_id)
            if old is not None and old.kind != "vector":
                raise Conflict(f"layer {layer_id!r} is a {old.kind} layer, not the "
                               f"registry's {published.table}")
            columns = store.create_staging(conn, fields)
            report.read = conn.execute(sql.SQL(
                "INSERT INTO {s} ({cols}) SELECT row_number() OVER (ORDER BY e.code), e.code,"
                " e.produced_at, e.geom, {values} {source}").format(
                    s=store.STAGING, cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                    values=published.values(), source=published.source())).rowcount
            if report.read == 0:
                return None
            staged = bulk.Staged(source=source, fields=fields, key_field="code", crs=CRS,
                                 source_crs=CRS)
            bulk.measure(conn, staged)
            counts, report.version = bulk.write(
                conn, layer_id, old, staged,
                replace(meta, title=meta.title or published.title),
                detail_zoom=settings.detail_zoom, default_level=settings.default_level,
                max_detail_features=settings.max_detail_features)
            report.inserted, report.changed = counts["inserted"], counts["changed"]
            report.unchanged, report.closed = counts["unchanged"], counts["closed"]
            conn.commit()
    except (psycopg.Error, Conflict) as exc:
        log_ingest(url, report, started, str(exc))
        raise
    log_ingest(url, report, started, None)
    return report


def publish_one(settings: Settings, code: str) -> None:
    """Bring one entity's feature up to date in its layer: a new version of that feature
    alone, with the catalog and overview updated as any edit does."""
    url = database_url(settings)
    with psycopg.connect(url) as conn:
        for layer_id, published in LAYERS.items():
            props = sql.SQL(", ").join(
                sql.SQL("{}, {}").format(sql.Literal(name), sql.SQL(expr))
                for name, _, expr in published.fields)
            row = conn.execute(sql.SQL(
                "SELECT json_build_object('type', 'Feature',"
                " 'geometry', ST_AsGeoJSON(e.geom)::json,"
                " 'properties', json_build_object({props})) {source} WHERE e.code = %s"
            ).format(props=props, source=published.source()), (code,)).fetchone()
            if row is not None:
                layer = get_layer(conn, layer_id)
                break
        else:
            raise NotFound(f"no entity with code {code!r}")
    if layer is None:  # never published: the first publication is the whole register
        publish(settings)
        return
    try:
        edit.save(url, layer, settings.detail_zoom, code, row[0], merge=True)
    except NotFound:
        edit.save(url, layer, settings.detail_zoom, None, row[0], create=True)

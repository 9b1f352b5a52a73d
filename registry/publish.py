"""Carriers and fronts as layers like any other: the registry's current state is merged
into the ``carriers`` and ``fronts`` layers by the vector ingest, keyed by code, so tiles,
features, the catalog, history (``as-of``) and authorization serve them unchanged. One
entity that changed (a lifecycle event) is published alone, as one edit of its feature:
merging a city-sized register again for it would take minutes."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import psycopg

from ingest.meta import LayerMeta
from ingest.vector import ingest_vector
from layers import edit
from layers.catalog import get_layer
from layers.db import database_url
from layers.errors import NotFound
from onemap.settings import Settings

LAYERS = {
    "carriers": (
        "SELECT json_build_object('type', 'Feature', 'geometry', ST_AsGeoJSON(c.geom)::json,"
        " 'properties', json_build_object('code', c.code, 'kind', c.kind,"
        "  'height_m', c.height_m, 'owner', c.owner, 'operator', c.operator,"
        "  'status', c.status, 'power_supply', c.power_supply, 'power_w', c.power_w,"
        "  'network', c.network, 'ports', c.ports, 'cabinet', c.cabinet,"
        "  'built_at', c.built_at, 'produced_at', c.produced_at,"
        "  'slots', (SELECT count(*) FROM registry.slots s WHERE s.carrier = c.code),"
        "  'slots_taken', (SELECT count(*) FROM registry.deployments d WHERE"
        "   d.carrier = c.code AND d.valid_to IS NULL)))"
        " FROM registry.carriers c WHERE %(code)s::text IS NULL OR c.code = %(code)s"
        " ORDER BY c.code"),
    "fronts": (
        "SELECT json_build_object('type', 'Feature', 'geometry', ST_AsGeoJSON(f.geom)::json,"
        " 'properties', json_build_object('code', f.code, 'kind', f.kind, 'model', f.model,"
        "  'state', f.state, 'owner', f.owner, 'direction', f.direction, 'fov', f.fov,"
        "  'range_m', f.range_m, 'protocol', f.protocol, 'produced_at', f.produced_at,"
        "  'carrier', (SELECT d.carrier FROM registry.deployments d WHERE d.front = f.code"
        "   AND d.valid_to IS NULL)))"
        " FROM registry.fronts f WHERE %(code)s::text IS NULL OR f.code = %(code)s"
        " ORDER BY f.code"),
}
TITLES = {"carriers": "Carriers (poles and masts)", "fronts": "Sensing fronts"}


def publish(settings: Settings, meta: LayerMeta | None = None) -> dict[str, str]:
    """Merge the registry into its layers; returns each layer's ingest summary."""
    out = {}
    url = database_url(settings)
    with psycopg.connect(url) as conn:
        found = {layer: [r[0] for r in conn.execute(query, {"code": None})]
                 for layer, query in LAYERS.items()}
    with tempfile.TemporaryDirectory(prefix="onemap-registry-") as tmp:
        for layer, features in found.items():
            if not features:
                continue
            path = Path(tmp) / f"{layer}.geojson"
            path.write_text(json.dumps({
                "type": "FeatureCollection", "features": features,
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}}}))
            m = meta or LayerMeta()
            report = ingest_vector(path, layer, key="code", settings=settings,
                                   produced_field="produced_at", progress=False,
                                   meta=replace(m, title=m.title or TITLES[layer]))
            out[layer] = report.summary()
    return out


def publish_one(settings: Settings, code: str) -> None:
    """Bring one entity's feature up to date in its layer: a new version of that feature
    alone, with the catalog and overview updated as any edit does."""
    url = database_url(settings)
    with psycopg.connect(url) as conn:
        for layer_id, query in LAYERS.items():
            row = conn.execute(query, {"code": code}).fetchone()
            if row is not None:
                layer = get_layer(conn, layer_id)
                break
        else:
            raise LookupError(f"no entity with code {code!r}")
    if layer is None:  # never published: the first publication is the whole register
        publish(settings)
        return
    feature = row[0]
    feature["properties"].pop("produced_at", None)  # the feature's own time, not a field
    try:
        edit.save(url, layer, settings.detail_zoom, code, feature, merge=True)
    except NotFound:
        edit.save(url, layer, settings.detail_zoom, None, feature, create=True)

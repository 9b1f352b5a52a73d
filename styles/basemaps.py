"""Base maps: named, versioned compositions of catalog layers with a cartographic style,
kept in the catalog (``onemap.basemaps``).

- A **vector** base map (the e-map) keeps MapLibre style layers, each drawing one catalog
  layer (its ``source-layer``); its tiles hold its layers, made like any layer's.
- A **raster** base map (the imagery map) names imagery layers, drawn at their newest time
  slice, the first on top.
- A **labels** base map (the annotation) is another vector base map's symbol layers and
  nothing else, read from that map whenever it is served: never a second copy.

A base map's layers are layers: a caller sees the base map only if it may read every one
of them, and sees each through its own limits (a value reading a field the caller may not
see falls back, ``styles.build.drawable``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from layers.catalog import LAYER_ID, Layer
from layers.errors import Conflict, Invalid, NotFound
from styles.build import CHECK_BASE, SOURCE, assets, drawable, fields_read, frame
from styles.store import TYPES
from styles.validate import problems

KINDS = ("vector", "raster", "labels")
MAX_ENTRIES = 256  # style layers of one base map
MAX_BYTES = 512 * 1024  # of one base map's style
MAX_LAYERS = 16  # catalog layers of one base map: a tile of it takes them all
BACKGROUND = {"vector": "#f2efe9", "raster": "#1d2a33"}


@dataclass(frozen=True)
class BaseMap:
    id: str
    title: str
    kind: str  # vector | raster | labels
    layers: tuple[str, ...]
    style: list[dict[str, Any]]
    labels_of: str | None
    background: str | None
    set_by: str
    version: int
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "kind": self.kind,
                "layers": list(self.layers), "version": self.version,
                **({"labels_of": self.labels_of} if self.labels_of else {}),
                "updated_at": self.updated_at.isoformat()}


_COLUMNS = ("SELECT id, title, kind, layers, style, labels_of, background, set_by, version,"
            " updated_at FROM onemap.basemaps")


def _row(r: dict[str, Any]) -> BaseMap:
    kind = "labels" if r["labels_of"] else r["kind"]
    return BaseMap(r["id"], r["title"], kind, tuple(r["layers"]), r["style"], r["labels_of"],
                   r["background"], r["set_by"], r["version"], r["updated_at"])


async def fetch_all(conn: AsyncConnection) -> list[BaseMap]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_COLUMNS + " ORDER BY id")
        return [_row(r) for r in await cur.fetchall()]


async def fetch(conn: AsyncConnection, basemap_id: str) -> BaseMap:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_COLUMNS + " WHERE id = %s", (basemap_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no base map {basemap_id!r}")
    return _row(row)


async def fetch_with_labels_source(conn: AsyncConnection, basemap_id: str
                                   ) -> tuple[BaseMap, BaseMap | None]:
    """The base map and, for a labels map, the map its labels come from: one round trip
    (a base map's tile asks for both)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_COLUMNS + " WHERE id = %s OR id = (SELECT labels_of FROM"
                          " onemap.basemaps WHERE id = %s)", (basemap_id, basemap_id))
        found = {r["id"]: _row(r) for r in await cur.fetchall()}
    bm = found.get(basemap_id)
    if bm is None:
        raise NotFound(f"no base map {basemap_id!r}")
    return bm, found.get(bm.labels_of) if bm.labels_of else None


def entries(bm: BaseMap, of: BaseMap | None = None) -> list[dict[str, Any]]:
    """The base map's style layers; a labels map's are the symbol layers of ``of``."""
    if bm.kind != "labels":
        return bm.style
    return [e for e in (of.style if of else []) if e.get("type") == "symbol"]


def label_layers(style: list[dict[str, Any]]) -> tuple[str, ...]:
    """The catalog layers a map's labels read: what a labels map made of it draws."""
    return tuple(dict.fromkeys(e["source-layer"] for e in style if e.get("type") == "symbol"))


@dataclass(frozen=True)
class Need:
    """What a tile of a base map takes of one layer: the fields its style reads (at any
    zoom), and the rows its style layers draw at the tile's zoom (CQL2-JSON; None: all)."""

    fields: frozenset[str]
    rows: dict[str, Any] | None


def needs(style: list[dict[str, Any]], z: int) -> dict[str, Need]:
    """For each layer a base map's style draws at zoom ``z`` (a layer it draws only at
    other zooms is not in the tile), what the tile takes of it. A vector tile of zoom z
    is drawn from map zoom z to z + 1, so a style layer counts from the floor of its
    minzoom up to its maxzoom."""
    fields: dict[str, set[str]] = {}
    rows: dict[str, list[dict[str, Any] | None]] = {}
    for e in style:
        layer = e.get("source-layer")
        if not isinstance(layer, str):
            continue
        used = fields.setdefault(layer, set())
        for part in (e.get("filter"), *(e.get("paint") or {}).values(),
                     *(e.get("layout") or {}).values()):
            used |= fields_read(part)
        if int(e.get("minzoom", 0)) <= z < e.get("maxzoom", 25):
            rows.setdefault(layer, []).append(
                _rows(e["filter"]) if "filter" in e else None)
    out = {}
    for layer, conditions in rows.items():
        if any(c is None for c in conditions):
            out[layer] = Need(frozenset(fields[layer]), None)
        else:
            unique = [c for i, c in enumerate(conditions) if c not in conditions[:i]]
            out[layer] = Need(frozenset(fields[layer]), unique[0] if len(unique) == 1
                              else {"op": "or", "args": unique})
    return out


def _value(v: Any) -> bool:
    return isinstance(v, str | int | float) and not isinstance(v, bool)


def _rows(f: Any) -> dict[str, Any] | None:
    """A style filter as the CQL2 condition on the rows it can draw, for the forms a base
    map's style uses (match on a field, ==, !=, has, !has, all, any); None for any other
    (every row may be drawn)."""
    if not isinstance(f, list) or not f:
        return None
    op, args = f[0], f[1:]
    prop = {"property": args[0][1]} if args and isinstance(args[0], list) and \
        len(args[0]) == 2 and args[0][0] == "get" and isinstance(args[0][1], str) else None
    if op == "match" and prop and len(args) >= 4 and len(args) % 2 == 0:
        pairs, fallback = args[1:-1], args[-1]
        if not all(isinstance(o, bool) for o in (*pairs[1::2], fallback)):
            return None
        values: dict[bool, list] = {True: [], False: []}
        for labels, out in zip(pairs[::2], pairs[1::2], strict=True):
            labels = labels if isinstance(labels, list) else [labels]
            if not all(_value(v) for v in labels):
                return None
            values[out] += labels
        if not fallback:
            return {"op": "in", "args": [prop, values[True]]} if values[True] else None
        if not values[False]:
            return None  # every row
        return {"op": "or", "args": [{"op": "not", "args": [
            {"op": "in", "args": [prop, values[False]]}]}, {"op": "isNull", "args": [prop]}]}
    if op in ("==", "!=") and prop and len(args) == 2 and _value(args[1]):
        same = {"op": "=", "args": [prop, args[1]]}
        return same if op == "==" else {"op": "or", "args": [
            {"op": "<>", "args": [prop, args[1]]}, {"op": "isNull", "args": [prop]}]}
    if op == "has" and len(args) == 1 and isinstance(args[0], str):
        return {"op": "not", "args": [{"op": "isNull", "args": [{"property": args[0]}]}]}
    if op == "!" and len(args) == 1 and isinstance(args[0], list) and args[0][:1] == ["has"]:
        inner = _rows(args[0])
        return inner["args"][0] if inner else None
    if op in ("all", "any") and args:
        parts = [_rows(a) for a in args]
        if op == "all":
            known = [p for p in parts if p is not None]  # the others only draw fewer
            return None if not known else known[0] if len(known) == 1 else {
                "op": "and", "args": known}
        if any(p is None for p in parts):
            return None
        return {"op": "or", "args": parts}
    return None


def checked(basemap_id: str, style: Any, catalog: dict[str, Layer]) -> tuple[
        tuple[str, ...], list[dict[str, Any]]]:
    """A vector base map's (layers, style layers) as they will be kept, or Invalid naming
    what is wrong: each entry a MapLibre layer drawing a vector layer of the catalog, the
    whole passing the MapLibre style specification's validator."""
    if not LAYER_ID.match(basemap_id):
        raise Invalid(f"base map id {basemap_id!r}: use a-z, 0-9 and _, starting with a letter")
    if isinstance(style, dict) and "layers" in style:
        style = style["layers"]  # a whole style document: its layers are the base map's
    if not isinstance(style, list) or not style:
        raise Invalid("a base map's style is a non-empty list of MapLibre style layers (or a "
                      "style document with them under 'layers')")
    size = len(json.dumps(style))
    if size > MAX_BYTES or len(style) > MAX_ENTRIES:
        raise Invalid(f"a base map's style takes at most {MAX_ENTRIES} style layers and "
                      f"{MAX_BYTES // 1024} KB, not {len(style)} and {size // 1024} KB")
    out, seen, layers = [], set(), []
    for i, entry in enumerate(style):
        if not isinstance(entry, dict):
            raise Invalid(f"style layer {i} is not a JSON object")
        ident, kind = entry.get("id"), entry.get("type")
        if kind == "background":
            continue  # a base map's background is its own setting
        if kind not in TYPES:
            raise Invalid(f"style layer {i} ({ident!r}) has type {kind!r}; a base map draws "
                          f"vector layers with {', '.join(TYPES)}")
        if not isinstance(ident, str) or not ident or ident in seen:
            raise Invalid(f"style layer {i} needs an id of its own, not {ident!r}")
        seen.add(ident)
        layer_id = entry.get("source-layer")
        layer = catalog.get(layer_id) if isinstance(layer_id, str) else None
        if layer is None or layer.kind != "vector":
            raise Invalid(f"style layer {ident!r} draws source-layer {layer_id!r}, which is "
                          "not a vector layer of the catalog")
        if layer_id not in layers:
            layers.append(layer_id)
        out.append({k: v for k, v in entry.items() if k != "source"})
    if len(layers) > MAX_LAYERS:
        raise Invalid(f"a base map draws at most {MAX_LAYERS} layers, not {len(layers)}")
    probe = BaseMap(basemap_id, basemap_id, "vector", tuple(layers), out, None, None, "", 0,
                    datetime.now())
    errors = problems([vector_doc(probe, out, [catalog[i] for i in layers],
                                  f"{CHECK_BASE}/tilejson.json", assets(CHECK_BASE))])[0]
    if errors:
        raise Invalid("the base map's style does not pass the MapLibre style specification: "
                      + "; ".join(errors[:10]))
    return tuple(layers), out


def checked_imagery(ids: list[str], catalog: dict[str, Layer]) -> tuple[str, ...]:
    """A raster base map's layers: imagery (raster, not elevation) layers of the catalog."""
    if not ids or len(ids) > MAX_LAYERS:
        raise Invalid(f"an imagery base map names 1 to {MAX_LAYERS} raster layers")
    for i in ids:
        layer = catalog.get(i)
        if layer is None or layer.kind != "raster":
            raise Invalid(f"{i!r} is not a raster layer of the catalog")
        if (layer.raster or {}).get("elevation"):
            raise Invalid(f"{i!r} is an elevation layer, not imagery")
    return tuple(ids)


def vector_doc(bm: BaseMap, style: list[dict[str, Any]], layers: list[Layer],
               tilejson_url: str, links: dict[str, str]) -> dict[str, Any]:
    """The MapLibre style of a vector or labels base map; ``layers`` as the caller sees
    them (their visible fields bound what the style may read)."""
    usable = {ly.id: {f.name for f in ly.fields} for ly in layers}
    drawn = []
    for entry in style:
        fields = usable.get(entry.get("source-layer"))
        if fields is not None:
            drawn += [{**e, "source": SOURCE} for e in drawable([entry], fields)]
    doc: dict[str, Any] = {
        "version": 8, "name": bm.title, **links,
        "sources": {SOURCE: {"type": "vector", "url": tilejson_url}},
        "layers": drawn, "metadata": {"onemap:basemap": bm.id, "onemap:version": bm.version,
                                      "onemap:layers": list(bm.layers)}}
    if bm.kind != "labels":  # labels lie over another base: no ground of their own
        doc["layers"] = [{"id": "background", "type": "background", "paint": {
            "background-color": bm.background or BACKGROUND["vector"]}}, *drawn]
    frame(doc, layers)
    return doc


def raster_doc(bm: BaseMap, layers: list[Layer], tilejson_urls: dict[str, str],
               links: dict[str, str]) -> dict[str, Any]:
    """The MapLibre style of an imagery base map: each layer's newest slice, the first on
    top."""
    doc: dict[str, Any] = {
        "version": 8, "name": bm.title, **links,
        "sources": {f"imagery-{ly.id}": {"type": "raster", "url": tilejson_urls[ly.id],
                                         "tileSize": 256} for ly in layers},
        "layers": [{"id": "background", "type": "background", "paint": {
            "background-color": bm.background or BACKGROUND["raster"]}},
            *({"id": f"imagery-{ly.id}", "type": "raster", "source": f"imagery-{ly.id}"}
              for ly in reversed(layers))],
        "metadata": {"onemap:basemap": bm.id, "onemap:version": bm.version,
                     "onemap:layers": list(bm.layers)}}
    frame(doc, layers)
    return doc


async def put(conn: AsyncConnection, basemap_id: str, title: str, kind: str,
              layers: tuple[str, ...], style: list[dict[str, Any]], by: str,
              labels_of: str | None = None, background: str | None = None) -> int:
    """Keeps a base map (from ``checked`` or ``checked_imagery``); returns its version."""
    if labels_of is not None:
        other = await fetch(conn, labels_of)
        layers = label_layers(other.style)
        if other.kind != "vector" or not layers:
            raise Invalid(f"base map {labels_of!r} is not a vector base map with labels: it "
                          "has none to lay over another")
    cur = await conn.execute(
        "INSERT INTO onemap.basemaps (id, title, kind, layers, style, labels_of, background,"
        " set_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET title = excluded.title, kind = excluded.kind,"
        " layers = excluded.layers, style = excluded.style, labels_of = excluded.labels_of,"
        " background = excluded.background, set_by = excluded.set_by,"
        " version = onemap.basemaps.version + 1, updated_at = now() RETURNING version",
        (basemap_id, title, "vector" if labels_of else kind, list(layers), Jsonb(style),
         labels_of, background, by))
    row = await cur.fetchone()
    # A labels map follows its map's layers: they move together.
    if labels_of is None and label_layers(style):
        await conn.execute("UPDATE onemap.basemaps SET layers = %s, version = version + 1,"
                           " updated_at = now() WHERE labels_of = %s",
                           (list(label_layers(style)), basemap_id))
    return int(row[0]) if row else 0


async def delete(conn: AsyncConnection, basemap_id: str) -> None:
    await fetch(conn, basemap_id)
    cur = await conn.execute("SELECT id FROM onemap.basemaps WHERE labels_of = %s",
                             (basemap_id,))
    users = [r[0] for r in await cur.fetchall()]
    if users:
        raise Conflict(f"base map {basemap_id!r} gives the labels of {', '.join(users)}: "
                       "delete those first")
    await conn.execute("DELETE FROM onemap.basemaps WHERE id = %s", (basemap_id,))

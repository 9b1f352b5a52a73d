"""Which polygon layers are published as 3D scenes, and how their heights are read.

A scene is a view of a layer, not a copy: its tiles are made from the layer's current rows
under the caller's limits, so an edit or ingest shows in 3D at once and the same grants
hold. A height field the caller may not read (hidden or masked) is not used for the
caller's scene: the default height stands in, or the geometry would reveal the value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from layers.catalog import Layer
from layers.restrict import Restriction


class SceneError(ValueError):
    """A scene definition that cannot be published; the message says why."""


@dataclass(frozen=True)
class Scene:
    layer_id: str
    height_field: str | None = None  # "height", or "other_tags:height" for a tag set
    levels_field: str | None = None
    storey_m: float = 3.0
    default_m: float = 6.0
    tile_zoom: int = 16

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split(spec: str) -> tuple[str, str | None]:
    name, _, tag = spec.partition(":")
    return name, tag or None


def check(scene: Scene, layer: Layer) -> None:
    if layer.kind != "vector" or "Polygon" not in (layer.geometry_type or ""):
        raise SceneError(f"layer {layer.id!r} has no polygons to extrude "
                         f"(its geometry: {layer.geometry_type or layer.kind})")
    names = {f.name for f in layer.fields}
    for spec in (scene.height_field, scene.levels_field):
        if spec is not None and _split(spec)[0] not in names:
            raise SceneError(f"layer {layer.id!r} has no field {_split(spec)[0]!r}; its "
                             f"fields: {', '.join(sorted(names))}")
    if not 0 < scene.storey_m < 20 or not 0 < scene.default_m < 1000:
        raise SceneError("storey height must be in (0, 20) m and the default in (0, 1000) m")
    if not 12 <= scene.tile_zoom <= 19:
        raise SceneError("tile zoom must be 12..19")


def publish(conn: psycopg.Connection, scene: Scene, layer: Layer) -> None:
    check(scene, layer)
    conn.execute(
        "INSERT INTO onemap.scenes3d (layer_id, height_field, levels_field, storey_m,"
        " default_m, tile_zoom) VALUES (%(layer_id)s, %(height_field)s, %(levels_field)s,"
        " %(storey_m)s, %(default_m)s, %(tile_zoom)s) ON CONFLICT (layer_id) DO UPDATE SET"
        " height_field = EXCLUDED.height_field, levels_field = EXCLUDED.levels_field,"
        " storey_m = EXCLUDED.storey_m, default_m = EXCLUDED.default_m,"
        " tile_zoom = EXCLUDED.tile_zoom, updated_at = now()", scene.as_dict())


def withdraw(conn: psycopg.Connection, layer_id: str) -> bool:
    return conn.execute("DELETE FROM onemap.scenes3d WHERE layer_id = %s",
                        (layer_id,)).rowcount > 0


_FIELDS = "layer_id, height_field, levels_field, storey_m, default_m, tile_zoom"


async def fetch(conn: Any, layer_id: str | None = None) -> list[Scene]:
    """Scenes (one, or all) from an async connection."""
    query = f"SELECT {_FIELDS} FROM onemap.scenes3d"  # noqa: S608 - constant text
    async with conn.cursor(row_factory=class_row(Scene)) as cur:
        if layer_id is None:
            await cur.execute(query + " ORDER BY layer_id")
        else:
            await cur.execute(query + " WHERE layer_id = %s", (layer_id,))
        return await cur.fetchall()


def height(scene: Scene, r: Restriction) -> tuple[sql.Composable, dict[str, object]]:
    """Metres above the ground for a row ``t``: the height field, else storeys times the
    storey height, else the default; a field the caller may not read counts as empty."""
    parts: list[sql.Composable] = []
    params: dict[str, object] = {}
    for name, spec, factor in (("h", scene.height_field, 1.0),
                               ("lv", scene.levels_field, scene.storey_m)):
        if spec is None:
            continue
        field, tag = _split(spec)
        if field in r.hidden or r.mask_of(field):
            continue
        parts.append(sql.SQL("onemap.tag_number(t.{}::text, {}::text) * {}").format(
            sql.Identifier(field), sql.Placeholder(f"{name}_tag"),
            sql.Placeholder(f"{name}_factor")))
        params[f"{name}_tag"], params[f"{name}_factor"] = tag, factor
    # Zero is no height (the default stands in); an absurd one is capped. (LEAST alone
    # would turn a missing value into the cap: it skips NULLs.)
    checked = [sql.SQL("CASE WHEN {p} > 0 THEN LEAST({p}, 1000) END").format(p=p)
               for p in parts]
    params["default_m"] = scene.default_m
    return sql.SQL("COALESCE({})").format(
        sql.SQL(", ").join([*checked, sql.Placeholder("default_m")])), params

"""The registry of tile sources: built lazily, rebuilt when a layer's schema changes.

Each request reads the requested layers' versions (one indexed lookup), so a tile's ETag
always names the data it was made from and no tile is stale after an ingest commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from layers.catalog import SELECT_LAYERS, SELECT_VERSIONS, Layer, layer_from_row
from layers.tiles import PostgisSource


@dataclass(frozen=True)
class Resolved:
    layer: Layer
    version: int
    source: PostgisSource


class SourceRegistry:
    def __init__(self, detail_zoom: int) -> None:
        self.detail_zoom = detail_zoom
        self._entries: dict[str, tuple[Layer, PostgisSource]] = {}

    async def resolve(self, conn: AsyncConnection, ids: list[str]) -> list[Resolved] | None:
        """The sources for ``ids`` in order, or None if any of them is not a vector layer."""
        cur = await conn.execute(SELECT_VERSIONS, (ids,))
        found = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
        if len(found) != len(set(ids)):
            return None
        stale = [i for i in ids
                 if i not in self._entries or self._entries[i][1].schema_version != found[i][1]]
        if stale:
            await self._load(conn, stale)
        out = []
        for i in ids:
            layer, source = self._entries[i]
            if layer.kind != "vector":
                return None
            out.append(Resolved(layer, found[i][0], source))
        return out

    async def _load(self, conn: AsyncConnection, ids: list[str]) -> None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SELECT_LAYERS + sql.SQL(" WHERE id = ANY(%s)"), (ids,))
            for row in await cur.fetchall():
                layer = layer_from_row(row)
                self._entries[layer.id] = (layer, PostgisSource(layer, self.detail_zoom))

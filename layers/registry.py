"""The registry of tile sources: built lazily, rebuilt when a layer's schema changes.

A tile statement returns its layer's version and schema version with the tile, so a hot
tile costs one round trip; a schema that changed since the source was built is noticed
there and the tile made again from a fresh source.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection

from layers.catalog import SELECT_VERSIONS, Layer, fetch_layers
from layers.tiles import PostgisSource, TileSource


@dataclass(frozen=True)
class Resolved:
    layer: Layer
    version: int
    source: TileSource
    style_stamp: str = ""  # names its style's state in the catalog; "" for the default look


class SourceRegistry:
    def __init__(self, detail_zoom: int) -> None:
        self.detail_zoom = detail_zoom
        self._sources: dict[str, TileSource] = {}

    async def sources(self, conn: AsyncConnection, ids: list[str]) -> list[TileSource] | None:
        """Sources for ``ids`` in order (loading unknown ones), or None if one is not a
        vector layer."""
        missing = [i for i in ids if i not in self._sources]
        if missing:
            await self.reload(conn, missing)
        if any(i not in self._sources for i in ids):
            return None
        return [self._sources[i] for i in ids]

    async def resolve(self, conn: AsyncConnection, ids: list[str]) -> list[Resolved] | None:
        """Sources with their current versions, read now; None if one is not a vector layer."""
        cur = await conn.execute(SELECT_VERSIONS, (ids,))
        found = {r[0]: (r[1], r[2], r[3]) for r in await cur.fetchall()}
        if len(found) != len(set(ids)):
            return None
        stale = [i for i in ids
                 if i not in self._sources or self._sources[i].schema_version != found[i][1]]
        if stale:
            await self.reload(conn, stale)
        if any(i not in self._sources for i in ids):
            return None
        return [Resolved(self._sources[i].layer, found[i][0], self._sources[i], found[i][2])
                for i in ids]

    def clear(self) -> None:
        """Forget every source: layers' entries may have changed in ways versions miss."""
        self._sources = {}

    async def reload(self, conn: AsyncConnection, ids: list[str]) -> None:
        layers = await fetch_layers(conn, ids=ids)
        for i in ids:
            self._sources.pop(i, None)
        for layer in layers:
            if layer.kind == "vector":
                self._sources[layer.id] = PostgisSource(layer, self.detail_zoom)

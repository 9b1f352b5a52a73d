"""An in-memory LRU of tiles, bounded in bytes.

Keys carry the layers' data versions, so an ingest makes old entries unreachable at once
(they age out); nothing is ever served for a version it was not made from.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class TileCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: Hashable) -> tuple[bytes, str] | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: Hashable, body: bytes, report: str) -> None:
        size = len(body) + len(report) + 200  # the entry's own bookkeeping, roughly
        if not self.enabled or size > self.max_bytes // 4:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old[0]) + len(old[1]) + 200
        self._items[key] = (body, report)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (b, r) = self._items.popitem(last=False)
            self._bytes -= len(b) + len(r) + 200

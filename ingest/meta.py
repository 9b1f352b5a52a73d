"""What a caller says about a layer at ingest, checked before anything is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.errors import IngestError
from layers.catalog import LAYER_ID, RESERVED_IDS, ROLES, SHARING_TYPES, Layer


@dataclass
class LayerMeta:
    """What the caller says about the layer; None keeps what the catalog has."""

    title: str | None = None
    role: str | None = None  # "base" or "thematic"
    description: str | None = None
    department: str | None = None
    attribution: str | None = None
    keywords: Sequence[str] | None = None
    update_cycle: str | None = None
    sharing_type: str | None = None
    level: str | None = None  # classification; a new layer gets the configured default

    def catalog_values(self, old: Layer | None, layer_id: str, default_level: str, *,
                       role: str, update_cycle: str) -> dict[str, Any]:
        """The catalog's descriptive columns: what was said, else what the layer had, else
        the defaults for a new layer of this kind."""
        return {
            "title": self.title or (old.title if old else layer_id),
            "role": self.role or (old.role if old else role),
            "description": self.description if self.description is not None else (
                old.description if old else None),
            "department": self.department or (old.department if old else None),
            "attribution": self.attribution or (old.attribution if old else None),
            "keywords": list(self.keywords) if self.keywords is not None else (
                list(old.keywords) if old else []),
            "update_cycle": self.update_cycle or (old.update_cycle if old else update_cycle),
            "sharing_type": self.sharing_type or (old.sharing_type if old else "unconditional"),
            "level": self.level or (old.level if old else default_level),
        }


def check_target(label: str, layer_id: str, meta: LayerMeta, levels: Sequence[str]) -> None:
    """Refuse a bad layer id or catalog value before an ingest costs anything."""
    if not LAYER_ID.match(layer_id):
        raise IngestError(label, f"invalid layer id {layer_id!r}: use a-z, 0-9 and _, "
                                 "starting with a letter, at most 63 characters")
    if meta.role is not None and meta.role not in ROLES:
        raise IngestError(label, f"role {meta.role!r} is not one of {', '.join(ROLES)}")
    if meta.sharing_type is not None and meta.sharing_type not in SHARING_TYPES:
        raise IngestError(label, f"sharing type {meta.sharing_type!r} is not one of "
                                 + ", ".join(SHARING_TYPES))
    if meta.level is not None and meta.level not in levels:
        raise IngestError(label, f"level {meta.level!r} is not one of "
                                 + ", ".join(levels))
    if layer_id in RESERVED_IDS:
        raise IngestError(label, f"layer id {layer_id!r} is reserved: the OGC API serves the "
                                 "searchable catalog under that name")

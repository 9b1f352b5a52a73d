"""What a caller says about a layer at ingest, checked before anything is read."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.errors import IngestError
from layers.catalog import LAYER_ID, RESERVED_IDS, ROLES, SHARING_TYPES
from layers.meta import LayerMeta


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

"""What a writer says about a layer beside its data: title, owner, classification and the
rest of the catalog's descriptive columns. None keeps what the catalog has."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from layers.catalog import Layer


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
    # The data dictionary's titles of fields (name -> title); fields not named keep theirs.
    field_titles: dict[str, str] | None = None
    # Notes on fields (name -> {"title", "unit", "description"}); what is not said is kept.
    field_notes: dict[str, dict[str, str]] | None = None

    def notes(self) -> dict[str, dict[str, str]]:
        """The titles and notes together, by field."""
        out = {name: dict(n) for name, n in (self.field_notes or {}).items()}
        for name, title in (self.field_titles or {}).items():
            out.setdefault(name, {})["title"] = title
        return out

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

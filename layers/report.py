"""What a write of a whole source did (a file ingest, the registry publishing): counts, and
every feature it repaired or rejected with the reason; and the log of every run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class Issue:
    feature: int  # 1-based position in the source
    id: str | None  # the key value (or source FID) where there is one
    action: str  # "repaired" or "rejected"
    reason: str


@dataclass
class IngestReport:
    layer: str
    source: str
    read: int = 0
    inserted: int = 0  # brand-new features
    changed: int = 0  # features that got a new version
    unchanged: int = 0
    closed: int = 0  # features that vanished from the source: closed, kept in history
    version: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def repaired(self) -> int:
        return sum(1 for i in self.issues if i.action == "repaired")

    @property
    def rejected(self) -> int:
        return sum(1 for i in self.issues if i.action == "rejected")

    def counts(self) -> dict[str, int]:
        return {
            "read": self.read, "inserted": self.inserted, "changed": self.changed,
            "unchanged": self.unchanged, "closed": self.closed,
            "repaired": self.repaired, "rejected": self.rejected,
        }

    def as_dict(self) -> dict:
        return {"layer": self.layer, "source": self.source, "version": self.version,
                **self.counts(), "issues": [asdict(i) for i in self.issues]}

    def summary(self) -> str:
        c = self.counts()
        return (f"{self.layer} v{self.version}: read {c['read']}, new {c['inserted']}, "
                f"changed {c['changed']}, unchanged {c['unchanged']}, closed {c['closed']}, "
                f"repaired {c['repaired']}, rejected {c['rejected']}")


def log_ingest(url: str, report: Any, started: datetime, error: str | None) -> None:
    """Record a run (any report with layer, source, counts() and as_dict()) in
    ``onemap.ingests``, on its own connection so a failed run is kept too."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO onemap.ingests (layer_id, source, status, started_at, counts, issues,"
            " error) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (report.layer, report.source, "failed" if error else "ok", started,
             Jsonb(report.counts()), Jsonb(report.as_dict()["issues"][:1000]), error))

"""Loaders that bring files into OneMap's layers: read, transform, check, merge with history."""

from ingest.errors import IngestError
from layers.report import IngestReport

__all__ = ["IngestError", "IngestReport"]

"""The one error an ingest raises: it names the file and says what is wrong."""


class IngestError(Exception):
    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason

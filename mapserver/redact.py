"""No credential in a log line: every record OneMap or uvicorn writes is redacted.

A OneMap key keeps its id (not a secret, and what an operator needs to trace a caller) and
loses its secret; ``key=`` in a URL and a Bearer token lose their value. Installed once per
process as a log-record factory, so it holds for every logger and handler, uvicorn's
access log included, whatever the logging configuration.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_SECRETS = re.compile(
    r"(?P<om>om_[0-9A-Za-z]+_)[A-Za-z0-9_\-]+"
    r"|(?P<param>(?<![A-Za-z0-9_])key(?:=|%3[Dd]))[^&\s\"'#]+"
    r"|(?P<bearer>Bearer\s+)[A-Za-z0-9._~+/\-]+=*")
HIDDEN = "***"


def redact(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return (m.group("om") or m.group("param") or m.group("bearer")) + HIDDEN
    return _SECRETS.sub(sub, text)


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def install() -> None:
    old = logging.getLogRecordFactory()
    if getattr(old, "onemap_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old(*args, **kwargs)
        record.msg = _clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return record

    factory.onemap_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)

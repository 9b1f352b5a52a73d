"""City codes: one entity, one code, issued here and never reused.

A code is ``region (6 digits) + class (2 letters) + serial (zero-padded) + check``, the
check character being ISO 7064 MOD 37-36 over the rest (python-stdnum), which catches every
single substitution and every transposition of adjacent characters; a mistyped code is
refused before any lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from stdnum.exceptions import ValidationError
from stdnum.iso7064 import mod_37_36

from layers.errors import Invalid

SHAPE = re.compile(r"^[0-9]{6}[A-Z]{2}[0-9]{4,12}[0-9A-Z]$")


class CodeError(Invalid):
    """A code that cannot be right: wrong shape or check character."""


@dataclass(frozen=True)
class Rule:
    kind: str
    entity: str
    cls: str
    region: str
    width: int


def make(region: str, cls: str, serial: int, width: int) -> str:
    body = f"{region}{cls}{serial:0{width}d}"
    if len(body) != 6 + 2 + width:
        raise CodeError(f"serial {serial} does not fit in {width} digits")
    return body + mod_37_36.calc_check_digit(body)


def check(code: str) -> str:
    """The code, upper-cased and without spaces or dashes, if well formed; else CodeError."""
    c = re.sub(r"[\s-]", "", code).upper()
    if not SHAPE.match(c):
        raise CodeError(f"{code!r} is not a city code (6-digit region, 2-letter class, "
                        "serial, check character)")
    try:
        mod_37_36.validate(c)
    except ValidationError as exc:
        raise CodeError(f"{code!r} has a wrong check character: mistyped?") from exc
    return c


def rules(conn: psycopg.Connection) -> dict[str, Rule]:
    rows = conn.execute("SELECT kind, entity, class, region, width FROM registry.code_rules")
    return {r[0]: Rule(*r) for r in rows}


def issue(conn: psycopg.Connection, kind: str, count: int = 1) -> list[str]:
    """``count`` new codes of ``kind``, inside the caller's transaction (the rule's row is
    locked by the update, so concurrent issuers never share a serial)."""
    row = conn.execute(
        "UPDATE registry.code_rules SET next_serial = next_serial + %s WHERE kind = %s"
        " RETURNING region, class, width, next_serial - %s", (count, kind, count)).fetchone()
    if row is None:
        raise CodeError(f"no coding rule for kind {kind!r}")
    region, cls, width, first = row
    codes = [make(region, cls, first + i, width) for i in range(count)]
    with conn.cursor().copy("COPY registry.codes (code, kind) FROM STDIN") as copy:
        for c in codes:
            copy.write_row((c, kind))
    return codes

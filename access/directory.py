"""Who exists and what they were granted, held in memory at one access version.

Every request reads the access version (one tiny row); when it moved, because a grant,
key, principal, department or a layer's classification changed, everything is read again.
So a revoked key or a changed grant holds from the next request, in every server process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from access.credentials import CredentialError, secret_matches, split_key
from access.policy import Caps, Grant, Policy, Principal


@dataclass(frozen=True)
class Key:
    id: str
    principal_id: int
    kind: str  # 'api' or 'embed'
    secret_hash: bytes
    origins: tuple[str, ...]
    layers: tuple[str, ...] | None
    rate_limit: int | None
    expires_at: datetime | None
    revoked_at: datetime | None


class Directory:
    def __init__(self, levels: tuple[str, ...], caps: Caps | None = None) -> None:
        self.levels = levels
        self.caps = caps or Caps()
        self.version = -1
        self.policy = Policy(levels, caps=self.caps)
        self._principals: dict[int, dict[str, Any]] = {}
        self._subjects: dict[str, int] = {}
        self._departments: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, Key] = {}
        self._lock = asyncio.Lock()

    async def refresh(self, conn: AsyncConnection) -> bool:
        """Re-reads everything if the access version moved; True if it did."""
        cur = await conn.execute("SELECT version FROM onemap.access_state")
        row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version == self.version:
            return False
        async with self._lock:
            if version != self.version:
                await self._load(conn)
                self.version = version
        return True

    async def _load(self, conn: AsyncConnection) -> None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM onemap.departments")
            departments = {r["id"]: r for r in await cur.fetchall()}
            await cur.execute("SELECT * FROM onemap.principals")
            principals = {r["id"]: r for r in await cur.fetchall()}
            await cur.execute("SELECT * FROM onemap.keys WHERE revoked_at IS NULL")
            keys = {r["id"]: Key(r["id"], r["principal_id"], r["kind"], bytes(r["secret_hash"]),
                                 tuple(r["origins"] or ()),
                                 tuple(r["layers"]) if r["layers"] is not None else None,
                                 r["rate_limit"], r["expires_at"], r["revoked_at"])
                    for r in await cur.fetchall()}
            await cur.execute("SELECT * FROM onemap.grants ORDER BY id")
            grants = [Grant(
                r["id"], r["principal_id"], r["department_id"], r["layer_pattern"],
                r["can_read"], r["can_publish"], r["can_admin"], r["max_level"],
                tuple(r["hidden_fields"] or ()),
                tuple(sorted((r["masked_fields"] or {}).items())),
                r["area_id"], r["area_mode"], r["filter"]) for r in await cur.fetchall()]
        self._departments, self._principals, self._keys = departments, principals, keys
        self._subjects = {r["subject"]: i for i, r in principals.items() if r["subject"]}
        self.policy = Policy(self.levels, grants, self.caps)

    def principal(self, principal_id: int, key: Key | None = None) -> Principal:
        row = self._principals.get(principal_id)
        if row is None or row["disabled"]:
            raise CredentialError("principal disabled or removed")
        chain: list[str] = []
        area = None
        dept = self._departments.get(row["department_id"])
        while dept is not None and dept["id"] not in chain:
            chain.append(dept["id"])
            if area is None:
                area = dept["area_id"]
            dept = self._departments.get(dept["parent_id"])
        own = self._departments.get(row["department_id"])
        return Principal(
            id=principal_id, name=row["name"], kind=row["kind"], departments=tuple(chain),
            max_level=own["max_level"] if own else None, area_id=area, admin=row["admin"],
            key_id=key.id if key else None,
            key_layers=key.layers if key and key.kind == "embed" else None,
            embedded=key is not None and key.kind == "embed")

    def by_key(self, raw: str) -> tuple[Principal, Key]:
        key_id, secret = split_key(raw)
        key = self._keys.get(key_id)
        if key is None or not secret_matches(secret, key.secret_hash):
            raise CredentialError("unknown or revoked key")
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise CredentialError("key expired")
        return self.principal(key.principal_id, key), key

    def by_subject(self, subject: str) -> Principal:
        principal_id = self._subjects.get(subject)
        if principal_id is None:
            raise CredentialError("no principal has this token's subject")
        return self.principal(principal_id)

"""Who exists and what they were granted, held in memory at one access version.

The access version moves whenever a grant, key, principal, department, area or a layer's
classification changes, and each move is announced to every listening server at commit
(``CHANNEL``). A ``Watch`` listens on a connection of its own; a request reads nothing when
the directory is at the newest version announced, and everything again when it is not.
So a revoked key or a changed grant holds, in every server process, from the request after
the notice arrives: the database sends it as the change commits, and a notice still on the
socket when a request starts counts as arrived. Without a listening connection (lost, or
turned off), every request reads the version row again, as before notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from access.credentials import CredentialError, secret_matches, split_key
from access.policy import Caps, Grant, Policy, Principal

log = logging.getLogger("onemap.access")

CHANNEL = "onemap_access"  # migration 0011: the new version, at each move
APPLICATION = "onemap access notices"  # the listening connection's name in pg_stat_activity


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
        self.doubted = False
        self.reads = 0  # times a request read the access version
        self.policy = Policy(levels, caps=self.caps)
        self._principals: dict[int, dict[str, Any]] = {}
        self._subjects: dict[str, int] = {}
        self._departments: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, Key] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    def health(self) -> dict[str, Any]:
        return {"version": self.version, "reads": self.reads}

    def doubt(self) -> None:
        """Read the version at the next request: this process may have just moved it."""
        self.doubted = True

    async def refresh(self, conn: AsyncConnection) -> bool:
        """Re-reads everything if the access version moved; True if it did."""
        self.doubted = False
        self.reads += 1
        version = await read_version(conn)
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
            await cur.execute("SELECT name, role, url, public_key FROM onemap.nodes")
            nodes = {r["name"]: r for r in await cur.fetchall()}
            await cur.execute("SELECT * FROM onemap.grants ORDER BY id")
            grants = [Grant(
                r["id"], r["principal_id"], r["department_id"], r["layer_pattern"],
                r["can_read"], r["can_publish"], r["can_admin"], r["max_level"],
                tuple(r["hidden_fields"] or ()),
                tuple(sorted((r["masked_fields"] or {}).items())),
                r["area_id"], r["area_mode"], r["filter"]) for r in await cur.fetchall()]
        self._departments, self._principals, self._keys = departments, principals, keys
        self.nodes = nodes  # the federated nodes this one knows, by name
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
            publisher=row.get("publisher", False), key_id=key.id if key else None,
            key_layers=key.layers if key and key.kind == "embed" else None,
            embedded=key is not None and key.kind == "embed")

    def federated(self, node: str, claims: dict[str, Any]) -> Principal:
        """Rule 13: the caller ``node`` asserts (its claims verified), as this directory
        sees it: read-only, in the node's department and the asserted one's here."""
        sub = str(claims.get("sub") or "anonymous")
        if claims.get("anon") or sub == "anonymous":
            return Principal(None, f"{node}/anonymous", "anonymous", node=node)
        asserted = [str(d) for d in claims.get("dep") or ()]
        start = next((f"{node}-{d}" for d in asserted if f"{node}-{d}" in self._departments),
                     node if node in self._departments else None)
        chain: list[str] = []
        area = None
        dept = self._departments.get(start) if start else None
        while dept is not None and dept["id"] not in chain:
            chain.append(dept["id"])
            if area is None:
                area = dept["area_id"]
            dept = self._departments.get(dept["parent_id"])
        own = self._departments.get(start) if start else None
        levels = [lv for lv in (claims.get("lvl"), own["max_level"] if own else None) if lv]
        # The lower of the two; with neither, the lowest level (what anyone sees).
        clearance = min(levels, key=self.policy.rank) if levels else self.levels[0]
        return Principal(
            id=None, name=f"{node}/{sub}", kind="user", departments=tuple(chain),
            max_level=clearance, area_id=area, embedded=bool(claims.get("emb")), node=node,
            key_layers=tuple(claims["layers"]) if claims.get("layers") is not None else None)

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


async def read_version(conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT version FROM onemap.access_state")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


class Watch:
    """The access version's notices, heard on a connection of its own (``run``).

    ``current()`` is the question each request asks: True when the directory is at the
    newest version heard and nothing waits unread on the socket, so no round trip is
    needed. The version is also read every ``recheck`` seconds on the same connection, so a
    notice lost with a connection is made up for; until the connection is back,
    ``current()`` is False and each request reads the version itself.
    """

    def __init__(self, directory: Directory, url: str, recheck: float = 2.0,
                 also: dict[str, Callable[[str], None]] | None = None) -> None:
        self.directory, self.url, self.recheck = directory, url, recheck
        self.also = also or {}  # other channels heard on the same connection, and for whom
        self.heard = -1  # the newest version announced or read here
        self._conn: AsyncConnection | None = None

    def current(self) -> bool:
        conn = self._conn
        d = self.directory
        if conn is None or conn.closed or d.doubted or d.version < self.heard or d.version < 0:
            return False
        try:
            waiting, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not waiting

    async def run(self) -> None:
        """Listen until cancelled, connecting again after a failure."""
        delay = 0.5
        while True:
            try:
                async with await AsyncConnection.connect(
                        self.url, autocommit=True, application_name=APPLICATION) as conn:
                    for channel in (CHANNEL, *self.also):
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._hear(await read_version(conn))
                    self._conn, delay = conn, 0.5
                    while True:
                        async for notice in conn.notifies(timeout=self.recheck):
                            if notice.channel != CHANNEL:
                                self.also[notice.channel](notice.payload)
                                continue
                            self._hear(int(notice.payload) if notice.payload.isdigit()
                                       else self.directory.version + 1)
                        self._hear(await read_version(conn))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: requests read for themselves
                log.warning("access notices lost (%s); retrying in %.1f s",
                            type(exc).__name__, delay)
            finally:
                self._conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def health(self) -> dict[str, Any]:
        return {"notices": self._conn is not None and not self._conn.closed,
                "heard": self.heard, **self.directory.health()}

    def _hear(self, version: int) -> None:
        self.heard = max(self.heard, version)

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

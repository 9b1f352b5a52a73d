"""Browser sessions and logins in flight, kept in the database (``onemap.sessions``,
``onemap.logins``): nothing here knows HTTP; ``mapserver/signin.py`` sets the cookies.

A session token and a login's state are random (256 bits), shown once to the browser and
kept only as SHA-256. ``SessionCache`` keeps what a token names for ``TTL`` seconds, so a
browser's tiles do not each ask the database; ending a session drops it from the cache of
the process that ended it at once, and from every other within ``TTL``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

LOGIN_MINUTES = 10  # a login in flight lapses after this
TTL = 2.0  # seconds a session's lookup is trusted without asking the database again
MAX_CACHED = 10_000


def _hash(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()


def pkce() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    principal_id: int
    csrf: str
    via: str
    expires_at: datetime


async def start_login(conn: AsyncConnection, next_url: str) -> tuple[str, str, str]:
    """A login in flight: its state, PKCE challenge and nonce (the verifier stays here)."""
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    verifier, challenge = pkce()
    await conn.execute("DELETE FROM onemap.logins WHERE created_at < now() - %s",
                       (timedelta(minutes=LOGIN_MINUTES),))
    await conn.execute("INSERT INTO onemap.logins (state_hash, verifier, nonce, next)"
                       " VALUES (%s, %s, %s, %s)", (_hash(state), verifier, nonce, next_url))
    return state, challenge, nonce


async def take_login(conn: AsyncConnection, state: str) -> tuple[str, str, str] | None:
    """The verifier, nonce and next page of a login in flight, used up; None when it is
    unknown, used or lapsed."""
    cur = await conn.execute(
        "DELETE FROM onemap.logins WHERE state_hash = %s AND created_at > now() - %s"
        " RETURNING verifier, nonce, next", (_hash(state), timedelta(minutes=LOGIN_MINUTES)))
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1], row[2])


async def open_session(conn: AsyncConnection, principal_id: int, via: str,
                       hours: float) -> tuple[str, str]:
    """A new session's token and CSRF token."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    await conn.execute("INSERT INTO onemap.sessions (token_hash, principal_id, csrf, via,"
                       " expires_at) VALUES (%s, %s, %s, %s, now() + %s)",
                       (_hash(token), principal_id, csrf, via, timedelta(hours=hours)))
    return token, csrf


async def end_session(conn: AsyncConnection, token: str) -> bool:
    cur = await conn.execute("UPDATE onemap.sessions SET ended_at = now()"
                             " WHERE token_hash = %s AND ended_at IS NULL RETURNING 1",
                             (_hash(token),))
    return await cur.fetchone() is not None


async def find_session(conn: AsyncConnection, token: str) -> Session | None:
    cur = await conn.execute("SELECT principal_id, csrf, via, expires_at FROM onemap.sessions"
                             " WHERE token_hash = %s AND ended_at IS NULL"
                             " AND expires_at > now()", (_hash(token),))
    row = await cur.fetchone()
    return None if row is None else Session(*row)


class SessionCache:
    """What each token named at most ``TTL`` seconds ago (None: no live session)."""

    def __init__(self) -> None:
        self._seen: dict[bytes, tuple[float, Session | None]] = {}

    def get(self, token: str) -> tuple[bool, Session | None]:
        hit = self._seen.get(_hash(token))
        if hit is None or time.monotonic() - hit[0] > TTL:
            return False, None
        return True, hit[1]

    def put(self, token: str, session: Session | None) -> None:
        if len(self._seen) >= MAX_CACHED:
            self._seen.clear()
        self._seen[_hash(token)] = (time.monotonic(), session)

    def drop(self, token: str) -> None:
        self._seen.pop(_hash(token), None)


def describe(session: Session) -> dict[str, Any]:
    return {"via": session.via, "expires_at": session.expires_at.isoformat()}

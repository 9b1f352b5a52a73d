"""A node's signing key, and the assertions it signs: who is asking, as one node tells
another (``OneMap-Assertion``), short-lived, Ed25519 (EdDSA JWTs)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from access.credentials import CredentialError
from access.policy import Principal

HEADER = "OneMap-Assertion"
# What the asked node tells of each layer the answer read ("id=version.limits,..."): the
# asking node keys its cache of the answer by it.
TOLD = "OneMap-Layers"
TOLD_MAX = 32  # layers named at most; an answer from more is kept for its caller only
LIFETIME = 60  # seconds an assertion is good for; each is reused for half of that
LEEWAY = 5  # seconds of clock difference between nodes


class BadAssertion(CredentialError):
    """An assertion this node does not accept: the reason, for a 401."""


@dataclass(frozen=True)
class NodeKey:
    private: Ed25519PrivateKey

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        """The key in ``path``, made there (readable by its owner only) when missing."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())
            # Written aside, then linked in: processes starting together agree on one key.
            aside = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            aside.unlink()
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return cls(key)

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, issuer: str, audience: str, claims: dict[str, Any],
             lifetime: int = LIFETIME) -> str:
        now = int(time.time())
        return jwt.encode({**claims, "iss": issuer, "aud": audience, "iat": now,
                           "exp": now + lifetime}, self.private, algorithm="EdDSA")


def issuer_of(token: str) -> str:
    """Who says it signed ``token`` (unverified: only to find the key to verify it with)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise BadAssertion(f"not an assertion: {exc}") from None
    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise BadAssertion("the assertion names no issuing node")
    return iss


def verify(token: str, public_pem: str, issuer: str, audience: str) -> dict[str, Any]:
    """The claims of an assertion ``issuer`` signed for ``audience`` (this node)."""
    try:
        key = serialization.load_pem_public_key(public_pem.encode())
        return jwt.decode(token, key, algorithms=["EdDSA"], audience=audience, issuer=issuer,
                          leeway=LEEWAY, options={"require": ["exp", "iat", "iss", "aud"]})
    except jwt.PyJWTError as exc:
        raise BadAssertion(f"the assertion of node {issuer!r} is not valid: {exc}") from None


def claims_of(p: Principal, node: str) -> dict[str, Any]:
    """Who is asking, as told to ``node``: name, departments (nearest first), clearance."""
    if p.anonymous:
        return {"sub": "anonymous"}
    claims: dict[str, Any] = {"sub": p.name, "dep": list(p.departments), "lvl": p.max_level}
    if p.embedded:
        claims["emb"] = True
    if p.key_layers is not None:
        claims["layers"] = sorted(k.split(":", 1)[1] for k in p.key_layers
                                  if k.startswith(f"{node}:"))
    return claims

"""Credentials: OneMap's own keys, and Bearer JWTs from an OpenID Connect provider.

A key reads ``om_<id>_<secret>``. The id finds its row; only a SHA-256 of the secret is
kept, compared in constant time. Secrets are 256 random bits, so a plain hash is enough: there
is nothing to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt

from layers.errors import Unauthenticated

PREFIX = "om_"


class CredentialError(Unauthenticated):
    """The credential is not valid; the message says why, without echoing it."""


def new_key() -> tuple[str, str, bytes]:
    """(key id, the whole key to show once, the hash to keep)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}{key_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(key: str) -> tuple[str, str]:
    """(id, secret) of a key in OneMap's form, or CredentialError."""
    if not key.startswith(PREFIX):
        raise CredentialError("not a OneMap key")
    key_id, sep, secret = key[len(PREFIX):].partition("_")
    if not sep or not key_id or not secret:
        raise CredentialError("malformed key")
    return key_id, secret


def secret_matches(secret: str, stored: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored)


@dataclass
class OidcVerifier:
    """Verifies Bearer JWTs: signature by the issuer's published keys, issuer, audience,
    expiry. The key set is fetched once and again when a token names an unknown key."""

    issuer: str
    audience: str | None
    jwks_url: str | None = None

    def __post_init__(self) -> None:
        self._client: jwt.PyJWKClient | None = None

    def _jwks(self) -> jwt.PyJWKClient:
        if self._client is None:
            url = self.jwks_url
            if url is None:
                discovery = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                with urllib.request.urlopen(discovery, timeout=10) as resp:  # noqa: S310
                    url = json.load(resp)["jwks_uri"]
            self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=3600, timeout=10)
        return self._client

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or CredentialError. Blocking: run it off the event loop."""
        try:
            key = self._jwks().get_signing_key_from_jwt(token)
            return jwt.decode(token, key.key, algorithms=["RS256", "RS384", "RS512", "ES256",
                                                          "ES384", "PS256"],
                              audience=self.audience, issuer=self.issuer,
                              options={"require": ["exp", "sub", "iss"],
                                       "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError as exc:
            raise CredentialError("token expired") from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError, OSError, ValueError,
                KeyError) as exc:
            raise CredentialError(f"token refused: {type(exc).__name__}") from exc

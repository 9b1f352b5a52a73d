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
import urllib.parse
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


@dataclass
class OidcClient:
    """OneMap as an OpenID Connect client: the authorization-code flow with PKCE. The
    endpoints come from the issuer's discovery document; the ID token is verified like a
    Bearer token (signature, issuer, expiry), with this client as its audience and the
    login's nonce."""

    issuer: str
    client_id: str
    client_secret: str | None = None
    jwks_url: str | None = None
    scope: str = "openid profile"

    def __post_init__(self) -> None:
        self._endpoints: dict[str, str] | None = None
        self._verifier = OidcVerifier(self.issuer, self.client_id, self.jwks_url)

    def endpoints(self) -> dict[str, str]:
        """The issuer's authorization and token endpoints. Blocking."""
        if self._endpoints is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
                    doc = json.load(resp)
                self._endpoints = {k: str(doc[k]) for k in ("authorization_endpoint",
                                                            "token_endpoint")}
            except (OSError, ValueError, KeyError) as exc:
                raise CredentialError(f"the sign-in service does not answer: "
                                      f"{type(exc).__name__}") from exc
        return self._endpoints

    def authorize_url(self, redirect_uri: str, state: str, challenge: str, nonce: str) -> str:
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
            "scope": self.scope, "state": state, "nonce": nonce, "code_challenge": challenge,
            "code_challenge_method": "S256"})
        endpoint = self.endpoints()["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def exchange(self, code: str, verifier: str, redirect_uri: str, nonce: str
                 ) -> dict[str, Any]:
        """The verified claims of the ID token the code is worth. Blocking."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "code_verifier": verifier}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        req = urllib.request.Request(  # noqa: S310 (the configured issuer's https URL)
            self.endpoints()["token_endpoint"], data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                answer = json.load(resp)
            token = str(answer["id_token"])
        except (OSError, ValueError, KeyError) as exc:
            raise CredentialError(f"the sign-in service refused the code: "
                                  f"{type(exc).__name__}") from exc
        claims = self._verifier.verify(token)
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise CredentialError("the sign-in answer is not for this login (nonce)")
        return claims

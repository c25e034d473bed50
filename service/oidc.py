"""OIDC access tokens (JWTs) checked with PyJWT against a JWKS: signature, expiry, issuer, audience.

``TOPOLOGY_OIDC_JWKS`` is a file (re-read when it changes, :mod:`service.watched`) or an ``https://``
URL (PyJWT's ``PyJWKClient``: the key set is cached for five minutes, re-fetched for an unknown
``kid`` at most every 30 s, fetched off the event loop). ``TOPOLOGY_OIDC_ISSUER`` and
``TOPOLOGY_OIDC_AUDIENCE`` must match the token's ``iss`` and ``aud``; ``exp`` is required (30 s of
clock skew allowed). Only asymmetric algorithms are accepted, so a key set can never be used as an
HMAC secret ("alg confusion") and ``none`` is refused.

Scopes come from the ``scope`` claim (space-separated, RFC 8693) or ``scp`` (a list or a string, as
Azure AD and Okta write it). With ``TOPOLOGY_OIDC_SCOPE_PREFIX`` (e.g. ``topology.``) only scopes
with that prefix count, without it: ``topology.read`` grants ``read``. Scopes that are not ours are
ignored; a token without any of ours authenticates but is refused every route (403). The identity's
name is the ``sub`` claim.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKClientError, PyJWKSet

from service.identity import SCOPES, AuthError, Identity
from service.watched import WatchedFile

__all__ = ["ALGORITHMS", "JwtVerifier"]

log = logging.getLogger("service.oidc")

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY = 30.0
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}  # algorithm prefix -> JWK kty


def _key_set(path: Path, data: bytes) -> PyJWKSet:
    try:
        return PyJWKSet.from_dict(json.loads(data))
    except (ValueError, TypeError, jwt.PyJWTError) as e:
        raise ValueError(f"{path} is not a JWK Set: {e}") from None


class JwtVerifier:
    def __init__(self, jwks: str, issuer: str, audience: str, scope_prefix: str = "") -> None:
        """Raises ValueError (naming ``TOPOLOGY_OIDC_JWKS``) if a JWKS file cannot be read."""
        self.issuer = issuer
        self.audience = audience
        self.scope_prefix = scope_prefix
        self._client: PyJWKClient | None = None
        self._file: WatchedFile[PyJWKSet | None] | None = None
        if jwks.startswith(("https://", "http://")):
            self._client = PyJWKClient(jwks, cache_jwk_set=True, lifespan=300, timeout=5)
        else:
            self._file = WatchedFile(jwks, _key_set, None, "TOPOLOGY_OIDC_JWKS")

    async def verify(self, token: str) -> Identity:
        """The identity in ``token``; raises :class:`AuthError` saying why it is not valid."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError(f"token algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        if key.key_type != _KEY_TYPES[alg[:2]]:
            raise AuthError(f"token algorithm {alg} does not fit its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=LEEWAY, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token is from another issuer") from None
        except jwt.PyJWTError as e:
            raise AuthError(f"invalid token: {e}") from None
        except (TypeError, ValueError) as e:  # a key PyJWT cannot use this way
            raise AuthError(f"invalid token: {type(e).__name__}") from None
        return Identity(str(claims["sub"]), self._scopes(claims), "jwt")

    def _scopes(self, claims: dict[str, Any]) -> frozenset[str]:
        found: list[str] = []
        for claim in ("scope", "scp"):
            value = claims.get(claim)
            if isinstance(value, str):
                found.extend(value.split())
            elif isinstance(value, list):
                found.extend(v for v in value if isinstance(v, str))
        p = self.scope_prefix
        return frozenset(s[len(p):] for s in found if s.startswith(p)) & SCOPES

    async def _key(self, kid: str | None) -> PyJWK:
        if self._client is not None:
            client = self._client
            try:
                if kid is not None:
                    return await asyncio.to_thread(client.get_signing_key, kid)
                keys = await asyncio.to_thread(client.get_signing_keys)
            except PyJWKClientError as e:
                log.warning("no signing key", extra={"kid": kid, "error": str(e)})
                raise AuthError("no signing key for this token") from None
        else:
            assert self._file is not None
            current = self._file.current
            keys = [] if current is None else [k for k in current.keys if k.public_key_use in (None, "sig")]
        matching = [k for k in keys if kid is None or k.key_id == kid]
        if len(matching) != 1:
            raise AuthError("no signing key for this token" if not matching
                            else "token names no key (kid) and the key set has several")
        return matching[0]

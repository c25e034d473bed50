"""Authentication and authorisation: which scope a request needs, who is asking, and the refusals.

=======================================================  ==========  ==================================
Route                                                    Scope       Without credentials
=======================================================  ==========  ==================================
``/healthz``, ``/readyz``, ``/graphiql/assets/*``,       (open)      answered
``GET /graphql`` without ``query`` (the GraphiQL page),
``GET /``, ``/map``, ``/widget/*`` (static pages)
``/ingest/catalog``, ``/ingest/health``,                 ``admin``   401
``/ingest/addresses``
``/v1/traces``, ``/v1/metrics``, every other             ``ingest``  401
``/ingest/*``
``/graphql`` (HTTP and WebSocket), ``/metrics``,         ``read``    401 (a WebSocket may instead send
``/export``, anything else                                           its token in ``connection_init``)
=======================================================  ==========  ==================================

Credentials, tried in this order: ``Authorization: Bearer <token>``, where the token is one of the
token file (:mod:`service.tokens`) or an OIDC JWT (:mod:`service.oidc`); else a client certificate
verified by the TLS layer against ``TOPOLOGY_TLS_CLIENT_CA`` (:mod:`service.tls`), whose subject
common name is given scopes by ``TOPOLOGY_TLS_CLIENT_SCOPES``. Authentication is on when any of the
three is configured; off, every request is the anonymous identity with every scope (the demo on
loopback; :mod:`service.security` refuses to start that way on any other interface).

Refusals: 401 with ``WWW-Authenticate: Bearer`` (RFC 6750) for missing or invalid credentials, 403
(``error="insufficient_scope"``) for valid credentials without the scope. ``/graphql`` answers them as
GraphQL errors with ``extensions.code`` ``UNAUTHENTICATED`` / ``FORBIDDEN``, the OTLP routes as a
``google.rpc.Status`` in the request's encoding, the other routes as ``{"error", "code"}`` like the
ingest routes' own errors. The reason never repeats the credential.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.identity import ADMIN, ANONYMOUS, INGEST, READ, AuthError, Identity
from service.oidc import JwtVerifier
from service.receiver import rpc_status
from service.tls import client_common_name
from service.tokens import TokenFile

__all__ = ["IDENTITY", "AuthMiddleware", "Authenticator", "required_scope", "websocket_allowed"]

log = logging.getLogger("service.auth")

IDENTITY = "topology.identity"  # the scope key where the request's Identity is kept
_PENDING = "topology.auth_pending"  # a WebSocket that will authenticate in connection_init
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
ADMIN_PATHS = frozenset({"/ingest/catalog", "/ingest/health", "/ingest/addresses"})
OTLP_PATHS = frozenset({"/v1/traces", "/v1/metrics"})
ASSETS_PREFIX = "/graphiql/assets/"
STATIC_PAGES = frozenset({"/", "/map"})  # HTML and JavaScript only: their data comes from /graphql
STATIC_PREFIX = "/widget/"
REALM = 'Bearer realm="topology"'
_RPC_UNAUTHENTICATED = 16
_RPC_PERMISSION_DENIED = 7


def required_scope(scope: Scope) -> str | None:
    """The scope the request in ``scope`` needs, or None for an open route."""
    path: str = scope["path"]
    if path in OPEN_PATHS or path.startswith(ASSETS_PREFIX):
        return None
    if scope.get("method") in ("GET", "HEAD") and (path in STATIC_PAGES or path.startswith(STATIC_PREFIX)):
        return None
    if path in ADMIN_PATHS:
        return ADMIN
    if path in OTLP_PATHS or path.startswith("/ingest/"):
        return INGEST
    if path == "/graphql" and scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
        params = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if "query" not in params:
            return None  # the GraphiQL page: static HTML, it sends its queries with the user's token
    return READ


class Authenticator:
    """Finds the :class:`Identity` behind a request's credentials."""

    def __init__(self, tokens: TokenFile | None = None, jwt: JwtVerifier | None = None,
                 certificates: Mapping[str, frozenset[str]] | None = None) -> None:
        """``certificates``: client certificate common name (or ``*`` for any) -> scopes."""
        self.tokens = tokens
        self.jwt = jwt
        self.certificates = dict(certificates or {})

    @property
    def enabled(self) -> bool:
        return self.tokens is not None or self.jwt is not None or bool(self.certificates)

    async def identify(self, headers: Mapping[str, str], scope: Scope) -> Identity | None:
        """The caller's identity; None without credentials; :class:`AuthError` for invalid ones."""
        header = headers.get("authorization")
        if header is not None:
            kind, _, credential = header.partition(" ")
            if kind.lower() != "bearer" or not credential.strip():
                raise AuthError("use the header Authorization: Bearer <token>")
            return await self.bearer(credential.strip())
        name = client_common_name(scope) if self.certificates else None
        if name is not None:
            scopes = self.certificates.get(name, self.certificates.get("*", frozenset()))
            return Identity(name, scopes, "certificate")
        return None

    async def bearer(self, token: str) -> Identity:
        if self.tokens is not None:
            found = self.tokens.lookup(token)
            if found is not None:
                return found
        if self.jwt is not None and token.count(".") == 2:
            return await self.jwt.verify(token)
        raise AuthError("unknown token")


def _challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    parts = [REALM]
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'")))
    if scope:
        parts.append(f'scope="{scope}"')
    return ", ".join(parts)


def refusal(scope: Scope, status: int, message: str, challenge: str) -> Response:
    """The answer to a request refused by :meth:`AuthMiddleware.judge`, shaped for its route."""
    headers = {"www-authenticate": challenge}
    code = "UNAUTHENTICATED" if status == 401 else "FORBIDDEN"
    path = scope["path"]
    if path == "/graphql":
        body = {"errors": [{"message": message, "extensions": {"code": code}}]}
        return JSONResponse(body, status_code=status, headers=headers)
    if path in OTLP_PATHS:
        rpc = _RPC_UNAUTHENTICATED if status == 401 else _RPC_PERMISSION_DENIED
        ctype = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            return JSONResponse({"code": rpc, "message": message}, status_code=status, headers=headers)
        return Response(rpc_status(rpc, message), status_code=status, headers=headers,
                        media_type="application/x-protobuf")
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


class AuthMiddleware:
    """Refuses requests without the scope their route needs; passes the rest with their identity."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self.auth.enabled:
            await self.app({**scope, IDENTITY: ANONYMOUS}, receive, send)
            return
        needed = required_scope(scope)
        if needed is None:
            await self.app(scope, receive, send)
            return
        identity, refused = await self.judge(scope, Headers(scope=scope), needed)
        if identity is None and refused is None:  # a WebSocket without credentials
            # browsers cannot set headers: connection_init may carry them
            await self.app({**scope, _PENDING: self.auth}, receive, send)
            return
        if refused is not None:
            status, message, challenge = refused
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
                return
            await refusal(scope, status, message, challenge)(scope, receive, send)
            return
        await self.app({**scope, IDENTITY: identity}, receive, send)

    async def judge(self, scope: Scope, headers: Mapping[str, str],
                    needed: str) -> tuple[Identity | None, tuple[int, str, str] | None]:
        """The identity of a request that needs the scope ``needed`` (authentication on), or why it is
        refused (logged): status, message, ``WWW-Authenticate`` challenge (:func:`refusal` answers it);
        neither for a WebSocket without credentials (see :func:`websocket_allowed`)."""
        refusal: tuple[int, str, str] | None = None
        identity: Identity | None = None
        try:
            identity = await self.auth.identify(headers, scope)
        except AuthError as e:
            refusal = (401, f"invalid credentials: {e.reason}", _challenge("invalid_token", e.reason))
        if identity is None and refusal is None:
            if scope["type"] == "websocket":
                return None, None
            refusal = (401, "authentication required: send Authorization: Bearer <token>", _challenge())
        if identity is not None and not identity.allows(needed):
            refusal = (403, f"{identity.name!r} lacks the scope {needed!r} this route needs",
                       _challenge("insufficient_scope", scope=needed))
        if refusal is None:
            return identity, None
        log.info("request refused", extra={"path": scope["path"], "status": refusal[0], "reason": refusal[1]})
        return None, refusal


async def websocket_allowed(scope: Scope, params: Mapping[str, Any] | None) -> bool:
    """Whether a WebSocket whose handshake had no credentials may go on, given its ``connection_init``
    payload (``{"Authorization": "Bearer <token>"}``, any case of the key)."""
    auth = scope.get(_PENDING)
    if not isinstance(auth, Authenticator):
        return True  # authenticated at the handshake, or authentication is off
    value = next((v for k, v in (params or {}).items() if k.lower() == "authorization"), None)
    if not isinstance(value, str):
        return False
    kind, _, token = value.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        return False
    try:
        identity = await auth.bearer(token.strip())
    except AuthError:
        return False
    return identity.allows(READ)

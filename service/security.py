"""The server's security, put together from its settings: the middleware every request goes through,
the hosts it answers by default, and the refusal to serve the open map to a network.

Middleware, outermost first: CORS (only with ``TOPOLOGY_ALLOWED_ORIGINS``; answers preflights), the
request guard (:mod:`service.guard`: Host, ingest Origin and Content-Type, the ingest port), then
authentication and authorisation (:mod:`service.auth`). The WebSocket origin check is Strawberry's,
from the same ``TOPOLOGY_ALLOWED_ORIGINS``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import Authenticator, AuthMiddleware
from service.config import ServiceConfig
from service.guard import RequestGuard, default_hosts
from service.oidc import JwtVerifier
from service.tokens import TokenFile
from topology.settings import ConfigError

__all__ = ["authenticator_for", "check_exposure", "cors_middleware", "is_loopback", "security_layers",
           "security_middleware", "served_config", "unset", "use"]

log = logging.getLogger("service.security")

CORS_HEADERS = ("authorization", "content-type", "content-encoding")


def authenticator_for(config: ServiceConfig) -> Authenticator:
    """Raises :class:`ConfigError` naming the variable if the token or JWKS file cannot be used."""
    try:
        tokens = TokenFile(config.tokens_file) if config.tokens_file else None
        verifier = None
        if config.oidc_jwks:
            assert config.oidc_issuer is not None and config.oidc_audience is not None  # validated
            verifier = JwtVerifier(config.oidc_jwks, config.oidc_issuer, config.oidc_audience,
                                   config.oidc_scope_prefix)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Authenticator(tokens, verifier, dict(config.tls_client_scopes))


def security_middleware(config: ServiceConfig, authenticator: Authenticator,
                        on_refused: Callable[[str, str], None] | None = None) -> list[Middleware]:
    """CORS (when origins are allowed), the request guard (``on_refused``: see :class:`RequestGuard`)
    and authentication, outermost first."""
    guard, auth = security_layers(config, authenticator, on_refused)
    return [*cors_middleware(config), Middleware(use, layer=guard), Middleware(use, layer=auth)]


def cors_middleware(config: ServiceConfig) -> list[Middleware]:
    """CORS, when ``TOPOLOGY_ALLOWED_ORIGINS`` allows origins (answers preflights)."""
    if not config.allowed_origins:
        return []
    return [Middleware(CORSMiddleware, allow_origins=list(config.allowed_origins),
                       allow_methods=["GET", "POST"], allow_headers=list(CORS_HEADERS), max_age=600)]


def security_layers(config: ServiceConfig, authenticator: Authenticator,
                    on_refused: Callable[[str, str], None] | None = None
                    ) -> tuple[RequestGuard, AuthMiddleware]:
    """The request guard and authentication as objects (their app set by :func:`use`): the app's
    middleware and :class:`service.front.IngestFront` share them."""
    guard = RequestGuard(unset, allowed_hosts=config.allowed_hosts, allowed_origins=config.allowed_origins,
                         ingest_port=config.ingest_port, on_refused=on_refused)
    return guard, AuthMiddleware(unset, authenticator=authenticator)


async def unset(scope: Scope, receive: Receive, send: Send) -> None:
    """The app of a middleware made beforehand, until :func:`use` sets it."""
    raise RuntimeError("a middleware was called before its app was set")


def use(app: ASGIApp, layer: Any) -> Any:
    """A middleware made beforehand (``layer``, whose ``app`` is set here), for Starlette's list."""
    layer.app = app
    return layer


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServiceConfig) -> None:
    """Refuse (:class:`ConfigError`, one line) to serve without authentication beyond loopback."""
    if is_loopback(config.host) or config.auth_enabled:
        return
    if config.insecure:
        log.warning("serving without authentication: anyone who reaches the port can rewrite the map",
                    extra={"host": config.host, "port": config.port})
        return
    raise ConfigError(
        f"TOPOLOGY_HOST: refusing to listen on {config.host} without authentication (anyone who reaches it "
        "could rewrite the map); set TOPOLOGY_TOKENS_FILE, TOPOLOGY_OIDC_JWKS or TOPOLOGY_TLS_CLIENT_SCOPES "
        "(README: Security), or pass --insecure if the network is trusted"
    )


def served_config(config: ServiceConfig) -> ServiceConfig:
    """``config`` as a listening server uses it: the default allowed hosts filled in. Raises
    :class:`ConfigError` (one line, before anything starts) for a server without authentication
    beyond loopback, or a token or JWKS file that cannot be used."""
    check_exposure(config)
    authenticator_for(config)
    if config.allowed_hosts:
        return config
    return replace(config, allowed_hosts=default_hosts(config.host))

"""The GraphQL server's configuration: one typed object, read from the environment once, validated.

Every field is declared with its variable, default and meaning (:func:`topology.settings.setting`);
the README's configuration table lists them and ``tests/service/test_config.py`` keeps the two equal.
``TOPOLOGY_HOST`` and ``TOPOLOGY_PORT`` are also the ``--host``/``--port`` flags of ``topology serve``
and ``topology demo``.

URL templates may contain ``{service}`` (the service name, URL-encoded), e.g.
``https://logs.example/?q={service}``; a catalog entry's ``links`` (keys ``logs``, ``traces``,
``metrics``) override them per service and may use the same placeholder. Durations are seconds
(``900``), a number with a unit (``90s``, ``15m``, ``2h``, ``7d``, also combined: ``1h30m``) or
ISO 8601 (``PT15M``, ``P1D``).
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from dataclasses import dataclass

from service.limits import parse_size
from service.tls import parse_client_scopes
from topology.settings import (
    ConfigError,
    from_env,
    optional,
    parse_duration,
    parse_port,
    setting,
)

__all__ = ["ConfigError", "ServiceConfig", "parse_duration"]

LINK_KINDS = ("logs", "traces", "metrics")
_PLACEHOLDERS = frozenset({"service"})


def check_template(name: str, template: str) -> str:
    """Validate a link template: an absolute http(s) URL with only known placeholders."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ConfigError(f"{name}: malformed template {template!r}: {e}") from e
    unknown = fields - _PLACEHOLDERS
    if unknown:
        raise ConfigError(f"{name}: unknown placeholder(s) {sorted(unknown)} in {template!r}; "
                          f"use {{service}}")
    if not template.startswith(("http://", "https://", "/")):
        raise ConfigError(f"{name}: {template!r} must be an http(s) URL or an absolute path")
    return template


def _cache_size(text: str) -> int:
    return 0 if text.strip() == "0" else parse_size(text)


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    host: str = setting("127.0.0.1", "TOPOLOGY_HOST", "interface the HTTP server listens on", flag="--host",
                        metavar="HOST")
    port: int = setting(8080, "TOPOLOGY_PORT", "port the HTTP server listens on", flag="--port",
                        parse=parse_port, metavar="PORT")
    live_window: float = setting(15 * 60.0, "TOPOLOGY_LIVE_WINDOW",
                                 "the live view: edges seen within this long before `at`",
                                 parse=parse_duration, shown="15m")
    max_window: float = setting(400 * 86400.0, "TOPOLOGY_MAX_WINDOW",
                                "the longest `window` a query may ask for", parse=parse_duration,
                                shown="400d")
    max_depth: int = setting(10, "TOPOLOGY_MAX_DEPTH", "largest `depth` of upstream/downstream/blastRadius")
    max_page: int = setting(1000, "TOPOLOGY_MAX_PAGE", "largest `first` of any connection")
    default_page: int = setting(100, "TOPOLOGY_DEFAULT_PAGE", "`first` when a query does not say")
    max_query_depth: int = setting(16, "TOPOLOGY_MAX_QUERY_DEPTH",
                                   "deepest selection nesting of a document (room for gateway `_entities`)")
    max_aliases: int = setting(50, "TOPOLOGY_MAX_ALIASES", "most aliases in one document")
    max_tokens: int = setting(5000, "TOPOLOGY_MAX_TOKENS", "most tokens in one document")
    max_subscriptions: int = setting(200, "TOPOLOGY_MAX_SUBSCRIPTIONS",
                                     "most live subscriptions (topologyChanges) the server serves at once")
    max_connection_subscriptions: int = setting(8, "TOPOLOGY_MAX_CONNECTION_SUBSCRIPTIONS",
                                                "most live subscriptions on one WebSocket")
    logs_url: str | None = setting(None, "TOPOLOGY_LOGS_URL",
                                   "URL template of a service's logs, e.g. `https://logs.example/?q={service}`")
    traces_url: str | None = setting(None, "TOPOLOGY_TRACES_URL", "URL template of a service's traces")
    metrics_url: str | None = setting(None, "TOPOLOGY_METRICS_URL", "URL template of a service's metrics")
    graphiql: bool = setting(True, "TOPOLOGY_GRAPHIQL", "serve GraphiQL on `GET /graphql`")
    allowed_origins: tuple[str, ...] = setting((), "TOPOLOGY_ALLOWED_ORIGINS",
                                               "comma-separated web origins allowed to use the server from a "
                                               "browser: WebSockets, CORS, ingest",
                                               parse=_origins)
    otlp_endpoint: str | None = setting(None, "OTEL_EXPORTER_OTLP_ENDPOINT",
                                        "export our own resolver traces over OTLP/HTTP to this base URL")
    otel_service_name: str = setting("service-topology", "OTEL_SERVICE_NAME",
                                     "`service.name` of the exported spans")
    # Security (README: Security; service/security.py puts these together).
    insecure: bool = setting(False, "TOPOLOGY_INSECURE",
                             "listen on an address other than loopback without authentication",
                             flag="--insecure", const="true")
    ingest_port: int | None = setting(None, "TOPOLOGY_INGEST_PORT",
                                      "serve the ingest routes on this port only (the others on --port only)",
                                      flag="--ingest-port", parse=optional(parse_port), metavar="PORT")
    allowed_hosts: tuple[str, ...] = setting((), "TOPOLOGY_ALLOWED_HOSTS",
                                             "comma-separated `Host` names answered (`*.example.com`, `*`)",
                                             parse=_origins,
                                             shown="loopback names and --host (any on 0.0.0.0)")
    tokens_file: str | None = setting(None, "TOPOLOGY_TOKENS_FILE",
                                      "file of hashed bearer tokens with their scopes (README: Security)")
    oidc_jwks: str | None = setting(None, "TOPOLOGY_OIDC_JWKS",
                                    "JWKS file or https URL that OIDC access tokens are verified with")
    oidc_issuer: str | None = setting(None, "TOPOLOGY_OIDC_ISSUER",
                                      "the `iss` OIDC access tokens must have")
    oidc_audience: str | None = setting(None, "TOPOLOGY_OIDC_AUDIENCE",
                                        "the `aud` OIDC access tokens must have")
    oidc_scope_prefix: str = setting("", "TOPOLOGY_OIDC_SCOPE_PREFIX",
                                     "prefix of our scopes in a token's `scope` claim, e.g. `topology.`")
    tls_cert: str | None = setting(None, "TOPOLOGY_TLS_CERT",
                                   "the server's TLS certificate chain (PEM): HTTPS only")
    tls_key: str | None = setting(None, "TOPOLOGY_TLS_KEY", "the private key of TOPOLOGY_TLS_CERT (PEM)")
    tls_client_ca: str | None = setting(None, "TOPOLOGY_TLS_CLIENT_CA",
                                        "CA bundle (PEM) that client certificates are verified with (mTLS)")
    tls_client_scopes: tuple[tuple[str, frozenset[str]], ...] = setting(
        (), "TOPOLOGY_TLS_CLIENT_SCOPES",
        "scopes of client certificates by common name: `ops:read+admin,*:read`", parse=parse_client_scopes,
        shown="none")
    # Bounded work per request (service/limits.py at the HTTP layer, service/bounds.py in GraphQL).
    max_body: int = setting(64 * 1024**2, "TOPOLOGY_MAX_BODY",
                            "largest body of an ingest request, also after decompression (413 beyond)",
                            parse=parse_size, shown="64MiB")
    max_request_body: int = setting(1024**2, "TOPOLOGY_MAX_REQUEST_BODY",
                                    "largest body of any other request, e.g. `/graphql` (413 beyond)",
                                    parse=parse_size, shown="1MiB")
    max_head: int = setting(64 * 1024, "TOPOLOGY_MAX_HEAD",
                            "longest request line plus headers (414/431 beyond)", parse=parse_size,
                            shown="64KiB")
    read_timeout: float = setting(30.0, "TOPOLOGY_READ_TIMEOUT",
                                  "time a client has to send a request's head, and then its body (408 "
                                  "after)", parse=parse_duration, shown="30s")
    keep_alive: float = setting(75.0, "TOPOLOGY_KEEP_ALIVE",
                                "how long an idle keep-alive connection stays open (longer than the idle "
                                "timeout of a load balancer in front, so that it closes first)",
                                parse=parse_duration, shown="75s")
    max_ingest_requests: int = setting(8, "TOPOLOGY_MAX_INGEST_REQUESTS",
                                       "ingest requests handled at once (429 with `Retry-After` beyond)")
    max_queries: int = setting(4, "TOPOLOGY_MAX_QUERIES",
                               "GraphQL operations executed at once over HTTP; more wait in line")
    max_queued_queries: int = setting(1000, "TOPOLOGY_MAX_QUEUED_QUERIES",
                                      "GraphQL requests waiting in that line (503 with `Retry-After` beyond)")
    max_entities: int = setting(1000, "TOPOLOGY_MAX_ENTITIES", "most representations in one `_entities` call")
    max_list: int = setting(1000, "TOPOLOGY_MAX_LIST", "longest list in a GraphQL document or its variables")
    max_string: int = setting(2048, "TOPOLOGY_MAX_STRING",
                              "longest string in a GraphQL document or its variables (names, cursors)")
    operation_timeout: float = setting(30.0, "TOPOLOGY_OPERATION_TIMEOUT",
                                       "time budget of one GraphQL operation (an error with code TIMEOUT "
                                       "after)", parse=parse_duration, shown="30s")
    response_cache: int = setting(32 * 1024**2, "TOPOLOGY_RESPONSE_CACHE",
                                  "bytes of GraphQL answers kept for repeated requests until the data or "
                                  "the second changes (0: none; service/answers.py)", parse=_cache_size,
                                  shown="32MiB")

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"TOPOLOGY_PORT: {self.port} is not a TCP port")
        if not 0 < self.live_window <= self.max_window:
            raise ConfigError("TOPOLOGY_LIVE_WINDOW: must be positive and at most TOPOLOGY_MAX_WINDOW")
        for name, v in (("TOPOLOGY_MAX_DEPTH", self.max_depth), ("TOPOLOGY_MAX_PAGE", self.max_page),
                        ("TOPOLOGY_MAX_QUERY_DEPTH", self.max_query_depth),
                        ("TOPOLOGY_MAX_ALIASES", self.max_aliases), ("TOPOLOGY_MAX_TOKENS", self.max_tokens),
                        ("TOPOLOGY_MAX_INGEST_REQUESTS", self.max_ingest_requests),
                        ("TOPOLOGY_MAX_QUERIES", self.max_queries),
                        ("TOPOLOGY_MAX_QUEUED_QUERIES", self.max_queued_queries),
                        ("TOPOLOGY_MAX_ENTITIES", self.max_entities), ("TOPOLOGY_MAX_LIST", self.max_list),
                        ("TOPOLOGY_MAX_STRING", self.max_string),
                        ("TOPOLOGY_MAX_SUBSCRIPTIONS", self.max_subscriptions),
                        ("TOPOLOGY_MAX_CONNECTION_SUBSCRIPTIONS", self.max_connection_subscriptions)):
            if v < 1:
                raise ConfigError(f"{name}: must be at least 1, got {v}")
        for name, t in (("TOPOLOGY_READ_TIMEOUT", self.read_timeout),
                        ("TOPOLOGY_KEEP_ALIVE", self.keep_alive),
                        ("TOPOLOGY_OPERATION_TIMEOUT", self.operation_timeout)):
            if t <= 0:
                raise ConfigError(f"{name}: must be positive, got {t}")
        if not 1 <= self.default_page <= self.max_page:
            raise ConfigError("TOPOLOGY_DEFAULT_PAGE: must be between 1 and TOPOLOGY_MAX_PAGE")
        for kind in LINK_KINDS:
            t = self.link_template(kind)
            if t is not None:
                check_template(f"TOPOLOGY_{kind.upper()}_URL", t)
        self._check_security()

    def _check_security(self) -> None:
        if self.ingest_port is not None and self.ingest_port == self.port:
            raise ConfigError(f"TOPOLOGY_INGEST_PORT: {self.ingest_port} is also TOPOLOGY_PORT")
        oidc = (self.oidc_jwks, self.oidc_issuer, self.oidc_audience)
        if any(oidc) and not all(oidc):
            raise ConfigError("TOPOLOGY_OIDC_JWKS: needs TOPOLOGY_OIDC_ISSUER and TOPOLOGY_OIDC_AUDIENCE too")
        if (self.tls_key or self.tls_client_ca) and not self.tls_cert:
            raise ConfigError("TOPOLOGY_TLS_CERT: needed with TOPOLOGY_TLS_KEY or TOPOLOGY_TLS_CLIENT_CA")
        if self.tls_client_scopes and not self.tls_client_ca:
            raise ConfigError("TOPOLOGY_TLS_CLIENT_SCOPES: needs TOPOLOGY_TLS_CLIENT_CA")

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need credentials (a token file, OIDC or client certificates)."""
        return bool(self.tokens_file or self.oidc_jwks or self.tls_client_scopes)

    def link_template(self, kind: str) -> str | None:
        return {"logs": self.logs_url, "traces": self.traces_url, "metrics": self.metrics_url}[kind]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """Read every variable once (``env`` defaults to ``os.environ``); raise ConfigError if bad."""
        return from_env(cls, os.environ if env is None else env)

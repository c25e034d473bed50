"""The GraphQL service's configuration: one typed object, read from the environment once, validated.

=====================================  ===================  ==========================================
Variable                               Default              Meaning
=====================================  ===================  ==========================================
``TOPOLOGY_HOST``                      ``127.0.0.1``        interface the HTTP server listens on
``TOPOLOGY_PORT``                      ``8080``             port the HTTP server listens on
``TOPOLOGY_LIVE_WINDOW``               ``15m``              the live view: edges seen within this long
                                                            before ``at`` (``900``, ``15m``, ``PT15M``)
``TOPOLOGY_MAX_WINDOW``                ``400d``             the longest ``window`` a query may ask for
``TOPOLOGY_MAX_DEPTH``                 ``10``               largest ``depth`` of upstream/downstream/
                                                            blastRadius
``TOPOLOGY_MAX_PAGE``                  ``1000``             largest ``first`` of any connection
``TOPOLOGY_DEFAULT_PAGE``              ``100``              ``first`` when a query does not say
``TOPOLOGY_MAX_QUERY_DEPTH``           ``16``               deepest selection nesting of a document
                                                            (leave room for gateway ``_entities``)
``TOPOLOGY_MAX_ALIASES``               ``50``               most aliases in one document
``TOPOLOGY_MAX_TOKENS``                ``5000``             most tokens in one document
``TOPOLOGY_LOGS_URL``                  (none)               URL template of a service's logs
``TOPOLOGY_TRACES_URL``                (none)               URL template of a service's traces
``TOPOLOGY_METRICS_URL``               (none)               URL template of a service's metrics
``TOPOLOGY_GRAPHIQL``                  ``true``             serve GraphiQL on ``GET /graphql``
``TOPOLOGY_ALLOWED_ORIGINS``           (none)               comma-separated origins allowed to open
                                                            WebSockets (cross-site hijacking guard)
``OTEL_EXPORTER_OTLP_ENDPOINT``        (none)               export resolver traces over OTLP/HTTP
                                                            to this base URL (none: no exporter)
``OTEL_SERVICE_NAME``                  ``service-topology`` ``service.name`` of the exported spans
=====================================  ===================  ==========================================

URL templates may contain ``{service}`` (the service name, URL-encoded), e.g.
``https://logs.example/?q={service}``; a catalog entry's ``links`` (keys ``logs``, ``traces``,
``metrics``) override them per service and may use the same placeholder. Durations are seconds
(``900``), a number with a unit (``90s``, ``15m``, ``2h``, ``7d``, also combined: ``1h30m``) or
ISO 8601 (``PT15M``, ``P1D``).
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ConfigError", "ServiceConfig", "parse_duration"]

LINK_KINDS = ("logs", "traces", "metrics")
_PLACEHOLDERS = frozenset({"service"})
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIMPLE = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhdw]))+$")
_SIMPLE_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_ISO = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``900``, ``15m``, ``1h30m``, ``PT15M``. Raises ValueError otherwise."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    try:
        return float(s)
    except ValueError:
        pass
    low = s.lower()
    if _SIMPLE.match(low):
        return float(sum(float(n) * _UNIT_SECONDS[u] for n, u in _SIMPLE_PART.findall(low)))
    m = _ISO.match(s.upper())
    if m and s.upper() not in ("P", "PT") and not s.upper().endswith("T"):
        parts = {k: float(v) for k, v in m.groupdict().items() if v is not None}
        return (parts.get("w", 0) * 7 * 86400 + parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600
                + parts.get("m", 0) * 60 + parts.get("s", 0))
    raise ValueError(f"not a duration: {text!r} (use seconds, e.g. 900, or 15m, 1h30m, PT15M)")


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


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    live_window: float = 15 * 60.0
    max_window: float = 400 * 86400.0
    max_depth: int = 10
    max_page: int = 1000
    default_page: int = 100
    max_query_depth: int = 16
    max_aliases: int = 50
    max_tokens: int = 5000
    logs_url: str | None = None
    traces_url: str | None = None
    metrics_url: str | None = None
    graphiql: bool = True
    allowed_origins: tuple[str, ...] = ()
    otlp_endpoint: str | None = None
    otel_service_name: str = "service-topology"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"TOPOLOGY_PORT: {self.port} is not a TCP port")
        if not 0 < self.live_window <= self.max_window:
            raise ConfigError("TOPOLOGY_LIVE_WINDOW: must be positive and at most TOPOLOGY_MAX_WINDOW")
        for name, v in (("TOPOLOGY_MAX_DEPTH", self.max_depth), ("TOPOLOGY_MAX_PAGE", self.max_page),
                        ("TOPOLOGY_MAX_QUERY_DEPTH", self.max_query_depth),
                        ("TOPOLOGY_MAX_ALIASES", self.max_aliases), ("TOPOLOGY_MAX_TOKENS", self.max_tokens)):
            if v < 1:
                raise ConfigError(f"{name}: must be at least 1, got {v}")
        if not 1 <= self.default_page <= self.max_page:
            raise ConfigError("TOPOLOGY_DEFAULT_PAGE: must be between 1 and TOPOLOGY_MAX_PAGE")
        for kind in LINK_KINDS:
            t = self.link_template(kind)
            if t is not None:
                check_template(f"TOPOLOGY_{kind.upper()}_URL", t)

    def link_template(self, kind: str) -> str | None:
        return {"logs": self.logs_url, "traces": self.traces_url, "metrics": self.metrics_url}[kind]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """Read every variable once (``env`` defaults to ``os.environ``); raise ConfigError if bad."""
        e = os.environ if env is None else env
        d = cls()

        def text(name: str, default: str | None) -> str | None:
            v = e.get(name)
            return default if v is None or not v.strip() else v.strip()

        def integer(name: str, default: int) -> int:
            v = text(name, None)
            if v is None:
                return default
            try:
                return int(v)
            except ValueError:
                raise ConfigError(f"{name}: expected an integer, got {v!r}") from None

        def duration(name: str, default: float) -> float:
            v = text(name, None)
            if v is None:
                return default
            try:
                return parse_duration(v)
            except ValueError as err:
                raise ConfigError(f"{name}: {err}") from None

        def boolean(name: str, default: bool) -> bool:
            v = text(name, None)
            if v is None:
                return default
            if v.lower() in ("1", "true", "yes", "on"):
                return True
            if v.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}: expected true or false, got {v!r}")

        origins = text("TOPOLOGY_ALLOWED_ORIGINS", None)
        return cls(
            host=text("TOPOLOGY_HOST", d.host) or d.host,
            port=integer("TOPOLOGY_PORT", d.port),
            live_window=duration("TOPOLOGY_LIVE_WINDOW", d.live_window),
            max_window=duration("TOPOLOGY_MAX_WINDOW", d.max_window),
            max_depth=integer("TOPOLOGY_MAX_DEPTH", d.max_depth),
            max_page=integer("TOPOLOGY_MAX_PAGE", d.max_page),
            default_page=integer("TOPOLOGY_DEFAULT_PAGE", d.default_page),
            max_query_depth=integer("TOPOLOGY_MAX_QUERY_DEPTH", d.max_query_depth),
            max_aliases=integer("TOPOLOGY_MAX_ALIASES", d.max_aliases),
            max_tokens=integer("TOPOLOGY_MAX_TOKENS", d.max_tokens),
            logs_url=text("TOPOLOGY_LOGS_URL", None),
            traces_url=text("TOPOLOGY_TRACES_URL", None),
            metrics_url=text("TOPOLOGY_METRICS_URL", None),
            graphiql=boolean("TOPOLOGY_GRAPHIQL", d.graphiql),
            allowed_origins=tuple(o.strip() for o in origins.split(",") if o.strip()) if origins else (),
            otlp_endpoint=text("OTEL_EXPORTER_OTLP_ENDPOINT", None),
            otel_service_name=text("OTEL_SERVICE_NAME", d.otel_service_name) or d.otel_service_name,
        )

"""Settings, declared once: every process reads its settings the same way.

A settings class is a frozen dataclass whose fields are declared with :func:`setting`: the
environment variable, the command-line flag (if any), the default and what it means. From that one
declaration:

* :func:`from_env` reads the environment once into a typed, validated object; a bad value raises
  :class:`ConfigError` naming the variable;
* :func:`add_flags` adds the flags to an ``argparse`` parser, each help text showing the variable
  and the default; :func:`resolve` then takes the flag if given, else the variable, else the default;
* :func:`rows` lists every setting for documentation (the README's table is compared with it).

This module is pure (a mapping and a parsed namespace in, an object out), so the core, the Kafka
workers and the server declare their settings alike. The shared groups live here:
:class:`LogSettings`, :class:`StoreSettings` (with the one store opener), :class:`KafkaSettings`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from topology.store.base import Stores
    from topology.timewindow import Retention

__all__ = [
    "ConfigError",
    "KafkaSettings",
    "LogSettings",
    "PairingSettings",
    "Row",
    "StoreSettings",
    "add_flags",
    "from_env",
    "parse_duration",
    "read_secret",
    "resolve",
    "rows",
    "secret_given",
    "setting",
]

T = TypeVar("T")
_KEY = "setting"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"none", "off"})
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIMPLE = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhdw]))+$")
_SIMPLE_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_ISO = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable or flag."""


# --- value parsers: text -> value, ValueError with a message for people --------------------------

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


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def parse_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_port(text: str) -> int:
    port = parse_int(text)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a TCP port")
    return port


def _above(parse: Callable[[str], Any], low: float, *, strict: bool, what: str) -> Callable[[str], Any]:
    def parse_bounded(text: str) -> Any:
        v = parse(text)
        if v < low or (strict and v == low):
            raise ValueError(f"expected {what}, got {text!r}")
        return v

    return parse_bounded


parse_positive = _above(parse_float, 0, strict=True, what="a positive number")
parse_not_negative = _above(parse_float, 0, strict=False, what="zero or more")
parse_positive_int = _above(parse_int, 0, strict=True, what="a positive integer")


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser accepting one of ``choices`` (case-insensitive), returning it as spelled there."""
    by_lower = {c.lower(): c for c in choices}

    def parse(text: str) -> str:
        try:
            return by_lower[text.lower()]
        except KeyError:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}") from None

    parse.__name__ = "choice"
    return parse


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``none``/``off`` (or an empty value) is None, anything else goes to ``parse``."""

    def parse_optional(text: str) -> Any:
        return None if not text.strip() or text.strip().lower() in _NONE else parse(text)

    return parse_optional


_BY_TYPE: dict[Any, Callable[[str], Any]] = {int: parse_int, float: parse_float, bool: parse_bool, str: str}


def parser_for(annotation: Any) -> Callable[[str], Any]:
    """The parser of a field's type: ``int``, ``float``, ``bool``, ``str`` or one of them ``| None``."""
    if annotation in _BY_TYPE:
        return _BY_TYPE[annotation]
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return optional(parser_for(inner))
    raise TypeError(f"no parser for settings of type {annotation!r}; pass parse=")


# --- declarations ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Spec:
    """How one field is configured."""

    env: str
    help: str
    flag: str | None = None  # None: environment only
    parse: Callable[[str], Any] | None = None  # None: by the field's type
    shown: str | None = None  # the default as people write it ("15m"); None: repr of the value
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    const: str | None = None  # the flag's value may be left out: then it is this text


def setting(default: Any, env: str, help: str, *, flag: str | None = None,
            parse: Callable[[str], Any] | None = None, shown: str | None = None,
            metavar: str | None = None, choices: tuple[str, ...] = (), const: str | None = None,
            secret: bool = False) -> Any:
    """A dataclass field configured by the environment variable ``env`` (and ``flag``); a ``secret``
    is left out of the object's repr (so of logs)."""
    if choices and parse is None:
        parse = one_of(*choices)
    spec = Spec(env, help, flag, parse, shown, metavar, choices, const)
    return field(default=default, metadata={_KEY: spec}, repr=not secret)


@dataclass(frozen=True, slots=True)
class Row:
    """One setting as documented: variable, flag, default, meaning."""

    env: str
    flag: str | None
    default: str
    meaning: str


def _fields(cls: type) -> Iterator[tuple[str, Spec, Callable[[str], Any], Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is None:
            continue
        parse = spec.parse or parser_for(hints[f.name])
        yield f.name, spec, parse, f.default


def _show(value: Any) -> str:
    if value is None or value == "" or value == ():
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def shown_default(spec: Spec, default: Any) -> str:
    return spec.shown if spec.shown is not None else _show(default)


def rows(cls: type) -> list[Row]:
    """The documentation rows of ``cls``'s settings, in declaration order."""
    return [Row(spec.env, _flag_text(spec), shown_default(spec, d), spec.help)
            for _, spec, _, d in _fields(cls)]


def _flag_text(spec: Spec) -> str | None:
    if spec.flag is None or spec.const is None:
        return spec.flag
    return f"{spec.flag} [{spec.metavar or 'VALUE'}]"


def _text(env: Mapping[str, str], name: str) -> str | None:
    v = env.get(name)
    return None if v is None or not v.strip() else v.strip()


def _build(cls: type[T], values: dict[str, Any], from_flag: Mapping[str, str]) -> T:
    try:
        return cls(**values)
    except ConfigError as e:  # validation names the variable; say the flag when the value came from it
        msg = str(e)
        for env_name, flag in from_flag.items():
            if msg.startswith(env_name + ":"):
                raise ConfigError(f"{flag} ({env_name}){msg[len(env_name):]}") from None
        raise


def from_env(cls: type[T], env: Mapping[str, str], **overrides: Any) -> T:
    """``cls`` from the variables in ``env`` (unset or blank: the default); ``overrides`` win."""
    values: dict[str, Any] = {}
    for name, spec, parse, _ in _fields(cls):
        if name in overrides:
            continue
        _read_variable(env, spec.env, parse, name, values)
    return _build(cls, {**values, **overrides}, {})


def _read_variable(env: Mapping[str, str], var: str, parse: Callable[[str], Any], name: str,
                   values: dict[str, Any]) -> None:
    """``values[name]`` from the variable ``var`` when it is set (not blank); a bad value names it."""
    text = _text(env, var)
    if text is not None:
        try:
            values[name] = parse(text)
        except ValueError as e:
            raise ConfigError(f"{var}: {e}") from None


def _dest(cls: type, name: str) -> str:
    return f"{cls.__name__}.{name}"


def add_flags(parser: argparse.ArgumentParser, cls: type, defaults: Mapping[str, Any] | None = None,
              aliases: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """Add ``cls``'s flags to ``parser``; the help shows the variable and the default (``defaults``:
    this command's own defaults, ``aliases``: more option strings of a field)."""
    for name, spec, parse, default in _fields(cls):
        if spec.flag is None:
            continue
        shown = _show(defaults[name]) if defaults and name in defaults else shown_default(spec, default)

        def check(text: str, parse: Callable[[str], Any] = parse) -> Any:
            try:
                return parse(text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None

        check.__name__ = spec.metavar or "value"
        optional_value: dict[str, Any] = {}
        if spec.const is not None:  # the value may be left out
            optional_value = {"nargs": "?", "const": parse(spec.const)}
        parser.add_argument(
            spec.flag, *(aliases or {}).get(name, ()), dest=_dest(cls, name), type=check,
            default=argparse.SUPPRESS,
            metavar=spec.metavar or ("{" + ",".join(spec.choices) + "}" if spec.choices else name.upper()),
            help=f"{spec.help} [env {spec.env}; default: {shown}]".replace("%", "%%"), **optional_value,
        )


def given(args: argparse.Namespace, cls: type, name: str) -> bool:
    """Whether the flag of ``cls.name`` was on the command line."""
    return hasattr(args, _dest(cls, name))


def resolve(cls: type[T], args: argparse.Namespace, env: Mapping[str, str],
            defaults: Mapping[str, Any] | None = None, **overrides: Any) -> T:
    """``cls`` from the flag if given, else the variable, else ``defaults`` (this command's), else the
    field default; ``overrides`` win over everything."""
    values: dict[str, Any] = dict(defaults or {})
    from_flag: dict[str, str] = {}
    for name, spec, parse, _ in _fields(cls):
        if hasattr(args, _dest(cls, name)):
            values[name] = getattr(args, _dest(cls, name))
            from_flag[spec.env] = spec.flag or spec.env
            continue
        _read_variable(env, spec.env, parse, name, values)
    return _build(cls, {**values, **overrides}, from_flag)


# --- secrets: in a variable or in a file it names, never both -------------------------------------

def secret_given(value: str | None, path: str | None, variable: str) -> bool:
    """Whether a password is given, in ``variable`` or in the file that ``variable + "_FILE"``
    names; both at once raise :class:`ConfigError`."""
    if value is not None and path:
        raise ConfigError(f"{variable}_FILE: give the password once, in the file or in {variable}, not both")
    return value is not None or bool(path)


def read_secret(path: str, variable: str) -> str:
    """The text of a password or token file (named by ``variable``), untrimmed: each caller says
    what it drops. A file that cannot be read or is not UTF-8 raises :class:`ConfigError`."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{variable}: cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}: {path} is not UTF-8 text") from None


# --- the settings every process shares ------------------------------------------------------------

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = setting("INFO", "LOG_LEVEL", "log level of the JSON logs on stderr", flag="--log-level",
                         choices=LOG_LEVELS)


def parse_capacity(text: str) -> int | None:
    """``auto`` (None: sized from memory, :meth:`PairingSettings.capacity`) or a positive integer."""
    return None if text.strip().lower() == "auto" else parse_positive_int(text)


def memory_bytes() -> int:
    """Physical memory of this machine (0 if the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


@dataclass(frozen=True, slots=True)
class PairingSettings:
    """Span pairing (the TRACE layer), in the server's pipeline and in a Kafka pairing worker."""

    trace_capacity: int | None = setting(None, "TOPOLOGY_TRACE_CAPACITY",
                                         "spans waiting for their peer span (per partition in a Kafka "
                                         "worker); auto: 1/32 of the memory at 1.5 KiB a span, "
                                         "10000-4000000", flag="--trace-capacity", parse=parse_capacity,
                                         metavar="N", shown="auto")

    def capacity(self, memory: int | None = None, parts: int = 1) -> int:
        """The capacity: as set, or sized from ``memory`` (default: this machine's) shared by ``parts``."""
        if self.trace_capacity is not None:
            return self.trace_capacity
        from topology.stages.trace import MIN_CAPACITY, capacity_for

        return max(MIN_CAPACITY, capacity_for(memory_bytes() if memory is None else memory) // max(1, parts))


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap: str = setting("127.0.0.1:19092", "KAFKA_BOOTSTRAP", "Kafka bootstrap servers",
                             flag="--bootstrap", metavar="HOST:PORT")
    topic_prefix: str = setting("", "TOPOLOGY_TOPIC_PREFIX",
                                "prefix of every Kafka topic and consumer group name", flag="--topic-prefix",
                                metavar="PREFIX")
    # Transport security of every Kafka client (producers, consumers, admin): ingest/security.py
    # turns these into the aiokafka options.
    security_protocol: str = setting("PLAINTEXT", "KAFKA_SECURITY_PROTOCOL",
                                     "how Kafka clients talk to the brokers: TLS (SSL), SASL, both, neither",
                                     flag="--kafka-security-protocol", choices=KAFKA_PROTOCOLS)
    sasl_mechanism: str = setting("PLAIN", "KAFKA_SASL_MECHANISM",
                                  "SASL mechanism (with SASL_SSL or SASL_PLAINTEXT)",
                                  flag="--kafka-sasl-mechanism", choices=SASL_MECHANISMS)
    username: str | None = setting(None, "KAFKA_SASL_USERNAME", "SASL user name", flag="--kafka-username",
                                   metavar="NAME")
    password: str | None = setting(None, "KAFKA_SASL_PASSWORD",
                                   "SASL password (no flag: prefer KAFKA_SASL_PASSWORD_FILE)", secret=True)
    password_file: str | None = setting(None, "KAFKA_SASL_PASSWORD_FILE",
                                        "file holding the SASL password (read at start; a trailing newline "
                                        "is dropped)", flag="--kafka-password-file", metavar="FILE")
    ca_file: str | None = setting(None, "KAFKA_SSL_CA_FILE",
                                  "PEM CA certificates of the brokers' certificates (none: the system's)",
                                  flag="--kafka-ca-file", metavar="FILE")
    cert_file: str | None = setting(None, "KAFKA_SSL_CERT_FILE",
                                    "PEM client certificate (chain) for mutual TLS with the brokers",
                                    flag="--kafka-cert-file", metavar="FILE")
    key_file: str | None = setting(None, "KAFKA_SSL_KEY_FILE",
                                   "PEM private key of KAFKA_SSL_CERT_FILE (none: in the certificate file)",
                                   flag="--kafka-key-file", metavar="FILE")
    check_hostname: bool = setting(True, "KAFKA_SSL_CHECK_HOSTNAME",
                                   "check that a broker's certificate names the host connected to",
                                   flag="--kafka-check-hostname", metavar="BOOL")

    def __post_init__(self) -> None:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if sasl and not self.username:
            raise ConfigError(f"KAFKA_SASL_USERNAME: {self.security_protocol} needs a SASL user name "
                              "(--kafka-username)")
        has_password = secret_given(self.password, self.password_file, "KAFKA_SASL_PASSWORD")
        if sasl and not has_password:
            raise ConfigError(f"KAFKA_SASL_PASSWORD_FILE: {self.security_protocol} needs a password "
                              "(KAFKA_SASL_PASSWORD_FILE, or KAFKA_SASL_PASSWORD)")
        if not sasl and (self.username or has_password):
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL: SASL credentials are set but the protocol is "
                              f"{self.security_protocol} (use SASL_SSL or SASL_PLAINTEXT)")
        files = (("KAFKA_SSL_CA_FILE", self.ca_file), ("KAFKA_SSL_CERT_FILE", self.cert_file),
                 ("KAFKA_SSL_KEY_FILE", self.key_file))
        if not tls and any(path for _, path in files):
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL: TLS files are set but the protocol is "
                              f"{self.security_protocol} (use SSL or SASL_SSL)")
        if self.key_file and not self.cert_file:
            raise ConfigError("KAFKA_SSL_KEY_FILE: a client key needs its certificate (KAFKA_SSL_CERT_FILE)")
        for var, path in (*files, ("KAFKA_SASL_PASSWORD_FILE", self.password_file)):
            if path and not os.path.isfile(path):
                raise ConfigError(f"{var}: no file {path}")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def sasl_password(self) -> str | None:
        """The SASL password: KAFKA_SASL_PASSWORD, or the password file's text (one trailing newline
        dropped); None without SASL. An unreadable file raises :class:`ConfigError`."""
        if self.password_file:
            text = read_secret(self.password_file, "KAFKA_SASL_PASSWORD_FILE")
            return text[:-1] if text.endswith("\n") else text
        return self.password

    def describe(self) -> str:
        """Where and how clients connect, no secrets: ``host:port (SASL_SSL, SCRAM-SHA-256 as alice)``."""
        if self.security_protocol == "PLAINTEXT":
            return self.bootstrap
        how = self.security_protocol
        if self.security_protocol.startswith("SASL_"):
            how += f", {self.sasl_mechanism} as {self.username}"
        return f"{self.bootstrap} ({how})"


STORES = ("embedded", "janusgraph")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    backend: str = setting("embedded", "TOPOLOGY_STORE", "layer store backend", flag="--store",
                           choices=STORES)
    data_dir: str | None = setting(None, "TOPOLOGY_DATA_DIR", "embedded store directory",
                                   flag="--data-dir", metavar="DIR",
                                   shown="var/demo (demo), var/kafka-store (ingest), none (serve)")
    trace_store_size: int = setting(10_000, "TOPOLOGY_TRACE_STORE_SIZE",
                                    "recent traces kept with their spans for Query.trace "
                                    "(the oldest go first)",
                                    parse=parse_positive_int)
    trace_retention: float = setting(3600.0, "TOPOLOGY_TRACE_RETENTION",
                                     "Query.trace forgets traces that started this long before "
                                     "the newest kept",
                                     parse=parse_duration, shown="1h")
    janusgraph_url: str = setting("ws://127.0.0.1:18182/gremlin", "JANUSGRAPH_URL",
                                  "JanusGraph Gremlin endpoint (with --store janusgraph)",
                                  flag="--janusgraph-url", metavar="URL")
    janusgraph_username: str | None = setting(None, "JANUSGRAPH_USERNAME",
                                              "JanusGraph user (SASL PLAIN; needs a password)",
                                              flag="--janusgraph-username", metavar="NAME", parse=str)
    # no flag: a password on the command line is visible to every user of the machine
    janusgraph_password: str | None = setting(None, "JANUSGRAPH_PASSWORD",
                                              "JanusGraph password (prefer JANUSGRAPH_PASSWORD_FILE)",
                                              parse=str, secret=True)
    janusgraph_password_file: str | None = setting(None, "JANUSGRAPH_PASSWORD_FILE",
                                                   "read the JanusGraph password from this file",
                                                   flag="--janusgraph-password-file", metavar="FILE")
    janusgraph_ca_file: str | None = setting(None, "JANUSGRAPH_CA_FILE",
                                             "CA bundle (PEM) the wss:// server is verified with "
                                             "(none: the system's)",
                                             flag="--janusgraph-ca-file", metavar="FILE")
    janusgraph_cert_file: str | None = setting(None, "JANUSGRAPH_CERT_FILE",
                                               "client certificate (PEM) for a wss:// server asking for one",
                                               flag="--janusgraph-cert-file", metavar="FILE")
    janusgraph_key_file: str | None = setting(None, "JANUSGRAPH_KEY_FILE",
                                              "private key (PEM) of JANUSGRAPH_CERT_FILE, if not in it",
                                              flag="--janusgraph-key-file", metavar="FILE")

    def __post_init__(self) -> None:
        if self.backend == "embedded" and not self.data_dir:
            raise ConfigError("TOPOLOGY_DATA_DIR: the embedded store needs a directory "
                              "(--data-dir DIR, or --store janusgraph)")
        if self.backend == "janusgraph":
            self._check_janusgraph()

    def _check_janusgraph(self) -> None:
        url = self.janusgraph_url
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"JANUSGRAPH_URL: expected a ws:// or wss:// URL, got {url!r}")
        has_password = secret_given(self.janusgraph_password, self.janusgraph_password_file,
                                    "JANUSGRAPH_PASSWORD")
        if has_password and not self.janusgraph_username:
            raise ConfigError("JANUSGRAPH_USERNAME: a JanusGraph password needs its user name "
                              "(--janusgraph-username)")
        if self.janusgraph_username and not has_password:
            raise ConfigError("JANUSGRAPH_PASSWORD_FILE: the JanusGraph user needs a password "
                              "(--janusgraph-password-file FILE, or JANUSGRAPH_PASSWORD)")
        if self.janusgraph_key_file and not self.janusgraph_cert_file:
            raise ConfigError("JANUSGRAPH_CERT_FILE: a client key needs its certificate "
                              "(--janusgraph-cert-file)")
        for variable, value in (("JANUSGRAPH_CA_FILE", self.janusgraph_ca_file),
                                ("JANUSGRAPH_CERT_FILE", self.janusgraph_cert_file)):
            if value and not url.startswith("wss://"):
                raise ConfigError(f"{variable}: TLS files need a wss:// JANUSGRAPH_URL, got {url!r}")

    def describe(self) -> str:
        if self.backend == "embedded":
            return f"embedded in {self.data_dir}"
        return f"janusgraph at {self.janusgraph_url}"

    async def open(self) -> Stores:
        """Open the stores (the one opener of every process). Raises :class:`StoreError` subclasses:
        ``StoreUnavailable`` when JanusGraph cannot be reached or refuses the credentials,
        ``DataDirLocked`` when another process holds the embedded directory; :class:`ConfigError` when
        a JanusGraph password or TLS file cannot be read."""
        if self.backend == "janusgraph":
            from topology.store.janusgraph import open_janusgraph_stores
            from topology.store.janusgraph_endpoint import endpoint_from
            return await open_janusgraph_stores(endpoint_from(self), self.retention(), require=True)
        from topology.store.embedded import open_stores

        assert self.data_dir is not None  # checked in __post_init__
        return open_stores(self.data_dir, self.retention())

    def retention(self) -> Retention:
        """How long the stores keep what they keep (the trace store's bounds from these settings)."""
        from topology.timewindow import Retention

        return Retention(traces=self.trace_store_size, trace_seconds=self.trace_retention)

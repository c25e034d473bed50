"""Kafka transport security: the one place that turns :class:`KafkaSettings` into aiokafka options.

Every aiokafka client of the project (producers, consumers, admin clients) is made with
``**client_options(kafka)``: the bootstrap servers and the security of :class:`KafkaSettings`
(``KAFKA_SECURITY_PROTOCOL``, SASL user and password, CA, client certificate). tests/test_layout.py
checks that no production module makes a client any other way, so a secured cluster never meets a
plaintext client by accident.

A connection is given as :class:`KafkaSettings` or, for tests and tools against a PLAINTEXT cluster,
as the bare bootstrap servers (``"127.0.0.1:19092"``): :data:`Kafka`.

When aiokafka cannot bootstrap it logs why and raises only "Unable to bootstrap from [...]";
:func:`explain` connects to each bootstrap server once more to say why for people: refused
credentials, an untrusted certificate, a plaintext client on a TLS port.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from typing import Any

from topology.settings import ConfigError, KafkaSettings

__all__ = ["Kafka", "client_options", "explain", "servers", "settings_of", "with_servers"]

#: Kafka connection settings, or the bootstrap servers of a PLAINTEXT cluster.
Kafka = KafkaSettings | str


def settings_of(kafka: Kafka) -> KafkaSettings:
    return kafka if isinstance(kafka, KafkaSettings) else KafkaSettings(bootstrap=kafka)


def servers(kafka: Kafka) -> str:
    """The bootstrap servers (for logs and messages: :meth:`KafkaSettings.describe` adds the security)."""
    return kafka if isinstance(kafka, str) else kafka.bootstrap


def with_servers(kafka: Kafka, other: Kafka) -> Kafka:
    """``other``; when it is bare servers, with the security of ``kafka``."""
    if isinstance(other, KafkaSettings) or isinstance(kafka, str):
        return other
    return replace(kafka, bootstrap=other)


def client_options(kafka: Kafka) -> dict[str, Any]:
    """Keyword arguments of every aiokafka client: ``bootstrap_servers`` and the transport security.
    Unreadable TLS files or password file raise :class:`ConfigError` naming the variable."""
    s = settings_of(kafka)
    options: dict[str, Any] = {"bootstrap_servers": s.bootstrap, "security_protocol": s.security_protocol}
    if s.tls:
        options["ssl_context"] = _ssl_context(s)
    if s.security_protocol.startswith("SASL_"):
        options.update(sasl_mechanism=s.sasl_mechanism, sasl_plain_username=s.username,
                       sasl_plain_password=s.sasl_password())
    return options


def _ssl_context(s: KafkaSettings) -> ssl.SSLContext:
    from aiokafka.helpers import create_ssl_context

    try:
        context: ssl.SSLContext = create_ssl_context(cafile=s.ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"KAFKA_SSL_CA_FILE: cannot load CA certificates from {s.ca_file}: {e}") from None
    if s.cert_file:
        try:
            context.load_cert_chain(s.cert_file, s.key_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"KAFKA_SSL_CERT_FILE: cannot load the client certificate {s.cert_file}"
                              f"{' and key ' + s.key_file if s.key_file else ''}: {e}") from None
    context.check_hostname = s.check_hostname  # the chain is verified either way
    return context


async def explain(kafka: Kafka, error: BaseException, within: float = 10.0) -> str:
    """``error`` in words for people: when aiokafka could not bootstrap, the reason each bootstrap
    server gave (found by connecting once more, for at most ``within`` seconds each)."""
    from aiokafka.errors import KafkaConnectionError

    text = f"{type(error).__name__}: {error}"
    if not isinstance(error, KafkaConnectionError) or "bootstrap" not in str(error):
        return text
    reasons = await _probe(kafka, within)
    return "; ".join(reasons) if reasons else text


async def _probe(kafka: Kafka, within: float) -> list[str]:
    """Why each bootstrap server refuses a connection (empty when one of them accepts it)."""
    from aiokafka.conn import collect_hosts, create_conn

    options = client_options(kafka)
    hosts = options.pop("bootstrap_servers")
    reasons = []
    for host, port, _ in collect_hosts(hosts, randomize=False):
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(within * 1000), **options), within)
        except Exception as e:  # any failure: its reason is what we are after
            reasons.append(f"{host}:{port} {_reason(settings_of(kafka), e)}")
            continue
        conn.close()
        return []
    return reasons


def _reason(s: KafkaSettings, e: BaseException) -> str:
    from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

    name, said = type(e).__name__, str(e)
    text = said if name in said else f"{name}: {said}" if said else name  # Kafka errors name themselves
    if isinstance(e, SaslAuthenticationFailed):
        return f"refused the credentials of {s.username!r} ({s.sasl_mechanism}): {text}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return ("has a certificate this client does not trust (KAFKA_SSL_CA_FILE, "
                f"KAFKA_SSL_CHECK_HOSTNAME): {text}")
    if isinstance(e, ssl.SSLError):
        return f"failed the TLS handshake: {text}"
    closed = isinstance(e, (KafkaConnectionError, TimeoutError))
    if closed and not s.tls:
        return (f"closed the connection of a {s.security_protocol} client: {text} (does the listener "
                "want TLS or SASL, KAFKA_SECURITY_PROTOCOL?)")
    if closed and s.security_protocol == "SSL" and not s.cert_file:
        return (f"closed the connection of a TLS client without a certificate: {text} (does the listener "
                "want a client certificate, KAFKA_SSL_CERT_FILE, or SASL, KAFKA_SECURITY_PROTOCOL?)")
    return text

"""TLS for the server (uvicorn's options), and client certificates as an identity (mTLS).

=================================  =====================================================================
``TOPOLOGY_TLS_CERT``              the server's certificate chain (PEM); serving HTTPS/WSS when set
``TOPOLOGY_TLS_KEY``               its private key (PEM; may be left out when the certificate file
                                   holds the key)
``TOPOLOGY_TLS_CLIENT_CA``         CA bundle (PEM) for client certificates: a client may present one
                                   (it is then verified, and a bad one fails the handshake); clients
                                   without one still connect and use a bearer token
``TOPOLOGY_TLS_CLIENT_SCOPES``     which scopes a verified certificate's subject common name gets:
                                   ``otel-collector:ingest,ops:read+admin``; ``*`` stands for any
                                   other name signed by the CA
=================================  =====================================================================

uvicorn does not put the peer certificate into the ASGI scope, so with a client CA the server's
HTTP and WebSocket protocol classes are subclasses (:func:`with_client_certificate`) that add the
ASGI TLS extension (``scope["extensions"]["tls"]``, with ``client_cert_chain`` and
``client_cert_name``) to every request of a connection whose peer sent a verified certificate. Only
the TLS layer writes it: no header can claim a certificate.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.types import ASGIApp, Receive, Scope, Send

from service.identity import parse_scopes

__all__ = ["client_common_name", "parse_client_scopes", "uvicorn_tls", "with_client_certificate"]


def parse_client_scopes(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """``name:scope+scope,...`` -> ((name, scopes), ...); ValueError for a malformed entry."""
    out: list[tuple[str, frozenset[str]]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        name, sep, scopes = item.rpartition(":")
        if not sep or not name.strip():
            raise ValueError(f"{item!r} is not NAME:SCOPE[+SCOPE...] (e.g. otel-collector:ingest)")
        out.append((name.strip(), parse_scopes(scopes.split("+"), f"certificate {name.strip()!r}")))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _common_name(pem: str) -> str | None:
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) else None


def client_common_name(scope: Scope) -> str | None:
    """The subject common name of the verified client certificate of this request, if any."""
    tls = (scope.get("extensions") or {}).get("tls")
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    if not chain:
        return None
    return _common_name(chain[0])


def _tls_extension(transport: Any) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
        "client_cert_name": cert.subject.rfc4514_string(),
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


class _WithTls:
    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": self.tls}}
        await self.app(scope, receive, send)


def with_client_certificate(protocol: type[Any]) -> type[Any]:
    """A subclass of a uvicorn protocol class whose requests carry the peer's verified certificate."""

    class WithClientCertificate(protocol):  # type: ignore[misc]
        app: ASGIApp

        def connection_made(self, transport: Any, *args: Any) -> None:
            super().connection_made(transport, *args)
            tls = _tls_extension(transport)
            if tls is not None:
                self.app = _WithTls(self.app, tls)

    WithClientCertificate.__name__ = WithClientCertificate.__qualname__ = f"{protocol.__name__}WithClientCert"
    return WithClientCertificate


def uvicorn_tls(cert: str | None, key: str | None, client_ca: str | None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: none without a certificate."""
    if not cert:
        return {}
    options: dict[str, Any] = {"ssl_certfile": cert, "ssl_keyfile": key}
    if client_ca:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol
        from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

        options |= {"ssl_ca_certs": client_ca, "ssl_cert_reqs": ssl.CERT_OPTIONAL,
                    "http": with_client_certificate(AutoHTTPProtocol)}
        if AutoWebSocketsProtocol is not None:
            options["ws"] = with_client_certificate(AutoWebSocketsProtocol)  # type: ignore[arg-type]
    return options

"""How to reach a JanusGraph Server: its URL, SASL credentials and TLS, in one object.

Every gremlinpython client this project opens is made by :meth:`Endpoint.client`: the stores' pools
(:mod:`topology.store.janusgraph_pool`), the readiness probe (``docker/janusgraph/probe.py``) and the
test fixtures. So a ``wss://`` URL, a CA to trust, a client certificate and a username and password
reach every connection alike, and none is opened in plain text by a path that forgot them.

gremlinpython 3.7 answers the server's authentication challenge (status 407) with SASL PLAIN when the
client has a username and password; its aiohttp transport passes ``ssl_options`` to
``ClientSession.ws_connect`` as ``ssl`` (an :class:`ssl.SSLContext`; without one a ``wss://`` URL is
verified against the system's trusted CAs).

    endpoint = endpoint_from(store_settings)     # reads the password file and the PEM files
    client = endpoint.client("g_network")        # a gremlinpython Client with both
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topology.settings import ConfigError, read_secret

if TYPE_CHECKING:
    from gremlin_python.driver.client import Client

    from topology.settings import StoreSettings

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_MAX_MESSAGE_BYTES", "Endpoint", "endpoint_from"]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# The WebSocket handshake (TCP, TLS, HTTP upgrade) must finish within this long: a server that accepts
# the connection but never answers (a wss:// client on a plain port) fails instead of holding a thread
# for aiohttp's default five minutes.
CONNECT_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A JanusGraph Gremlin endpoint. ``ssl`` is None for ``ws://`` (and for ``wss://`` trusting the
    system's CAs); ``username`` empty means no credentials."""

    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    ssl: ssl.SSLContext | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.url

    def client(self, source: str, *, pool_size: int = 1, max_workers: int | None = None,
               max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, made: list[Any] | None = None) -> Client:
        """A gremlinpython ``Client`` of traversal source ``source`` (it connects at once: call it
        off the event loop). ``made`` collects every transport the client creates."""
        from gremlin_python.driver.client import Client

        options: dict[str, Any] = {"max_content_length": max_message_bytes}
        if self.ssl is not None:
            options["ssl_options"] = self.ssl

        def transport() -> Any:
            tr = _transport_class()(**options)
            if made is not None:
                made.append(tr)
            return tr

        return Client(self.url, source, transport_factory=transport, pool_size=pool_size,
                      max_workers=max_workers or pool_size, max_content_length=max_message_bytes,
                      username=self.username, password=self.password)


def _transport_class() -> type:
    """gremlinpython's aiohttp transport with the handshake bounded by :data:`CONNECT_TIMEOUT` (its
    own ``connect`` opens a session with aiohttp's default timeout of five minutes)."""
    import asyncio

    import aiohttp
    from gremlin_python.driver.aiohttp.transport import AiohttpTransport

    class BoundedTransport(AiohttpTransport):  # type: ignore[misc]
        _socket: Any = None

        def connect(self, url: str, headers: Any = None) -> None:
            async def connect() -> None:
                # the timeout covers the handshake only: reads on the socket are not bounded by it
                self._client_session = aiohttp.ClientSession(
                    loop=self._loop, timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT))
                self._websocket = await self._client_session.ws_connect(
                    url, **self._aiohttp_kwargs, headers=headers)
                self._socket = self._websocket.get_extra_info("socket")

            self._loop.run_until_complete(connect())

        def close(self) -> None:
            # Over TLS the socket closes only after the close_notify exchange, some loop iterations
            # after the WebSocket: let it finish before gremlinpython closes the loop (else the
            # socket is left open).
            async def settle() -> None:
                for _ in range(100):
                    if self._socket is None or self._socket.fileno() == -1:
                        return
                    await asyncio.sleep(0.01)

            if self._socket is not None and not self._loop.is_closed():
                if self._websocket is not None and not self._websocket.closed:
                    self._loop.run_until_complete(self._websocket.close())
                if self._client_session is not None and not self._client_session.closed:
                    self._loop.run_until_complete(self._client_session.close())
                self._loop.run_until_complete(settle())
            super().close()

    return BoundedTransport


def _read(path: str, variable: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{variable}: cannot read {path}: {e.strerror or e}") from None


def _secret(path: str, variable: str) -> str:
    secret = read_secret(path, variable).rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{variable}: {path} is empty")
    return secret


def _tls(store: StoreSettings) -> ssl.SSLContext | None:
    if not store.janusgraph_url.startswith("wss://"):
        return None
    if not (store.janusgraph_ca_file or store.janusgraph_cert_file):
        return None  # aiohttp's default: the system's trusted CAs, host name checked
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if store.janusgraph_ca_file:
        _read(store.janusgraph_ca_file, "JANUSGRAPH_CA_FILE")  # a missing file, said plainly
        try:
            context.load_verify_locations(cafile=store.janusgraph_ca_file)
        except ssl.SSLError as e:
            raise ConfigError(f"JANUSGRAPH_CA_FILE: {store.janusgraph_ca_file} holds no PEM "
                              f"certificate ({e.reason or e})") from None
    if store.janusgraph_cert_file:
        _read(store.janusgraph_cert_file, "JANUSGRAPH_CERT_FILE")
        if store.janusgraph_key_file:
            _read(store.janusgraph_key_file, "JANUSGRAPH_KEY_FILE")
        try:
            # password "": an encrypted key fails here instead of prompting on the terminal
            context.load_cert_chain(store.janusgraph_cert_file, store.janusgraph_key_file, password="")
        except ssl.SSLError as e:
            raise ConfigError(f"JANUSGRAPH_CERT_FILE: {store.janusgraph_cert_file} and its key do not "
                              f"make a client certificate ({e.reason or e})") from None
    return context


def endpoint_from(store: StoreSettings) -> Endpoint:
    """The endpoint of ``store``'s JanusGraph settings: reads the password file and the PEM files now,
    so a bad one stops the process at start-up with a :class:`ConfigError` naming its variable."""
    password = store.janusgraph_password or ""
    if store.janusgraph_password_file:
        password = _secret(store.janusgraph_password_file, "JANUSGRAPH_PASSWORD_FILE")
    return Endpoint(store.janusgraph_url, store.janusgraph_username or "", password, _tls(store))

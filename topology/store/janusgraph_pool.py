"""An asyncio connection pool for one JanusGraph traversal source, over gremlinpython 3.7.

gremlinpython runs a private event loop per connection and blocks the calling thread while it
connects or waits for a free connection. Its ``DriverRemoteConnection`` + ``promise()`` path also
blocks one of its executor threads per in-flight request (the callback waits for the result set),
which deadlocks once in-flight requests reach half its thread pool. So this pool:

* holds ``size`` *slots*, each a gremlinpython ``Client`` with exactly one connection; a request
  takes a slot from an ``asyncio.Queue`` (waiting there, never in a thread), so the client's own
  pool never blocks;
* dispatches on a small thread pool (connecting happens there), then awaits the driver's futures
  (``Client.submit_async`` and ``ResultSet.all()``, the same futures ``traversal.promise()`` is
  built on) bridged into asyncio like ``asyncio.wrap_future`` — the event loop never blocks;
* replaces a slot's client after any connection-level failure (gremlinpython 3.7 never reconnects
  a broken connection), and maps such failures to :class:`StoreUnavailable` naming the layer.

Requests are bytecode (traversals: every name is a bound value) or constant Groovy scripts with
bindings (schema management only).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
import threading
from collections.abc import Mapping
from typing import Any

from gremlin_python.driver.client import Client
from gremlin_python.driver.protocol import ConfigurationError, GremlinServerError
from gremlin_python.process.traversal import Bytecode, Traverser

from topology.model import Layer
from topology.store.base import StoreError, StoreUnavailable
from topology.store.janusgraph_endpoint import DEFAULT_MAX_MESSAGE_BYTES, Endpoint

log = logging.getLogger(__name__)
# gremlinpython logs every server error (with the whole Java stack) at ERROR before raising it; this
# pool turns each into StoreUnavailable / GremlinQueryError for its caller, so that copy is noise.
logging.getLogger("gremlinpython").setLevel(logging.CRITICAL)

# Exceptions the server reports when its storage backend (Cassandra, BerkeleyDB) cannot answer now.
_TRANSIENT_SERVER_EXCEPTIONS = (
    "TemporaryBackendException",
    "TemporaryLockingException",
    "PermanentLockingException",
    "BackendException",
    "TimeoutException",
    "StorageException",
    "RejectedExecutionException",
)


class GremlinQueryError(StoreError):
    """The server refused or failed a request for a reason that retrying will not fix."""


class StaleVertexError(GremlinQueryError):
    """A request named a vertex id that no longer exists (deleted by retention, or a new server)."""


def _awaitable(fut: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
    """``asyncio.wrap_future`` without passing cancellation back: gremlinpython completes its
    futures from its own threads and fails loudly when one was cancelled under it."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[Any] = loop.create_future()

    def settle(f: concurrent.futures.Future[Any]) -> None:
        if out.done():
            return
        e = f.exception()
        if e is not None:
            out.set_exception(e)
        else:
            out.set_result(f.result())

    def done(f: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle, f)

    fut.add_done_callback(done)
    return out


def _expand(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for x in items:
        if isinstance(x, Traverser):
            out.extend([x.object] * int(x.bulk))
        else:
            out.append(x)
    return out


def _transient(e: GremlinServerError) -> bool:
    if e.status_code in (429, 503, 598):  # work queue full, server busy, evaluation timeout
        return True
    if not e.status_message:  # a server shutting down answers 500 without a message
        return True
    msg = str(e.status_message)
    if "Server disconnected" in msg or "has been closed" in msg or "was closed" in msg:
        return True
    attrs = e.status_attributes or {}
    names = " ".join(str(x) for x in (attrs.get("exceptions") or []))
    return any(n in names or n in msg for n in _TRANSIENT_SERVER_EXCEPTIONS)


class _Broken(Exception):
    """The connection failed (internal: becomes StoreUnavailable)."""


def _tls_failure(e: BaseException, url: str, connecting: bool) -> str | None:
    """What went wrong in a TLS handshake, for a person; None when ``e`` is no TLS failure."""
    seen: set[int] = set()
    stack: list[BaseException] = [e]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        inner = getattr(x, "certificate_error", None) or getattr(x, "os_error", None)
        if isinstance(inner, BaseException):  # aiohttp wraps the ssl module's error
            stack.append(inner)
            continue
        if isinstance(x, ssl.SSLCertVerificationError):
            why = getattr(x, "verify_message", None) or getattr(x, "reason", None) or x
            return f"its TLS certificate is not trusted ({why}): set JANUSGRAPH_CA_FILE to its CA"
        if isinstance(x, ssl.SSLError):
            reason = str(x.reason or x)
            if "ALERT" in reason and "CERTIFICATE" in reason:  # the server's verdict on our side
                return (f"it refused this client's TLS certificate, or its lack of one ({reason}): set "
                        "JANUSGRAPH_CERT_FILE and JANUSGRAPH_KEY_FILE to one its CA signed")
            hint = " (is it a plain ws:// port?)" if "WRONG_VERSION_NUMBER" in reason else ""
            return f"the TLS handshake failed{hint}: {reason}"
        stack.extend(a for a in (x.__cause__, x.__context__, *x.args) if isinstance(a, BaseException))
    if connecting and type(e).__name__ == "ServerDisconnectedError" and url.startswith("ws://"):
        return "it closed the connection during the handshake (a TLS port? then use a wss:// URL)"
    return None


class _Slot:
    __slots__ = ("client", "transports")

    def __init__(self) -> None:
        self.client: Client | None = None
        # every transport the client made: a failed connect leaves one outside the client's pool,
        # and gremlinpython would close it from ``__del__`` on whatever thread collects it (inside
        # a running event loop, that fails): this pool closes them itself, on a worker thread.
        self.transports: list[Any] = []


def _close_transports(transports: list[Any]) -> None:
    for tr in transports:
        try:
            tr.close()
        except Exception:
            log.debug("closing a gremlin transport failed", exc_info=True)


class GremlinPool:
    """``size`` connections to one traversal source (e.g. ``g_network``) of one server."""

    def __init__(
        self,
        endpoint: Endpoint | str,
        source: str,
        layer: Layer | None,
        size: int = 4,
        request_timeout: float = 120.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint(endpoint)
        self.url = self.endpoint.url
        self.source = source
        self.layer = layer
        self.size = size
        self.request_timeout = request_timeout
        self._max_message_bytes = max_message_bytes
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(_Slot())
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix=f"gremlin-{source}"
        )
        self._closed = False
        self._abandoned: list[list[Any]] = []
        self.requests = 0  # round trips sent (tests and metrics)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def what(self) -> str:
        return self.layer.value if self.layer is not None else "catalog"

    def _new_client(self, slot: _Slot) -> Client:
        slot.transports = []
        return self.endpoint.client(self.source, pool_size=1, max_workers=2,
                                    max_message_bytes=self._max_message_bytes, made=slot.transports)

    def _discard(self, slot: _Slot, close: bool) -> None:
        client, slot.client = slot.client, None
        transports, slot.transports = slot.transports, []
        if client is None:
            return
        if not close:
            # a timed-out request may still be reading on the client's loop: close it later
            self._abandoned.append(transports)
            return

        def closer() -> None:
            try:
                client.close()
            except Exception:  # closing a broken connection may fail in many ways
                log.debug("closing a broken gremlin client failed", exc_info=True)
            _close_transports(transports)

        threading.Thread(target=closer, name=f"gremlin-close-{self.source}", daemon=True).start()

    def _unavailable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(self.layer, f"JanusGraph {self.source} at {self.url} unavailable: {why}")

    async def submit(
        self,
        message: Bytecode | str,
        bindings: Mapping[str, Any] | None = None,
        time_limit: float | None = None,
    ) -> list[Any]:
        """Run one traversal (bytecode) or script; the list of results (bulks expanded).

        A connection that broke while idle (the server restarted) fails its next request at
        once; such a request is sent again once on a new connection. Every request this project
        sends is idempotent (reads, merges by identity, drops), so a repeat changes nothing."""
        if self._closed:
            raise StoreUnavailable(self.layer, f"the {self.what} JanusGraph store is closed")
        limit = self.request_timeout if time_limit is None else time_limit
        slot = await self._slots.get()
        self.requests += 1
        try:
            reused = slot.client is not None
            try:
                return await self._send(slot, message, bindings, limit)
            except _Broken as e:
                if not reused:
                    raise self._unavailable(str(e.__cause__ or e)) from e.__cause__
            try:
                return await self._send(slot, message, bindings, limit)
            except _Broken as e:
                raise self._unavailable(str(e.__cause__ or e)) from e.__cause__
        finally:
            if self.closed and slot.client is not None:  # closed while this request ran
                self._discard(slot, close=True)
            self._slots.put_nowait(slot)

    async def _send(
        self, slot: _Slot, message: Bytecode | str, bindings: Mapping[str, Any] | None, limit: float
    ) -> list[Any]:
        loop = asyncio.get_running_loop()
        connecting = slot.client is None
        try:
            if connecting:
                slot.client = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self._new_client, slot), limit)
            client = slot.client
            assert client is not None
            options = {"evaluationTimeout": int(limit * 1000)}
            args = dict(bindings) if bindings else None
            dispatched = await asyncio.wait_for(
                loop.run_in_executor(self._executor, client.submit_async, message, args, options), limit
            )
            result_set = await asyncio.wait_for(_awaitable(dispatched), limit)
            items = await asyncio.wait_for(_awaitable(result_set.all()), limit)
            return _expand(list(items))
        except GremlinServerError as e:
            if e.status_code in (401, 403):  # SASL: wrong user name or password
                self._discard(slot, close=True)
                who = f" of user {self.endpoint.username!r}" if self.endpoint.username else ""
                raise self._unavailable(
                    f"it refused the credentials{who} ({e.status_message}): check JANUSGRAPH_USERNAME "
                    "and JANUSGRAPH_PASSWORD_FILE") from e
            if _transient(e):
                self._discard(slot, close=True)
                raise _Broken(str(e)) from e
            # the server answered: the connection is fine
            if "could not be resolved" in str(e.status_message or ""):
                raise StaleVertexError(str(e)) from e
            raise GremlinQueryError(f"{self.source}: {e}") from e
        except TimeoutError as e:
            self._discard(slot, close=False)
            if connecting and self.url.startswith("wss://"):
                raise self._unavailable("no TLS/WebSocket handshake in time (a plain ws:// port?)") from e
            raise self._unavailable(f"no answer within {limit:.0f} s") from e
        except asyncio.CancelledError:
            self._discard(slot, close=False)
            raise
        except ConfigurationError as e:  # the server asked for credentials this client has not got
            self._discard(slot, close=True)
            raise self._unavailable("it requires a user name and password: set JANUSGRAPH_USERNAME and "
                                    "JANUSGRAPH_PASSWORD_FILE") from e
        except Exception as e:  # connection refused/reset, closed loop, aiohttp errors...
            self._discard(slot, close=True)
            tls = _tls_failure(e, self.url, connecting)
            if tls is not None:  # the same answer next time: no retry
                raise self._unavailable(tls) from e
            raise _Broken(f"{type(e).__name__}: {e}") from e

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        clients = []
        transports: list[Any] = [tr for lst in self._abandoned for tr in lst]
        while not self._slots.empty():
            slot = self._slots.get_nowait()
            if slot.client is not None:
                clients.append(slot.client)
                transports.extend(slot.transports)
                slot.client, slot.transports = None, []

        def shut() -> None:
            for c in clients:
                try:
                    c.close()
                except Exception:
                    log.debug("closing a gremlin client failed", exc_info=True)
            _close_transports(transports)

        await asyncio.get_running_loop().run_in_executor(None, shut)
        self._executor.shutdown(wait=False)

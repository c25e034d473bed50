"""The request head (request line and headers) bounded, below the ASGI app.

uvicorn's httptools protocol appends every piece of a request's URL and headers to what it has
without a limit (and copies it each time): one connection sending a 300 MB URL made the server's peak
memory 670 MB and held its event loop for minutes. :func:`bounded_protocol` makes the protocol class
``topology serve`` runs with: once the request line plus headers pass ``TOPOLOGY_MAX_HEAD`` bytes, it
stops parsing, answers 414 (the URL is what crossed) or 431, and closes the connection. A head that
has not all arrived ``TOPOLOGY_READ_TIMEOUT`` after its first byte is 408 (a client sending its
headers a byte at a time held a connection indefinitely). Refusals are counted like the app's
(``topology_http_refused_total``, ``limit`` or ``timeout``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["bounded_protocol"]

_STATUS = {408: b"HTTP/1.1 408 Request Timeout\r\n", 414: b"HTTP/1.1 414 URI Too Long\r\n",
           431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n"}
_WHY = {408: "timeout: the request head did not arrive in time",
        414: "limit: request line longer than {} bytes",
        431: "limit: request line and headers longer than {} bytes"}


class HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops parsing and uvicorn answers (send_400_response)."""


class _BoundedHead(HttpToolsProtocol):
    max_head = 64 * 1024
    head_timeout = 30.0
    hooks: tuple[Callable[[int], None], ...] = ()  # called with the status of each refusal (a tuple:
    # never bound to self)
    _timer: asyncio.TimerHandle | None = None
    _head = 0
    _refused: int | None = None

    _in_body = False
    _pending = 0  # bytes received while a header was still incomplete (httptools keeps them itself)
    _completed = False  # a request ended inside the bytes being parsed

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # answered and closing: nothing more is parsed
        in_head = not self._in_body
        if in_head and self._timer is None:  # the first bytes of a request: its head has this long
            self._timer = self.loop.call_later(self.head_timeout, self._too_slow)
        self._completed = False
        super().data_received(data)
        # A request that began and ended in these bytes (head and body in one read: a keep-alive client
        # posting 100 KB) leaves no head waiting: its bytes are not a head still arriving.
        if in_head and not self._in_body and self._refused is None and not self._completed:
            # httptools hands over a header only once it is complete: count what it holds meanwhile
            self._pending += len(data)
            if self._pending > self.max_head:
                self._refused = 431
                self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = self._pending = 0

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._stop_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self._refused is None and not self._in_body and not self.transport.is_closing():
            self._refused = 408
            self.send_400_response("")

    def on_message_complete(self) -> None:
        self._in_body = False
        self._pending = 0
        self._completed = True
        super().on_message_complete()

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 414)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), 431)
        super().on_header(name, value)

    def _count(self, n: int, status: int) -> None:
        self._head += n
        if self._head > self.max_head:
            self._refused = status
            raise HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        status = self._refused
        if status is None:  # a request httptools could not parse: uvicorn's answer
            super().send_400_response(msg)
            return
        for hook in self.hooks:
            hook(status)
        code = "REQUEST_TIMEOUT" if status == 408 else "REQUEST_TOO_LARGE"
        body = json.dumps({"error": _WHY[status].format(self.max_head), "code": code}).encode()
        self.transport.write(b"".join([
            _STATUS[status], b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n", b"connection: close\r\n\r\n", body]))
        self.transport.close()


def bounded_protocol(max_head: int, head_timeout: float,
                     on_refused: Callable[[int], None] | None = None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol refusing a request head longer than ``max_head`` bytes or slower
    than ``head_timeout`` seconds; ``on_refused`` is told the status (408, 414 or 431)."""
    hooks = () if on_refused is None else (on_refused,)
    return type("BoundedHead", (_BoundedHead,), {"max_head": max_head, "head_timeout": head_timeout,
                                                 "hooks": hooks})

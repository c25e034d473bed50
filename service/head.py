"""The request head (request line and headers) bounded, below the ASGI app.

uvicorn's httptools protocol appends every piece of a request's URL and headers to what it has
without a limit (and copies it each time): one connection sending a 300 MB URL made the server's peak
memory 670 MB and held its event loop for minutes. :func:`bounded_protocol` makes the protocol class
``topology serve`` runs with: once the request line plus headers pass ``TOPOLOGY_MAX_HEAD`` bytes, it
stops parsing, answers 414 (the URL is what crossed) or 431, and closes the connection; the refusal
is counted like the app's (``topology_http_refused_total{refusal="limit"}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["bounded_protocol"]

_STATUS = {414: b"HTTP/1.1 414 URI Too Long\r\n", 431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n"}


class HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops parsing and uvicorn answers (send_400_response)."""


class _BoundedHead(HttpToolsProtocol):
    max_head = 64 * 1024
    hooks: tuple[Callable[[], None], ...] = ()  # called on each refusal (a tuple: never bound to self)
    _head = 0
    _refused: int | None = None

    _in_body = False
    _pending = 0  # bytes received while a header was still incomplete (httptools keeps them itself)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # answered and closing: nothing more is parsed
        in_head = not self._in_body
        super().data_received(data)
        if in_head and not self._in_body and self._refused is None:
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
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._pending = 0
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
            hook()
        what = "request line" if status == 414 else "request line and headers"
        body = json.dumps({"error": f"limit: {what} longer than {self.max_head} bytes",
                           "code": "REQUEST_TOO_LARGE"}).encode()
        self.transport.write(b"".join([
            _STATUS[status], b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n", b"connection: close\r\n\r\n", body]))
        self.transport.close()


def bounded_protocol(max_head: int, on_refused: Callable[[], None] | None = None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol refusing a request head longer than ``max_head`` bytes."""
    hooks = () if on_refused is None else (on_refused,)
    return type("BoundedHead", (_BoundedHead,), {"max_head": max_head, "hooks": hooks})

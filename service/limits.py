"""Bounded work per request at the HTTP layer: body size, decompression, read time, ingest overload.

:class:`RequestLimits` is ASGI middleware around every HTTP route. It never buffers a body: it
wraps the ``receive`` channel the route reads from, and

* counts the body's bytes as they arrive (``Content-Length`` or chunked alike) and answers **413**
  as soon as the count crosses the limit: ``TOPOLOGY_MAX_BODY`` for the ingest routes,
  ``TOPOLOGY_MAX_REQUEST_BODY`` for every other route (``/graphql``);
* inflates ``Content-Encoding: gzip`` / ``deflate`` bodies as they stream, never producing more than
  the limit plus one byte (``zlib.decompressobj`` with ``max_length``), so a bomb costs at most the
  limit in memory and is refused with **413**; a body that is not valid gzip/deflate is **400**. The
  route then sees the plain body without ``Content-Encoding``;
* gives the client ``TOPOLOGY_READ_TIMEOUT`` from the start of the request to finish sending its
  body, else **408** (uvicorn's keep-alive timeout does not cover a body that stops half-way);
* admits at most ``TOPOLOGY_MAX_INGEST_REQUESTS`` ingest requests at a time; one more is **429**
  with ``Retry-After`` instead of waiting in an unbounded queue.

Each refusal closes the connection (``Connection: close``: the rest of the body is not read), says
why in its body (``{"error", "code"}``, GraphQL-shaped ``{"errors": [{..., "extensions": {"code"}}]}``
on ``/graphql``) and is counted in ``topology_http_refused_total`` by ``refusal`` (``limit``,
``timeout``, ``overload``, ``decode``).
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from topology.settings import ConfigError

__all__ = ["CODES", "REASONS", "RequestLimits", "parse_size", "show_size"]

#: Reasons a request is refused at the HTTP layer (the ``reason`` label) -> (status, code).
CODES: dict[str, tuple[int, str]] = {
    "limit": (413, "REQUEST_TOO_LARGE"),
    "timeout": (408, "REQUEST_TIMEOUT"),
    "overload": (429, "OVERLOADED"),
    "decode": (400, "BAD_INPUT"),
}
REASONS = tuple(CODES)
RETRY_AFTER = "1"
INFLATED = frozenset({"gzip", "x-gzip", "deflate"})  # the Content-Encodings inflated here
STEP = 1024 * 1024  # inflated bytes made between two turns of the event loop
_DISCONNECT: Message = {"type": "http.disconnect"}
_SIZE = re.compile(r"\s*(\d+)\s*([kmg]i?b?|b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "mi": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3}


def parse_size(text: str) -> int:
    """A byte count: ``1048576``, ``512KiB``, ``64MiB``, ``1MB`` (powers of 1000), at least 1."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ConfigError(f"{text!r} is not a size (e.g. 1048576, 512KiB, 64MiB)")
    n = int(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if n < 1:
        raise ConfigError(f"{text!r}: a size must be at least 1 byte")
    return n


def show_size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


class Refused(Exception):
    """Raised inside the receive wrapper; the middleware answers with ``reason``'s status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Inflater:
    """Streaming gzip/deflate that never yields more than ``room`` bytes in all."""

    encoding: str
    room: int
    fed: int = 0
    _d: Any = field(init=False)

    def __post_init__(self) -> None:
        self._d = self._new()

    def _new(self) -> Any:
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self.encoding == "gzip" else zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> Iterator[bytes]:
        """The inflated bytes of ``data``, in pieces of at most :data:`STEP` (the caller may let other
        requests run between them)."""
        self.fed += len(data)
        while data:
            try:
                piece = self._d.decompress(data, min(self.room + 1, STEP))
            except zlib.error as e:
                raise Refused("decode", f"decode: body is not valid {self.encoding}: {e}") from None
            self.room -= len(piece)
            if self.room < 0:
                raise Refused("limit", f"limit: decompressed body larger than {limit} bytes")
            yield piece
            if self._d.unconsumed_tail:
                data = self._d.unconsumed_tail
            elif self._d.eof and self._d.unused_data:  # a gzip of several members, as gzip.decompress reads
                data, self._d = self._d.unused_data, self._new()
            else:
                data = b""

    def finish(self) -> None:
        if self.fed and not self._d.eof:
            raise Refused("decode", f"decode: body is not valid {self.encoding}: truncated")


class _Body:
    """One request's receive channel, counted, inflated and timed."""

    def __init__(self, receive: Receive, limit: int, inflater: _Inflater | None, deadline: float) -> None:
        self._receive = receive
        self.limit = limit
        self.inflater = inflater
        self.deadline = deadline
        self.seen = 0
        self.done = False

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        try:
            async with asyncio.timeout_at(self.deadline):  # no task around the receive, as wait_for makes
                message = await self._receive()
        except TimeoutError:
            raise Refused("timeout", "timeout: the request body did not arrive in time") from None
        if message["type"] != "http.request":
            return message
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        self.done = not more
        self.seen += len(body)
        if self.seen > self.limit:
            raise Refused("limit", f"limit: body larger than {self.limit} bytes")
        if self.inflater is not None:
            pieces = []
            for piece in self.inflater.feed(body, self.limit):
                pieces.append(piece)
                await asyncio.sleep(0)  # a chunk may inflate to megabytes: let /healthz in between
            body = b"".join(pieces)
            if not more:
                self.inflater.finish()
        return {"type": "http.request", "body": body, "more_body": more}


class RequestLimits:
    """ASGI middleware: see the module docstring. ``on_refused(route, reason)`` counts a refusal."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_request_body: int, read_timeout: float,
                 max_ingest_requests: int, is_ingest: Callable[[str], bool],
                 on_refused: Callable[[str, str], None] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.max_request_body = max_request_body
        self.read_timeout = read_timeout
        self.max_ingest_requests = max_ingest_requests
        self.is_ingest = is_ingest
        self.on_refused = on_refused
        self.ingest_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        ingest = self.is_ingest(path) and scope.get("method") != "GET"
        headers = Headers(scope=scope)
        early = self.check(ingest, headers)
        if early is not None:
            await self.refuse(send, path, early)
            return
        body = self.body(receive, ingest, headers)
        if body.inflater is not None:  # the route sees the inflated body, without Content-Encoding
            raw = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
            scope = {**scope, "headers": raw}
        refused: list[Refused] = []
        started = False

        async def counted_receive() -> Message:
            if refused:
                return _DISCONNECT
            try:
                return await body.receive()
            except Refused as r:
                refused.append(r)
                if not started:
                    await self._refuse(send, path, r)
                return _DISCONNECT

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # we answered already; the route's answer to the disconnect goes nowhere
            started = started or message["type"] == "http.response.start"
            await send(message)

        if ingest:
            self.ingest_in_flight += 1
        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:
                raise  # the route's own error, not the disconnect we made it see
        finally:
            if ingest:
                self.ingest_in_flight -= 1

    def limit(self, ingest: bool) -> int:
        return self.max_body if ingest else self.max_request_body

    def check(self, ingest: bool, headers: Mapping[str, str]) -> Refused | None:
        """What refuses a request before its body is read: a declared length over the limit, too many
        ingest requests in progress (``ingest``: the request is one)."""
        limit = self.limit(ingest)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return Refused("limit", f"limit: body larger than {limit} bytes")
        if ingest and self.ingest_in_flight >= self.max_ingest_requests:
            return Refused(
                "overload", f"overload: {self.max_ingest_requests} ingest requests in progress; retry later")
        return None

    def body(self, receive: Receive, ingest: bool, headers: Mapping[str, str]) -> _Body:
        """The request's receive channel, counted, timed and inflated (its ``inflater`` is None when the
        body is not gzip or deflate); its ``receive()`` raises :class:`Refused`."""
        limit = self.limit(ingest)
        encoding = headers.get("content-encoding", "").strip().lower()
        inflater = None
        if encoding in INFLATED:
            inflater = _Inflater("deflate" if encoding == "deflate" else "gzip", limit)
        return _Body(receive, limit, inflater, asyncio.get_running_loop().time() + self.read_timeout)

    async def refuse(self, send: Send, path: str, r: Refused) -> None:
        """Answer ``r`` (and count it); the connection is closed."""
        await self._refuse(send, path, r)

    async def _refuse(self, send: Send, path: str, r: Refused) -> None:
        status, code = CODES[r.reason]
        if self.on_refused is not None:
            self.on_refused(path, r.reason)
        if path == "/graphql":
            payload: dict[str, Any] = {"errors": [{"message": r.message, "extensions": {"code": code}}]}
        else:
            payload = {"error": r.message, "code": code}
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                   (b"connection", b"close")]
        if r.reason == "overload":
            headers.append((b"retry-after", RETRY_AFTER.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

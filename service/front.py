"""The ingest routes' short road: a POST to an ingest route answered by one ASGI function in front of the
Starlette app, with everything the app's middleware gives it, in the same order and with the same answers.

Through Starlette a request to ``/v1/traces`` passed eleven ASGI layers (its error and exception
middleware, the route metrics, the request guard, authentication, the limits, the router, the route and
its ``?wait`` wrapper), each a coroutine with its own ``send`` or ``receive`` wrapper and most reading the
headers again: ~0.15-0.4 ms of CPU a request before its spans were touched, as much as admitting a
request of a hundred spans. :class:`IngestFront` reads the headers once and calls the same parts in
turn, as plain calls:

1. the request guard (:meth:`service.guard.RequestGuard.problem`: Host, ingest port, Origin,
   Content-Type),
2. authentication and authorisation (:meth:`service.auth.AuthMiddleware.judge`), when on,
3. the limits (:class:`service.limits.RequestLimits`: declared length, ingest requests in progress —
   counted with the app's own, it is the same object —, then the body counted, timed and inflated),
4. the route's handler (:class:`service.receiver.IngestRoutes`: the same function the Starlette route
   calls),

and counts the request in ``topology_http_requests_total`` and ``topology_http_request_duration_seconds``
as :class:`service.observability.RouteMetrics` does. An exception (a bug: bad input has its answers)
is logged with its traceback in the structured log and answered 500 with a JSON body, as the app's
error middleware would; a client that goes away is not answered.

Everything else goes to the app as before: other routes and methods, a query string (``?wait=true``),
and, when CORS is configured (``TOPOLOGY_ALLOWED_ORIGINS``), a request with an ``Origin`` (its answer
carries CORS headers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter
from starlette.types import Message, Receive, Scope, Send

from service.auth import AuthMiddleware, refusal, required_scope
from service.guard import RequestGuard
from service.limits import CODES, Refused, RequestLimits
from service.observability import Metrics
from service.receiver import Handler, check_encoding
from service.runtime import Runtime

__all__ = ["IngestFront"]

log = logging.getLogger("service.front")

_GONE = 499  # the client went away before its body arrived (counted as 4xx, nothing is sent)


class IngestFront:
    """ASGI app: ingest POSTs answered here (see the module doc), everything else by ``app``."""

    def __init__(self, app: Any, handlers: Mapping[str, Handler], *, runtime: Runtime | None,
                 guard: RequestGuard, auth: AuthMiddleware, limits: RequestLimits, metrics: Metrics,
                 cors: bool) -> None:
        self.app = app
        self.handlers = dict(handlers)
        self.runtime = runtime
        self.guard = guard
        self.auth = auth
        self.limits = limits
        self.cors = cors
        self._requests: Counter = metrics.http_requests
        self._counted: dict[tuple[str, int], Any] = {}  # (route, status class) -> its counter child
        self._seconds: dict[str, Any] = {path: metrics.http_seconds.labels(path) for path in self.handlers}

    def __getattr__(self, name: str) -> Any:  # the app's state, routes, ... (``app.state.metrics``)
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST" or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        # the headers once, as a dict (names are lower case in ASGI; the first of a repeated one counts,
        # as with Starlette's Headers)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        if self.cors and "origin" in headers:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent: list[bool] = []
        try:
            status = await self._answer(scope, receive, send, headers, handler, sent)
        except Exception:
            log.exception("ingest request failed", extra={"path": scope["path"]})
            if not sent:
                await _send(send, 500, b'{"error":"internal error: see the server log","code":"INTERNAL"}',
                            [(b"content-type", b"application/json")])
        finally:
            self._count(scope["path"], status, start)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str],
                      handler: Handler, sent: list[bool]) -> int:
        """Answer the request; returns the status sent."""
        problem = self.guard.problem(scope, headers)
        if problem is not None:
            sent.append(True)
            await problem(scope, receive, send)
            return problem.status_code
        if self.auth.auth.enabled:
            needed = required_scope(scope)
            if needed is not None:
                _, refused = await self.auth.judge(scope, headers, needed)
                if refused is not None:
                    answer = refusal(scope, *refused)
                    sent.append(True)
                    await answer(scope, receive, send)
                    return answer.status_code
        limits, path = self.limits, scope["path"]
        early = limits.check(True, headers)
        if early is not None:
            sent.append(True)
            await limits.refuse(send, path, early)
            return CODES[early.reason][0]
        limits.ingest_in_flight += 1
        try:
            body = limits.body(receive, True, headers)
            chunks: list[bytes] = []
            try:
                while True:
                    message: Message = await body.receive()
                    if message["type"] != "http.request":
                        return _GONE  # the client went away
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
            except Refused as r:
                sent.append(True)
                await limits.refuse(send, path, r)
                return CODES[r.reason][0]
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)

            async def read() -> bytes:
                if body.inflater is None:  # inflated: no Content-Encoding is left to refuse
                    check_encoding(headers)
                return data

            if self.runtime is not None:
                self.runtime.begin_request()
            response = await handler(read, headers)
        finally:
            limits.ingest_in_flight -= 1
        sent.append(True)
        await _send(send, response.status_code, bytes(response.body), response.raw_headers)
        return response.status_code

    def _count(self, path: str, status: int, start: float) -> None:
        cls = status // 100
        child = self._counted.get((path, cls))
        if child is None:
            child = self._counted[(path, cls)] = self._requests.labels(path, f"{cls}xx")  # as RouteMetrics
        child.inc()
        self._seconds[path].observe(time.perf_counter() - start)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if not any(k == b"content-length" for k, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


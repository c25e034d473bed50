"""HTTP ingest: what the agent, OpenTelemetry SDKs, the Collector and other producers POST to.

    POST /v1/traces         OTLP/HTTP ExportTraceServiceRequest   (protobuf or JSON, gzip allowed)
    POST /v1/metrics        OTLP/HTTP ExportMetricsServiceRequest (protobuf or JSON, gzip allowed)
    POST /ingest/flows      a flow batch (docs/flow-wire-format.md), application/x-topology-flows
    POST /ingest/vpcflows   AWS VPC flow-log lines (text; the default format, or a header line first)
    POST /ingest/catalog    JSON array of catalog records
    POST /ingest/health     JSON array of health events
    POST /ingest/changes    JSON array of change events (deploys, configuration changes, ...)
    POST /ingest/addresses  JSON array of address leases

Every payload passes :mod:`topology.admit`, the admission the Kafka workers apply too. Answers
follow OTLP/HTTP: 200 with an Export*ServiceResponse in the request's encoding (``partial_success``
counts the spans or points that admission cut out, with the first reason), 400 with a
``google.rpc.Status`` carrying the reason for a payload rejected whole. The other routes answer
``{"accepted": n}`` (and ``"rejected"``, ``"reason"`` when records were cut out) or 400 with
``{"error": reason, "code": "BAD_INPUT"}``. Reasons start with their class (``timestamp: ...``).

Every record is checked before anything changes. What a batch with bad records gets, per route:

=====================  ===========================================================================
``/v1/traces``         the bad spans are cut out, the rest applied (``partial_success.rejected_spans``)
``/v1/metrics``        resources with a bad point or name are cut out (``rejected_data_points``)
``/ingest/flows``      the bad records are cut out (``"rejected"``: how many)
``/ingest/vpcflows``   the bad lines are cut out (``"rejected"``: how many)
catalog, health,       refused whole (400): one bad record refuses the batch and nothing is stored
addresses, changes
=====================  ===========================================================================

A payload rejected whole is 400 on every route, whatever made it so: a bad ``Content-Encoding``,
bytes that do not decode, no plausible record (a body over the size limit is 413, from
:mod:`service.limits`). Refusals before admission are counted by reason class and dead-lettered
like the others, under the route's kind (:func:`refused_at_http`). When the store
does not take catalog entries, health events or change events (an outage), the answer is 503 with
``Retry-After`` and nothing was applied. When the spans of a ``/v1/traces`` request could overflow
the spans waiting for their other side (the pairing capacity, :meth:`Runtime.pairing_busy`), the
answer is 429 with ``Retry-After`` (OTLP/HTTP: retryable, after that delay) and a ``google.rpc.Status``
``RESOURCE_EXHAUSTED``; nothing was applied, and a Collector retries (counted as ``refused``).
The same payloads may be sent as the simulator emits them (``topology simulate --http``).

Durability: a 200 means admitted. Catalog entries, health and change events are then stored, leases
appended to the data directory; flows, flow logs, spans and metrics are held until their window
closes and is written (about a minute, see :mod:`service.runtime`). ``?wait=true`` on any ingest
route answers only once they are written (at most :data:`WAIT_LIMIT` seconds; header
``Topology-Written: true``), or 202 with ``Topology-Written: false`` if that takes longer (the
records stay accepted and are written when their window closes).

Bodies arrive through :mod:`service.limits` (size limits, inflated ``Content-Encoding``, read
timeout, at most ``TOPOLOGY_MAX_INGEST_REQUESTS`` at once). Flows, VPC flow logs and OTLP bodies
over :data:`INLINE_BYTES` are decoded and admitted in a worker thread, so a large body does not hold
the event loop (``/healthz`` and queries answer meanwhile); smaller ones on the loop, where they take
less time than handing them to a thread and back would. Applying the admitted records runs on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.runtime import InputError, Runtime
from topology.admit import (
    DECODE,
    LIMIT,
    Admission,
    admit_flows,
    admit_metric_bytes,
    admit_spans,
    admit_vpcflows,
    reason,
)

log = logging.getLogger("topology.receiver")

PROTOBUF = "application/x-protobuf"
RETRY_AFTER = "5"  # seconds, on a 503 while the store does not answer
#: Bodies up to this many bytes are decoded and admitted on the event loop (well under a millisecond);
#: larger ones in a worker thread (the hand-off costs ~0.1 ms of CPU per request).
INLINE_BYTES = 64 * 1024


async def _admitted(admit: Callable[..., Admission[Any]], data: bytes, *args: Any) -> Admission[Any]:
    """``admit(data, *args)``: on the loop for a small body, else in a worker thread."""
    if len(data) <= INLINE_BYTES:
        return admit(data, *args)
    return await asyncio.to_thread(admit, data, *args)


#: Reads a request's body (raises InputError when it cannot be taken: a Content-Encoding left over).
Read = Callable[[], Awaitable[bytes]]
#: An ingest route's answer to a request, given how to read its body and its headers.
Handler = Callable[[Read, Mapping[str, str]], Awaitable[Response]]


def check_encoding(headers: Mapping[str, str]) -> None:
    """Size limits and gzip/deflate are :class:`service.limits.RequestLimits`'s: it counts the body as it
    streams, inflates it up to ``TOPOLOGY_MAX_BODY`` and drops ``Content-Encoding``; any encoding still
    named is one it does not take."""
    enc = headers.get("content-encoding", "").lower()
    if enc not in ("", "identity"):
        raise InputError("http", reason(DECODE, f"unsupported content-encoding {enc!r}"))


async def _body(request: Request) -> bytes:
    """The request body (see :func:`check_encoding`)."""
    check_encoding(request.headers)
    return await request.body()


def _otlp_type(headers: Mapping[str, str]) -> str:
    ct = headers.get("content-type", PROTOBUF).split(";")[0].strip().lower()
    return "application/json" if ct == "application/json" else PROTOBUF


def _otlp_answer(ok_message: Any, content_type: str, error: str | None = None) -> Response:
    if error is None:
        if content_type == "application/json":
            return Response(json_format.MessageToJson(ok_message), media_type="application/json")
        return Response(ok_message.SerializeToString(), media_type=PROTOBUF)
    if content_type == "application/json":
        return JSONResponse({"code": INVALID_ARGUMENT, "message": error}, status_code=400)
    return Response(rpc_status(INVALID_ARGUMENT, error), status_code=400, media_type=PROTOBUF)


INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
_EMPTY_JSON = json_format.MessageToJson(ExportTraceServiceResponse())  # every empty Export*ServiceResponse


def _ok(content_type: str) -> Response:
    """200 with an empty Export*ServiceResponse (nothing cut out), without building the message."""
    return Response(b"", media_type=PROTOBUF) if content_type == PROTOBUF else Response(
        _EMPTY_JSON, media_type="application/json")


def _exhausted(content_type: str, wait: float) -> Response:
    """429: the pairing capacity is full for now; the client retries after ``wait`` seconds."""
    message = "too many spans waiting for their other side; nothing was applied, retry after Retry-After"
    headers = {"retry-after": str(math.ceil(wait))}
    if content_type == "application/json":
        return JSONResponse({"code": RESOURCE_EXHAUSTED, "message": message}, status_code=429,
                            headers=headers)
    return Response(rpc_status(RESOURCE_EXHAUSTED, message), status_code=429, media_type=PROTOBUF,
                    headers=headers)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rpc_status(code: int, message: str) -> bytes:
    """A serialized ``google.rpc.Status`` (field 1 code, field 2 message), as OTLP/HTTP errors carry."""
    msg = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(msg)) + msg


def _json_answer(adm: Admission[Any]) -> Response:
    body: dict[str, Any] = {"accepted": adm.items}
    if adm.rejected:
        body["rejected"] = adm.dropped
        body["reason"] = adm.rejected[0].reason
    return JSONResponse(body)


def _bad_input(e: InputError) -> Response:
    return JSONResponse({"error": e.reason, "code": "BAD_INPUT"}, status_code=400)


def _unavailable(kind: str, e: Exception) -> Response:
    log.error("the store did not take %s", kind, exc_info=e)
    return JSONResponse({"error": f"the store did not take the {kind} records; nothing was applied, retry",
                         "code": "UNAVAILABLE"}, status_code=503, headers={"retry-after": RETRY_AFTER})


#: The kind of input each ingest route takes (the runtime's counters, the dead letters).
ROUTE_KINDS: dict[str, str] = {
    "/v1/traces": "spans", "/v1/metrics": "metrics", "/ingest/flows": "flows", "/ingest/vpcflows": "vpcflows",
    "/ingest/catalog": "catalog", "/ingest/health": "health", "/ingest/addresses": "addresses",
    "/ingest/changes": "changes",
}
_REFUSED = {
    LIMIT: (LIMIT, "body over the size limit"),
    DECODE: (DECODE, "body not valid in its Content-Encoding"),
    "content-type": (DECODE, "a Content-Type the route does not take"),
}


def refused_at_http(runtime: Runtime, path: str, why: str) -> None:
    """Count and dead-letter an ingest request that the HTTP layer refused, as if the route had:
    ``why`` is ``limit`` or ``decode`` (:mod:`service.limits`: size, encoding) or ``content-type``
    (:mod:`service.guard`); other refusals (timeouts, overload, authentication) are not input."""
    kind = ROUTE_KINDS.get(path)
    if kind is not None and why in _REFUSED:
        cls, what = _REFUSED[why]
        runtime.refuse(kind, reason(cls, f"{what} (refused before admission)"), b"")


WAIT_LIMIT = 90.0  # seconds an ingest request with ?wait=true waits for its records' write


class IngestRoutes(list[Route]):
    """The ingest routes, and their handlers by path: what :class:`service.front.IngestFront` answers
    requests with without Starlette's routing and middleware (the same handlers, the same answers)."""

    def __init__(self, routes: list[Route], handlers: dict[str, Handler]) -> None:
        super().__init__(routes)
        self.handlers = handlers


def durable(runtime: Runtime, routes: list[Route]) -> list[Route]:
    """``routes`` with ``?wait=true``: the answer waits until the request's records are written."""

    def wrap(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            runtime.begin_request()
            response = await endpoint(request)
            if not request.scope.get("query_string") or request.query_params.get("wait", "").lower() not in (
                    "true", "1", "yes"):
                return response
            written = response.status_code == 200 and await runtime.written(runtime.request_due(), WAIT_LIMIT)
            if response.status_code == 200 and not written:
                response.status_code = 202
            response.headers["topology-written"] = "true" if written else "false"
            return response

        return handler

    return [Route(r.path, wrap(r.endpoint), methods=sorted(r.methods or ())) for r in routes]


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(lambda: _body(request), request.headers)

    return endpoint


def ingest_routes(runtime: Runtime) -> IngestRoutes:
    async def body(read: Read, kind: str) -> bytes:
        """The request's body; refused (counted and dead-lettered as ``kind``) when it cannot be read."""
        try:
            return await read()
        except InputError as e:
            raise runtime.refuse(kind, e.reason, b"") from None

    async def traces(read: Read, headers: Mapping[str, str]) -> Response:
        ct = _otlp_type(headers)
        try:
            data, now = await body(read, "spans"), runtime.clock()
            adm = await _admitted(admit_spans, data, ct, now)
            wait = runtime.pairing_busy(adm.items, now) if adm.kept is not None else None
            if wait is not None:
                runtime.refused["spans"] += 1
                return _exhausted(ct, wait)
            runtime.apply("spans", adm, now)
        except InputError as e:
            return _otlp_answer(None, ct, e.reason)
        if not adm.rejected:
            return _ok(ct)
        answer = ExportTraceServiceResponse()
        answer.partial_success.rejected_spans = adm.dropped
        answer.partial_success.error_message = adm.rejected[0].reason
        return _otlp_answer(answer, ct)

    async def metrics(read: Read, headers: Mapping[str, str]) -> Response:
        ct = _otlp_type(headers)
        try:
            data, now = await body(read, "metrics"), runtime.clock()
            adm = runtime.apply("metrics", await _admitted(admit_metric_bytes, data, ct, now), now)
        except InputError as e:
            return _otlp_answer(None, ct, e.reason)
        if not adm.rejected:
            return _ok(ct)
        answer = ExportMetricsServiceResponse()
        answer.partial_success.rejected_data_points = adm.dropped
        answer.partial_success.error_message = adm.rejected[0].reason
        return _otlp_answer(answer, ct)

    def bytes_route(accept: Callable[[bytes], Admission[Any] | Awaitable[Admission[Any]]],
                    kind: str) -> Handler:
        async def handler(read: Read, headers: Mapping[str, str]) -> Response:
            try:
                adm = accept(await body(read, kind))
                if inspect.isawaitable(adm):
                    adm = await adm
            except InputError as e:
                return _bad_input(e)
            except Exception as e:  # checked records the store did not take: an outage, not bad input
                return _unavailable(kind, e)
            return _json_answer(adm)

        return handler

    def decoded_route(kind: str, admit: Callable[[bytes, float], Admission[Any]]) -> Handler:
        """A route whose decoding and admission run off the loop for a large body (:func:`_admitted`)."""

        async def accept(data: bytes) -> Admission[Any]:
            now = runtime.clock()
            return runtime.apply(kind, await _admitted(admit, data, now), now)

        return bytes_route(accept, kind)

    handlers: dict[str, Handler] = {
        "/v1/traces": traces,
        "/v1/metrics": metrics,
        "/ingest/flows": decoded_route("flows", admit_flows),
        "/ingest/vpcflows": decoded_route("vpcflows", admit_vpcflows),
        "/ingest/catalog": bytes_route(runtime.accept_catalog, "catalog"),
        "/ingest/health": bytes_route(runtime.accept_health, "health"),
        "/ingest/addresses": bytes_route(runtime.accept_leases, "addresses"),
        "/ingest/changes": bytes_route(runtime.accept_changes, "changes"),
    }
    routes = [Route(path, _endpoint(h), methods=["POST"]) for path, h in handlers.items()]
    return IngestRoutes(durable(runtime, routes), handlers)

"""HTTP ingest: what the agent, OpenTelemetry SDKs, the Collector and other producers POST to.

    POST /v1/traces         OTLP/HTTP ExportTraceServiceRequest   (protobuf or JSON, gzip allowed)
    POST /v1/metrics        OTLP/HTTP ExportMetricsServiceRequest (protobuf or JSON, gzip allowed)
    POST /ingest/flows      a flow batch (docs/flow-wire-format.md), application/x-topology-flows
    POST /ingest/catalog    JSON array of catalog records
    POST /ingest/health     JSON array of health events
    POST /ingest/addresses  JSON array of address leases

Answers follow OTLP/HTTP: 200 with an empty Export*ServiceResponse in the request's encoding,
400 with a ``google.rpc.Status`` carrying the reason for a payload that cannot be decoded.
The same payloads may be sent as the simulator emits them (``topology simulate --http``).
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.runtime import InputError, Runtime

MAX_BODY = 64 * 1024 * 1024
PROTOBUF = "application/x-protobuf"


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise InputError("http", f"body larger than {MAX_BODY} bytes")
    data = await request.body()
    enc = request.headers.get("content-encoding", "").lower()
    try:
        if enc == "gzip":
            data = gzip.decompress(data)
        elif enc == "deflate":
            data = zlib.decompress(data)
        elif enc not in ("", "identity"):
            raise InputError("http", f"unsupported content-encoding {enc!r}")
    except (OSError, EOFError, zlib.error) as e:
        raise InputError("http", f"body is not valid {enc}: {e}") from e
    if len(data) > MAX_BODY:
        raise InputError("http", f"decompressed body larger than {MAX_BODY} bytes")
    return data


def _otlp_type(request: Request) -> str:
    ct = request.headers.get("content-type", PROTOBUF).split(";")[0].strip().lower()
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


def ingest_routes(runtime: Runtime) -> list[Route]:
    async def traces(request: Request) -> Response:
        ct = _otlp_type(request)
        try:
            runtime.accept_spans(await _body(request), ct)
        except InputError as e:
            return _otlp_answer(None, ct, e.reason)
        return _otlp_answer(ExportTraceServiceResponse(), ct)

    async def metrics(request: Request) -> Response:
        ct = _otlp_type(request)
        try:
            runtime.accept_metrics(await _body(request), ct)
        except InputError as e:
            return _otlp_answer(None, ct, e.reason)
        return _otlp_answer(ExportMetricsServiceResponse(), ct)

    async def flows(request: Request) -> Response:
        try:
            n = runtime.accept_flows(await _body(request))
        except InputError as e:
            return JSONResponse({"error": e.reason, "code": "BAD_INPUT"}, status_code=400)
        return JSONResponse({"accepted": n})

    def json_route(kind: str) -> Any:
        async def handler(request: Request) -> Response:
            try:
                raw = await _body(request)
                try:
                    records = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as e:
                    raise runtime._reject(kind, f"body is not JSON: {e}", raw) from e
                if kind == "catalog":
                    n = await runtime.accept_catalog(records)
                elif kind == "health":
                    n = await runtime.accept_health(records)
                else:
                    n = runtime.accept_leases(records)
            except InputError as e:
                return JSONResponse({"error": e.reason, "code": "BAD_INPUT"}, status_code=400)
            return JSONResponse({"accepted": n})

        return handler

    return [
        Route("/v1/traces", traces, methods=["POST"]),
        Route("/v1/metrics", metrics, methods=["POST"]),
        Route("/ingest/flows", flows, methods=["POST"]),
        Route("/ingest/catalog", json_route("catalog"), methods=["POST"]),
        Route("/ingest/health", json_route("health"), methods=["POST"]),
        Route("/ingest/addresses", json_route("addresses"), methods=["POST"]),
    ]

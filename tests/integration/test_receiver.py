"""HTTP ingest of `topology serve`, fed by the real OpenTelemetry SDK exporters over a real socket.

The server runs in this event loop (uvicorn) with the runtime's clock pinned, so the test can close
windows deterministically; the SDK exporters (blocking HTTP clients) run in worker threads.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest_asyncio
import uvicorn
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from service.app import create_app
from service.config import ServiceConfig
from service.receiver import ingest_routes, rpc_status
from service.runtime import Runtime
from topology.model import Granularity, Layer
from topology.pipeline import Pipeline
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange
from topology.wire import flow


@dataclass
class Server:
    url: str
    stores: Stores
    runtime: Runtime
    data_dir: Path
    clock: list[float]

    async def settle(self) -> None:
        """Run the pipeline far enough past the clock that every open window closes."""
        for extra in (0.0, 30.0, 90.0, 150.0):
            await self.runtime.flush(self.clock[0] + extra)

    async def app_edges(self, layer: Layer) -> set[tuple[str, str]]:
        now = self.clock[0] + 300
        es = await self.stores.layers[layer].edges(Granularity.APP, TimeRange(now - 3600, now), now=now)
        return {(e.key.source, e.key.target) for e in es}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    import time

    clock = [time.time()]
    stores = open_stores(tmp_path)
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: clock[0])
    app = create_app(stores, ServiceConfig.from_env({}), runtime=runtime, extra_routes=ingest_routes(runtime))
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None)
    )
    task = asyncio.create_task(srv.serve())
    while not srv.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.02)
    yield Server(f"http://127.0.0.1:{port}", stores, runtime, tmp_path, clock)
    srv.should_exit = True
    await task
    await stores.close()


def _send_trace_with_sdk(url: str, compression: Compression) -> str:
    """checkout-api calls payments-api (CLIENT -> SERVER) and a database; returns the trace id."""
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=compression, timeout=10)
    client = TracerProvider(resource=Resource.create({"service.name": "checkout-api"}))
    server = TracerProvider(resource=Resource.create({"service.name": "payments-api"}))
    for p in (client, server):
        p.add_span_processor(SimpleSpanProcessor(exporter))
    with client.get_tracer("t").start_as_current_span("POST /checkout", kind=trace.SpanKind.SERVER):
        with client.get_tracer("t").start_as_current_span("charge", kind=trace.SpanKind.CLIENT) as call:
            ctx = trace.set_span_in_context(call)
            with server.get_tracer("t").start_as_current_span(
                "charge", kind=trace.SpanKind.SERVER, context=ctx
            ):
                pass
        with client.get_tracer("t").start_as_current_span(
            "SELECT orders",
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "db.namespace": "orders-db"},
        ):
            pass
        trace_id = format(call.get_span_context().trace_id, "032x")
    client.shutdown()
    server.shutdown()
    return trace_id


async def test_spans_from_the_otel_sdk_exporter_become_trace_edges(server: Server) -> None:
    trace_id = await asyncio.to_thread(_send_trace_with_sdk, server.url, Compression.Gzip)
    assert server.runtime.counters()["records"]["spans"] == 4
    server.clock[0] += 30  # past the pairing wait, so the unpaired root and database spans resolve
    await server.settle()
    edges = await server.app_edges(Layer.TRACE)
    assert ("checkout-api", "payments-api") in edges
    assert ("checkout-api", "orders-db") in edges
    assert ("user", "checkout-api") in edges
    traces = await server.stores.catalog.recent_traces("payments-api", 5)
    assert [t.trace_id for t in traces] == [trace_id]


def _send_metrics_with_sdk(url: str) -> None:
    exporter = OTLPMetricExporter(endpoint=f"{url}/v1/metrics", timeout=10)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": "catalog-api"}), metric_readers=[reader]
    )
    hist = provider.get_meter("m").create_histogram("http.client.request.duration", unit="s")
    attrs = {"server.address": "pricing-api.svc.local", "http.request.method": "GET", "http.route": "/prices"}
    for _ in range(3):
        for i in range(20):
            hist.record(0.02, {**attrs, "http.response.status_code": 500 if i == 0 else 200})
        reader.collect()  # one cumulative export per round: the first is the baseline, the rest are deltas
    provider.shutdown()


async def test_metrics_from_the_otel_sdk_exporter_become_ipc_edges(server: Server) -> None:
    await asyncio.to_thread(_send_metrics_with_sdk, server.url)
    assert server.runtime.counters()["accepted"]["metrics"] >= 3
    server.clock[0] += 120
    await server.settle()
    assert ("catalog-api", "pricing-api") in await server.app_edges(Layer.IPC)


async def test_otlp_json_as_the_collector_sends_it(server: Server) -> None:
    trace_hex, client_span, server_span = (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "aaa19b7ec3c1b174",
    )
    t0 = int(server.clock[0] * 1e9)

    def rs(service: str, span: dict[str, object]) -> dict[str, object]:
        return {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"scope": {"name": "x"}, "spans": [span]}],
        }

    body = {
        "resourceSpans": [
            rs(
                "web-bff",
                {
                    "traceId": trace_hex,
                    "spanId": client_span,
                    "name": "GET /a",
                    "kind": 3,
                    "startTimeUnixNano": str(t0),
                    "endTimeUnixNano": str(t0 + 5_000_000),
                },
            ),
            rs(
                "profile-api",
                {
                    "traceId": trace_hex,
                    "spanId": server_span,
                    "parentSpanId": client_span,
                    "name": "GET /a",
                    "kind": "SPAN_KIND_SERVER",
                    "startTimeUnixNano": str(t0 + 1_000_000),
                    "endTimeUnixNano": str(t0 + 4_000_000),
                },
            ),
        ]
    }
    async with httpx.AsyncClient() as c:
        r = await c.post(
            f"{server.url}/v1/traces", content=json.dumps(body), headers={"content-type": "application/json"}
        )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    await server.settle()
    assert ("web-bff", "profile-api") in await server.app_edges(Layer.TRACE)


async def test_flow_batches_and_leases_become_network_edges(server: Server) -> None:
    now = server.clock[0]
    leases = [
        {
            "ip": "10.0.0.2",
            "owner": "orders-api",
            "kind": "WORKLOAD",
            "start": now - 600,
            "cluster": "orders-api-v1",
        },
        {"ip": "10.0.9.9", "owner": "orders-db", "kind": "DATABASE", "start": now - 600},
    ]
    recs = np.zeros(2, dtype=flow.RECORD_V1)
    for i, (remote, port) in enumerate((("10.0.0.2", 8080), ("10.0.9.9", 5432))):
        recs[i]["start_ms"] = int((now - 20) * 1000)
        recs[i]["end_ms"] = int((now - 10) * 1000)
        recs[i]["local_addr"] = flow.pack_ip("10.0.0.1")
        recs[i]["remote_addr"] = flow.pack_ip(remote)
        recs[i]["local_port"], recs[i]["remote_port"] = 40000 + i, port
        recs[i]["protocol"], recs[i]["role"] = flow.PROTO_TCP, flow.ROLE_CLIENT
        recs[i]["local_app"], recs[i]["local_cluster"] = 1, 2
        recs[i]["bytes_sent"], recs[i]["bytes_received"], recs[i]["connections"] = 100, 2000, 3
    batch = flow.encode(recs, ["", "cart-api", "cart-api-v7"], host="node-1", emitted_ms=int(now * 1000))
    async with httpx.AsyncClient() as c:
        assert (await c.post(f"{server.url}/ingest/addresses", json=leases)).status_code == 200
        r = await c.post(
            f"{server.url}/ingest/flows",
            content=batch,
            headers={"content-type": "application/x-topology-flows"},
        )
    assert r.json() == {"accepted": 2}
    await server.settle()
    assert await server.app_edges(Layer.NETWORK) == {("cart-api", "orders-api"), ("cart-api", "orders-db")}


async def test_bad_input_is_rejected_counted_dead_lettered_and_harmless(server: Server) -> None:
    await asyncio.to_thread(_send_trace_with_sdk, server.url, Compression.NoCompression)
    async with httpx.AsyncClient() as c:
        bad = [
            ("/v1/traces", b"\xff\x00garbage" * 10, "application/x-protobuf"),
            ("/v1/metrics", b"{not json", "application/json"),
            ("/ingest/flows", b"STFB\x09\x00" + b"\x00" * 40, "application/x-topology-flows"),
            ("/ingest/catalog", b'[{"tier": 1}]', "application/json"),
            ("/ingest/health", b'[{"service": "x", "status": "HEALTHY"}]', "application/json"),
        ]
        for path, body, ctype in bad:
            r = await c.post(server.url + path, content=body, headers={"content-type": ctype})
            assert r.status_code == 400, (path, r.text)
        r = await c.post(
            server.url + "/v1/traces",
            content=b"\xff\x00garbage",
            headers={"content-type": "application/x-protobuf"},
        )
    assert r.content[:1] == rpc_status(3, "x")[:1]  # a google.rpc.Status, as OTLP/HTTP clients expect
    rejected = server.runtime.counters()["rejected"]
    assert sum(rejected.values()) == len(bad) + 1
    letters = [json.loads(line) for line in (server.data_dir / "dead-letters.jsonl").read_text().splitlines()]
    assert len(letters) == len(bad) + 1 and all(entry["reason"] for entry in letters)
    assert any("version" in entry["reason"] for entry in letters)
    server.clock[0] += 30
    await server.settle()  # the good trace sent before the bad input is still there
    assert ("checkout-api", "payments-api") in await server.app_edges(Layer.TRACE)
    async with httpx.AsyncClient() as c:
        metrics = (await c.get(server.url + "/metrics")).text
    assert "topology_ingest" in metrics

"""OTel SDK -> Collector (``docker/otelcol/otlphttp.yaml``, OTLP in, ``otlphttp`` out) -> the server's
OTLP/HTTP ingest behind a bearer token -> the expected TRACE and IPC edges.

The server runs in this event loop (uvicorn, on a real socket) with its clock pinned, so the test closes
windows itself instead of waiting for them; the Collector and the SDK exporters are real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import uvicorn

from service.app import create_app
from service.config import ServiceConfig
from service.receiver import ingest_routes
from service.runtime import Runtime
from service.tokens import new_token, token_line
from tests.integration.test_receiver import Server
from tests.kafka.harness import free_port, until
from tests.otelcol.conftest import Collector, StartCollector
from tests.otelcol.traffic import IPC_EDGES, SERVICES, TRACE_EDGES, send_ipc_metrics, send_traces
from topology.model import Layer
from topology.pipeline import Pipeline
from topology.store.embedded import open_stores

pytestmark = [pytest.mark.otelcol, pytest.mark.slow]

INGEST_TOKEN = new_token()


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """The app with authentication (one token, scope ``ingest``) and its ingest routes, on a free port."""
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(token_line("collector", ["ingest"], INGEST_TOKEN) + "\n", encoding="utf-8")
    config = ServiceConfig.from_env({"TOPOLOGY_TOKENS_FILE": str(tokens)})
    clock = [time.time()]
    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: clock[0])
    app = create_app(stores, config, runtime=runtime, extra_routes=ingest_routes(runtime))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        log_config=None))
    task = asyncio.create_task(srv.serve())
    await until(lambda: srv.started, 30, "uvicorn start")
    yield Server(f"http://127.0.0.1:{port}", stores, runtime, tmp_path, clock)
    srv.should_exit = True
    await task
    await stores.close()


def _collector_for(start_collector: StartCollector, server: Server,
                   token: str) -> Collector:
    return start_collector("otlphttp.yaml", {"TOPOLOGY_URL": server.url, "TOPOLOGY_INGEST_TOKEN": token})


async def test_spans_through_the_collector_become_the_expected_trace_edges(
        start_collector: StartCollector, server: Server) -> None:
    collector = _collector_for(start_collector, server, INGEST_TOKEN)
    ids = await asyncio.to_thread(send_traces, collector.endpoint, server.clock[0] - 20)
    spans = 6 * len(ids)
    await until(lambda: server.runtime.counters()["records"].get("spans", 0) == spans, 60,
                f"{spans} spans at the server")
    server.clock[0] += 30  # past the pairing wait: the root's caller becomes `user`, the database virtual
    await server.settle()
    assert await server.app_edges(Layer.TRACE) == TRACE_EDGES
    traces = await server.stores.catalog.recent_traces("ledger-api", 10)
    assert {t.trace_id for t in traces} == set(ids)
    assert collector.metric("otelcol_exporter_sent_spans") == spans
    assert collector.metric("otelcol_exporter_send_failed_spans") == 0
    assert not server.runtime.counters()["rejected"]
    assert collector.logged("warn", "error") == []  # no deprecated name, no failure


async def test_ipc_metrics_through_the_collector_become_the_expected_ipc_edges(
        start_collector: StartCollector, server: Server) -> None:
    collector = _collector_for(start_collector, server, INGEST_TOKEN)
    await asyncio.to_thread(send_ipc_metrics, collector.endpoint)
    await until(lambda: server.runtime.counters()["accepted"].get("metrics", 0) >= 1, 60,
                "metrics at the server")
    server.clock[0] += 120
    await server.settle()
    assert await server.app_edges(Layer.IPC) == IPC_EDGES
    assert collector.metric("otelcol_exporter_send_failed_metric_points") == 0
    assert collector.logged("warn", "error") == []  # no deprecated name, no failure


async def test_a_wrong_token_is_refused_and_nothing_is_ingested(
        start_collector: StartCollector, server: Server) -> None:
    collector = _collector_for(start_collector, server, new_token())
    await asyncio.to_thread(send_traces, collector.endpoint, server.clock[0] - 20, 1)
    # 401 is permanent for the exporter: it drops the batch and counts it as failed
    await until(lambda: collector.metric("otelcol_exporter_send_failed_spans") == 6, 60,
                "the Collector counting 6 refused spans")
    assert server.runtime.counters()["records"].get("spans", 0) == 0
    assert any("401" in line for line in collector.logged("error")), collector.logged("error")
    assert set(SERVICES).isdisjoint({s for e in await server.app_edges(Layer.TRACE) for s in e})

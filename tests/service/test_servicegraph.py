"""Grafana's service graph from our ``/metrics``: spans with known calls in, Tempo's families out.

The names Grafana's Tempo data source queries for its service graph are written down here from its source
(grafana/grafana, ``public/app/plugins/datasource/tempo/graphTransform.ts``: ``totalsMetric``,
``failedMetric``, ``secondsMetric``, ``histogramMetric``; it groups by the ``client`` and ``server``
labels), and the labels and histogram names from Tempo's metrics-generator (grafana/tempo,
``modules/generator/processor/servicegraphs/servicegraphs.go``: ``client``, ``server``,
``connection_type``; ``..._server_seconds`` and ``..._client_seconds``).
"""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ingest.metrics import WorkerMetrics
from tests.service.test_metrics import Embedded, embedded  # noqa: F401 (the fixture)
from tests.topology.stages.otlp_builders import resource_spans, span, traces
from topology.model import EdgeKey, EdgeWindow, Granularity, Layer
from topology.servicegraph import DEFAULT_BUCKETS
from topology.sketch import LatencySketch
from topology.stats import EdgeStats

#: What Grafana's Tempo data source queries to draw the service graph (graphTransform.ts).
GRAFANA_QUERIES = ("traces_service_graph_request_total", "traces_service_graph_request_failed_total",
                   "traces_service_graph_request_server_seconds_sum",
                   "traces_service_graph_request_server_seconds_bucket")
#: Tempo's labels on every service-graph series (servicegraphs.go), and its histograms.
TEMPO_LABELS = {"client", "server", "connection_type"}
HISTOGRAMS = ("traces_service_graph_request_server_seconds", "traces_service_graph_request_client_seconds")

#: Server-span durations of the web -> api calls; two of them fail.
WEB_API = (0.003, 0.003, 0.03, 0.03, 0.3, 1.2)
FAILED = {1, 4}
DB_CALLS = 3  # the first traces also query a database from api


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def graph_samples(found: list[Sample]) -> list[Sample]:
    return [s for s in found if s.name.startswith("traces_service_graph_")]


def value(found: list[Sample], name: str, **labels: str) -> float:
    got = [s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(got) == 1, (name, labels, got)
    return got[0]


def known_traces(start: float) -> bytes:
    """Six traces: user -> web (root server span), web -> api (client/server pair), and in the first
    three api -> a PostgreSQL database named ``orders`` (a client span with ``db.*`` attributes)."""
    web, api = [], []
    for i, dur in enumerate(WEB_API):
        t = i + 1
        web.append(span(t, 1, None, "server", start=start, duration=2.0))
        web.append(span(t, 2, 1, "client", start=start + 0.001, duration=dur + 0.002))
        api.append(span(t, 3, 2, "server", start=start + 0.002, duration=dur, error=i in FAILED))
        if i < DB_CALLS:
            api.append(span(t, 4, 3, "client", start=start + 0.003, duration=0.0005,
                            attributes={"db.system": "postgresql", "db.name": "orders"}))
    return traces(resource_spans("web", web), resource_spans("api", api)).SerializeToString()


async def test_known_calls_become_tempos_service_graph_series(embedded: Embedded) -> None:  # noqa: F811
    http, runtime = embedded.http, embedded.runtime
    r = await http.post("/v1/traces", content=known_traces(time.time() - 20),
                        headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 200, r.text
    before = samples((await http.get("/metrics")).text)
    assert not [s for s in before if s.name == "traces_service_graph_request_total"]  # windows still open
    await runtime.drain()
    text = (await http.get("/metrics")).text
    found = samples(text)

    for name in GRAFANA_QUERIES:  # every series Grafana asks for is there, with the labels it groups by
        series = [s for s in found if s.name == name]
        assert series, name
        assert all(set(s.labels) >= TEMPO_LABELS for s in series), name
    calls = {(s.labels["client"], s.labels["server"], s.labels["connection_type"]): s.value
             for s in found if s.name == "traces_service_graph_request_total"}
    assert calls == {("user", "web", "virtual_node"): 6, ("web", "api", ""): len(WEB_API),
                     ("api", "orders", "database"): DB_CALLS}
    failed = {(s.labels["client"], s.labels["server"]): s.value
              for s in found if s.name == "traces_service_graph_request_failed_total"}
    assert failed == {("user", "web"): 0, ("web", "api"): len(FAILED), ("api", "orders"): 0}

    edge = {"client": "web", "server": "api", "connection_type": ""}
    for hist in HISTOGRAMS:
        assert value(found, hist + "_count", **edge) == len(WEB_API)
        assert value(found, hist + "_sum", **edge) == pytest.approx(sum(WEB_API), rel=1e-6)
        for le in DEFAULT_BUCKETS:
            expected = sum(1 for d in WEB_API if d <= le)  # no duration within 2% of a bound
            assert value(found, hist + "_bucket", le=repr(le), **edge) == expected, (hist, le)
        assert value(found, hist + "_bucket", le="+Inf", **edge) == len(WEB_API)

    await runtime.drain()  # flushing again counts nothing twice
    again = samples((await http.get("/metrics")).text)
    assert graph_samples(again) == graph_samples(found)


def test_a_kafka_workers_endpoint_serves_the_same_families() -> None:
    metrics = WorkerMetrics()
    stats = EdgeStats(requests=4, errors=1, latency=LatencySketch.of([0.02] * 4), latency_sum=0.08)
    window = EdgeWindow(EdgeKey(Layer.TRACE, Granularity.APP, "web", "api"), 1_800_000_000, 60, stats)
    metrics.service_graph.observe([window], 1_800_000_060, "trace.stage3/0")
    found = samples(generate_latest(metrics.registry).decode())
    for name in GRAFANA_QUERIES:
        labels = {"le": "+Inf"} if name.endswith("_bucket") else {}
        assert value(found, name, client="web", server="api", connection_type="", **labels) > 0
    assert value(found, "traces_service_graph_request_failed_total", client="web", server="api") == 1
    assert value(found, "topology_service_graph_folded_total") == 0

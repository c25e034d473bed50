"""Hand-built telemetry with known edges, sent with the OpenTelemetry SDK's OTLP/HTTP exporters (to a
Collector), as instrumented services would send it.

Traces (one per call of :func:`send_traces`, all of the same shape; each service has its own SDK
resource, so the Collector receives them as separate resources, as from separate processes)::

    (no parent) --SERVER--> checkout-api --CLIENT/SERVER--> payments-api --CLIENT/SERVER--> ledger-api
                                                            payments-api --CLIENT (db)--> payments-db

IPC call metrics: ``catalog-api`` as a client of ``pricing-api`` (OTel ``rpc.client.call.duration``) and of
``inventory-api`` (Spectator ``ipc.client.call``), delta histograms in seconds.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Span, SpanKind

SERVICES = ("checkout-api", "payments-api", "ledger-api")
TRACE_EDGES = {("user", "checkout-api"), ("checkout-api", "payments-api"), ("payments-api", "ledger-api"),
               ("payments-api", "payments-db")}
IPC_EDGES = {("catalog-api", "pricing-api"), ("catalog-api", "inventory-api")}
CALLS = 20  # per IPC series


def send_traces(endpoint: str, start: float, traces: int = 3) -> list[str]:
    """Send ``traces`` traces of the shape above, the first starting at ``start`` (seconds), one second
    apart, through the Collector at ``endpoint`` (its OTLP/HTTP base URL). Returns their trace ids."""
    providers = {s: TracerProvider(resource=Resource.create({"service.name": s})) for s in SERVICES}
    for p in providers.values():  # an exporter each: a provider's shutdown shuts its exporter down
        p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    ids = []
    for i in range(traces):
        t = int((start + i) * 1e9)
        ms = 1_000_000

        def span(service: str, name: str, kind: SpanKind, parent: Span | None, begin: int, end: int,
                 **attributes: str) -> Span:
            ctx = trace.set_span_in_context(parent) if parent is not None else None
            s = providers[service].get_tracer("tests.otelcol").start_span(
                name, context=ctx, kind=kind, attributes=attributes, start_time=begin)
            s.end(end_time=end)
            return s

        root = span("checkout-api", "POST /checkout", SpanKind.SERVER, None, t, t + 50 * ms)
        charge = span("checkout-api", "charge", SpanKind.CLIENT, root, t + 2 * ms, t + 40 * ms)
        pay = span("payments-api", "charge", SpanKind.SERVER, charge, t + 3 * ms, t + 39 * ms)
        append = span("payments-api", "append", SpanKind.CLIENT, pay, t + 5 * ms, t + 20 * ms)
        span("ledger-api", "append", SpanKind.SERVER, append, t + 6 * ms, t + 19 * ms)
        span("payments-api", "SELECT accounts", SpanKind.CLIENT, pay, t + 21 * ms, t + 30 * ms,
             **{"db.system.name": "postgresql", "db.namespace": "payments-db"})
        ids.append(format(root.get_span_context().trace_id, "032x"))
    for p in providers.values():
        p.shutdown()
    return ids


def send_ipc_metrics(endpoint: str) -> None:
    """Export the IPC call metrics above once, through the Collector at ``endpoint``."""
    exporter = OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=10,
                                  preferred_temporality={Histogram: AggregationTemporality.DELTA})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "catalog-api"}),
                             metric_readers=[reader])
    meter = provider.get_meter("tests.otelcol")
    rpc = meter.create_histogram("rpc.client.call.duration", unit="s")
    ipc = meter.create_histogram("ipc.client.call", unit="s")
    for i in range(CALLS):
        rpc.record(0.012, {"service.peer.name": "pricing-api", "rpc.system.name": "grpc",
                           "rpc.method": "pricing.v1.Prices/Get"})
        ipc.record(0.004, {"ipc.server.app": "inventory-api", "ipc.endpoint": "/stock",
                           "ipc.result": "failure" if i == 0 else "success",
                           "ipc.status": "unexpected_error" if i == 0 else "success"})
    reader.collect()
    provider.shutdown()

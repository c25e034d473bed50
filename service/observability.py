"""The service's own telemetry: Prometheus metrics, OpenTelemetry tracing of resolvers, store timing.

Metrics (one registry per app, served at ``/metrics``):

==========================================  =========  ==============================================
``topology_graphql_requests_total``         counter    operations by ``operation`` and ``outcome``
                                                       (ok / error)
``topology_graphql_request_seconds``        histogram  operation latency by ``operation``
``topology_graphql_errors_total``           counter    errors returned, by ``code``
``topology_store_seconds``                  histogram  store call latency by ``store`` (NETWORK, IPC,
                                                       TRACE, CATALOG) and ``method``
``topology_store_errors_total``             counter    store calls that raised, by ``store``, ``method``
``topology_ingest_<group>``                 gauge      the ingest runtime's counters (``key`` label),
                                                       when the app is given one
==========================================  =========  ==============================================

Operation names come from clients: at most :data:`MAX_OPERATIONS` distinct names get their own
label value, the rest count as ``other``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from strawberry.extensions import SchemaExtension

from service.config import ServiceConfig
from topology.model import Layer
from topology.store.base import CatalogStore, LayerStore, Stores

__all__ = ["IngestCollector", "Metrics", "MetricsExtension", "timed_stores", "tracer_provider_for"]

log = logging.getLogger("service.observability")

MAX_OPERATIONS = 200
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("topology_graphql_requests", "GraphQL operations", ["operation", "outcome"],
                                registry=r)
        self.latency = Histogram("topology_graphql_request_seconds", "GraphQL operation latency",
                                 ["operation"], buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("topology_graphql_errors", "GraphQL errors returned, by extensions.code",
                              ["code"], registry=r)
        self.store_seconds = Histogram("topology_store_seconds", "Store call latency", ["store", "method"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("topology_store_errors", "Store calls that raised", ["store", "method"],
                                    registry=r)
        self._operations: set[str] = set()

    def operation_label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        name = name[:64]
        if name in self._operations:
            return name
        if len(self._operations) >= MAX_OPERATIONS:
            return "other"
        self._operations.add(name)
        return name

    def count_error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def add_ingest(self, source: Any) -> None:
        """Expose an ingest runtime's counters: anything with ``counters() -> dict`` (nested dicts of
        numbers), or a ready prometheus_client Collector."""
        if hasattr(source, "collect") and callable(source.collect):
            self.registry.register(cast(Collector, source))
        elif hasattr(source, "counters") and callable(source.counters):
            self.registry.register(IngestCollector(source.counters))
        else:
            raise TypeError("an ingest source needs counters() or collect()")


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)


class IngestCollector(Collector):
    """``topology_ingest_<group>{key=...}`` gauges from a ``counters()`` snapshot taken at scrape time."""

    def __init__(self, counters: Callable[[], Mapping[str, Any]]) -> None:
        self._counters = counters

    def collect(self) -> Iterable[Metric]:
        try:
            snapshot = self._counters()
        except Exception:  # a scrape must not fail because ingest is busy
            log.exception("could not read the ingest counters")
            return
        for group, value in sorted(snapshot.items()):
            flat: dict[str, float] = {}
            _flatten("", value, flat)
            if not isinstance(value, Mapping):
                flat = {"total": flat[""]} if "" in flat else {}
            name = "topology_ingest_" + "".join(c if c.isalnum() else "_" for c in str(group)).lower()
            family = GaugeMetricFamily(name, f"ingest counters: {group}", labels=["key"])
            for key, v in sorted(flat.items()):
                family.add_metric([key], v)
            yield family


class MetricsExtension(SchemaExtension):
    """Counts and times each operation (reads ``metrics`` from the request context)."""

    def on_operation(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        metrics = getattr(self.execution_context.context, "metrics", None)
        if not isinstance(metrics, Metrics):
            return
        op = metrics.operation_label(self.execution_context.operation_name)
        result = self.execution_context.result
        outcome = "error" if result is not None and getattr(result, "errors", None) else "ok"
        metrics.requests.labels(op, outcome).inc()
        metrics.latency.labels(op).observe(time.perf_counter() - start)


class _Timed:
    """Delegates to a store, timing every coroutine method call."""

    def __init__(self, inner: Any, label: str, metrics: Metrics) -> None:
        self._inner = inner
        self._label = label
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        """Called once per method name: the wrapper is then kept as an attribute of this object."""
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        seconds = self._metrics.store_seconds.labels(self._label, name)
        errors = self._metrics.store_errors.labels(self._label, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            except Exception:
                errors.inc()
                raise
            finally:
                seconds.observe(time.perf_counter() - start)

        setattr(self, name, call)
        return call


def timed_stores(stores: Stores, metrics: Metrics) -> Stores:
    """The same stores, with every call timed into ``topology_store_seconds``."""
    layers: dict[Layer, LayerStore] = {
        layer: cast(LayerStore, _Timed(s, layer.value, metrics)) for layer, s in stores.layers.items()
    }
    return Stores(layers=layers, catalog=cast(CatalogStore, _Timed(stores.catalog, "CATALOG", metrics)))


def tracer_provider_for(config: ServiceConfig) -> TracerProvider | None:
    """A tracer provider exporting over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else None."""
    if not config.otlp_endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp-proto-http is not "
                    "installed: resolver traces are not exported")
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": config.otel_service_name}))
    endpoint = config.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("exporting resolver traces", extra={"endpoint": endpoint})
    return provider


def global_tracer_provider() -> trace.TracerProvider | None:
    """The process-wide provider when an SDK one was installed (e.g. by auto-instrumentation)."""
    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None

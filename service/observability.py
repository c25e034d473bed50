"""The service's own telemetry: Prometheus metrics, OpenTelemetry tracing of resolvers, store timing.

Metrics (one registry per app, served at ``/metrics``; the README's "Metrics" section lists them
all). Counts are counters (``_total``), durations ``_duration_seconds`` histograms, and every label
value comes from a small fixed set:

==============================================  =========  ==========================================
``topology_graphql_requests_total``             counter    operations by ``operation`` and ``outcome``
                                                           (ok / error)
``topology_graphql_request_duration_seconds``   histogram  operation latency by ``operation``
``topology_graphql_errors_total``               counter    errors returned, by ``code``
``topology_store_duration_seconds``             histogram  store call latency by ``store`` (NETWORK,
                                                           IPC, TRACE, CATALOG) and ``method``
``topology_store_errors_total``                 counter    store calls that raised, by ``store``,
                                                           ``method``
``topology_http_requests_total``                counter    HTTP requests by ``route`` and ``status``
                                                           class (2xx, 4xx, 5xx)
``topology_http_request_duration_seconds``      histogram  HTTP request latency by ``route``
``topology_http_refused_total``                 counter    requests refused before their route answered
                                                           (:mod:`service.limits`), by ``refusal``
``topology_ingest_*``                           counter    the ingest counts under the names the Kafka
                                                           workers use (:mod:`ingest.metrics`), from
                                                           the embedded runtime and the in-process
                                                           Kafka workers, when the app has them
``topology_service_graph_folded_total``         counter    TRACE windows counted under ``other``: more
                                                           (client, server) pairs than the service graph
                                                           keeps (:mod:`topology.servicegraph`)
``traces_service_graph_*``                      various    Tempo's service-graph families (Grafana's
                                                           service graph), from the embedded runtime and
                                                           the in-process Kafka TRACE stage 3
``process_*``, ``python_*``                     various    the process (CPU, memory, descriptors) and
                                                           the interpreter (version, garbage collector)
==============================================  =========  ==========================================

Bounded labels: ``operation`` is the client's operation name for the first
:data:`MAX_OPERATIONS` distinct well-formed names, ``other`` after that (``anonymous`` without a
name); ``code`` is one of :data:`ERROR_CODES` or ``OTHER``; ``route`` is a route template of the
app or ``other``; the ingest ``reason`` is a class of :data:`topology.admit.REASON_CLASSES`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from ingest.metrics import (
    DEAD_LETTERS,
    DROP_REASONS,
    DROPPED,
    DURATION_BUCKETS,
    ITEMS_IN,
    ITEMS_OUT,
    RECORDS,
    STAGE_EVENTS,
    ServiceGraphCollector,
    add_process_collectors,
)
from service.config import ServiceConfig
from service.limits import REASONS as REFUSALS
from topology.admit import OTHER, REASON_CLASSES
from topology.model import Layer
from topology.pipeline import PipelineOutput
from topology.servicegraph import ServiceGraph
from topology.store.base import CatalogStore, LayerStore, StoreProxy, Stores

__all__ = ["ERROR_CODES", "MAX_OPERATIONS", "IngestCollector", "Metrics", "MetricsExtension", "RouteMetrics",
           "runtime_service_graph", "timed_stores", "tracer_provider_for"]

log = logging.getLogger("service.observability")

#: Operation names that get their own label value; later new names count as ``other``.
MAX_OPERATIONS = 32
#: The ``code`` label's values (``extensions.code`` of this service's errors); any other is ``OTHER``.
ERROR_CODES = frozenset({"BAD_USER_INPUT", "UNAVAILABLE", "INTERNAL_SERVER_ERROR", "GRAPHQL_PARSE_FAILED",
                         "GRAPHQL_VALIDATION_FAILED", "TIMEOUT"})
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        add_process_collectors(r)
        self.requests = Counter("topology_graphql_requests", "GraphQL operations", ["operation", "outcome"],
                                registry=r)
        self.latency = Histogram("topology_graphql_request_duration_seconds", "GraphQL operation latency",
                                 ["operation"], buckets=DURATION_BUCKETS, registry=r)
        self.errors = Counter("topology_graphql_errors", "GraphQL errors returned, by extensions.code",
                              ["code"], registry=r)
        self.store_seconds = Histogram("topology_store_duration_seconds", "Store call latency",
                                       ["store", "method"], buckets=DURATION_BUCKETS, registry=r)
        self.store_errors = Counter("topology_store_errors", "Store calls that raised", ["store", "method"],
                                    registry=r)
        self.http_requests = Counter("topology_http_requests", "HTTP requests, by route and status class",
                                     ["route", "status"], registry=r)
        self.http_seconds = Histogram("topology_http_request_duration_seconds", "HTTP request latency (until "
                                      "the response is sent)", ["route"], buckets=DURATION_BUCKETS,
                                      registry=r)
        self.refused = Counter("topology_http_refused", "Requests refused before their route answered, by "
                               "refusal (limit, timeout, overload, decode)", ["refusal"], registry=r)
        for refusal in REFUSALS:  # every series from the start, at 0
            self.refused.labels(refusal)
        self.ingest = IngestCollector()
        r.register(self.ingest)
        self.service_graph = ServiceGraphCollector()  # the graphs are added with add_service_graph
        r.register(self.service_graph)
        self._operations: set[str] = set()

    def operation_label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        if name in self._operations:
            return name
        if len(self._operations) >= MAX_OPERATIONS or not _NAME.fullmatch(name):
            return "other"
        self._operations.add(name)
        return name

    def count_error(self, code: str) -> None:
        self.errors.labels(code if code in ERROR_CODES else "OTHER").inc()

    def add_ingest(self, source: Any) -> None:
        """Expose ingest counts: an embedded runtime (anything with ``counters()`` shaped like
        :meth:`service.runtime.Runtime.counters`), or a prometheus_client Collector / registry with
        the Kafka workers' metrics (:attr:`ingest.metrics.WorkerMetrics.ingest`)."""
        self.ingest.add(source)

    def add_service_graph(self, graph: ServiceGraph) -> None:
        """Expose the ``traces_service_graph_*`` counts of ``graph`` (:mod:`topology.servicegraph`)."""
        self.service_graph.add(graph)


# An embedded input kind -> the layer whose stage 1 takes it in Kafka mode.
_KIND_LAYER = {"flows": "network", "vpcflows": "network", "metrics": "ipc", "spans": "trace",
               "catalog": "meta", "health": "meta", "addresses": "meta"}
# A pure stage of the embedded pipeline -> (layer, stage, event prefix) of the Kafka stage running it.
_STAGE_OF = {"network_stage1": ("network", "1", ""), "network_vpc": ("network", "1", "vpc_"),
             "network_stage2": ("network", "2", ""), "ipc_stage1": ("ipc", "2", ""),
             "ipc_stage2": ("ipc", "2", "stage2_"), "trace_pairing": ("trace", "2", ""),
             "final": ("all", "3", "")}


def runtime_service_graph(metrics: Metrics) -> Callable[[PipelineOutput], None]:
    """A listener for :attr:`service.runtime.Runtime.flushed`: counts the TRACE windows each flush
    completes in a service graph that ``metrics`` exposes (:mod:`topology.servicegraph`)."""
    graph = ServiceGraph()
    metrics.add_service_graph(graph)

    def count(out: PipelineOutput) -> None:
        graph.observe(out.windows.get(Layer.TRACE, ()), out.watermark, "embedded")
        graph.observe_late(out.late.get(Layer.TRACE, ()), "embedded")

    return count


class IngestCollector(Collector):
    """The ``topology_ingest_*`` families of every ingest source of the app, merged by name.

    An embedded runtime's ``counters()`` (a snapshot taken at scrape time) becomes the counters a
    Kafka worker exposes (:data:`ingest.metrics.SHARED`): its inputs are stage 1 of their layer, the
    windows it writes stage 3, its stage counts those of the Kafka stage running the same pure stage.
    Samples two sources give with the same labels (the meta records of an embedded runtime and of
    an in-process meta worker) are added up.
    """

    def __init__(self) -> None:
        self._runtimes: list[Callable[[], Mapping[str, Any]]] = []
        self._collectors: list[Any] = []

    def add(self, source: Any) -> None:
        if hasattr(source, "collect") and callable(source.collect):
            self._collectors.append(source)
        elif hasattr(source, "counters") and callable(source.counters):
            self._runtimes.append(source.counters)
        else:
            raise TypeError("an ingest source needs counters() or collect()")

    def collect(self) -> Iterable[Metric]:
        families: list[Metric] = []
        for counters in self._runtimes:
            try:
                snapshot = counters()
            except Exception:  # a scrape must not fail because ingest is busy
                log.exception("could not read the ingest counters")
                continue
            families.extend(runtime_families(snapshot))
        for collector in self._collectors:
            families.extend(collector.collect())
        return _merged(families)


def runtime_families(snapshot: Mapping[str, Any]) -> list[Metric]:
    """The :data:`ingest.metrics.SHARED` counters of an embedded runtime's ``counters()``."""
    records, items_in, items_out = RECORDS.snapshot(), ITEMS_IN.snapshot(), ITEMS_OUT.snapshot()
    dead, events, dropped = DEAD_LETTERS.snapshot(), STAGE_EVENTS.snapshot(), DROPPED.snapshot()
    rejected: dict[tuple[str, str], float] = {}
    for key, n in _numbers(snapshot.get("rejected")):
        kind, _, cls = key.partition(":")
        label = (_layer_of(kind), cls if cls in REASON_CLASSES else OTHER)
        rejected[label] = rejected.get(label, 0) + n
    for (layer, cls), n in sorted(rejected.items()):
        dead.add_metric([layer, "1", cls], n)
    for layer, n in _by_layer(_numbers(snapshot.get("received"))):
        records.add_metric([layer, "1"], n)
    for layer, n in _by_layer(_numbers(snapshot.get("records"))):
        items_in.add_metric([layer, "1"], n)
    for layer, n in _numbers(snapshot.get("windows_written")):
        items_out.add_metric([layer.lower(), "3"], n)
    stages = snapshot.get("stages")
    for group, counts in sorted(stages.items()) if isinstance(stages, Mapping) else ():
        layer, stage, prefix = _STAGE_OF.get(group, ("all", "1", f"{group}_"))
        for name, n in _numbers(counts):
            events.add_metric([layer, stage, prefix + name], n)
            if name in DROP_REASONS:
                dropped.add_metric([layer, stage, DROP_REASONS[name]], n)
    return [records, items_in, items_out, dead, events, dropped]


def _numbers(value: Any) -> list[tuple[str, float]]:
    if not isinstance(value, Mapping):
        return []
    return [(str(k), float(v)) for k, v in sorted(value.items())
            if isinstance(v, int | float) and not isinstance(v, bool)]


def _layer_of(kind: str) -> str:
    return _KIND_LAYER.get(kind, "other")


def _by_layer(counts: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    out: dict[str, float] = {}
    for kind, n in counts:
        out[_layer_of(kind)] = out.get(_layer_of(kind), 0) + n
    return sorted(out.items())


def _merged(families: Iterable[Metric]) -> list[Metric]:
    """One family per name (the exposition format allows no repeats), samples with equal labels added
    up (``_created`` timestamps: the earliest)."""
    by_name: dict[str, Metric] = {}
    for family in families:
        into = by_name.get(family.name)
        if into is None:
            into = by_name[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
        into.samples.extend(family.samples)
    for family in by_name.values():
        seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        samples: list[Sample] = []
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            at = seen.get(key)
            if at is None:
                seen[key] = len(samples)
                samples.append(sample)
            else:
                have = samples[at]
                value = (min(have.value, sample.value) if sample.name.endswith("_created")
                         else have.value + sample.value)
                samples[at] = have._replace(value=value)
        family.samples = samples
    return list(by_name.values())


MAX_PATHS = 1024  # distinct request paths whose route template RouteMetrics remembers


class RouteMetrics:
    """ASGI middleware counting and timing HTTP requests by route template (``other`` for a path no
    route matches) and status class."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = [r for r in routes if isinstance(r, Route | Mount)]
        self._paths: dict[str, str] = {}  # path -> route template: matching every route costs per request

    def _route(self, scope: Scope) -> str:
        path = scope["path"]
        known = self._paths.get(path)
        if known is not None:
            return known
        template = "other"
        for route in self.routes:
            match, _ = route.matches(scope)  # a path matches a route or not whatever its method
            if match is not Match.NONE:
                template = route.path
                break
        if len(self._paths) < MAX_PATHS:  # paths with parameters, or a scan, fill it: then match each
            self._paths[path] = template
        return template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        status = 500  # unless the app answers

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, sent)
        finally:
            self.metrics.http_requests.labels(route, f"{status // 100}xx").inc()
            self.metrics.http_seconds.labels(route).observe(time.perf_counter() - start)


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


class _Timed(StoreProxy):
    """Delegates to a store, timing every coroutine method call."""

    def __init__(self, inner: Any, label: str, metrics: Metrics) -> None:
        super().__init__(inner)
        self._label = label
        self._metrics = metrics

    def _wrap(self, name: str, method: Callable[..., Coroutine[Any, Any, Any]]
              ) -> Callable[..., Coroutine[Any, Any, Any]]:
        seconds = self._metrics.store_seconds.labels(self._label, name)
        errors = self._metrics.store_errors.labels(self._label, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            except Exception:
                errors.inc()
                raise
            finally:
                seconds.observe(time.perf_counter() - start)

        return call


def timed_stores(stores: Stores, metrics: Metrics) -> Stores:
    """The same stores, with every call timed into ``topology_store_duration_seconds``."""
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

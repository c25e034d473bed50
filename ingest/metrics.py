"""Prometheus metrics of ingestion: one set of names for the Kafka workers and the embedded runtime.

A count is a counter (its name ends in ``_total``), a duration a ``_duration_seconds`` histogram, a
level a gauge; label values come from small fixed sets only (``layer``, ``stage``, the ``reason``
class of :mod:`topology.admit`, the ``event`` names the pure stages count), never from inputs.

The ingest counts (:data:`SHARED`) have the same names and labels in both modes: a Kafka worker
serves them on its own ``/metrics`` (:class:`WorkerMetrics`), the server of ``topology demo`` /
``serve`` on its ``/metrics`` from the embedded runtime's counters (:mod:`service.observability`).
Embedded mode labels its inputs ``stage="1"`` of their layer (catalog, health and leases are layer
``meta``), the windows it writes ``stage="3"``, its stage counts as the Kafka stage running the
same pure stage would (the one final stage of every layer is ``layer="all"``).

===========================================  =========  ==============================  =====
name                                         type       labels                          modes
===========================================  =========  ==============================  =====
``topology_ingest_records_total``            counter    layer, stage                    both
``topology_ingest_items_in_total``           counter    layer, stage                    both
``topology_ingest_items_out_total``          counter    layer, stage                    both
``topology_ingest_dead_letters_total``       counter    layer, stage, reason            both
``topology_ingest_stage_events_total``       counter    layer, stage, event             both
``topology_ingest_dropped_total``             counter    layer, stage, reason            both
``topology_ingest_batch_duration_seconds``   histogram  layer, stage                    Kafka
``topology_ingest_commit_duration_seconds``  histogram  layer, stage                    Kafka
``topology_ingest_commits_total``            counter    layer, stage                    Kafka
``topology_ingest_restarts_total``           counter    layer, stage                    Kafka
``topology_ingest_state_refused_total``      counter    layer, stage                    Kafka
``topology_ingest_fenced_total``             counter    layer, stage                    Kafka
``topology_ingest_store_retries_total``      counter    layer, stage                    Kafka
``topology_ingest_lag_records``              gauge      layer, stage, topic, partition  Kafka
``topology_ingest_event_time_lag_seconds``   gauge      layer, stage                    Kafka
``topology_ingest_clock_seconds``            gauge      layer, stage                    Kafka
``topology_ingest_paused``                   gauge      layer, stage                    Kafka
``topology_ingest_reorder_buffer_items``     gauge      layer, stage                    Kafka
===========================================  =========  ==============================  =====

(``topic`` and ``partition`` of the lag are bounded by the topic layout, :mod:`ingest.topics`.)
A worker's endpoint also serves the ``process_*`` and ``python_*`` metrics of its process, and a
TRACE stage-3 worker's the Tempo-compatible ``traces_service_graph_*`` families and
``topology_service_graph_folded_total`` (:mod:`topology.servicegraph`, :class:`ServiceGraphCollector`).
The README's "Metrics" section says what each one counts.

Each worker process gets its own registry (several workers may share it, told apart by ``layer``
and ``stage``). The endpoint listens on :data:`DEFAULT_METRICS_HOST` (every interface, so that
Prometheus in a cluster can scrape it) and, from the command line, :data:`DEFAULT_METRICS_PORT`.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from topology.admit import reason_class
from topology.servicegraph import FAILED_TOTAL, HISTOGRAMS, REQUEST_TOTAL, ServiceGraph
from topology.servicegraph import LABELS as GRAPH_LABELS

__all__ = ["DEAD_LETTERS", "DEFAULT_METRICS_HOST", "DEFAULT_METRICS_PORT", "DROPPED", "DROP_REASONS",
           "DURATION_BUCKETS", "ITEMS_IN", "ITEMS_OUT", "LEVELS", "RECORDS", "SHARED", "STAGE_EVENTS",
           "Family", "ServiceGraphCollector", "WorkerMetrics", "add_process_collectors"]

log = logging.getLogger("ingest.metrics")

#: The worker's metrics endpoint: every interface, and the command line's default port.
DEFAULT_METRICS_HOST = "0.0.0.0"
DEFAULT_METRICS_PORT = 9464
#: Entries of a stage's ``counters()`` that are levels (how much is held now), not counts.
LEVELS = frozenset({"reorder_buffer"})

LABELS = ("layer", "stage")
# The text format shows each counter's ``_created`` time as a gauge of its own: twice the series, and
# a gauge beside every count. Off for every registry of the process (the server's too).
disable_created_metrics()
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Family:
    """A counter both modes expose: ``name`` without the ``_total`` prometheus_client adds."""

    name: str
    help: str
    labels: tuple[str, ...] = LABELS

    def counter(self, registry: CollectorRegistry) -> Counter:
        return Counter(self.name, self.help, self.labels, registry=registry)

    def snapshot(self) -> CounterMetricFamily:
        """An empty family of this counter for a collector that reads counts at scrape time."""
        return CounterMetricFamily(self.name, self.help, labels=self.labels)


RECORDS = Family("topology_ingest_records", "Input records taken in (Kafka records; HTTP or demo payloads), "
                 "rejected ones included")
ITEMS_IN = Family("topology_ingest_items_in", "Items inside the records taken in (flow records, metric "
                  "points, spans, catalog records; repartitioned items in Kafka stages 2 and 3)")
ITEMS_OUT = Family("topology_ingest_items_out", "Items produced to the next topic, or windows written to "
                   "the stores")
DEAD_LETTERS = Family("topology_ingest_dead_letters", "Rejected input records (dead letters), by reason "
                      "class", (*LABELS, "reason"))
STAGE_EVENTS = Family("topology_ingest_stage_events", "What the pure stages count (late data, unresolved "
                      "addresses, pairs, ...), by event", (*LABELS, "event"))
DROPPED = Family("topology_ingest_dropped", "Admitted data a stage dropped, by reason: too_late (a window "
                 "older than the retention of minute windows), capacity (spans beyond the pairing capacity)",
                 (*LABELS, "reason"))
#: Stage events that drop data, and the ``reason`` of ``topology_ingest_dropped_total`` they count as.
DROP_REASONS = {"late_dropped": "too_late", "dropped": "capacity"}
#: The counters of both modes, same names and labels.
SHARED = (RECORDS, ITEMS_IN, ITEMS_OUT, DEAD_LETTERS, STAGE_EVENTS, DROPPED)


def add_process_collectors(registry: CollectorRegistry) -> None:
    """``process_*`` (CPU, memory, file descriptors) and ``python_*`` (version, garbage collector)."""
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)


class WorkerMetrics:
    """The metrics of the Kafka workers of one process.

    ``ingest`` holds the ingest metrics alone (what the server adds to its own ``/metrics`` when it
    runs workers in-process); ``registry`` adds the process collectors and is what :meth:`serve`
    serves.
    """

    def __init__(self) -> None:
        self.ingest = r = CollectorRegistry()
        self.records_in = RECORDS.counter(r)
        self.items_in = ITEMS_IN.counter(r)
        self.items_out = ITEMS_OUT.counter(r)
        self.dlq = DEAD_LETTERS.counter(r)
        self.stage_events = STAGE_EVENTS.counter(r)
        self.dropped = DROPPED.counter(r)
        self.batch_seconds = Histogram("topology_ingest_batch_duration_seconds", "Processing time of one "
                                       "consumed batch", LABELS, buckets=DURATION_BUCKETS, registry=r)
        self.commit_seconds = Histogram("topology_ingest_commit_duration_seconds",
                                        "Time to make one checkpoint durable (store writes, transaction)",
                                        LABELS, buckets=DURATION_BUCKETS, registry=r)
        self.commits = Counter("topology_ingest_commits", "Checkpoints committed", LABELS, registry=r)
        self.state_refused = Counter(
            "topology_ingest_state_refused", "Checkpoints not restored (another format such as "
            "pickle, malformed, not decodable): the partition started empty from its committed offset",
            LABELS, registry=r)
        self.fenced = Counter("topology_ingest_fenced", "Commits refused because the worker was no longer a "
                              "member of its group's current generation (it stalled and lost its "
                              "partitions) or its producer was fenced by the broker: outputs dropped, "
                              "session restarted", LABELS, registry=r)
        self.restarts = Counter("topology_ingest_restarts", "Recoveries from Kafka errors (restart from "
                                "the last checkpoint)", LABELS, registry=r)
        self.store_errors = Counter("topology_ingest_store_retries", "Store writes that failed and were "
                                    "retried (consumption pauses meanwhile)", LABELS, registry=r)
        self.lag = Gauge("topology_ingest_lag_records", "Records between the committed-to-be position and "
                         "the partition's end", (*LABELS, "topic", "partition"), registry=r)
        self.event_lag = Gauge("topology_ingest_event_time_lag_seconds", "Wall clock minus the slowest "
                               "partition's event-time clock", LABELS, registry=r)
        self.clock = Gauge("topology_ingest_clock_seconds", "Event-time clock of the slowest partition "
                           "(windows up to it, minus the lateness, are complete)", LABELS, registry=r)
        self.paused = Gauge("topology_ingest_paused", "1 while consumption is paused (a store is "
                            "unavailable)", LABELS, registry=r)
        self.reorder_buffer = Gauge("topology_ingest_reorder_buffer_items", "Inputs held in the event-time "
                                    "reorder buffers of stage 2", LABELS, registry=r)
        self.registry = CollectorRegistry()
        add_process_collectors(self.registry)
        self.registry.register(_Registry(self.ingest))
        #: What this process's TRACE stage-3 workers finalise (:mod:`topology.servicegraph`).
        self.service_graph = ServiceGraph()
        self.registry.register(ServiceGraphCollector([self.service_graph]))
        # per worker: the stage logics seen at the last count, each with the counts it had then
        self._seen: dict[str, dict[int, tuple[Any, Mapping[str, int]]]] = {}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def dead_letter(self, labels: Mapping[str, str], reason: str) -> None:
        """Count one rejected record under the class of its ``reason`` (:mod:`topology.admit`)."""
        self.dlq.labels(reason=reason_class(reason), **labels).inc()

    def count_stages(self, worker: str, labels: Mapping[str, str], logics: Iterable[Any]) -> None:
        """Advance ``topology_ingest_stage_events_total`` by what each partition's logic (anything with
        ``counters() -> dict[str, int]``) counted since the last call for this ``worker``.

        A logic seen for the first time (a partition just assigned, fresh or restored from its
        checkpoint) only sets its baseline: what a restored state carries was counted by whoever
        owned it before. Call it right after the partitions are made, and after each checkpoint.
        Entries in :data:`LEVELS` set ``topology_ingest_reorder_buffer_items`` instead.
        """
        before = self._seen.get(worker, {})
        seen: dict[int, tuple[Any, Mapping[str, int]]] = {}
        added: dict[str, int] = defaultdict(int)
        level = 0
        for logic in logics:
            counts = logic.counters()
            last = before.get(id(logic))
            base = last[1] if last is not None and last[0] is logic else None
            for name, value in counts.items():
                if name in LEVELS:
                    level += value
                elif base is None:
                    added[name] += 0  # the series exists from the start, at zero
                else:
                    added[name] += max(0, value - base.get(name, 0))
            seen[id(logic)] = (logic, counts)
        self._seen[worker] = seen
        for reason in sorted(set(DROP_REASONS.values())):  # the series exist from the start, at zero
            self.dropped.labels(reason=reason, **labels)
        for name, n in added.items():
            self.stage_events.labels(event=name, **labels).inc(n)
            if name in DROP_REASONS:
                self.dropped.labels(reason=DROP_REASONS[name], **labels).inc(n)
        self.reorder_buffer.labels(**labels).set(level)

    def serve(self, port: int, host: str = DEFAULT_METRICS_HOST) -> int:
        """Serve ``/metrics`` on ``host:port`` (port 0: any free port); returns the port. Workers
        sharing this object share the endpoint: only the first call starts it."""
        if self._server is not None:
            return int(self._server.server_port)
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        bound = int(server.server_port)
        log.info("metrics endpoint", extra={"url": f"http://{host}:{bound}/metrics"})
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Registry(Collector):
    """A registry seen as one collector of another (its metrics, collected at scrape time)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Any]:
        return self._registry.collect()


FOLDED = "topology_service_graph_folded"


class ServiceGraphCollector(Collector):
    """The ``traces_service_graph_*`` families of some :class:`ServiceGraph` objects (series with the
    same labels added up) and ``topology_service_graph_folded_total``, read at scrape time."""

    def __init__(self, graphs: Iterable[ServiceGraph] = ()) -> None:
        self.graphs = list(graphs)

    def add(self, graph: ServiceGraph) -> None:
        self.graphs.append(graph)

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(REQUEST_TOTAL, "Calls between two services (Tempo's service-graph "
                                       "metric), counted when stage 3 finalises a TRACE window",
                                       labels=GRAPH_LABELS)
        failed = CounterMetricFamily(FAILED_TOTAL, "Calls between two services that failed (span status "
                                     "ERROR)", labels=GRAPH_LABELS)
        seconds = [HistogramMetricFamily(name, "Call duration (from the window's latency sketch)",
                                         labels=GRAPH_LABELS) for name in HISTOGRAMS]
        folded = CounterMetricFamily(FOLDED, "TRACE windows counted under client=server=\"other\" because "
                                     "the service graph had as many (client, server) pairs as it keeps")
        merged: dict[tuple[str, str, str], list[Any]] = {}
        bounds: tuple[float, ...] = ()
        for graph in self.graphs:
            bounds = bounds or graph.bounds
            if graph.bounds != bounds:  # one histogram layout per family
                log.warning("service graphs with other buckets left out of /metrics")
                continue
            for series in graph.series():
                into = merged.setdefault(series.labels, [0, 0, [0] * len(series.buckets), 0.0])
                into[0] += series.requests
                into[1] += series.failed
                into[2] = [a + b for a, b in zip(into[2], series.buckets, strict=True)]
                into[3] += series.seconds
        for labels, (n, bad, buckets, total) in sorted(merged.items()):
            requests.add_metric(labels, n)
            failed.add_metric(labels, bad)
            cumulative: list[tuple[str, float]] = []
            acc = 0
            for le, count in zip((*(repr(b) for b in bounds), "+Inf"), buckets, strict=True):
                acc += count
                cumulative.append((le, acc))
            for family in seconds:
                family.add_metric(labels, cumulative, total)
        folded.add_metric([], sum(g.counters["folded"] for g in self.graphs))
        return [requests, failed, *seconds, folded]

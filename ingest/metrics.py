"""Prometheus metrics of one worker process, on a small ``/metrics`` HTTP endpoint.

Each worker gets its own registry (several workers may share a process in tests and benchmarks);
the labels ``layer`` and ``stage`` tell them apart when one endpoint serves several.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("ingest.metrics")

_LABELS = ("layer", "stage")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.records_in = Counter("topology_ingest_records_in", "Kafka records consumed",
                                  (*_LABELS, "topic"), registry=r)
        self.items_in = Counter("topology_ingest_items_in", "Items inside consumed records (flow records, "
                                "spans, metric points, aggregates)", _LABELS, registry=r)
        self.items_out = Counter("topology_ingest_items_out", "Items produced to the next topic or written "
                                 "to the stores", _LABELS, registry=r)
        self.dlq = Counter("topology_ingest_dead_letters", "Records sent to the dead-letter topic",
                           (*_LABELS, "reason"), registry=r)
        self.batch_seconds = Histogram("topology_ingest_batch_seconds", "Processing time of one consumed "
                                       "batch", _LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.commit_seconds = Histogram("topology_ingest_commit_seconds",
                                        "Time to make one checkpoint durable (store writes, transaction)",
                                        _LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.commits = Counter("topology_ingest_commits", "Checkpoints committed", _LABELS, registry=r)
        self.lag = Gauge("topology_ingest_lag_records", "Records between the committed-to-be position and "
                         "the partition's end", (*_LABELS, "topic", "partition"), registry=r)
        self.event_lag = Gauge("topology_ingest_event_time_lag_seconds", "Wall clock minus the slowest "
                               "partition's event-time clock", _LABELS, registry=r)
        self.clock = Gauge("topology_ingest_clock_seconds", "Event-time clock of the slowest partition "
                           "(windows up to it, minus the lateness, are complete)", _LABELS, registry=r)
        self.paused = Gauge("topology_ingest_paused", "1 while consumption is paused (a store is "
                            "unavailable)", _LABELS, registry=r)
        self.restarts = Counter("topology_ingest_restarts", "Recoveries from Kafka errors (restart from "
                                "the last checkpoint)", _LABELS, registry=r)
        self.store_errors = Counter("topology_ingest_store_unavailable", "Store writes that failed and "
                                    "were retried", _LABELS, registry=r)
        self.stage_counter = Gauge("topology_ingest_stage_counter", "The pure stage's own counters, "
                                   "summed over partitions", (*_LABELS, "name"), registry=r)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``port`` (0: any free port); returns the port."""
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

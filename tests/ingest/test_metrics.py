"""The Kafka workers' metrics (ingest.metrics.WorkerMetrics), built in-process without a broker.

Conventions checked on the text a worker's ``/metrics`` serves, parsed with prometheus_client's parser:
counts are counters, durations ``_duration_seconds`` histograms, gauges only levels, every label value
from a small fixed set, the process and interpreter collectors present.
"""

from __future__ import annotations

import os
import re
import struct
import time
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import ingest.metrics
from ingest.logic import Rejected
from ingest.main import build_spec
from ingest.metrics import DEFAULT_METRICS_HOST, SHARED, WorkerMetrics
from ingest.record import Partition, Record
from ingest.topics import Topics
from tests.ingest.payloads import flow_batch, metrics_request, spans_request
from topology.admit import REASON_CLASSES

#: The only gauges a worker has: levels, never counts.
LEVELS = {"topology_ingest_lag_records", "topology_ingest_event_time_lag_seconds",
          "topology_ingest_clock_seconds", "topology_ingest_paused", "topology_ingest_reorder_buffer_items"}
LAYERS = {"network", "ipc", "trace", "meta"}
STAGES = {"1", "2", "3"}


def families(registry: CollectorRegistry) -> dict[str, tuple[str, list[Sample]]]:
    """family name -> (type, samples), as a scraper reads them."""
    text = generate_latest(registry).decode()
    return {f.name: (f.type, list(f.samples)) for f in text_string_to_metric_families(text)}


def check_conventions(fams: dict[str, tuple[str, list[Sample]]], levels: set[str]) -> None:
    """Counts are counters, durations histograms named ``_duration_seconds``, gauges levels only."""
    for name, (kind, samples) in fams.items():
        for s in samples:
            if s.name.endswith("_total"):
                assert kind == "counter", f"{s.name} ends in _total but is a {kind}"
        if not name.startswith("topology_"):
            continue
        assert kind in ("counter", "histogram", "gauge"), (name, kind)
        if kind == "gauge":
            assert name in levels, f"{name} is a gauge: a count must be a counter"
        if kind == "histogram":
            assert name.endswith("_duration_seconds"), name
        if kind == "counter":
            assert all(s.name == name + "_total" for s in samples), name


def bad_inputs() -> list[tuple[str, bytes]]:
    """(layer, bytes) of many different rejections: the reasons name sizes, versions, positions, times."""
    now_ms = int(time.time() * 1000)
    out: list[tuple[str, bytes]] = []
    for n in range(1, 40):
        out.append(("network", os.urandom(n * 7)))  # no magic, or truncated at every size
        out.append(("network", flow_batch([now_ms])[: n * 3]))
        out.append(("trace", spans_request(1)[:-n]))
        out.append(("ipc", os.urandom(n * 5)))
    for version in range(2, 30):
        wrong = bytearray(flow_batch([now_ms]))
        struct.pack_into("<H", wrong, 4, version)
        out.append(("network", bytes(wrong)))
    for year_ms in (1_000, 4_102_444_800_000, 4_102_444_800_000 + 86_400_000 * 365):
        out.append(("network", flow_batch([now_ms - 1000, year_ms])))  # one record of two rejected
        out.append(("trace", spans_request(1, year_ms * 1_000_000)))
        out.append(("ipc", metrics_request(year_ms * 1_000_000)))
    return out


def feed(metrics: WorkerMetrics, inputs: list[tuple[str, bytes]]) -> tuple[int, set[str]]:
    """Each input through its layer's stage-1 logic as the worker feeds it; (rejections, distinct reasons)."""
    topics = Topics("m")
    topic = {"network": topics.flows, "trace": topics.otlp_spans, "ipc": topics.otlp_metrics}
    logics = {layer: build_spec(1, layer, topics, None).new_partition(Partition(topic[layer], 0), None)
              for layer in topic}
    rejected, reasons = 0, set()
    for offset, (layer, value) in enumerate(inputs):
        labels = {"layer": layer, "stage": "1"}
        record = Record(topic[layer], 0, offset, None, value, int(time.time() * 1000))
        metrics.records_in.labels(**labels).inc()
        try:
            added = logics[layer].add(record, None, 0.0)
        except Rejected as e:
            found = [e.reason]
        else:
            metrics.items_in.labels(**labels).inc(added.items)
            found = [reason for reason, _ in added.rejects]
        for reason in found:
            metrics.dead_letter(labels, reason)
        rejected += len(found)
        reasons.update(found)
    return rejected, reasons


def test_a_workers_metrics_follow_the_conventions_after_many_distinct_bad_inputs() -> None:
    m = WorkerMetrics()
    inputs = bad_inputs()
    rejected, reasons = feed(m, inputs)
    assert len(reasons) > 40  # the reasons really are many and distinct ...
    m.batch_seconds.labels(layer="network", stage="1").observe(0.02)
    m.lag.labels(layer="network", stage="1", topic="m.flows", partition="0").set(5)
    fams = families(m.registry)
    check_conventions(fams, LEVELS)
    _, dead = fams["topology_ingest_dead_letters"]
    counted = [s for s in dead if s.name.endswith("_total")]
    # ... but the label has a handful of values, and every rejection is counted under one of them
    assert {s.labels["reason"] for s in counted} <= set(REASON_CLASSES)
    assert {s.labels["reason"] for s in counted} >= {"decode", "timestamp"}
    assert sum(s.value for s in counted) == rejected
    records = fams["topology_ingest_records"][1]
    assert sum(s.value for s in records if s.name.endswith("_total")) == len(inputs)
    for _, samples in fams.values():
        for s in samples:
            assert s.labels.get("layer", "network") in LAYERS and s.labels.get("stage", "1") in STAGES, s


def test_process_and_python_collectors() -> None:
    fams = families(WorkerMetrics().registry)
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= set(fams)
    assert {"python_info", "python_gc_objects_collected", "python_gc_collections"} <= set(fams)
    assert fams["process_cpu_seconds"][0] == "counter"


def test_the_ingest_registry_alone_has_no_process_metrics() -> None:
    """What a server adds to its own /metrics: its own process collectors are already there."""
    names = set(families(WorkerMetrics().ingest))
    assert not {n for n in names if n.startswith(("process_", "python_"))}
    assert {f.name for f in SHARED} <= names


class _Logic:
    def __init__(self, **counts: int) -> None:
        self.counts = counts

    def counters(self) -> dict[str, int]:
        return dict(self.counts)


def events(m: WorkerMetrics) -> dict[str, float]:
    _, samples = families(m.ingest)["topology_ingest_stage_events"]
    return {s.labels["event"]: s.value for s in samples if s.name.endswith("_total")}


def test_stage_counts_become_a_counter_that_survives_rebalances() -> None:
    m = WorkerMetrics()
    labels = {"layer": "trace", "stage": "2"}
    p0 = _Logic(paired=100, expired=3, reorder_buffer=7)  # restored from a checkpoint
    m.count_stages("w", labels, [p0])
    assert events(m) == {"paired": 0, "expired": 0}  # counted by the previous owner
    p0.counts.update(paired=110, expired=4, reorder_buffer=2)
    m.count_stages("w", labels, [p0])
    assert events(m) == {"paired": 10, "expired": 1}
    p1 = _Logic(paired=50, expired=0, reorder_buffer=1)  # a second partition assigned
    m.count_stages("w", labels, [p0, p1])
    p1.counts.update(paired=55)
    m.count_stages("w", labels, [p0, p1])
    assert events(m) == {"paired": 15, "expired": 1}
    m.count_stages("w", labels, [p1])  # p0 revoked: the sum over partitions drops, the counter does not
    assert events(m) == {"paired": 15, "expired": 1}
    p0_back = _Logic(paired=400, expired=9)  # p0 back, restored after another worker counted up to 400
    m.count_stages("w", labels, [p0_back, p1])
    p0_back.counts.update(paired=401)
    p1.counts.update(paired=40)  # a restart from an older checkpoint: no negative step
    m.count_stages("w", labels, [p0_back, p1])
    assert events(m) == {"paired": 16, "expired": 1}
    _, buffered = families(m.ingest)["topology_ingest_reorder_buffer_items"]
    assert [s.value for s in buffered] == [1]  # p1's level now (a level, not summed over time)


def test_workers_sharing_one_registry_are_counted_apart() -> None:
    m = WorkerMetrics()
    a, b = _Logic(partials=0), _Logic(partials=0)
    m.count_stages("network-3-a", {"layer": "network", "stage": "3"}, [a])
    m.count_stages("ipc-3-a", {"layer": "ipc", "stage": "3"}, [b])
    a.counts["partials"], b.counts["partials"] = 5, 2
    m.count_stages("network-3-a", {"layer": "network", "stage": "3"}, [a])
    m.count_stages("ipc-3-a", {"layer": "ipc", "stage": "3"}, [b])
    _, samples = families(m.ingest)["topology_ingest_stage_events"]
    got = {s.labels["layer"]: s.value for s in samples if s.name.endswith("_total")}
    assert got == {"network": 5, "ipc": 2}


def test_the_endpoint_listens_where_it_is_told() -> None:
    assert DEFAULT_METRICS_HOST == "0.0.0.0"  # a cluster's Prometheus reaches it
    m = WorkerMetrics()
    try:
        port = m.serve(0, "127.0.0.1")
        assert m.serve(0, "127.0.0.1") == port  # workers sharing the registry share the endpoint
        m.dead_letter({"layer": "meta", "stage": "1"}, "schema: record 3: no 'name'")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        m.close()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert "process_cpu_seconds" in fams
    got = [s for s in fams["topology_ingest_dead_letters"].samples if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in got] == [({"layer": "meta", "stage": "1", "reason": "schema"}, 1.0)]


def filled_worker() -> WorkerMetrics:
    """A worker's metrics with a sample in every family."""
    worker = WorkerMetrics()
    feed(worker, bad_inputs()[:20])
    labels = {"layer": "network", "stage": "1"}
    worker.batch_seconds.labels(**labels).observe(0.1)
    worker.commit_seconds.labels(**labels).observe(0.1)
    for counter in (worker.commits, worker.restarts, worker.state_refused, worker.fenced, worker.store_errors,
                    worker.items_in, worker.items_out):
        counter.labels(**labels).inc()
    for gauge in (worker.event_lag, worker.clock, worker.paused, worker.reorder_buffer):
        gauge.labels(**labels).set(1)
    worker.lag.labels(topic="m.flows", partition="0", **labels).set(3)
    worker.count_stages("w", labels, [_Logic(paired=1)])
    return worker


def docstring_table(doc: str) -> dict[str, tuple[str, set[str]]]:
    """The metrics table of a module docstring: exposed name -> (type, labels)."""
    rows = {}
    for line in doc.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if line.startswith("``topology_") and len(cells) == 4:
            rows[cells[0].strip("`")] = (cells[1], {x.strip() for x in cells[2].split(",")})
    return rows


def test_the_module_docstring_table_is_what_a_worker_exposes() -> None:
    table = docstring_table(ingest.metrics.__doc__ or "")
    exposed = {(n + "_total" if kind == "counter" else n): (kind, samples)
               for n, (kind, samples) in families(filled_worker().ingest).items()}
    assert set(table) == set(exposed)
    for name, (kind, samples) in exposed.items():
        seen = {k for s in samples for k in s.labels if k != "le"}
        assert samples and table[name] == (kind, seen), (name, table[name], kind, seen)

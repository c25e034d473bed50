"""Repartitioned span requests carry their latest time and span count (``ingest/otlp_items.py``), so
the pairing stage orders them without parsing them first; items written without them (by an older
stage 1) are parsed to find them, and pair the same."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest import otlp_items
from ingest.record import Partition, Record
from ingest.topics import Topics
from ingest.trace import SpanPairingSpec, TraceSplitSpec
from tests.topology.stages.otlp_builders import resource_spans, span, traces

TOPICS = Topics()
T = 1_800_000_000.0


def _requests() -> list[bytes]:
    client = traces(resource_spans("web", [span(0xAB, 1, None, "client", "GET /x", T + 1, 0.05)]))
    server = traces(resource_spans("api", [span(0xAB, 2, 1, "server", "GET /x", T + 1.01, 0.03),
                                           span(0xAB, 3, 2, "client", "SELECT", T + 1.02, 0.01,
                                                attributes={"db.system.name": "postgresql"})]))
    return [client.SerializeToString(), server.SerializeToString()]


def _split(data: bytes) -> dict[str, Any]:
    logic = TraceSplitSpec(TOPICS).new_partition(Partition(TOPICS.otlp_spans, 0), None)
    logic.add(Record(TOPICS.otlp_spans, 0, 0, None, data, int(T * 1000)), None, T)
    [emit] = logic.flush(T, False)
    item: dict[str, Any] = emit.item
    return item


def _pairs(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    logic = SpanPairingSpec(TOPICS, wait_seconds=5.0).new_partition(Partition("trace.stage1", 0), None)
    added = logic.add(Record("trace.stage1", 0, 0, None, b"", 0), items, T + 100)
    assert added.items == 3
    return sorted((e.item["source"], e.item["target"], e.item["side"]) for e in logic.flush(T + 200, False)
                  if e.item.get("granularity") == "APP")


def test_stage_1_items_carry_the_latest_end_and_the_span_count() -> None:
    for data in _requests():
        req = ExportTraceServiceRequest.FromString(data)
        ends = [sp.end_time_unix_nano for rs in req.resource_spans for ss in rs.scope_spans
                for sp in ss.spans]
        assert otlp_items.timing(_split(data)) == (max(ends), len(ends))


def test_items_with_and_without_timing_pair_alike() -> None:
    timed = [_split(d) for d in _requests()]
    untimed = [otlp_items.item(d) for d in _requests()]
    assert all(otlp_items.timing(i) is None for i in untimed)
    assert _pairs(timed) == _pairs(untimed) == [("api", "postgresql", "PAIR"), ("web", "api", "PAIR")]

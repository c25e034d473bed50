"""TRACE stage specs 1 (re-key by trace id) and 2 (pairing in event time) fed from lists: the golden
TRACE cases (``tests/topology/stages/golden_otlp/trace_*.json``, checked by hand) through the two specs
give the golden edge partials and trace summaries, whatever partition each request took."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest import otlp_items
from ingest.topics import Topics
from ingest.trace import SpanPairingSpec, TraceSplitSpec
from tests.ingest.testing import Bus, Chain, TestingStage
from tests.topology.stages.golden_otlp.cases import rounded
from tests.topology.stages.otlp_builders import resource_spans, span, traces
from topology.admit import reason_class
from topology.catalog import TraceSummary
from topology.wire.otlp import decode_traces

GOLDEN = Path(__file__).parents[1] / "topology" / "stages" / "golden_otlp"
# These two pin down what happens when spans arrive late or too many wait (arrival = wall time in the
# golden steps); in the Kafka stage a span arrives at its own end time, so they are covered below.
BY_ARRIVAL = {"trace_expiry_wait", "trace_capacity"}
CASES = sorted(p.stem for p in GOLDEN.glob("trace_*.json") if p.stem not in BY_ARRIVAL)
TOPICS = Topics()
T = 1_800_000_000.0


def _request(step: dict[str, Any]) -> ExportTraceServiceRequest:
    return decode_traces(json.dumps(step["add"]).encode(), "application/json")


def _end(req: ExportTraceServiceRequest) -> float:
    ends = [sp.end_time_unix_nano for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    return max(ends) / 1e9


def _sorted(items: list[Any]) -> list[str]:
    return sorted(json.dumps(rounded(_spans_unpacked(i)), sort_keys=True) for i in items)


def _spans_unpacked(item: dict[str, Any]) -> dict[str, Any]:
    """A trace summary with its packed spans as a list (they are packed in the order they came)."""
    if "packed_spans" not in item:
        return item
    spans = TraceSummary.from_dict(item).kept_spans
    return {**item, "packed_spans": [dataclasses.astuple(s) for s in spans]}


def _pairing(config: dict[str, Any]) -> SpanPairingSpec:
    return SpanPairingSpec(TOPICS, config.get("wait_seconds", 10.0), config.get("max_pending", 10_000))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize(("partitions", "keyed"), [(1, True), (2, True), (2, False)])
def test_golden_cases_through_the_two_specs(name: str, partitions: int, keyed: bool) -> None:
    doc = json.loads((GOLDEN / f"{name}.json").read_text())
    chain = Chain([TraceSplitSpec(TOPICS), _pairing(doc.get("config", {}))], Bus(partitions))
    last = 0.0
    for step in doc["steps"]:
        if "add" in step:
            req = _request(step)
            last = max(last, _end(req))
            first = req.resource_spans[0].scope_spans[0].spans[0]
            key = bytes(first.trace_id).hex().encode() if keyed else None
            chain.bus.produce(TOPICS.otlp_spans, req.SerializeToString(), key, int(last * 1000) + 1000)
            chain.cycle(last)
    chain.drain(last + 60)
    emitted = chain[1].emitted
    expected = doc["expected"]["flushes"]
    assert _sorted([e.item for e in emitted if "trace_summary" not in e.item]) == \
        _sorted([e for f in expected for e in f["edges"]])
    # every summary the golden flushes show (the specs run longer, so later ones come out too)
    summaries = _sorted([e.item["trace_summary"] for e in emitted if "trace_summary" in e.item])
    assert set(_sorted([t for f in expected for t in f["traces"]])) <= set(summaries)
    assert all(not st.dead for st in chain.stages)


def _call(trace: int, client_end: float, server_end: float) -> tuple[bytes, bytes]:
    """The two sides of one call, in two requests: web's CLIENT span and api's SERVER span."""
    c = traces(resource_spans("web", [span(trace, 1, None, "client", "GET /x", client_end - 0.05, 0.05,
                                           attributes={"server.address": "api"})]))
    s = traces(resource_spans("api", [span(trace, 2, 1, "server", "GET /x", server_end - 0.03, 0.03)]))
    return c.SerializeToString(), s.SerializeToString()


def _app_pairs(emitted: list[Any]) -> list[tuple[str, str, str]]:
    return sorted((e.item["source"], e.item["target"], e.item["side"]) for e in emitted
                  if e.item.get("granularity") == "APP")


def test_two_sides_read_from_two_partitions_45_s_apart_still_meet() -> None:
    """Partition 1 is read 45 s ahead of partition 0, which carries the client side of a call at
    T + 10: the pairing partition's clock is the slowest upstream clock, so the server side, read
    first, is not expired before its client comes, although the wait is 5 s."""
    bus = Bus(2)
    chain = Chain([TraceSplitSpec(TOPICS), SpanPairingSpec(TOPICS, wait_seconds=5.0)], bus, wall=T)
    client, server = _call(0xAB, T + 10, T + 10)
    bus.produce(TOPICS.otlp_spans, server, None, int(T * 1000) + 10_000, partition=1)
    for i in range(1, 10):  # later calls of partition 1, up to T + 55, all read at once
        bus.produce(TOPICS.otlp_spans, _call(0x100 + i, T, T + 10 + 5 * i)[1], None,
                    int((T + 10 + 5 * i) * 1000), partition=1)
    for i in range(1, 11):  # partition 0 lags: one call a second, the client side of 0xAB last
        data = client if i == 10 else _call(0x200 + i, T + i, T)[0]
        bus.produce(TOPICS.otlp_spans, data, None, int((T + i) * 1000), partition=0)
        chain.cycle(T + i)
    chain.drain(T + 120)
    pairs = _app_pairs(chain[1].emitted)
    assert ("web", "api", "PAIR") in pairs
    assert chain[1].counters()["reorder_buffer"] == 0


def test_a_keyed_message_passes_through_and_an_unkeyed_one_is_cut_by_trace_id() -> None:
    bus = Bus(1)
    stage = TestingStage(TraceSplitSpec(TOPICS), bus, wall=T)
    one = _call(0xA1, T + 1, T + 1)[0]
    tid = (0xA1).to_bytes(16, "big").hex()
    both = traces(resource_spans("web", [
        span(0xA1, 1, None, "client", "GET /x", T, 0.05),
        span(0xA2, 3, None, "client", "GET /y", T, 0.05),
    ])).SerializeToString()
    bus.produce(TOPICS.otlp_spans, one, tid.encode(), int(T * 1000))
    bus.produce(TOPICS.otlp_spans, both, None, int(T * 1000))
    stage.step()
    assert [e.key for e in stage.emitted] == [tid, tid, (0xA2).to_bytes(16, "big").hex()]
    assert otlp_items.payload(stage.emitted[0].item) == one  # as the Collector keyed and framed it
    cut = [ExportTraceServiceRequest.FromString(otlp_items.payload(e.item)) for e in stage.emitted[1:]]
    assert [[sp.name for rs in r.resource_spans for ss in rs.scope_spans for sp in ss.spans] for r in cut] \
        == [["GET /x"], ["GET /y"]]
    assert {k: stage.counters()[k] for k in ("requests", "spans", "passed_through", "split")} == {
        "requests": 2, "spans": 3, "passed_through": 1, "split": 1}


def test_bad_span_requests_are_dead_lettered_and_the_year_2100_span_is_cut_out() -> None:
    bus = Bus(1)
    stage = TestingStage(TraceSplitSpec(TOPICS), bus, wall=T)
    year_2100 = 4_102_444_800.0
    mixed = traces(resource_spans("web", [
        span(0xA1, 1, None, "client", "GET /x", T, 0.05),
        span(0xA2, 3, None, "client", "GET /y", year_2100, 0.05),
    ])).SerializeToString()
    bus.produce(TOPICS.otlp_spans, b"", None, int(T * 1000))
    bus.produce(TOPICS.otlp_spans, b"\x0a\xff", None, int(T * 1000))
    bus.produce(TOPICS.otlp_spans, mixed, None, int(T * 1000))
    stage.step()
    assert [(d["source"]["offset"], reason_class(d["reason"])) for d in stage.dead] == [
        (0, "empty"), (1, "decode"), (2, "timestamp")]
    assert [e.key for e in stage.emitted] == [(0xA1).to_bytes(16, "big").hex()]

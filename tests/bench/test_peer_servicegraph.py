"""bench/peer_servicegraph's own logic on hand-built input (no Collector build needed): the edges read from
the Collector's metrics, the scores against truth, the prefixes of whole minutes and the re-stamping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from bench.peer_servicegraph.edges import collector_edges, counts_agree, score
from bench.peer_servicegraph.workload import Workload


def point(client: str, server: str, value: int, start: str = "100", failed: bool = False,
          ctype: str = "") -> dict[str, Any]:
    attrs = [("client", client), ("server", server), ("connection_type", ctype),
             ("failed", str(failed).lower())]
    return {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs],
            "startTimeUnixNano": start, "timeUnixNano": "200", "asInt": str(value)}


def flush(*metrics: tuple[str, list[dict[str, Any]]]) -> str:
    """One line of the file exporter: an ExportMetricsServiceRequest in OTLP/JSON."""
    ms = [{"name": name, "sum": {"dataPoints": points, "aggregationTemporality": 2, "isMonotonic": True}}
          for name, points in metrics]
    return json.dumps({"resourceMetrics": [{"resource": {}, "scopeMetrics": [
        {"scope": {"name": "servicegraph"}, "metrics": ms}]}]})


def test_collector_edges_take_each_series_last_total_and_sum_the_series_of_an_edge() -> None:
    lines = [
        flush(("traces_service_graph_request_total",
               [point("a", "b", 3), point("a", "db", 1, ctype="database")])),
        "",
        flush(("traces_service_graph_request_total", [
            point("a", "b", 7),  # cumulative: 7 replaces 3
            point("a", "b", 2, failed=True),  # the failed calls are a series of their own
            point("a", "db", 4, ctype="database"),
        ]), ("traces_service_graph_request_failed_total", [point("a", "b", 2)])),  # another metric
        # the connector dropped a series from its cache and made it again: a new start, counting from 0
        flush(("traces_service_graph_request_total", [point("a", "db", 5, start="900", ctype="database"),
                                                      point("user", "a", 9)])),
        '{"resourceMetrics": [{"scopeMet',  # the Collector was still writing this line
    ]
    assert collector_edges(lines) == {("a", "b"): 9, ("a", "db"): 9, ("user", "a"): 9}


def test_collector_edges_of_no_flush_are_none() -> None:
    assert collector_edges([]) == {}
    assert collector_edges([flush(("traces_service_graph_request_failed_total", [point("a", "b", 1)]))]) == {}


def test_score_against_truth() -> None:
    truth = {("user", "a"), ("a", "b"), ("a", "db"), ("b", "c")}
    s = score({("user", "a"), ("a", "b"), ("a", "pg.internal")}, truth)
    assert (s.truth, s.found, s.hits) == (4, 3, 2)
    assert s.recall == pytest.approx(0.5)
    assert s.precision == pytest.approx(2 / 3)
    assert score(truth, truth).recall == score(truth, truth).precision == 1.0
    empty = score((), ())
    assert (empty.recall, empty.precision) == (1.0, 1.0)


def test_counts_agree() -> None:
    ours = {("a", "b"): 3, ("a", "c"): 1, ("x", "y"): 2}
    assert counts_agree(ours, {("a", "b"): 3, ("a", "c"): 2}) == (2, 1)


def workload() -> Workload:
    # minutes 0, 0, 1, 2, 2 with 10, 20, 30, 5, 5 spans
    return Workload(start=600.0, minutes=3, bodies=[b""] * 5, spans=[10, 20, 30, 5, 5],
                    minute_of=[0, 0, 1, 2, 2],
                    truth={0: set(), 1: {("a", "b")}, 2: {("a", "b"), ("b", "c")},
                           3: {("a", "b"), ("b", "c"), ("c", "d")}})


@pytest.mark.parametrize(("max_spans", "bodies", "minutes"), [
    (None, 5, 3), (70, 5, 3), (69, 3, 2), (60, 3, 2), (59, 2, 1), (30, 2, 1), (29, 0, 0), (0, 0, 0)])
def test_prefix_is_whole_minutes_and_its_truth_theirs(max_spans: int | None, bodies: int,
                                                       minutes: int) -> None:
    w = workload()
    assert w.prefix(max_spans) == bodies
    assert w.truth_for(bodies) == w.truth[minutes]


def test_restamp_moves_every_span_by_whole_minutes() -> None:
    def request(*starts: int) -> bytes:
        spans = [Span(trace_id=b"t" * 16, span_id=bytes([i + 1]) * 8, start_time_unix_nano=s,
                      end_time_unix_nano=s + 5) for i, s in enumerate(starts)]
        req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
        return bytes(req.SerializeToString())

    sec = 1_000_000_000
    w = Workload(start=600.0, minutes=2, bodies=[request(600 * sec, 610 * sec), request(665 * sec)],
                 spans=[2, 1], minute_of=[0, 1])

    def starts() -> list[tuple[int, int]]:
        out = []
        for body in w.bodies:
            req = ExportTraceServiceRequest.FromString(body)
            out += [(s.start_time_unix_nano, s.end_time_unix_nano)
                    for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return out

    assert w.restamp(1_000_059.9) == 1_000_020.0  # rounded down to a minute
    assert starts() == [((1_000_020 + d) * sec, (1_000_020 + d) * sec + 5) for d in (0, 10, 65)]
    assert w.restamp(1_000_200.0) == 1_000_200.0  # relative to where the spans are now, not to the start
    assert starts()[0] == (1_000_200 * sec, 1_000_200 * sec + 5)
    assert w.start + w.shift == 1_000_200.0

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.topology.sketches import lat
from tests.topology.stages.golden_otlp import cases
from tests.topology.stages.otlp_builders import resource_spans, span, trace_id, traces
from tests.topology.wire.test_otlp import trace_requests
from topology.model import EdgePartial, Layer, NodeKind, Side
from topology.stages.trace import SpanPairer
from topology.wire.otlp import OtlpDecodeError

T = 1_200.0  # a window start


def edges(partials: list[EdgePartial]) -> dict[tuple[str, str, str], EdgePartial]:
    out = {(p.key.granularity.value, p.key.source, p.key.target): p for p in partials}
    assert len(out) == len(partials)
    assert all(
        p.key.layer is Layer.TRACE and p.side is Side.PAIR and p.window_seconds == 60 for p in partials
    )
    return out


# -- pairing ----------------------------------------------------------------------------------------
def test_client_and_server_spans_of_two_services_pair_in_either_order() -> None:
    for server_first in (False, True):
        p = SpanPairer()
        client = resource_spans(
            "frontend", [span(7, 1, 100, "client", "GET /cart", T + 1, 0.05)], "frontend-v1"
        )
        server = resource_spans(
            "cart", [span(7, 2, 1, "server", "GET /cart", T + 1.01, 0.03, error=True)], "cart-v3"
        )
        first, second = (server, client) if server_first else (client, server)
        p.add(traces(first), T + 2)
        assert p.pending == 1
        p.add(traces(second), T + 3)
        assert p.pending == 0
        e = edges(p.flush(T + 4))
        assert set(e) == {("APP", "frontend", "cart"), ("CLUSTER", "frontend-v1", "cart-v3")}
        app, cluster = e[("APP", "frontend", "cart")], e[("CLUSTER", "frontend-v1", "cart-v3")]
        assert app.window_start == T and app.stats.requests == 1 and app.stats.errors == 1
        assert app.stats.latency == lat((0.03, 1))  # the server span's 30 ms, not the client's 50
        assert app.stats.latency_sum == pytest.approx(0.03)
        assert app.stats.exemplars == (trace_id(7).hex(),)
        assert app.stats.connection_type is None
        assert (app.source_kind, app.target_kind) == (NodeKind.SERVICE, NodeKind.SERVICE)
        assert (cluster.source_app, cluster.target_app) == ("frontend", "cart")
        assert cluster.stats.requests == 1
        assert p.counters["paired"] == 1 and p.counters["expired"] == 0 and p.counters["total"] == 1


def test_producer_with_two_consumers_makes_two_messaging_edges() -> None:
    p = SpanPairer()
    p.add(
        traces(resource_spans("billing", [span(3, 11, 10, "consumer", "invoice process", T + 5, 0.2)])), T + 6
    )
    p.add(
        traces(
            resource_spans(
                "orders",
                [
                    span(
                        3,
                        10,
                        9,
                        "producer",
                        "invoice publish",
                        T + 4,
                        0.001,
                        attributes={"messaging.system": "kafka"},
                    )
                ],
            )
        ),
        T + 6,
    )
    p.add(
        traces(resource_spans("shipping", [span(3, 12, 10, "consumer", "invoice process", T + 7, 0.1)])),
        T + 8,
    )
    e = edges(p.flush(T + 30))
    assert set(e) == {("APP", "orders", "billing"), ("APP", "orders", "shipping")}
    assert all(x.stats.connection_type == "messaging_system" and x.stats.requests == 1 for x in e.values())
    assert p.counters["paired"] == 2 and p.counters["expired"] == 0  # the producer is not a virtual node


def test_several_services_in_one_request() -> None:
    p = SpanPairer()
    req = traces(
        resource_spans(
            "auth",
            [
                span(1, 3, 2, "server", "check", T + 1.1, 0.01),
                span(1, 4, 3, "client", "lookup", T + 1.102, 0.005),
            ],
        ),
        resource_spans("users", [span(1, 5, 4, "server", "lookup", T + 1.103, 0.003)]),
        resource_spans(
            "gateway",
            [
                span(1, 1, None, "server", "POST /login", T + 1, 0.3),
                span(1, 2, 1, "client", "check", T + 1.05, 0.2),
            ],
        ),
    )
    p.add(req, T + 2)
    e = edges(p.flush(T + 2))
    assert set(e) == {("APP", "user", "gateway"), ("APP", "gateway", "auth"), ("APP", "auth", "users")}
    assert p.pending == 0 and p.counters["roots"] == 1 and p.counters["paired"] == 2


# -- virtual nodes ---------------------------------------------------------------------------------
def test_unpaired_client_spans_become_virtual_servers_named_in_order() -> None:
    p = SpanPairer()
    cases = {
        1: {
            "db.system.name": "postgresql",
            "db.namespace": "orders",
            "server.address": "pg-1",
            "db.name": "old",
        },
        2: {"db.system": "redis", "server.address": "cache-1.internal"},
        3: {"db.system": "mysql"},
        4: {"peer.service": "legacy-billing", "server.address": "10.0.0.1"},
        5: {"service.peer.name": "geo-api", "peer.service": "geo-old"},
        6: {"messaging.system": "kafka", "server.address": "broker-1"},
        7: {"http.request.method": "GET"},  # nothing names the peer
        8: {"db.name": "inventory", "db.system": "oracle"},
    }
    p.add(
        traces(
            resource_spans(
                "api",
                [
                    span(100 + n, n, 1, "client", "c", T + n, 0.002 * n, attributes=a)
                    for n, a in cases.items()
                ],
                "api-v7",
            )
        ),
        T + 10,
    )
    assert edges(p.flush(T + 20)) == {}  # 10 s after arrival: still waiting
    e = edges(p.flush(T + 20.001))
    got = {(k[1], k[2]): (x.target_kind, x.stats.connection_type) for k, x in e.items() if k[0] == "APP"}
    assert got == {
        ("api", "orders"): (NodeKind.DATABASE, "database"),
        ("api", "cache-1.internal"): (NodeKind.DATABASE, "database"),
        ("api", "mysql"): (NodeKind.DATABASE, "database"),
        ("api", "legacy-billing"): (NodeKind.UNINSTRUMENTED, "virtual_node"),
        ("api", "geo-api"): (NodeKind.UNINSTRUMENTED, "virtual_node"),
        ("api", "broker-1"): (NodeKind.MESSAGING, "messaging_system"),
        ("api", "inventory"): (NodeKind.DATABASE, "database"),
    }
    # the client span's own duration: 2 ms * n for case n
    assert e[("APP", "api", "orders")].stats.latency == lat((0.002, 1))
    assert e[("APP", "api", "legacy-billing")].stats.latency == lat((0.008, 1))
    cluster = e[("CLUSTER", "api-v7", "orders")]
    assert (cluster.source_app, cluster.target_app, cluster.target_kind) == (
        "api",
        "orders",
        NodeKind.DATABASE,
    )
    assert p.counters["expired"] == 8 and p.counters["unnamed"] == 1 and p.counters["total"] == 7


def test_roots_come_from_user_at_once_and_orphans_after_the_wait() -> None:
    p = SpanPairer(wait_seconds=10)
    p.add(
        traces(
            resource_spans("web", [span(1, 1, None, "server", "GET /", T + 1, 0.2)], "web-v2"),
            resource_spans("api", [span(2, 5, 4, "server", "GET /x", T + 2, 0.002, error=True)]),
        ),
        T + 3,
    )
    e = edges(p.flush(T + 3))
    assert set(e) == {("APP", "user", "web"), ("CLUSTER", "user", "web-v2")}
    root = e[("APP", "user", "web")]
    assert (root.source_kind, root.stats.connection_type, root.stats.latency) == (
        NodeKind.USER,
        "virtual_node",
        lat((0.2, 1)),
    )
    assert edges(p.flush(T + 13)) == {}
    e = edges(p.flush(T + 13.5))
    assert set(e) == {("APP", "user", "api")} and e[("APP", "user", "api")].stats.errors == 1
    assert p.counters["roots"] == 1 and p.counters["expired"] == 1


def test_a_pair_completes_within_the_wait_and_a_late_half_does_not() -> None:
    p = SpanPairer(wait_seconds=10)
    p.add(
        traces(
            resource_spans(
                "a",
                [
                    span(1, 1, 9, "client", "x", T + 1, 0.01),
                    span(2, 1, 9, "client", "y", T + 1, 0.01, attributes={"peer.service": "b"}),
                ],
            )
        ),
        T + 1,
    )
    p.add(traces(resource_spans("b", [span(1, 2, 1, "server", "x", T + 1, 0.005)])), T + 10.9)
    p.flush(T + 11.5)  # trace 2's client expires -> virtual b
    p.add(traces(resource_spans("b", [span(2, 2, 1, "server", "y", T + 1, 0.005)])), T + 12)
    p.flush(T + 30)  # ... and its server half arrives too late: user -> b
    assert (p.counters["paired"], p.counters["expired"]) == (1, 2)


def test_capacity_drops_the_oldest_and_counts() -> None:
    p = SpanPairer(wait_seconds=10, max_pending=3)
    for n in range(5):
        p.add(
            traces(
                resource_spans(
                    "a", [span(n + 1, 1, 9, "client", "x", T + n, 0.01, attributes={"peer.service": f"p{n}"})]
                )
            ),
            T + n,
        )
    assert p.pending == 3 and p.counters["dropped"] == 2
    e = edges(p.flush(T + 100))
    assert set(e) == {("APP", "a", "p2"), ("APP", "a", "p3"), ("APP", "a", "p4")}  # p0, p1 were the oldest
    # servers count against the same capacity
    p.add(
        traces(resource_spans("b", [span(50 + n, 2, 1, "server", "x", T + 200, 0.01) for n in range(4)])),
        T + 200,
    )
    assert p.pending == 3 and p.counters["dropped"] == 3


def test_what_is_not_an_edge_is_counted() -> None:
    p = SpanPairer()
    bad = span(1, 1, None, "server")
    bad.trace_id = b"\x01" * 3
    p.add(
        traces(
            resource_spans("a", [bad, span(2, 1, None, "internal")]),
            resource_spans(None, [span(3, 1, None, "server")]),
            resource_spans("a", [span(4, 1, None, "consumer")]),
        ),
        T,
    )
    assert edges(p.flush(T + 100)) == {}
    assert (p.counters["invalid"], p.counters["internal"], p.counters["no_service"]) == (1, 1, 1)
    assert p.counters["spans"] == 4


def test_edges_fall_into_the_window_of_the_client_start() -> None:
    p = SpanPairer()
    p.add(
        traces(
            resource_spans("a", [span(1, 1, 9, "client", "x", T + 59.9, 0.5)]),
            resource_spans("b", [span(1, 2, 1, "server", "x", T + 60.1, 0.2)]),
        ),
        T + 61,
    )
    [e] = p.flush(T + 61)
    assert e.window_start == T and e.stats.first_seen == T + 59.9


# -- trace summaries ----------------------------------------------------------------------------------
def test_trace_summaries_after_the_trace_went_quiet() -> None:
    p = SpanPairer(wait_seconds=10)
    p.add(traces(resource_spans("api", [span(5, 2, 1, "client", "call db", T + 1.1, 0.1)])), T + 2)
    p.add(traces(resource_spans("web", [span(5, 1, None, "server", "GET /home", T + 1, 0.5)])), T + 5)
    p.flush(T + 14)
    assert p.take_trace_summaries() == []  # last span 9 s ago
    p.add(
        traces(resource_spans("db-proxy", [span(5, 3, 2, "server", "q", T + 1.12, 0.05, error=True)])), T + 14
    )
    p.flush(T + 24)
    assert p.take_trace_summaries() == []
    p.flush(T + 24.5)
    [s] = p.take_trace_summaries()
    assert (s.trace_id, s.root_service, s.root_name, s.spans, s.error) == (
        trace_id(5).hex(),
        "web",
        "GET /home",
        3,
        True,
    )
    assert s.start == T + 1 and s.duration == pytest.approx(0.5)
    assert s.services == ("api", "db-proxy", "web")
    assert p.take_trace_summaries() == []


def test_trace_without_root_takes_its_earliest_span_as_root() -> None:
    p = SpanPairer(wait_seconds=1)
    p.add(
        traces(
            resource_spans("b", [span(8, 2, 1, "server", "late", T + 2, 0.1)]),
            resource_spans("a", [span(8, 1, 7, "client", "early", T + 1, 0.5)]),
        ),
        T,
    )
    p.flush(T + 5)
    [s] = p.take_trace_summaries()
    assert (s.root_service, s.root_name) == ("a", "early")
    assert s.duration == pytest.approx(1.1)


def test_trace_capacity_emits_the_oldest_summary_early() -> None:
    p = SpanPairer(max_traces=2)
    for n in range(3):
        p.add(traces(resource_spans("a", [span(n + 1, 1, None, "server", f"r{n}", T + n, 0.1)])), T + n)
    [s] = p.take_trace_summaries()
    assert s.root_name == "r0" and p.counters["traces_evicted"] == 1


# -- durations -----------------------------------------------------------------------------------------
@given(st.integers(2, 10**13))
def test_a_span_duration_goes_into_the_sketch_as_it_is(nanos: int) -> None:
    p = SpanPairer()
    root = span(1, 1, None, "server", "GET /", T + 1, 0.0)
    root.end_time_unix_nano = root.start_time_unix_nano + nanos
    p.add(traces(resource_spans("web", [root])), T + 2)
    [e] = [x for x in p.flush(T + 100) if x.key.granularity.value == "APP"]
    assert e.stats.latency == lat((nanos / 1e9, 1))
    assert e.stats.latency_quantile(0.5) == pytest.approx(nanos / 1e9, rel=0.0109)


# -- golden files ---------------------------------------------------------------------------------------
GOLDEN = Path(__file__).parent / "golden_otlp"


@pytest.mark.parametrize("name", sorted(cases.TRACE_CASES))
def test_golden(name: str) -> None:
    doc = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert doc["layer"] == "TRACE"
    _, steps, _ = cases.TRACE_CASES[name]()
    assert doc["steps"] == json.loads(json.dumps(steps)), "input differs from its builder: rebuild and review"
    assert cases.rounded(cases.run_trace(doc)) == doc["expected"]


def test_every_golden_file_is_a_case() -> None:
    files = {p.stem for p in GOLDEN.glob("*.json")}
    assert files == set(cases.TRACE_CASES) | set(cases.IPC_CASES)


def test_serialized_input_is_the_same_path_and_bad_bytes_are_counted() -> None:
    req = traces(resource_spans("a", [span(1, 1, None, "server", "GET /", T + 1, 0.01)]))
    p, q = SpanPairer(), SpanPairer()
    p.add(req, T + 2)
    q.add_serialized(req.SerializeToString(), T + 2)
    assert p.flush(T + 3) == q.flush(T + 3)
    with pytest.raises(OtlpDecodeError):
        q.add_serialized(b"\x0a\x05\x0a", T + 4)
    assert q.counters["bad_requests"] == 1 and q.counters["requests"] == 1


# -- bad input never escapes as anything but OtlpDecodeError -----------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_rejected_or_counted(data: bytes) -> None:
    p = SpanPairer()
    try:
        p.add_serialized(data, T)
    except OtlpDecodeError:
        assert p.counters["bad_requests"] == 1
    p.flush(T + 100)
    p.take_trace_summaries()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_requests())
def test_arbitrary_valid_requests_never_break_the_pairer(req: ExportTraceServiceRequest) -> None:
    p = SpanPairer(max_pending=3, max_traces=2)
    p.add(req, T)
    p.add(req, T + 1)  # the same spans again: duplicates pair or wait, never crash
    partials = p.flush(T + 100)
    assert all(x.key.layer is Layer.TRACE and x.stats.requests > 0 for x in partials)
    assert p.pending == 0

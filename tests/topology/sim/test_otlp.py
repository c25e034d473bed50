"""The hand-written OTLP encoder produces what the official opentelemetry-proto classes read back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from topology.sim import otlp

from .reference import attrs

values = st.one_of(
    st.text(max_size=40),
    st.booleans(),
    st.integers(0, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(st.text(min_size=1, max_size=30), values)
def test_key_values_read_back(key: str, value: str | int | bool | float) -> None:
    kv = KeyValue.FromString(otlp.key_value(key, value))
    assert kv.key == key
    assert attrs([kv])[key] == value and type(attrs([kv])[key]) is type(value)


@given(st.integers(0, 2**64 - 1))
def test_varints_read_back(n: int) -> None:
    # A varint field 3 of AnyValue is int64: compare modulo 2**64.
    kv = KeyValue.FromString(otlp.string(1, "k") + otlp.length_delimited(2, otlp.uint(3, n)))
    assert kv.value.int_value % 2**64 == n


def test_metrics_request_reads_back() -> None:
    cache = otlp.AttributeCache()
    a = cache.field(9, [("ipc.server.app", "orders-api"), ("ipc.result", "success")])
    hp = otlp.histogram_point(a, 10, 20, 7, 1.5, [1, 2, 4], otlp.packed_double(7, [0.01, 0.1]))
    np_ = otlp.number_point(cache.field(7, [("statistic", "count")]), 10, 20, 3.0)
    gp = otlp.number_point(cache.field(7, [("statistic", "max")]), 0, 20, 0.25)
    metrics = [
        otlp.histogram_metric("ipc.client.call", "s", [hp], otlp.TEMPORALITY_CUMULATIVE),
        otlp.sum_metric("ipc.client.call", "s", [np_], otlp.TEMPORALITY_DELTA, True),
        otlp.gauge_metric("ipc.client.call", "s", [gp]),
    ]
    rm = otlp.resource_metrics(
        otlp.resource(cache.field(1, [("service.name", "web")])), otlp.scope("spectator", "1.0"), metrics
    )
    req = ExportMetricsServiceRequest.FromString(otlp.export_metrics([rm, rm]))
    assert len(req.resource_metrics) == 2
    r = req.resource_metrics[0]
    assert attrs(r.resource.attributes) == {"service.name": "web"}
    sm = r.scope_metrics[0]
    assert (sm.scope.name, sm.scope.version) == ("spectator", "1.0")
    h, s, g = sm.metrics
    p = h.histogram.data_points[0]
    assert h.histogram.aggregation_temporality == 2 and h.name == "ipc.client.call" and h.unit == "s"
    assert (p.start_time_unix_nano, p.time_unix_nano, p.count, p.sum) == (10, 20, 7, 1.5)
    assert list(p.bucket_counts) == [1, 2, 4] and list(p.explicit_bounds) == [0.01, 0.1]
    assert attrs(p.attributes) == {"ipc.server.app": "orders-api", "ipc.result": "success"}
    assert s.sum.aggregation_temporality == 1 and s.sum.is_monotonic and s.sum.data_points[0].as_double == 3.0
    assert g.gauge.data_points[0].as_double == 0.25 and g.gauge.data_points[0].start_time_unix_nano == 0


def test_trace_request_reads_back() -> None:
    cache = otlp.AttributeCache()
    ok = otlp.span(
        b"t" * 16, b"s" * 8, b"", "GET /x", otlp.SPAN_KIND_SERVER, 5, 9, cache.field(9, [("a", 1)])
    )
    bad = otlp.span(b"t" * 16, b"c" * 8, b"s" * 8, "db", otlp.SPAN_KIND_CLIENT, 6, 8, b"", "boom")
    rs = otlp.resource_spans(
        otlp.resource(cache.field(1, [("service.name", "web")])), otlp.scope("x", "1"), [ok, bad]
    )
    req = ExportTraceServiceRequest.FromString(otlp.export_traces([rs]))
    s1, s2 = req.resource_spans[0].scope_spans[0].spans
    assert (s1.trace_id, s1.span_id, s1.parent_span_id, s1.name) == (b"t" * 16, b"s" * 8, b"", "GET /x")
    assert s1.kind == Span.SPAN_KIND_SERVER and (s1.start_time_unix_nano, s1.end_time_unix_nano) == (5, 9)
    assert attrs(s1.attributes) == {"a": 1} and s1.status.code == Status.STATUS_CODE_UNSET
    assert s2.parent_span_id == b"s" * 8 and s2.kind == Span.SPAN_KIND_CLIENT
    assert s2.status.code == Status.STATUS_CODE_ERROR and s2.status.message == "boom"

from __future__ import annotations

import base64
import contextlib
import json
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Exemplar,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
    Summary,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from topology.wire import otlp
from topology.wire.otlp import OtlpDecodeError, decode_metrics, decode_traces, encode_json

PB = "application/x-protobuf"
JS = "application/json"

# -- strategies --------------------------------------------------------------------------------------
nonzero_id = st.binary(min_size=16, max_size=16).filter(any)
nonzero_span = st.binary(min_size=8, max_size=8).filter(any)
text = st.text(max_size=12)
scalar_value = st.one_of(
    text.map(lambda s: AnyValue(string_value=s)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.floats(allow_nan=False).map(lambda f: AnyValue(double_value=f)),
)
any_value = st.one_of(
    scalar_value,
    st.lists(scalar_value, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
)
key_values = st.lists(st.builds(KeyValue, key=text, value=any_value), max_size=4)
u64 = st.integers(0, 2**64 - 1)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    return Span(
        trace_id=draw(nonzero_id),
        span_id=draw(nonzero_span),
        parent_span_id=draw(st.one_of(st.just(b""), nonzero_span)),
        name=draw(text),
        kind=draw(st.integers(0, 5)),
        start_time_unix_nano=draw(u64),
        end_time_unix_nano=draw(u64),
        attributes=draw(key_values),
        status=Status(code=draw(st.integers(0, 2)), message=draw(text)),
        links=draw(st.lists(st.builds(Span.Link, trace_id=nonzero_id, span_id=nonzero_span), max_size=2)),
    )


@st.composite
def trace_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    groups = draw(
        st.lists(
            st.builds(
                ResourceSpans,
                resource=st.builds(Resource, attributes=key_values),
                scope_spans=st.lists(
                    st.builds(ScopeSpans, spans=st.lists(spans(), min_size=1, max_size=4)),
                    min_size=1,
                    max_size=2,
                ),
            ),
            min_size=1,
            max_size=3,
        )
    )
    return ExportTraceServiceRequest(resource_spans=groups)


exemplars = st.lists(
    st.builds(
        Exemplar,
        trace_id=nonzero_id,
        span_id=nonzero_span,
        as_double=st.floats(allow_nan=False),
        time_unix_nano=u64,
    ),
    max_size=2,
)


@st.composite
def metric(draw: st.DrawFn) -> Metric:
    name = draw(st.text(min_size=1, max_size=20))
    n = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exp", "summary"]))
    m = Metric(name=name, unit=draw(st.sampled_from(["", "s", "ms"])))
    for _ in range(n):
        a = draw(key_values)
        t0, t1 = draw(u64), draw(u64)
        if kind in ("gauge", "sum"):
            p = NumberDataPoint(
                attributes=a, start_time_unix_nano=t0, time_unix_nano=t1, exemplars=draw(exemplars)
            )
            if draw(st.booleans()):
                p.as_int = draw(st.integers(-(2**63), 2**63 - 1))
            else:
                p.as_double = draw(st.floats(allow_nan=False))
            target = m.gauge if kind == "gauge" else m.sum
            target.data_points.append(p)
        elif kind == "histogram":
            bounds = sorted(draw(st.lists(st.floats(0, 1e6), max_size=5)))
            counts = draw(st.lists(st.integers(0, 1000), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
            m.histogram.data_points.append(
                HistogramDataPoint(
                    attributes=a,
                    start_time_unix_nano=t0,
                    time_unix_nano=t1,
                    count=sum(counts),
                    sum=draw(st.floats(0, 1e9)),
                    bucket_counts=counts,
                    explicit_bounds=bounds,
                    exemplars=draw(exemplars),
                )
            )
            m.histogram.aggregation_temporality = draw(st.integers(0, 2))
        elif kind == "exp":
            p = ExponentialHistogramDataPoint(
                attributes=a,
                start_time_unix_nano=t0,
                time_unix_nano=t1,
                count=draw(u64),
                scale=draw(st.integers(-10, 20)),
                zero_count=draw(u64),
            )
            p.positive.offset = draw(st.integers(-100, 100))
            p.positive.bucket_counts.extend(draw(st.lists(u64, max_size=4)))
            m.exponential_histogram.data_points.append(p)
        else:
            m.summary.data_points.append(
                SummaryDataPoint(
                    attributes=a,
                    start_time_unix_nano=t0,
                    time_unix_nano=t1,
                    count=draw(u64),
                    sum=draw(st.floats(0, 1e9)),
                )
            )
    return m


@st.composite
def metric_requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    groups = draw(
        st.lists(
            st.builds(
                ResourceMetrics,
                resource=st.builds(Resource, attributes=key_values),
                scope_metrics=st.lists(
                    st.builds(ScopeMetrics, metrics=st.lists(metric(), min_size=1, max_size=3)),
                    min_size=1,
                    max_size=2,
                ),
            ),
            min_size=1,
            max_size=2,
        )
    )
    return ExportMetricsServiceRequest(resource_metrics=groups)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "resourceMetrics",
                    "scopeSpans",
                    "scopeMetrics",
                    "spans",
                    "metrics",
                    "traceId",
                    "spanId",
                    "parentSpanId",
                    "kind",
                    "name",
                    "histogram",
                    "sum",
                    "gauge",
                    "dataPoints",
                    "exemplars",
                    "attributes",
                    "key",
                    "value",
                    "stringValue",
                    "startTimeUnixNano",
                    "bucketCounts",
                    "explicitBounds",
                    "resource",
                    "status",
                    "code",
                    "x",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- round trips -------------------------------------------------------------------------------------
@FAST
@given(trace_requests())
def test_traces_protobuf_and_json_round_trip(req: ExportTraceServiceRequest) -> None:
    assert decode_traces(req.SerializeToString(), PB) == req
    assert decode_traces(encode_json(req), JS) == req


@FAST
@given(metric_requests())
def test_metrics_protobuf_and_json_round_trip(req: ExportMetricsServiceRequest) -> None:
    assert decode_metrics(req.SerializeToString(), PB) == req
    assert decode_metrics(encode_json(req), JS) == req


@FAST
@given(metric_requests())
def test_compact_metrics_view_sees_the_same_points(req: ExportMetricsServiceRequest) -> None:
    view = otlp.metrics_view(req.SerializeToString())
    for rm, vrm in zip(req.resource_metrics, view.resource_metrics, strict=True):
        assert Resource.FromString(vrm.resource) == rm.resource
        for sm, vsm in zip(rm.scope_metrics, vrm.scope_metrics, strict=True):
            for m, vm in zip(sm.metrics, vsm.metrics, strict=True):
                assert vm.name == m.name and vm.unit == m.unit
                kind = m.WhichOneof("data")
                vdata = getattr(vm, kind)
                for p, vp in zip(getattr(m, kind).data_points, vdata.data_points, strict=True):
                    assert [otlp.attribute(raw) for raw in vp.attributes] == [
                        (kv.key, otlp.any_value(kv.value)) for kv in p.attributes
                    ]
                    assert (vp.start_time_unix_nano, vp.time_unix_nano) == (
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    )
                    if kind == "histogram":
                        n = len(p.bucket_counts)
                        assert struct.unpack(f"<{n}Q", vp.bucket_counts) == tuple(p.bucket_counts)
                        assert vp.count == p.count and vp.sum == p.sum
                        nb = len(p.explicit_bounds)
                        assert struct.unpack(f"<{nb}d", vp.explicit_bounds) == tuple(p.explicit_bounds)
                    elif kind in ("gauge", "sum"):
                        assert (vp.as_double or vp.as_int) == (p.as_double or p.as_int)
                    elif kind == "exponential_histogram":
                        assert list(vp.positive.bucket_counts) == list(p.positive.bucket_counts)
                        assert (vp.scale, vp.positive.offset) == (p.scale, p.positive.offset)


# -- bad input never escapes as anything but OtlpDecodeError -----------------------------------------
def _decodes_or_rejects(fn: Any, data: bytes, ct: str) -> Any:
    try:
        return fn(data, ct)
    except OtlpDecodeError as e:
        assert str(e)
        return None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_decoded_or_rejected(data: bytes) -> None:
    for fn in (decode_traces, decode_metrics):
        for ct in (PB, JS):
            _decodes_or_rejects(fn, data, ct)
    with contextlib.suppress(OtlpDecodeError):
        otlp.metrics_view(data)
    with contextlib.suppress(OtlpDecodeError):
        otlp.spans_view(data)


@FAST
@given(trace_requests(), st.data())
def test_truncated_trace_requests_are_rejected_or_still_valid(
    req: ExportTraceServiceRequest, data: st.DataObject
) -> None:
    raw = req.SerializeToString()
    cut = data.draw(st.integers(1, len(raw) - 1))
    out = _decodes_or_rejects(decode_traces, raw[:cut], PB)
    if out is not None:  # cut at a field boundary: whatever came through has well-formed ids
        for rs in out.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    assert len(s.trace_id) == 16 and len(s.span_id) == 8
    js = encode_json(req)
    _decodes_or_rejects(decode_traces, js[: data.draw(st.integers(0, len(js) - 1))], JS)


@FAST
@given(metric_requests(), st.data())
def test_truncated_metric_requests_are_rejected_or_still_valid(
    req: ExportMetricsServiceRequest, data: st.DataObject
) -> None:
    raw = req.SerializeToString()
    _decodes_or_rejects(decode_metrics, raw[: data.draw(st.integers(1, len(raw) - 1))], PB)
    js = encode_json(req)
    _decodes_or_rejects(decode_metrics, js[: data.draw(st.integers(0, len(js) - 1))], JS)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_json_is_decoded_or_rejected(value: Any) -> None:
    data = json.dumps(value).encode()
    _decodes_or_rejects(decode_traces, data, JS)
    _decodes_or_rejects(decode_metrics, data, JS)


# -- OTLP/JSON specifics -----------------------------------------------------------------------------
TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"


def _span_json(**over: Any) -> bytes:
    s = {
        "traceId": TRACE_HEX,
        "spanId": SPAN_HEX,
        "parentSpanId": "",
        "name": "GET /",
        "kind": 2,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": 1544712661000000000,
        "status": {"code": 2},
    }
    s.update(over)
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]
                    },
                    "scopeSpans": [{"spans": [s], "unknownField": 1}],
                }
            ]
        }
    ).encode()


def test_json_ids_are_hex_and_enums_and_int64_accept_both_forms() -> None:
    req = decode_traces(_span_json(), "application/json; charset=utf-8")
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_HEX) and span.span_id == bytes.fromhex(SPAN_HEX)
    assert span.parent_span_id == b"" and span.kind == Span.SPAN_KIND_SERVER
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.end_time_unix_nano == 1544712661000000000
    assert span.status.code == Status.STATUS_CODE_ERROR
    by_name = decode_traces(_span_json(kind="SPAN_KIND_SERVER", status={"code": "STATUS_CODE_ERROR"}), JS)
    assert by_name == req
    upper = decode_traces(_span_json(traceId=TRACE_HEX.upper()), JS)
    assert upper == req


def test_json_snake_case_field_names_are_accepted() -> None:
    data = json.dumps(
        {
            "resource_spans": [
                {
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": TRACE_HEX,
                                    "span_id": SPAN_HEX,
                                    "parent_span_id": "0102030405060708",
                                    "kind": 3,
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )
    span = decode_traces(data.encode(), JS).resource_spans[0].scope_spans[0].spans[0]
    assert span.parent_span_id == bytes(range(1, 9)) and span.kind == Span.SPAN_KIND_CLIENT


def test_encode_json_writes_hex_ids() -> None:
    req = decode_traces(_span_json(), JS)
    d = json.loads(encode_json(req))
    s = d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert s["traceId"] == TRACE_HEX and s["spanId"] == SPAN_HEX and s["kind"] == 2


def test_json_metric_exemplar_ids_are_hex() -> None:
    data = json.dumps(
        {
            "resourceMetrics": [
                {
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": "m",
                                    "sum": {
                                        "aggregationTemporality": 1,
                                        "dataPoints": [
                                            {
                                                "asInt": "3",
                                                "timeUnixNano": "5",
                                                "exemplars": [
                                                    {
                                                        "traceId": TRACE_HEX,
                                                        "spanId": SPAN_HEX,
                                                        "asDouble": 1.5,
                                                    }
                                                ],
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )
    p = decode_metrics(data.encode(), JS).resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    assert p.as_int == 3 and p.exemplars[0].trace_id == bytes.fromhex(TRACE_HEX)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_span_json(traceId=base64.b64encode(bytes.fromhex(TRACE_HEX)).decode()), "not a hex string"),
        (_span_json(traceId="abc"), "not a hex string"),
        (_span_json(traceId="zz" * 16), "not a hex string"),
        (_span_json(traceId="ab" * 8), "wrong lengths"),
        (_span_json(spanId="ab" * 4), "wrong lengths"),
        (_span_json(parentSpanId="ab" * 3), "wrong lengths"),
        (_span_json(traceId="00" * 16), "all-zero"),
        (_span_json(kind={"not": "an enum"}), "does not match the schema"),
        (_span_json(startTimeUnixNano="soon"), "does not match the schema"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"resourceSpans": [', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_bad_json_traces_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(OtlpDecodeError, match=reason):
        decode_traces(data, JS)


def test_protobuf_rejections() -> None:
    good = decode_traces(_span_json(), JS)
    raw = good.SerializeToString()
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf"):
        decode_traces(raw[:-3], PB)
    with pytest.raises(OtlpDecodeError, match="no spans found"):
        decode_traces(b"\x08\x01", PB)  # field 1 as a varint: an unknown field, nothing else
    only_resource = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="x"))])
            )
        ]
    )
    with pytest.raises(OtlpDecodeError, match="no spans found"):
        decode_traces(only_resource.SerializeToString(), PB)
    bad_ids = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(trace_id=b"\x01" * 15, span_id=b"\x01" * 8)])])
        ]
    )
    with pytest.raises(OtlpDecodeError, match=r"spans\[0\]: ids have wrong lengths"):
        decode_traces(bad_ids.SerializeToString(), PB)
    with pytest.raises(OtlpDecodeError, match="unsupported content type"):
        decode_traces(raw, "text/plain")
    assert decode_traces(b"", PB) == ExportTraceServiceRequest()  # an empty export is valid
    assert decode_traces(raw, "application/protobuf") == good


def test_metric_rejections() -> None:
    nameless = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                scope_metrics=[
                    ScopeMetrics(metrics=[Metric(gauge=Gauge(data_points=[NumberDataPoint(as_int=1)]))])
                ]
            )
        ]
    )
    with pytest.raises(OtlpDecodeError, match="metric has no name"):
        decode_metrics(nameless.SerializeToString(), PB)
    bad_exemplar = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                scope_metrics=[
                    ScopeMetrics(
                        metrics=[
                            Metric(
                                name="m",
                                sum=Sum(
                                    data_points=[
                                        NumberDataPoint(as_int=1, exemplars=[Exemplar(trace_id=b"\x01" * 3)])
                                    ]
                                ),
                            )
                        ]
                    )
                ]
            )
        ]
    )
    with pytest.raises(OtlpDecodeError, match="exemplar ids"):
        decode_metrics(bad_exemplar.SerializeToString(), PB)
    with pytest.raises(OtlpDecodeError, match="no metric data points"):
        decode_metrics(b"\x10\x05", PB)
    ok = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                scope_metrics=[
                    ScopeMetrics(
                        metrics=[
                            Metric(
                                name="h",
                                histogram=Histogram(
                                    data_points=[HistogramDataPoint(count=1, bucket_counts=[1])]
                                ),
                            ),
                            Metric(
                                name="e",
                                exponential_histogram=ExponentialHistogram(
                                    data_points=[ExponentialHistogramDataPoint(count=2)]
                                ),
                            ),
                            Metric(name="s", summary=Summary(data_points=[SummaryDataPoint(count=3)])),
                        ]
                    )
                ]
            )
        ]
    )
    assert decode_metrics(ok.SerializeToString(), PB) == ok
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf"):
        otlp.metrics_view(ok.SerializeToString()[:-2])


def test_attribute_values_of_every_type() -> None:
    def raw(v: AnyValue) -> bytes:
        return KeyValue(key="k", value=v).SerializeToString()

    assert otlp.attribute(raw(AnyValue(string_value="x"))) == ("k", "x")
    assert otlp.attribute(raw(AnyValue(int_value=-5))) == ("k", -5)
    assert otlp.attribute(raw(AnyValue(bool_value=False))) == ("k", False)
    assert otlp.attribute(raw(AnyValue(double_value=0.25))) == ("k", 0.25)
    assert otlp.attribute(raw(AnyValue())) == ("k", None)
    key, v = otlp.attribute(raw(AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))))
    assert key == "k" and isinstance(v, str)
    assert json.loads(v) == {"arrayValue": {"values": [{"intValue": "1"}]}}


@FAST
@given(trace_requests())
def test_compact_spans_view_sees_the_same_spans(req: ExportTraceServiceRequest) -> None:
    view = otlp.spans_view(req.SerializeToString())
    for rs, vrs in zip(req.resource_spans, view.resource_spans, strict=True):
        assert Resource.FromString(vrs.resource) == rs.resource
        for ss, vss in zip(rs.scope_spans, vrs.scope_spans, strict=True):
            for s, v in zip(ss.spans, vss.spans, strict=True):
                assert (v.trace_id, v.span_id, v.parent_span_id, v.name, v.kind) == (
                    s.trace_id,
                    s.span_id,
                    s.parent_span_id,
                    s.name,
                    s.kind,
                )
                assert (v.start_time_unix_nano, v.end_time_unix_nano, v.status.code) == (
                    s.start_time_unix_nano,
                    s.end_time_unix_nano,
                    s.status.code,
                )
                assert [otlp.attribute(raw) for raw in v.attributes] == [
                    (kv.key, otlp.any_value(kv.value)) for kv in s.attributes
                ]


# -- decode_spans and split_spans (what admission keeps, and how it cuts) ---------------------------------
def _labelled(req: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """``req`` with a schema url on every resource and a name and schema url on every scope."""
    for i, rs in enumerate(req.resource_spans):
        rs.schema_url = f"r{i}"
        for j, ss in enumerate(rs.scope_spans):
            ss.scope.name, ss.schema_url = f"scope{i}.{j}", f"s{i}.{j}"
    return req


def _placed(req: ExportTraceServiceRequest) -> list[tuple[bytes, str, str, str, bytes]]:
    """Every span with where it stands: (resource, its schema url, scope name, scope schema url, span)."""
    return [(rs.resource.SerializeToString(), rs.schema_url, ss.scope.name, ss.schema_url,
             sp.SerializeToString()) for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]


@FAST
@given(trace_requests())
def test_decode_spans_keeps_the_request_and_reads_every_span_time(req: ExportTraceServiceRequest) -> None:
    req = _labelled(req)
    times = [(sp.start_time_unix_nano, sp.end_time_unix_nano) for rs in req.resource_spans
             for ss in rs.scope_spans for sp in ss.spans]
    for data, ct in ((req.SerializeToString(), PB), (encode_json(req), JS)):
        view, got = otlp.decode_spans(data, ct)
        assert _placed(ExportTraceServiceRequest.FromString(view.SerializeToString())) == _placed(req)
        assert got == times


def test_decode_spans_rejects_what_decode_traces_rejects() -> None:
    bad = Span(trace_id=b"abc", span_id=b"\x01" * 8)
    data = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[bad])])])
    with pytest.raises(otlp.OtlpSchemaError, match="ids have wrong lengths"):
        otlp.decode_spans(data.SerializeToString())
    with pytest.raises(OtlpDecodeError, match="no spans found"):
        otlp.decode_spans(b"\x0a\x00\x0a\x00")  # two empty ResourceSpans: bytes without a span
    assert otlp.span_count(otlp.decode_spans(b"")[0]) == 0


@FAST
@given(trace_requests(), st.data())
def test_split_spans_keeps_every_span_under_its_resource_and_scope(
        req: ExportTraceServiceRequest, data: st.DataObject) -> None:
    req = _labelled(req)
    placed = _placed(req)
    keys = data.draw(st.lists(st.integers(0, 2), min_size=len(placed), max_size=len(placed)))
    it = iter(keys)
    parts = otlp.split_spans(otlp.spans_view(req.SerializeToString()), lambda _: next(it))
    assert sorted(parts) == sorted(set(keys))
    for k, part in parts.items():
        full = ExportTraceServiceRequest.FromString(part.SerializeToString())
        assert _placed(full) == [p for p, key in zip(placed, keys, strict=True) if key == k]
        assert all(rs.scope_spans and all(ss.spans for ss in rs.scope_spans) for rs in full.resource_spans)

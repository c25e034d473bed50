"""``admit_metric_bytes`` gives :func:`admit_metrics`'s verdict on every input, its kept part serialized.

The oracle is :func:`admit_metrics` (what the Kafka road's stage 1 applies): same points kept, same latest
time, same rejections (reason and dead-letter bytes), same count cut out; what is kept decodes to the
same request, and a protobuf request kept whole is kept as the very bytes that arrived.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar

from tests.admission_cases import CASES, Y2100, metrics
from tests.topology.wire.test_otlp import metric_requests
from topology.admit import MAX_FUTURE, MAX_PAST, MIN_TIME, admit_metric_bytes, admit_metrics
from topology.catalog import NAME_MAX
from topology.wire.otlp import JSON, PROTOBUF, encode_json

NOW = 1_760_000_000.0


def _points(req: ExportMetricsServiceRequest) -> list[object]:
    out = []
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    out.extend(getattr(m, kind).data_points)
    return out


def same_verdict(data: bytes, content_type: str = PROTOBUF, produced: float | None = NOW) -> None:
    want = admit_metrics(data, content_type, produced)
    got = admit_metric_bytes(data, content_type, produced)
    assert (got.items, got.latest, got.rejected, got.dropped) == (want.items, want.latest, want.rejected,
                                                                 want.dropped)
    if want.kept is None:
        assert got.kept is None
        return
    assert isinstance(got.kept, bytes)
    assert ExportMetricsServiceRequest.FromString(got.kept) == want.kept
    if not want.rejected and content_type == PROTOBUF:
        assert got.kept is data  # the bytes that arrived, not a copy


# times: plausible around NOW, or not (too old, too far ahead, before 2000)
TIMES = st.one_of(
    st.floats(NOW - MAX_PAST + 1, NOW + MAX_FUTURE - 1),
    st.sampled_from([0.0, MIN_TIME - 1, NOW - MAX_PAST - 10, NOW + MAX_FUTURE + 10, float(Y2100)]),
)


@st.composite
def plausible_requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    """Generated requests with times mostly plausible, sometimes a long service name, a metric without a
    name, exemplars with good or bad ids."""
    req = draw(metric_requests())
    for rm in req.resource_metrics:
        if draw(st.integers(0, 9)) == 0:
            rm.resource.attributes.append(KeyValue(key="service.name",
                                                   value=AnyValue(string_value="s" * (NAME_MAX + 1))))
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if draw(st.integers(0, 19)) == 0:
                    m.name = ""
    bad_times = draw(st.integers(0, 3)) == 0
    for dp in _points(req):
        t = draw(TIMES) if bad_times else draw(st.floats(NOW - 3600, NOW))
        dp.time_unix_nano = int(t * 1e9)  # type: ignore[attr-defined]
        ex = getattr(dp, "exemplars", None)
        if ex is not None:
            del ex[:]
            if draw(st.integers(0, 4)) == 0:
                ex.append(Exemplar(trace_id=draw(st.sampled_from([b"", b"\x01" * 16, b"\x01" * 3])),
                                   span_id=draw(st.sampled_from([b"", b"\x02" * 8, b"\x02" * 5])),
                                   as_int=1))
    return req


@settings(max_examples=300, deadline=None)
@given(plausible_requests())
def test_the_same_verdict_as_admit_metrics(req: ExportMetricsServiceRequest) -> None:
    same_verdict(req.SerializeToString())


@settings(max_examples=100, deadline=None)
@given(metric_requests())
def test_the_same_verdict_on_any_times_and_exemplars(req: ExportMetricsServiceRequest) -> None:
    same_verdict(req.SerializeToString())
    same_verdict(req.SerializeToString(), produced=None)


@settings(max_examples=100, deadline=None)
@given(plausible_requests())
def test_the_same_verdict_over_json(req: ExportMetricsServiceRequest) -> None:
    same_verdict(encode_json(req), JSON)


@settings(max_examples=200, deadline=None)
@given(plausible_requests(), st.randoms(use_true_random=False))
def test_the_same_verdict_on_damaged_bytes(req: ExportMetricsServiceRequest, rng: random.Random) -> None:
    data = bytearray(req.SerializeToString())
    if not data:
        return
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data))
        data[i] = rng.randrange(256)
    same_verdict(bytes(data))
    same_verdict(bytes(data[:rng.randrange(len(data))]))


@given(st.binary(max_size=200))
def test_the_same_verdict_on_random_bytes(data: bytes) -> None:
    same_verdict(data)


def test_the_same_verdict_on_every_metrics_case_of_both_roads() -> None:
    for case in CASES:
        if case.kind == "metrics":
            same_verdict(case.payload(NOW))
    same_verdict(metrics(NOW - 1, Y2100, NOW - 2))
    same_verdict(b"")
    same_verdict(metrics(NOW - 1), "text/plain")


def test_requests_kept_whole_are_judged_without_admit_metrics() -> None:
    from topology.admit import _metric_bytes_kept

    assert _metric_bytes_kept(metrics(NOW - 1, NOW - 2), NOW) is not None
    with_exemplar = ExportMetricsServiceRequest.FromString(metrics(NOW - 1))
    point = with_exemplar.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
    point.exemplars.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, as_int=1)
    assert _metric_bytes_kept(with_exemplar.SerializeToString(), NOW) is None  # ids checked by admit_metrics
    assert _metric_bytes_kept(metrics(NOW - 1, Y2100), NOW) is None  # a resource to cut out

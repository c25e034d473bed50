"""The native columnar decoder of OTLP metrics against upb's parse of the same bytes (the compact schema of
``metrics_view``): the same accept/reject decision, and when both accept, the same content, point by point."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.topology.wire.test_otlp import metric_requests
from topology.wire import metric_columns as mc
from topology.wire.otlp import OtlpDecodeError, metrics_view

pytestmark = pytest.mark.skipif(not mc.NATIVE and os.environ.get("CI") != "true",
                                reason="native metrics decoder not built")

_KINDS = (("histogram", mc.HISTOGRAM), ("sum", mc.SUM), ("gauge", mc.GAUGE),
          ("exponential_histogram", mc.EXPONENTIAL), ("summary", mc.SUMMARY))


def _f(x: float) -> bytes:
    return struct.pack("<d", x)  # compares NaN and -0.0 by their bits


def from_view(data: bytes) -> Any:
    """What the columns must hold, read from upb's parse (the stage's Python path)."""
    view = metrics_view(data)
    resources, metrics, points = [], [], []
    for ri, rm in enumerate(view.resource_metrics):
        resources.append(rm.resource)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind, field = next(((k, f) for f, k in _KINDS if m.HasField(f)), (mc.NONE, None))
                data_ = getattr(m, field) if field else None
                dps = list(data_.data_points) if data_ is not None else []
                temporality = 0 if data_ is None or kind == mc.SUMMARY else data_.aggregation_temporality
                metrics.append((m.name, m.unit, kind, temporality, ri, len(dps)))
                for dp in dps:
                    p: dict[str, Any] = {"key": (rm.resource, m.name, tuple(dp.attributes)),
                                         "time": dp.time_unix_nano, "start": dp.start_time_unix_nano}
                    if kind == mc.HISTOGRAM:
                        n = len(dp.bucket_counts) // 8
                        p.update(count=dp.count, sum=_f(dp.sum), bounds=dp.explicit_bounds,
                                 buckets=list(struct.unpack_from(f"<{n}Q", dp.bucket_counts)))
                    elif kind in (mc.SUM, mc.GAUGE):
                        p.update(value=_f(float(dp.as_double or dp.as_int)))
                    elif kind == mc.EXPONENTIAL:
                        p.update(count=dp.count, sum=_f(dp.sum), scale=dp.scale, offset=dp.positive.offset,
                                 buckets=list(dp.positive.bucket_counts),
                                 zero=(dp.zero_count + sum(dp.negative.bucket_counts)) % 2**64)
                    else:
                        p.update(count=dp.count, sum=_f(dp.sum))
                    points.append(p)
    return resources, metrics, points


def from_columns(data: bytes) -> Any:
    c = mc.metric_columns(data)
    points = []
    for r in c.points:
        m = c.metrics[int(r["metric"])]
        kind = m[2]
        key = mc.key_parts(c.keys[int(r["key"])])
        assert c.key_metric[int(r["key"])] <= int(r["metric"])
        p: dict[str, Any] = {"key": key, "time": int(r["time"]), "start": int(r["start"])}
        buckets = c.buckets[int(r["boff"]):int(r["boff"]) + int(r["blen"])].tolist()
        if kind == mc.HISTOGRAM:
            p.update(count=int(r["count"]), sum=_f(float(r["sum"])), bounds=c.bounds[int(r["bounds"])],
                     buckets=buckets)
        elif kind in (mc.SUM, mc.GAUGE):
            p.update(value=_f(float(r["value"])))
        elif kind == mc.EXPONENTIAL:
            p.update(count=int(r["count"]), sum=_f(float(r["sum"])), scale=int(r["scale"]),
                     offset=int(r["bounds"]), buckets=buckets, zero=int(r["zero"]))
        else:
            p.update(count=int(r["count"]), sum=_f(float(r["sum"])))
        points.append(p)
    assert len(set(c.keys)) == len(c.keys)
    return c.resources, c.metrics, points


def same_decision(data: bytes) -> None:
    try:
        want = from_view(data)
    except OtlpDecodeError as e:
        with pytest.raises(OtlpDecodeError) as got:
            mc.metric_columns(data)
        assert str(got.value) == str(e)  # upb's reason, word for word
        return
    assert from_columns(data) == want


def test_ci_builds_the_native_decoder() -> None:
    if os.environ.get("CI") == "true":
        assert mc.NATIVE, "topology.wire._metrics is missing or of another layout: run pip install -e ."


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric_requests())
def test_valid_requests_decode_as_upb_reads_them(req: ExportMetricsServiceRequest) -> None:
    same_decision(req.SerializeToString())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric_requests(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                                   max_size=4), st.integers(0, 10_000))
def test_damaged_requests_get_upbs_decision(req: ExportMetricsServiceRequest, edits: list[tuple[int, int]],
                                            cut: int) -> None:
    data = bytearray(req.SerializeToString())
    for at, byte in edits:
        if data:
            data[at % len(data)] = byte
    same_decision(bytes(data[:max(1, len(data) - cut % 8)]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_get_upbs_decision(data: bytes) -> None:
    same_decision(data)


def test_a_known_field_with_another_wire_type_is_kept_as_upb_keeps_it() -> None:
    # resource_metrics (field 1) sent as a varint: upb keeps it as an unknown field, prost refuses it
    data = bytes([0x08, 0x01])
    same_decision(data)
    assert mc.metric_columns(data).metrics == []
    # and a well-formed histogram point decodes natively
    good = ExportMetricsServiceRequest()
    m = good.resource_metrics.add().scope_metrics.add().metrics.add(name="ipc.client.call")
    m.histogram.data_points.add(time_unix_nano=5, count=3, bucket_counts=[1, 2], explicit_bounds=[0.1])
    same_decision(good.SerializeToString())


def test_malformed_bytes_raise_upbs_reason() -> None:
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf ExportMetricsServiceRequest"):
        mc.metric_columns(b"\x0a\x05\x01")

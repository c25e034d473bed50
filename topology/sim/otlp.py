"""A minimal OTLP protobuf writer: the few messages the simulator emits, encoded straight to bytes.

Building ``opentelemetry.proto`` message objects costs ~25 us per data point or span; writing the
protobuf wire format directly costs a few. The output is ordinary OTLP (tests parse every payload
with the official ``opentelemetry-proto`` classes). Field numbers follow opentelemetry-proto v1:

    ExportMetricsServiceRequest.resource_metrics=1   ExportTraceServiceRequest.resource_spans=1
    ResourceMetrics/ResourceSpans: resource=1, scope_metrics/scope_spans=2   Resource.attributes=1
    ScopeMetrics/ScopeSpans: scope=1, metrics/spans=2   InstrumentationScope: name=1, version=2
    Metric: name=1, unit=3, gauge=5, sum=7, histogram=9   Gauge.data_points=1
    Sum: data_points=1, aggregation_temporality=2, is_monotonic=3   Histogram: data_points=1, temporality=2
    NumberDataPoint: start=2, time=3, as_double=4, attributes=7
    HistogramDataPoint: start=2, time=3, count=4, sum=5, bucket_counts=6, explicit_bounds=7, attributes=9
    Span: trace_id=1, span_id=2, parent_span_id=4, name=5, kind=6, start=7, end=8, attributes=9, status=15
    Status: message=2, code=3   KeyValue: key=1, value=2   AnyValue: string=1, bool=2, int=3, double=4
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

AttrValue = str | int | bool | float
Attrs = Sequence[tuple[str, AttrValue]]

TEMPORALITY_DELTA = 1
TEMPORALITY_CUMULATIVE = 2
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
SPAN_KIND_PRODUCER = 4
SPAN_KIND_CONSUMER = 5
STATUS_CODE_ERROR = 2

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def length_delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + varint(len(payload)) + payload


def string(field: int, s: str) -> bytes:
    return length_delimited(field, s.encode("utf-8"))


def fixed64(field: int, n: int) -> bytes:
    return _tag(field, 1) + _FIXED64.pack(n)


def double(field: int, x: float) -> bytes:
    return _tag(field, 1) + _DOUBLE.pack(x)


def uint(field: int, n: int) -> bytes:
    return _tag(field, 0) + varint(n)


def packed_fixed64(field: int, values: Sequence[int]) -> bytes:
    return length_delimited(field, struct.pack(f"<{len(values)}Q", *values))


def packed_double(field: int, values: Sequence[float]) -> bytes:
    return length_delimited(field, struct.pack(f"<{len(values)}d", *values))


def any_value(v: AttrValue) -> bytes:
    if isinstance(v, bool):
        return uint(2, int(v))
    if isinstance(v, int):
        return uint(3, v)
    if isinstance(v, float):
        return double(4, v)
    return string(1, v)


def key_value(key: str, value: AttrValue) -> bytes:
    """An encoded KeyValue message (without its field tag)."""
    return string(1, key) + length_delimited(2, any_value(value))


class AttributeCache:
    """Encoded ``attributes`` fields, cached by (attributes, field number): they repeat every export."""

    def __init__(self, limit: int = 200_000) -> None:
        self._kv: dict[tuple[str, AttrValue, type], bytes] = {}
        self._blocks: dict[tuple[tuple[tuple[str, AttrValue], ...], int], bytes] = {}
        self.limit = limit

    def kv(self, key: str, value: AttrValue) -> bytes:
        ck = (key, value, type(value))
        hit = self._kv.get(ck)
        if hit is None:
            if len(self._kv) > self.limit:
                self._kv.clear()
            hit = self._kv[ck] = key_value(key, value)
        return hit

    def field(self, field: int, attrs: Attrs) -> bytes:
        """A repeated KeyValue field: one length-delimited entry per attribute."""
        key = (tuple(attrs), field)
        hit = self._blocks.get(key)
        if hit is None:
            if len(self._blocks) > self.limit:
                self._blocks.clear()
            tag = _tag(field, 2)
            hit = self._blocks[key] = b"".join(
                tag + varint(len(kv)) + kv for kv in (self.kv(k, v) for k, v in attrs)
            )
        return hit


# -- metrics -----------------------------------------------------------------------------------------
def histogram_point(
    attributes: bytes,
    start_ns: int,
    time_ns: int,
    count: int,
    total: float,
    buckets: Sequence[int],
    bounds: bytes,
) -> bytes:
    """``attributes``: an encoded field 9 block; ``bounds``: an encoded field 7 (:func:`packed_double`)."""
    return (
        fixed64(2, start_ns)
        + fixed64(3, time_ns)
        + fixed64(4, count)
        + double(5, total)
        + packed_fixed64(6, buckets)
        + bounds
        + attributes
    )


def number_point(attributes: bytes, start_ns: int, time_ns: int, value: float) -> bytes:
    """``attributes``: an encoded field 7 block."""
    return (fixed64(2, start_ns) if start_ns else b"") + fixed64(3, time_ns) + double(4, value) + attributes


def histogram_metric(name: str, unit: str, points: Sequence[bytes], temporality: int) -> bytes:
    body = b"".join(length_delimited(1, p) for p in points) + uint(2, temporality)
    return string(1, name) + string(3, unit) + length_delimited(9, body)


def sum_metric(name: str, unit: str, points: Sequence[bytes], temporality: int, monotonic: bool) -> bytes:
    body = b"".join(length_delimited(1, p) for p in points) + uint(2, temporality) + uint(3, int(monotonic))
    return string(1, name) + string(3, unit) + length_delimited(7, body)


def gauge_metric(name: str, unit: str, points: Sequence[bytes]) -> bytes:
    body = b"".join(length_delimited(1, p) for p in points)
    return string(1, name) + string(3, unit) + length_delimited(5, body)


def scope(name: str, version: str) -> bytes:
    return string(1, name) + string(2, version)


def resource(attributes: bytes) -> bytes:
    """``attributes``: an encoded field 1 block."""
    return attributes


def resource_metrics(resource_enc: bytes, scope_enc: bytes, metrics: Sequence[bytes]) -> bytes:
    sm = length_delimited(1, scope_enc) + b"".join(length_delimited(2, m) for m in metrics)
    return length_delimited(1, resource_enc) + length_delimited(2, sm)


def export_metrics(resources: Sequence[bytes]) -> bytes:
    """An ExportMetricsServiceRequest from encoded ResourceMetrics."""
    return b"".join(length_delimited(1, r) for r in resources)


# -- traces ------------------------------------------------------------------------------------------
def span(
    trace_id: bytes,
    span_id: bytes,
    parent: bytes,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: bytes,
    error_message: str | None = None,
) -> bytes:
    """``attributes``: an encoded field 9 block."""
    out = (
        length_delimited(1, trace_id)
        + length_delimited(2, span_id)
        + (length_delimited(4, parent) if parent else b"")
        + string(5, name)
        + uint(6, kind)
        + fixed64(7, start_ns)
        + fixed64(8, end_ns)
        + attributes
    )
    if error_message is not None:
        out += length_delimited(15, string(2, error_message) + uint(3, STATUS_CODE_ERROR))
    return out


def resource_spans(resource_enc: bytes, scope_enc: bytes, spans: Sequence[bytes]) -> bytes:
    ss = length_delimited(1, scope_enc) + b"".join(length_delimited(2, s) for s in spans)
    return length_delimited(1, resource_enc) + length_delimited(2, ss)


def export_traces(resources: Sequence[bytes]) -> bytes:
    """An ExportTraceServiceRequest from encoded ResourceSpans."""
    return b"".join(length_delimited(1, r) for r in resources)

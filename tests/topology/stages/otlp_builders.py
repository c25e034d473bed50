"""Small builders of OTLP protobuf messages for tests (times in epoch seconds, converted to nanoseconds)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

CUMULATIVE = 2
DELTA = 1
KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
OTEL_MS_BOUNDS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
                  7500.0, 10000.0)
OTEL_S_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def ns(seconds: float) -> int:
    return round(seconds * 1e9)


def value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def attrs(d: Mapping[str, Any] | None) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in (d or {}).items()]


def resource(service: str | None, **extra: Any) -> Resource:
    d: dict[str, Any] = {} if service is None else {"service.name": service}
    d.update({k.replace("_", "."): v for k, v in extra.items()})
    return Resource(attributes=attrs(d))


# -- traces ------------------------------------------------------------------------------------------
def trace_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


def span(trace: int, sid: int, parent: int | None = None, kind: str = "server", name: str = "op",
         start: float = 1_000.0, duration: float = 0.01, error: bool = False,
         attributes: Mapping[str, Any] | None = None) -> Span:
    return Span(
        trace_id=trace_id(trace),
        span_id=span_id(sid),
        parent_span_id=b"" if parent is None else span_id(parent),
        name=name,
        kind=KINDS[kind],
        start_time_unix_nano=ns(start),
        end_time_unix_nano=ns(start) + ns(duration),
        attributes=attrs(attributes),
        status=Status(code=2 if error else 0),
    )


def resource_spans(service: str | None, spans: Iterable[Span], cluster: str | None = None) -> ResourceSpans:
    extra = {} if cluster is None else {"k8s_deployment_name": cluster}
    return ResourceSpans(resource=resource(service, **extra), scope_spans=[ScopeSpans(spans=list(spans))])


def traces(*groups: ResourceSpans) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=list(groups))


# -- metrics -----------------------------------------------------------------------------------------
def hist_point(attributes: Mapping[str, Any], t: float, count: int, total: float,
               buckets: Sequence[int], bounds: Sequence[float], start: float = 0.0) -> HistogramDataPoint:
    assert len(buckets) == len(bounds) + 1 and sum(buckets) == count
    return HistogramDataPoint(attributes=attrs(attributes), start_time_unix_nano=ns(start),
                              time_unix_nano=ns(t), count=count, sum=total, bucket_counts=list(buckets),
                              explicit_bounds=list(bounds))


def number_point(attributes: Mapping[str, Any], t: float, v: float | int,
                 start: float = 0.0) -> NumberDataPoint:
    p = NumberDataPoint(attributes=attrs(attributes), start_time_unix_nano=ns(start), time_unix_nano=ns(t))
    if isinstance(v, int):
        p.as_int = v
    else:
        p.as_double = v
    return p


def histogram(name: str, unit: str, points: Iterable[HistogramDataPoint],
              temporality: int = CUMULATIVE) -> Metric:
    return Metric(name=name, unit=unit,
                  histogram=Histogram(data_points=list(points), aggregation_temporality=temporality))


def sum_metric(name: str, unit: str, points: Iterable[NumberDataPoint],
               temporality: int = CUMULATIVE) -> Metric:
    return Metric(name=name, unit=unit, sum=Sum(data_points=list(points), aggregation_temporality=temporality,
                                                is_monotonic=True))


def gauge(name: str, unit: str, points: Iterable[NumberDataPoint]) -> Metric:
    return Metric(name=name, unit=unit, gauge=Gauge(data_points=list(points)))


def resource_metrics(service: str | None, metrics: Iterable[Metric], **extra: Any) -> ResourceMetrics:
    return ResourceMetrics(resource=resource(service, **extra),
                           scope_metrics=[ScopeMetrics(metrics=list(metrics))])


def metrics(*groups: ResourceMetrics) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=list(groups))


def histogram_of(samples_s: Sequence[float], bounds: Sequence[float], unit_s: float = 1.0) -> list[int]:
    """Bucket counts of ``samples_s`` (seconds) for OTLP explicit ``bounds`` given in units of ``unit_s``."""
    out = [0] * (len(bounds) + 1)
    for s in samples_s:
        v = s / unit_s
        i = 0
        while i < len(bounds) and v > bounds[i]:
            i += 1
        out[i] += 1
    return out

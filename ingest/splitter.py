"""Splitting OTLP export requests for repartitioning, and finding absurd timestamps in them.

The OTel Collector's kafka exporter writes one serialized ``ExportTraceServiceRequest`` or
``ExportMetricsServiceRequest`` per message. Span pairing needs every span of a trace in one worker,
and cumulative-to-delta needs every point of a series in one worker, so stage 1 re-keys:

* spans by trace id: a message keyed by its trace id (``partition_traces_by_id``: the key is the
  hex trace id and the message holds that trace only) passes through unchanged; any other message
  is cut into one request per trace id, keeping each span's resource and scope;
* metrics by resource: one request per ``ResourceMetrics``, keyed by a hash of the serialized
  resource (the series identity starts with it).

Spans and points with absurd timestamps are cut out into a request of their own, which goes to the
dead-letter topic; the rest goes on.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest import timecheck


@dataclass
class TraceSplit:
    by_trace: dict[str, ExportTraceServiceRequest] = field(default_factory=dict)  # hex trace id -> spans
    rejected: ExportTraceServiceRequest | None = None
    reason: str | None = None
    spans: int = 0
    max_end: float | None = None  # epoch seconds


def key_trace_id(key: bytes | None) -> str | None:
    """The trace id a message key names (hex text as the Collector writes it, or 16 raw bytes)."""
    if key is None:
        return None
    if len(key) == 32:
        try:
            text = key.decode("ascii").lower()
            bytes.fromhex(text)
            return text
        except ValueError:
            return None
    if len(key) == 16:
        return key.hex()
    return None


def split_traces(req: ExportTraceServiceRequest, ref: float | None) -> TraceSplit:
    out = TraceSplit()
    # (trace id or None for rejected, resource index, scope index) -> ScopeSpans being filled
    scopes: dict[tuple[str | None, int, int], Any] = {}
    resources: dict[tuple[str | None, int], Any] = {}
    for ri, rs in enumerate(req.resource_spans):
        for si, ss in enumerate(rs.scope_spans):
            for span in ss.spans:
                out.spans += 1
                end = span.end_time_unix_nano / 1e9
                start = span.start_time_unix_nano / 1e9
                why = timecheck.problem(start, ref) or timecheck.problem(end, ref)
                tid: str | None
                if why is not None:
                    tid = None
                    out.reason = out.reason or why
                    if out.rejected is None:
                        out.rejected = ExportTraceServiceRequest()
                    target = out.rejected
                else:
                    tid = bytes(span.trace_id).hex()
                    if out.max_end is None or end > out.max_end:
                        out.max_end = end
                    target = out.by_trace.get(tid)
                    if target is None:
                        target = out.by_trace[tid] = ExportTraceServiceRequest()
                sk = (tid, ri, si)
                dst = scopes.get(sk)
                if dst is None:
                    rk = (tid, ri)
                    rdst = resources.get(rk)
                    if rdst is None:
                        rdst = resources[rk] = target.resource_spans.add()
                        rdst.resource.CopyFrom(rs.resource)
                        rdst.schema_url = rs.schema_url
                    dst = scopes[sk] = rdst.scope_spans.add()
                    dst.scope.CopyFrom(ss.scope)
                    dst.schema_url = ss.schema_url
                dst.spans.add().CopyFrom(span)
    return out


@dataclass
class MetricSplit:
    by_resource: list[tuple[str, ExportMetricsServiceRequest]] = field(default_factory=list)
    rejected: ExportMetricsServiceRequest | None = None
    reason: str | None = None
    points: int = 0
    max_time: float | None = None


def _points(metrics: Iterable[Any]) -> Iterable[Any]:
    for m in metrics:
        kind = m.WhichOneof("data")
        if kind is not None:
            yield from getattr(m, kind).data_points


def resource_key(resource_bytes: bytes) -> str:
    return f"{zlib.crc32(resource_bytes):08x}"


def split_metrics(req: ExportMetricsServiceRequest, ref: float | None) -> MetricSplit:
    """One request per resource; a resource with any absurd point time is rejected whole."""
    out = MetricSplit()
    for rm in req.resource_metrics:
        why = None
        latest = None
        n = 0
        for sm in rm.scope_metrics:
            for dp in _points(sm.metrics):
                n += 1
                t = dp.time_unix_nano / 1e9
                p = timecheck.problem(t, ref)
                if p is not None:
                    why = why or p
                elif latest is None or t > latest:
                    latest = t
        out.points += n
        one = ExportMetricsServiceRequest()
        one.resource_metrics.add().CopyFrom(rm)
        if why is not None:
            out.reason = out.reason or why
            if out.rejected is None:
                out.rejected = ExportMetricsServiceRequest()
            out.rejected.resource_metrics.add().CopyFrom(rm)
            continue
        if latest is not None and (out.max_time is None or latest > out.max_time):
            out.max_time = latest
        out.by_resource.append((resource_key(rm.resource.SerializeToString(deterministic=True)), one))
    return out

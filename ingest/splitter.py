"""Splitting OTLP export requests for repartitioning.

The OTel Collector's kafka exporter writes one serialized ``ExportTraceServiceRequest`` or
``ExportMetricsServiceRequest`` per message. Span pairing needs every span of a trace in one worker,
and cumulative-to-delta needs every point of a series in one worker, so stage 1 re-keys:

* spans by trace id: a message of one trace id (as the Collector's ``partition_traces_by_id`` writes
  them, keyed by the hex trace id: :func:`key_trace_id`) passes through unchanged; any other message
  is cut into one request per trace id, keeping each span's resource and scope (natively where the
  extension is built: ``topology.wire._spans.split_by_trace_id``, else
  :func:`topology.wire.otlp.split_spans`; in ``ingest/trace.py``);
* metrics by resource: one request per ``ResourceMetrics``, keyed by a hash of the serialized
  resource (the series identity starts with it).

Before they are split, requests pass admission (:mod:`topology.admit`), which cuts out spans and
resources with implausible times into a request of their own (the dead letter).
"""

from __future__ import annotations

import zlib

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from topology.wire import spans
from topology.wire.otlp import spans_view, split_spans


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


def by_trace_id(data: bytes) -> dict[str, bytes]:
    """A serialized span request cut into one per hex trace id, as the Collector's kafka exporter
    writes them with ``partition_traces_by_id`` (the simulator's publisher does the same). Natively
    where the extension is built (each span kept as its bytes, under its resource and scope), else
    through the compact view; OtlpDecodeError if it does not parse."""
    if spans.available():
        try:
            return {tid.hex(): part for tid, part in spans.native.split_by_trace_id(data)}  # type: ignore[union-attr]
        except ValueError:
            spans_view(data)  # raises with the Python parser's reason
            # prost refuses what upb takes (a known field with another wire type): upb's way below
    parts = split_spans(spans_view(data), lambda span: bytes(span.trace_id).hex())
    return {tid: req.SerializeToString() for tid, req in parts.items()}


def split_metrics(req: ExportMetricsServiceRequest) -> list[tuple[str, ExportMetricsServiceRequest]]:
    """One request per resource, keyed by :func:`resource_key`."""
    out = []
    for rm in req.resource_metrics:
        one = ExportMetricsServiceRequest()
        one.resource_metrics.add().CopyFrom(rm)
        out.append((resource_key(rm.resource.SerializeToString(deterministic=True)), one))
    return out


def resource_key(resource_bytes: bytes) -> str:
    return f"{zlib.crc32(resource_bytes):08x}"

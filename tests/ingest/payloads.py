"""Small valid inputs to build bad ones from: a flow batch, an OTLP span request, an OTLP metric request."""

from __future__ import annotations

import time

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from topology.wire import flow


def flow_batch(start_ms: list[int], app: str = "checkout") -> bytes:
    """One client flow record of ``app`` per start time (milliseconds)."""
    recs = np.zeros(len(start_ms), dtype=flow.RECORD_V1)
    recs["start_ms"] = start_ms
    recs["end_ms"] = np.array(start_ms) + 20
    recs["local_addr"] = flow.pack_ip("10.2.0.1")
    recs["remote_addr"] = flow.pack_ip("10.2.0.2")
    recs["local_port"], recs["remote_port"] = 41000, 443
    recs["protocol"], recs["role"] = 6, flow.ROLE_CLIENT
    recs["local_app"], recs["local_cluster"] = 1, 2
    recs["bytes_sent"], recs["bytes_received"], recs["connections"] = 10, 20, 1
    return flow.encode(recs, ["", app, f"{app}-prod"], host="host-1", emitted_ms=int(time.time() * 1000))


def spans_request(n: int = 3, end_ns: int | None = None) -> bytes:
    """``n`` client spans of ``checkout`` ending at ``end_ns`` (default: now)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "checkout"
    ss = rs.scope_spans.add()
    now = time.time_ns() if end_ns is None else end_ns
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id = bytes([i + 1]) * 16
        sp.span_id = bytes([i + 1]) * 8
        sp.kind = 3
        sp.name = "GET /x"
        sp.start_time_unix_nano = now - 5_000_000
        sp.end_time_unix_nano = now
    return req.SerializeToString()


def metrics_request(t_ns: int) -> bytes:
    """One delta histogram point of ``checkout`` calling ``payments.svc.local`` at ``t_ns``."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    kv = rm.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "checkout"
    m = rm.scope_metrics.add().metrics.add()
    m.name, m.unit = "http.client.request.duration", "s"
    dp = m.histogram.data_points.add()
    dp.time_unix_nano, dp.count, dp.sum = t_ns, 3, 0.3
    m.histogram.aggregation_temporality = 1
    a = dp.attributes.add()
    a.key, a.value.string_value = "server.address", "payments.svc.local"
    return req.SerializeToString()

"""Stage 1 of the TRACE layer reads each trace's latest end and span count from the native Batch's
columns: the same as from the compact view, in the same order."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.splitter import by_trace_id
from ingest.trace import trace_times
from tests.topology.wire.test_otlp import trace_requests
from topology.wire import spans
from topology.wire.otlp import spans_view, split_spans

pytestmark = pytest.mark.skipif(spans.native is None and os.environ.get("CI") != "true",
                                reason="the native module is not built")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_requests())
def test_trace_times_of_a_batch_are_those_of_the_view(req: ExportTraceServiceRequest) -> None:
    for sp in (s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans):
        sp.trace_id = bytes([sp.trace_id[0] % 4 + 1]) * 16  # few distinct trace ids
    data = req.SerializeToString()
    got = trace_times(spans.decode(data))
    want = trace_times(spans_view(data))
    assert got == want and list(got) == list(want)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_requests())
def test_a_request_cut_natively_per_trace_is_the_compact_view_s_cut(req: ExportTraceServiceRequest) -> None:
    for i, rs in enumerate(req.resource_spans):
        rs.schema_url = f"https://schemas/{i}"
        for j, ss in enumerate(rs.scope_spans):
            ss.scope.name, ss.scope.version = f"lib{j}", "1.0"
            for sp in ss.spans:
                sp.trace_id = bytes([sp.trace_id[0] % 3 + 1]) * 16
    data = req.SerializeToString()
    native = spans.native.split_by_trace_id(data)  # type: ignore[union-attr]
    python = split_spans(spans_view(data), lambda sp: bytes(sp.trace_id).hex())
    assert [tid.hex() for tid, _ in native] == list(python)
    for tid, part in native:
        assert full(part) == full(python[tid.hex()].SerializeToString())
    assert by_trace_id(data) == {tid.hex(): part for tid, part in native}


def full(data: bytes) -> ExportTraceServiceRequest:
    """The request in the full schema, an empty resource as none (the compact view keeps no presence)."""
    req = ExportTraceServiceRequest.FromString(data)
    for rs in req.resource_spans:
        if not rs.resource.ByteSize():
            rs.ClearField("resource")
    return req


def test_a_checkpoint_of_the_python_pairer_is_taken_as_it_is() -> None:
    """A partition checkpointed before the native pairer keeps its waiting spans after the upgrade."""
    from ingest.reorder import ReorderBuffer
    from ingest.topics import Topics
    from ingest.trace import SpanPairingSpec
    from topology.stages.trace import PythonSpanPairer

    old = PythonSpanPairer()
    logic = SpanPairingSpec(Topics()).new_partition(None, (old, ReorderBuffer(), 5.0))  # type: ignore[arg-type]
    assert logic.state()[0] is old

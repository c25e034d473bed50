"""Re-keying OTLP requests for the next stage: trace ids from message keys, requests cut by trace id and
by resource."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.splitter import by_trace_id, key_trace_id, resource_key, split_metrics
from tests.topology.stages.otlp_builders import (
    hist_point,
    histogram,
    metrics,
    resource_metrics,
    resource_spans,
    span,
    traces,
)

T = 1_800_000_000.0


@given(st.binary(min_size=16, max_size=16))
def test_a_trace_id_key_in_hex_or_raw_bytes_names_the_trace(tid: bytes) -> None:
    assert key_trace_id(tid.hex().encode()) == tid.hex()
    assert key_trace_id(tid.hex().upper().encode()) == tid.hex()
    assert key_trace_id(tid) == tid.hex()


@given(st.binary(max_size=40).filter(lambda b: len(b) not in (16, 32)))
def test_other_keys_name_no_trace(key: bytes) -> None:
    assert key_trace_id(key) is None


def test_keys_of_the_right_length_that_are_not_hex_name_no_trace() -> None:
    assert key_trace_id(None) is None
    assert key_trace_id(b"z" * 32) is None
    assert key_trace_id("é".encode() * 16) is None


def test_a_request_is_cut_per_trace_keeping_resources_and_scopes() -> None:
    req = traces(
        resource_spans("web", [span(1, 1, None, "server", "a", T), span(2, 2, None, "server", "b", T)]),
        resource_spans("api", [span(1, 3, 1, "client", "c", T)], cluster="api-v1"),
    )
    cut = by_trace_id(req.SerializeToString())
    parts = {tid: ExportTraceServiceRequest.FromString(data) for tid, data in cut.items()}
    one, two = (1).to_bytes(16, "big").hex(), (2).to_bytes(16, "big").hex()
    assert set(parts) == {one, two}
    assert [(rs.resource, [sp.name for ss in rs.scope_spans for sp in ss.spans])
            for rs in parts[one].resource_spans] == [(req.resource_spans[0].resource, ["a"]),
                                                      (req.resource_spans[1].resource, ["c"])]
    assert [sp.name for rs in parts[two].resource_spans for ss in rs.scope_spans for sp in ss.spans] == ["b"]


def test_metrics_are_cut_per_resource_with_a_stable_key() -> None:
    point = hist_point({}, T, 1, 0.1, [1, 0], (0.5,))
    web = resource_metrics("web", [histogram("http.server.request.duration", "s", [point])])
    api = resource_metrics("api", [histogram("http.server.request.duration", "s", [point])])
    parts = split_metrics(metrics(web, api, web))
    assert [list(r.resource_metrics) for _, r in parts] == [[web], [api], [web]]
    keys = [k for k, _ in parts]
    assert keys[0] == keys[2] != keys[1]
    assert keys[0] == resource_key(web.resource.SerializeToString(deterministic=True))

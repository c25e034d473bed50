"""The native spans decoder (topology.wire._spans through topology.wire.spans) against the Python one:
the same spans, the same accept/reject decisions and reasons."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.topology.wire.test_otlp import trace_requests
from topology.sketch import bucket_of
from topology.wire import spans
from topology.wire.otlp import JSON, PROTOBUF, OtlpDecodeError, decode_spans, encode_json, spans_view

pytestmark = pytest.mark.skipif(spans.native is None and os.environ.get("CI") != "true",
                                reason="the native module is not built")


def test_the_native_module_is_built() -> None:
    """Under CI the extension must be there (it is built by `pip install -e .`)."""
    assert spans.native is not None and spans.available()


def python_tree(data: bytes) -> list[tuple[bytes, list[list[tuple[object, ...]]]]]:
    view = spans_view(data)
    return [(bytes(rs.resource),
             [[(bytes(sp.trace_id), bytes(sp.span_id), bytes(sp.parent_span_id), sp.name, sp.kind,
                sp.start_time_unix_nano, sp.end_time_unix_nano, [bytes(a) for a in sp.attributes],
                sp.status.code) for sp in ss.spans] for ss in rs.scope_spans])
            for rs in view.resource_spans]


def outcome(fn: object, data: bytes) -> tuple[str, str]:
    try:
        fn(data)  # type: ignore[operator]
    except OtlpDecodeError as e:
        return type(e).__name__, str(e)
    return "ok", ""


def same_decision(data: bytes) -> None:
    py = outcome(lambda d: decode_spans(d, PROTOBUF), data)
    nat = outcome(lambda d: spans.decode(d, PROTOBUF), data)
    assert py == nat
    assert (outcome(spans_view, data)[0] == "ok") == (outcome(spans.decode_unchecked, data)[0] == "ok")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_requests())
def test_the_native_decode_gives_the_spans_of_the_python_decode(req: ExportTraceServiceRequest) -> None:
    data = req.SerializeToString()
    batch = spans.decode(data)
    assert batch.tree() == python_tree(data)
    view, times = decode_spans(data)
    cols = spans.columns(batch)
    assert batch.spans == len(times) == len(cols["start"])
    assert cols["start"].tolist() == [t[0] for t in times] and cols["end"].tolist() == [t[1] for t in times]
    flat = [sp for rs in view.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    assert [bytes(x) for x in cols["trace_id"].tolist()] == [bytes(sp.trace_id) for sp in flat]
    assert cols["kind"].tolist() == [sp.kind for sp in flat]
    assert cols["status"].tolist() == [sp.status.code for sp in flat]
    assert [batch.name(i) for i in range(batch.spans)] == [sp.name for sp in flat]
    assert batch.resources() == [bytes(rs.resource) for rs in view.resource_spans]
    res = [i for i, rs in enumerate(view.resource_spans) for ss in rs.scope_spans for _ in ss.spans]
    assert cols["resource"].tolist() == res
    assert batch.SerializeToString() == data
    # OTLP/JSON: decoded by the Python JSON decoder, then natively
    assert spans.decode(encode_json(req), JSON).tree() == python_tree(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_requests(), st.data())
def test_damaged_requests_are_accepted_or_rejected_alike(req: ExportTraceServiceRequest,
                                                         data: st.DataObject) -> None:
    raw = bytearray(req.SerializeToString())
    how = data.draw(st.sampled_from(["flip", "cut", "id", "zero", "none"]))
    if how == "flip" and raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "cut" and raw:
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    elif how in ("id", "zero"):
        sp = req.resource_spans[0].scope_spans[0].spans[-1]
        if how == "id":
            sp.span_id = data.draw(st.binary(max_size=12).filter(lambda b: len(b) != 8))
        else:
            sp.trace_id = bytes(16)
        raw = bytearray(req.SerializeToString())
    same_decision(bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_accepted_or_rejected_alike(data: bytes) -> None:
    same_decision(data)


def test_bad_names_and_empty_payloads() -> None:
    same_decision(b"")
    same_decision(b"\x0a\x00")  # a request of one empty ResourceSpans: no spans
    # a span name that is not UTF-8: both parsers refuse the request
    bad = b"\x0a\x08\x12\x06\x12\x04\x2a\x02\xff\xfe"
    assert outcome(spans.decode_unchecked, bad)[0] == outcome(spans_view, bad)[0] == "OtlpDecodeError"


def test_bucket_of_is_the_sketch_s() -> None:
    rng = random.Random(5)
    values = [2.0 ** e for e in range(-30, 21)] + [math.nextafter(2.0 ** e, 0) for e in range(-29, 21)]
    values += [rng.uniform(1e-9, 10.0) for _ in range(20_000)]
    values += [10 ** rng.uniform(-9, 7) for _ in range(20_000)]
    values += [n * 1e-9 for n in range(2, 5000)] + [3e6, 1e300]
    assert [spans.native.bucket_of(v) for v in values] == [bucket_of(v) for v in values]  # type: ignore[union-attr]


def test_columns_are_views_of_fixed_width() -> None:
    from tests.topology.stages.otlp_builders import resource_spans, span, traces

    calls = [span(1, 2, 3, "client"), span(1, 4, None, "server")]
    data = traces(resource_spans("a", calls)).SerializeToString()
    cols = spans.columns(spans.decode(data))
    assert cols["trace_id"].dtype == np.dtype("V16") and len(cols["trace_id"]) == 2
    assert bytes(cols["parent_span_id"][1]) == bytes(8) and cols["kind"].tolist() == [3, 2]

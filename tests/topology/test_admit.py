"""Admission, pure: reason classes, the time policy, and what each ``admit_*`` keeps and cuts out.

The same verdicts on both roads (HTTP and Kafka) are checked by ``tests/admission_cases.py``'s table;
here each function is held to hand-built inputs and to properties over generated ones.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.admission_cases import CUSTOM_VPC, Y2100, Y2500, flows, metrics, spans, vpc_line
from topology.admit import (
    MAX_FUTURE,
    MAX_PAST,
    MIN_TIME,
    REASON_CLASSES,
    admit_catalog,
    admit_flows,
    admit_health,
    admit_leases,
    admit_metrics,
    admit_spans,
    admit_vpcflows,
    implausible,
    reason,
    reason_class,
    reference,
    time_problem,
)
from topology.wire import flow
from topology.wire.otlp import PROTOBUF, encode_json

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


# -- reasons --------------------------------------------------------------------------------------
@given(st.sampled_from(REASON_CLASSES), st.text())
def test_a_reason_names_its_class(cls: str, detail: str) -> None:
    assert reason_class(reason(cls, detail)) == cls


@given(st.text())
def test_every_text_has_one_of_the_classes(text: str) -> None:
    assert reason_class(text) in REASON_CLASSES


@pytest.mark.parametrize("text", ["", "no colon", "resource_spans[0]: bad", "bad magic b'XX': x", "Decode: x",
                                  " decode: x"])
def test_texts_without_a_known_class_are_other(text: str) -> None:
    assert reason_class(text) == "other"


def test_an_unknown_class_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="unknown reason class"):
        reason("position 3", "x")


# -- the time policy ------------------------------------------------------------------------------
@pytest.mark.parametrize(("t", "ref", "fragment"), [
    (NOW, NOW, None),
    (NOW + MAX_FUTURE, NOW, None),
    (NOW - MAX_PAST, NOW, None),
    (NOW + MAX_FUTURE + 1, NOW, "more than a day after it was produced (2027-01-15T08:00:00Z)"),
    (NOW - MAX_PAST - 1, NOW, "more than 30 days before"),
    (Y2100, NOW, "time 2100-01-01T00:00:00Z is more than a day after"),
    (Y2100, None, None),  # without a reference only the lower bound applies
    (MIN_TIME - 1, None, "before 2000-01-01"),
    (0.0, NOW, "time 1970-01-01T00:00:00Z is before 2000-01-01"),
    (math.nan, NOW, "time nan is not a finite number"),
    (math.inf, None, "time inf is not a finite number"),
    (1e300, NOW, "more than a day after"),  # beyond what a date can show
])
def test_time_problem(t: float, ref: float | None, fragment: str | None) -> None:
    got = time_problem(t, ref)
    assert got is None if fragment is None else fragment in (got or "")


def test_the_reference_is_the_first_plausible_candidate() -> None:
    assert reference(None, 0.0, math.nan, NOW, NOW + 5) == NOW
    assert reference(None, 12.0) is None


times = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                  st.floats(NOW - 2 * MAX_PAST, NOW + 2 * MAX_FUTURE))


@given(st.lists(st.tuples(times, times), max_size=20), st.one_of(st.none(), st.just(NOW)))
def test_implausible_is_time_problem_for_many(pairs: list[tuple[float, float]], ref: float | None) -> None:
    start = np.array([a for a, _ in pairs], dtype=np.float64)
    end = np.array([b for _, b in pairs], dtype=np.float64)
    got = implausible(start, end, ref).tolist()
    assert got == [time_problem(a, ref) is not None or time_problem(b, ref) is not None for a, b in pairs]


# -- flows ----------------------------------------------------------------------------------------
def test_flow_records_dated_2100_are_cut_out_and_re_encoded() -> None:
    adm = admit_flows(flows(NOW, NOW - 3, Y2100, NOW - 2), None)
    assert adm.kept is not None and adm.items == 2 and adm.dropped == 1
    assert adm.kept.records["start_ms"].tolist() == [(NOW - 3) * 1000, (NOW - 2) * 1000]
    assert adm.latest == pytest.approx(NOW - 2 + 0.02)
    [r] = adm.rejected
    assert r.reason_class == "timestamp" and "1 of 3 flow records" in r.reason
    assert flow.decode(r.payload).records["start_ms"].tolist() == [Y2100 * 1000]


def test_the_batch_is_judged_against_when_it_was_emitted_first() -> None:
    late = flows(NOW, NOW - 3)  # a replay: emitted then, read a year later
    assert admit_flows(late, NOW + 365 * 86_400).kept is not None
    no_emit = flow.encode(flow.decode(late).records, ["", "checkout", "checkout-prod"], "h", emitted_ms=0)
    assert admit_flows(no_emit, NOW + 365 * 86_400).kept is None  # then the carrier's time


@pytest.mark.parametrize(("data", "cls"), [
    (b"", "empty"),
    (b"STFB", "decode"),
    (flows(NOW, NOW, app=0), "schema"),
    (flows(NOW, Y2500, Y2500), "timestamp"),
    (flows(NOW, 0), "timestamp"),
])
def test_flow_batches_rejected_whole(data: bytes, cls: str) -> None:
    adm = admit_flows(data, NOW)
    assert adm.kept is None and [(r.reason_class, r.payload) for r in adm.rejected] == [(cls, data)]


def test_an_empty_batch_is_kept() -> None:
    adm = admit_flows(flows(NOW), NOW)
    assert adm.kept is not None and (adm.items, adm.rejected) == (0, ())


# -- spans ----------------------------------------------------------------------------------------
def _span_names(data: bytes) -> list[tuple[str, str, int]]:
    req = ExportTraceServiceRequest.FromString(data)
    return [(rs.resource.attributes[0].value.string_value, ss.scope.name, sp.start_time_unix_nano)
            for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]


def test_a_span_pair_dated_2100_is_rejected_whole() -> None:
    data = spans((Y2100, Y2100 + 0.01), pair=True)
    adm = admit_spans(data, PROTOBUF, NOW)
    assert adm.kept is None
    [r] = adm.rejected
    assert r.payload == data and r.reason.startswith("timestamp: span 'POST /pay': time 2100-01-01T00:00:00Z")
    assert "(2 of 2 spans in the request)" in r.reason


def test_spans_cut_out_keep_their_resource_and_scope() -> None:
    data = spans((NOW - 2, NOW - 1), (Y2100, Y2100 + 1), (NOW - 3, NOW - 2), pair=True)
    adm = admit_spans(data, PROTOBUF, NOW)
    assert adm.kept is not None and (adm.items, adm.dropped, adm.latest) == (4, 2, NOW - 1)
    kept = _span_names(adm.kept.SerializeToString())
    cut = _span_names(adm.rejected[0].payload)
    s = 1_000_000_000
    assert kept == [("checkout", "", int(NOW - 2) * s), ("checkout", "", int(NOW - 3) * s),
                    ("payments", "", int(NOW - 2) * s), ("payments", "", int(NOW - 3) * s)]
    assert cut == [("checkout", "", Y2100 * s), ("payments", "", Y2100 * s)]


def test_spans_kept_whole_are_the_decoded_request_itself() -> None:
    data = spans((NOW - 2, NOW - 1), pair=True)
    adm = admit_spans(data, PROTOBUF, NOW)
    assert adm.kept is not None and adm.kept.SerializeToString() == data and adm.rejected == ()


def test_json_spans_pass_the_same_policy() -> None:
    data = encode_json(ExportTraceServiceRequest.FromString(spans((NOW - 2, NOW - 1), (Y2500, Y2500))))
    adm = admit_spans(data, "application/json", NOW)
    assert (adm.items, adm.dropped, adm.rejected[0].reason_class) == (1, 1, "timestamp")


@pytest.mark.parametrize(("data", "cls"), [
    (b"", "empty"),
    (b"\xff\x00garbage" * 10, "decode"),
    (spans((NOW, NOW), trace_id=b"abc"), "schema"),
    (spans((0, 0)), "timestamp"),
])
def test_span_requests_rejected_whole(data: bytes, cls: str) -> None:
    adm = admit_spans(data, PROTOBUF, NOW)
    assert adm.kept is None and [(r.reason_class, r.payload) for r in adm.rejected] == [(cls, data)]


@given(st.lists(st.sampled_from([NOW - 5, NOW, NOW + 3600, Y2100, Y2500, 0.0, MIN_TIME - 1]),
                min_size=1, max_size=12))
def test_every_span_is_kept_or_cut_out_by_its_times(starts: list[float]) -> None:
    data = spans(*[(t, t) for t in starts])
    adm = admit_spans(data, PROTOBUF, NOW)
    good = [int(t * 1e9) for t in starts if time_problem(t, NOW) is None]
    bad = [int(t * 1e9) for t in starts if time_problem(t, NOW) is not None]
    if not good:
        assert adm.kept is None and [r.payload for r in adm.rejected] == [data]
        return
    assert adm.kept is not None and [n[2] for n in _span_names(adm.kept.SerializeToString())] == good
    assert [n[2] for r in adm.rejected for n in _span_names(r.payload)] == bad
    assert (adm.items, adm.dropped) == (len(good), len(bad))


# -- metrics --------------------------------------------------------------------------------------
def test_a_resource_with_a_point_dated_2100_is_cut_out_whole() -> None:
    adm = admit_metrics(metrics(NOW - 1, Y2100, NOW - 2), PROTOBUF, NOW)
    assert adm.kept is not None and (adm.items, adm.dropped, adm.latest) == (2, 1, NOW - 1)
    names = [rm.resource.attributes[0].value.string_value for rm in adm.kept.resource_metrics]
    assert names == ["checkout-0", "checkout-2"]
    cut = ExportMetricsServiceRequest.FromString(adm.rejected[0].payload)
    assert [rm.resource.attributes[0].value.string_value for rm in cut.resource_metrics] == ["checkout-1"]
    assert "(1 of 3 resources in the request)" in adm.rejected[0].reason


def test_nan_values_are_data() -> None:
    adm = admit_metrics(metrics(NOW, nan_sum=True), PROTOBUF, NOW)
    assert adm.kept is not None and adm.rejected == ()


# -- VPC flow logs --------------------------------------------------------------------------------
def test_flow_log_lines_are_kept_or_cut_out_one_by_one() -> None:
    text = "\n".join([vpc_line(NOW - 60), "2 1 eni-1 10.0.0.1", vpc_line(Y2500), "", vpc_line(NOW - 30)])
    adm = admit_vpcflows(text.encode(), NOW)
    assert adm.kept is not None and [r.start for r in adm.kept] == [NOW - 60, NOW - 30]
    assert [(r.reason_class, r.payload) for r in adm.rejected] == [
        ("decode", b"2 1 eni-1 10.0.0.1"), ("timestamp", vpc_line(Y2500).encode())]
    assert adm.rejected[0].reason.startswith("decode: flow-log line 2: expected 14 fields")
    assert adm.rejected[1].reason.startswith("timestamp: flow-log line 3: time 2500-01-01")
    assert (adm.items, adm.dropped, adm.latest) == (2, 2, NOW - 21)


def test_a_header_line_sets_the_format_of_the_lines_after_it() -> None:
    text = f"{CUSTOM_VPC}\n5 10.0.0.1 10.0.0.2 40000 443 6 100 {int(NOW)} {int(NOW) + 9} 2 OK"
    adm = admit_vpcflows(text.encode(), NOW)
    assert adm.kept is not None and [(r.src, r.tcp_flags) for r in adm.kept] == [("10.0.0.1", 2)]


def test_a_payload_without_a_good_line_is_rejected_whole() -> None:
    data = f"{vpc_line(NOW, src='x')}\n{vpc_line(0)}".encode()
    adm = admit_vpcflows(data, NOW)
    assert adm.kept is None
    [r] = adm.rejected
    assert r.payload == data and r.reason_class == "decode" and r.reason.endswith("(and 1 more lines)")


def test_header_and_nodata_lines_alone_are_kept_as_nothing() -> None:
    adm = admit_vpcflows(f"{CUSTOM_VPC}\n".encode(), NOW)
    assert adm.kept == [] and adm.rejected == ()


# -- JSON records ---------------------------------------------------------------------------------
def test_json_records_object_or_array() -> None:
    one = admit_catalog(b'{"name": "a"}', NOW)
    many = admit_catalog(b'[{"name": "a"}, {"name": "b"}]', NOW)
    assert [s.name for s in one.kept or []] == ["a"] and [s.name for s in many.kept or []] == ["a", "b"]


@pytest.mark.parametrize(("fn", "records", "fragment"), [
    (admit_catalog, [{"name": "a"}, 3], "schema: catalog record 1 is not a JSON object"),
    (admit_catalog, [{"name": "a"}, {"tier": 1}], "schema: catalog record 1: catalog record 'name' must be"),
    (admit_health, [{"service": "s", "at": math.nan}], "timestamp: health record 0: health event for 's'"),
    (admit_health, [{"service": "s", "at": NOW + 2 * 86_400}], "timestamp: health record 0: time 2027-01-17"),
    (admit_health, [{"service": "s", "at": 5}], "timestamp: health record 0: time 1970"),
    (admit_leases, [{"ip": "10.0.0.1", "owner": "a", "start": 0, "end": math.inf}], "timestamp:"),
])
def test_one_bad_json_record_rejects_the_payload(fn: object, records: list[object], fragment: str) -> None:
    data = json.dumps(records).encode()
    adm = fn(data, NOW)  # type: ignore[operator]
    assert adm.kept is None and adm.rejected[0].payload == data
    assert adm.rejected[0].reason.startswith(fragment)


def test_old_health_and_leases_are_kept() -> None:
    """A state may hold for months, and a lease may have started long ago: no lower bound but 2000 and 0."""
    assert admit_health(json.dumps([{"service": "s", "at": NOW - 90 * 86_400}]).encode(), NOW).kept
    assert admit_leases(json.dumps([{"ip": "10.0.0.1", "owner": "a", "start": 0}]).encode(), NOW).kept


def test_every_admit_function_names_a_class_for_garbage() -> None:
    for fn in (admit_flows, admit_vpcflows, admit_catalog, admit_health, admit_leases):
        adm = fn(b"\xff\xfe\x00", NOW)  # type: ignore[operator]
        assert adm.kept is None and adm.rejected[0].reason_class == "decode", fn
    for otlp_fn in (admit_spans, admit_metrics):
        adm = otlp_fn(b"\xff\xfe\x00", PROTOBUF, NOW)  # type: ignore[operator]
        assert adm.kept is None and adm.rejected[0].reason_class == "decode", otlp_fn

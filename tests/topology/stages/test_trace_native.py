"""The native pairer against the Python one (the reference): the same edge partials, trace summaries,
counters and waiting spans, request by request, on generated and on simulated traffic, and through a
checkpoint of its state."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ingest import state
from tests.topology.stages.otlp_builders import resource_spans, span, traces
from topology.sim import Simulator, generate_fleet
from topology.stages.trace import PythonSpanPairer, SpanPairer
from topology.stages.trace_native import NativeSpanPairer
from topology.wire import spans
from topology.wire.otlp import spans_view

pytestmark = pytest.mark.skipif(spans.native is None and os.environ.get("CI") != "true",
                                reason="the native module is not built")

T = 1_200.0
_NAMING = ("service.peer.name", "peer.service", "db.namespace", "db.name", "server.address", "db.system.name",
           "db.system", "messaging.system", "http.request.method")
values = st.one_of(
    st.sampled_from(["", "orders", "pg-1", "x" * 254, "ünïcode"]).map(lambda s: AnyValue(string_value=s)),
    st.integers(-3, 3).map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.sampled_from([0.5, 1e16]).map(lambda f: AnyValue(double_value=f)),
    st.just(AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a")]))),
    st.just(AnyValue()),
)
PARENTS = [b"", *(n.to_bytes(8, "big") for n in range(1, 7))]
DURATIONS = [-5, 0, 1, 2, 10**6, 3 * 10**8]  # ns
attributes = st.lists(st.builds(KeyValue, key=st.sampled_from(_NAMING), value=values), max_size=3)


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    groups = []
    for _ in range(draw(st.integers(1, 3))):
        service = draw(st.sampled_from(["web", "api", "db-proxy", None]))
        cluster = draw(st.sampled_from([None, "c1", "c2"]))
        sps = []
        for _ in range(draw(st.integers(1, 5))):
            start = T + draw(st.integers(0, 150)) * 0.5
            sp = Span(trace_id=draw(st.integers(1, 4)).to_bytes(16, "big"),
                      span_id=draw(st.integers(1, 6)).to_bytes(8, "big"),
                      parent_span_id=draw(st.sampled_from(PARENTS)),
                      name=draw(st.sampled_from(["GET /", "q", "é" * 300])), kind=draw(st.integers(0, 6)),
                      start_time_unix_nano=round(start * 1e9),
                      end_time_unix_nano=round(start * 1e9) + draw(st.sampled_from(DURATIONS)),
                      attributes=draw(attributes), status=Status(code=draw(st.integers(0, 2))))
            if draw(st.integers(0, 20)) == 0:
                sp.span_id = b"\x01\x02"  # invalid: counted
            sps.append(sp)
        rs = resource_spans(service, sps, cluster)
        groups.append(rs)
    return traces(*groups)


def same(py: PythonSpanPairer, nat: NativeSpanPairer) -> None:
    assert nat.counters == py.counters
    assert (nat.pending, nat.oldest_arrival) == (py.pending, py.oldest_arrival)


def flush_both(py: PythonSpanPairer, nat: NativeSpanPairer, now: float, close: float | None = None,
               refresh: bool = False) -> None:
    if close is not None:
        assert nat.holds_closing(close) == py.holds_closing(close)
    assert nat.flush(now, close, refresh) == py.flush(now, close, refresh)
    assert nat.take_trace_summaries() == py.take_trace_summaries()
    same(py, nat)


def restored(nat: NativeSpanPairer) -> NativeSpanPairer:
    back = state.loads(state.dumps(nat))
    assert isinstance(back, NativeSpanPairer) and back._core.dump() == nat._core.dump()
    return back


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(requests(), st.sampled_from([0.0, 0.5, 3.0, 11.0]),
                          st.sampled_from([None, "all", "hold", "refresh"])),
                min_size=1, max_size=12),
       st.sampled_from([(10.0, 3, 2, 2), (10.0, 10_000, 100, 256), (0.0, 2, 1, 0), (5.0, 4, 3, 1)]),
       st.integers(0, 12))
def test_the_native_pairer_does_what_the_python_pairer_does(
        steps: list[tuple[ExportTraceServiceRequest, float, str | None]], config: tuple[float, int, int, int],
        restart: int) -> None:
    """... and the same when flushes hold the calls of open windows (``close``: "Holding")."""
    wait, cap, traces_cap, kept = config
    py = PythonSpanPairer(wait_seconds=wait, max_pending=cap, max_traces=traces_cap, max_trace_spans=kept)
    nat = NativeSpanPairer(wait_seconds=wait, max_pending=cap, max_traces=traces_cap, max_trace_spans=kept)
    now = T
    for i, (req, dt, flush) in enumerate(steps):
        now += dt
        data = req.SerializeToString()
        py.add_serialized(data, now)
        nat.add_serialized(data, now)
        same(py, nat)
        if flush == "all":
            flush_both(py, nat, now)
        elif flush:
            flush_both(py, nat, now, close=now - 0.5, refresh=flush == "refresh")
        if i == restart:
            nat = restored(nat)
    flush_both(py, nat, now + 5)
    flush_both(py, nat, now + 100)


def test_simulated_traffic_gives_the_same_edges_summaries_and_counters() -> None:
    sim = Simulator(generate_fleet(services=60, seed=3), seed=3, start=1_800_000_000.0)
    py, nat = PythonSpanPairer(max_pending=500), NativeSpanPairer(max_pending=500)
    t = 1_800_000_000.0
    n = 0
    for step in range(24):
        for data in sim.step(t, 5.0).spans:
            py.add_serialized(data, t + 5)
            nat.add_serialized(data, t + 5)
            n += 1
        t += 5.0
        flush_both(py, nat, t + 0.5, close=t if step % 3 else None, refresh=step % 7 == 0)
        if step == 11:
            nat = restored(nat)
    flush_both(py, nat, t + 200, close=t + 200)
    c = nat.counters
    assert n > 20 and c["paired"] > 100 and c["expired"] > 0 and c["traces"] > 50


def test_admitted_batches_and_views_pair_alike() -> None:
    from topology.admit import admit_spans

    now = 1_800_000_000.0
    req = traces(resource_spans("web", [span(1, 1, None, "server", "GET /", now - 2, 0.2)]),
                 resource_spans("api", [span(1, 2, 1, "client", "q", now - 1.9, 0.01,
                                             attributes={"db.namespace": "orders"})]))
    adm = admit_spans(req.SerializeToString(), "application/x-protobuf", now)
    assert spans.is_batch(adm.kept) and adm.items == 2
    nat, py = NativeSpanPairer(), PythonSpanPairer()
    nat.add_view(adm.kept, now)
    py.add_view(spans_view(req.SerializeToString()), now)
    flush_both(py, nat, now + 30)


def test_the_stage_uses_the_native_pairer_when_built() -> None:
    assert SpanPairer is NativeSpanPairer


def test_names_the_extension_leaves_to_python_are_named_by_python() -> None:
    odd: dict[str, Any] = {"peer.service": 2.5}  # a double: Python's str() names it
    nat, py = NativeSpanPairer(), PythonSpanPairer()
    for p in (nat, py):
        p.add(traces(resource_spans("api", [span(1, 2, 1, "client", "c", T, 0.01, attributes=odd)])), T)
    out = nat.flush(T + 30)
    assert out == py.flush(T + 30) and {e.key.target for e in out} == {"2.5"}


def test_without_the_extension_the_stage_pairs_in_python_and_says_so_once() -> None:
    """A process where the extension cannot be imported (as in a checkout built without Rust)."""
    import subprocess
    import sys

    code = """
import importlib.abc, logging, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "topology.wire._spans":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
from topology.stages.trace import PythonSpanPairer, SpanPairer
from topology.wire import spans
assert SpanPairer is PythonSpanPairer and spans.native is None and not spans.available()
from topology.admit import admit_spans
from tests.topology.stages.otlp_builders import resource_spans, span, traces
now = 1_800_000_000.0
data = traces(resource_spans("web", [span(1, 1, None, "server", "GET /", now - 2, 0.2)])).SerializeToString()
adm = admit_spans(data, "application/x-protobuf", now)
p = SpanPairer()
p.add_view(adm.kept, now)
assert [e.key.target for e in p.flush(now + 1)] == ["web"]
"""
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
    assert got.returncode == 0, got.stderr
    warnings = [line for line in got.stderr.splitlines() if "native OTLP spans decoder" in line]
    assert len(warnings) == 1 and "blocked for the test" in warnings[0]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_a_malformed_checkpoint_of_the_native_pairer_is_refused(data: bytes) -> None:
    from topology.stages.trace_native import load_core

    try:
        core = load_core(data)
    except ValueError:
        return
    p = NativeSpanPairer()  # whatever decodes must be a pairer that works
    p._core = core
    p.add(traces(resource_spans("web", [span(1, 1, None, "server", "GET /", T, 0.1)])), T)
    p.flush(T + 100)
    p.take_trace_summaries()

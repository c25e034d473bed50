"""The pipeline's span pairer holds the calls of open windows ("Holding" in topology.stages.trace):
the stored TRACE windows are those of a pairer that hands out everything at every flush, from far
fewer partials, and every edge window is stored no later than without holding."""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from topology.health import HealthBook
from topology.model import EdgeWindow, Layer
from topology.pipeline import Pipeline
from topology.sim import Simulator, generate_fleet
from topology.stages.final import FinalStage
from topology.stages.trace import PythonSpanPairer, SpanPairer
from topology.stages.trace_native import NativeSpanPairer
from topology.wire import spans

T0 = 1_800_000_000.0
PAIRERS = [PythonSpanPairer] + ([NativeSpanPairer] if spans.native is not None else [])

Stored = dict[tuple[object, int], EdgeWindow]


def _store(stored: Stored, windows: list[EdgeWindow], shown: dict[tuple[object, int], int], at: int) -> None:
    for w in windows:  # upsert: a window replaces the stored one with its key
        stored[(w.key, w.window_start)] = w
        shown.setdefault((w.key, w.window_start), at)


def _comparable(w: EdgeWindow) -> EdgeWindow:
    """The window without what depends on how calls were cut into partials: the float sum of
    latencies (rounded) and which trace ids are the exemplars (their number stays)."""
    s = w.stats
    return dataclasses.replace(w, stats=dataclasses.replace(s, latency_sum=round(s.latency_sum, 6),
                                                            exemplars=(len(s.exemplars),)))


@pytest.mark.parametrize("pairer", PAIRERS, ids=lambda c: c.__name__)
def test_held_calls_store_the_same_windows_from_fewer_partials(pairer: type[SpanPairer]) -> None:
    sim = Simulator(generate_fleet(services=40, seed=5), seed=5, start=T0)
    held = Pipeline()
    held.pairer = pairer(wait_seconds=held.config.trace_wait, max_pending=held.config.trace_capacity)
    cfg = held.config
    # the reference: the pairer hands out everything it paired at every trace flush (as before holding)
    ref = pairer(wait_seconds=cfg.trace_wait, max_pending=cfg.trace_capacity)
    ref_final = FinalStage(window_seconds=cfg.final_window, grace_seconds=cfg.grace, health=HealthBook(),
                           refresh_seconds=cfg.provisional_refresh, late_seconds=cfg.late_seconds)
    got: Stored = {}
    want: Stored = {}
    got_at: dict[tuple[object, int], int] = {}  # (edge, window) -> the flush that first stored it
    want_at: dict[tuple[object, int], int] = {}
    t = T0
    at = 0
    for _ in range(100):  # 200 s: a steady trickle over three windows closing
        for data in sim.step(t, 2.0).spans:
            held.add_spans(ExportTraceServiceRequest.FromString(data), t + 2.0)
            ref.add_serialized(data, t + 2.0)
        t += 2.0
        for dt in (0.5, 1.0, 1.5, 2.0):  # as serve: every 0.5 s, the pairer every 2 s
            now, at = t + dt, at + 1
            out = held.flush(now, trace=dt == 2.0)
            assert not any(out.late.values())
            _store(got, out.windows.get(Layer.TRACE, []), got_at, at)
            if dt == 2.0:
                ref_final.add(ref.flush(now))
            _store(want, [w for w in ref_final.flush(now - cfg.lateness, provisional=True)
                          if w.key.layer is Layer.TRACE], want_at, at)
    end = t + 400.0
    _store(got, held.flush(end).windows.get(Layer.TRACE, []), got_at, at + 1)
    ref_final.add(ref.flush(end))
    _store(want, ref_final.flush(end - cfg.lateness, provisional=True), want_at, at + 1)
    assert len(want) > 100
    assert {k: _comparable(w) for k, w in got.items()} == {k: _comparable(w) for k, w in want.items()}
    assert held.pairer.counters == ref.counters
    # fresh as before: every edge window is stored no later than without holding
    assert all(got_at[k] <= want_at[k] for k in want_at)
    # one partial per edge and window or so, not one per flush
    # about one partial per edge and window (late calls of the pairing wait add some), not one per flush
    assert held.final.counters["partials"] < 2 * len(want) and 2 * held.final.counters["partials"] < (
        ref_final.counters["partials"])

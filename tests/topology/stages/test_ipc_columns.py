"""The native IPC stage 1 (IpcCore) against the point-by-point one (its oracle): the same observations,
field for field (float sums included), and the same counters, on simulator traffic, on the benchmark's
four dialects, on arbitrary requests of every metric kind and on damaged ones."""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from bench.stage_ipc import generate
from tests.topology.wire.test_otlp import metric_requests
from topology.sim import Simulator, generate_fleet
from topology.stages.ipc import ACCEPTED_METRICS, IpcObservation, IpcStage1
from topology.stages.ipc_points import PointIpcStage1
from topology.wire import metric_columns

pytestmark = pytest.mark.skipif(not metric_columns.NATIVE and os.environ.get("CI") != "true",
                                reason="native metrics decoder not built")


def _same(steps: Iterable[tuple[list[bytes], float | None]], collide: bool = False, **kw: int) -> int:
    """Feed both stages the same requests and flushes; assert equal outputs and counters. Returns the
    number of observations compared."""
    new, old = IpcStage1(**kw, collide=collide), PointIpcStage1(**kw)
    assert type(new) is IpcStage1
    n = 0
    for requests, watermark in steps:
        for data in requests:
            _add(new, data)
            _add(old, data)
        if watermark is not None:
            got, want = new.flush(watermark), old.flush(watermark)
            assert _dicts(got) == _dicts(want)
            n += len(want)
    got, want = new.flush(math.inf), old.flush(math.inf)
    assert _dicts(got) == _dicts(want)
    assert new.counters == old.counters
    assert new.open_series == old.open_series
    return n + len(want)


def _add(stage: IpcStage1, data: bytes) -> None:
    with contextlib.suppress(ValueError):  # both refuse it (the counters are compared)
        stage.add_serialized(data)


def _dicts(obs: list[IpcObservation]) -> list[str]:
    return [repr(o.to_dict()) for o in obs]  # repr: NaN equals NaN


def test_simulator_traffic_gives_the_point_stages_observations() -> None:
    sim = Simulator(generate_fleet(services=150, seed=5), seed=5, start=1_800_000_000.0)
    steps = []
    t = 1_800_000_000.0
    for i in range(36):
        e = sim.step(t, 10.0)
        t += 10.0
        steps.append((list(e.metrics), t - 75 if i % 6 == 5 else None))
    assert _same(steps) > 100
    # and with a series cache too small for the fleet: evictions, baselines lost, the same way
    assert _same(steps, max_series=300) > 0


def test_series_whose_hashes_collide_are_told_apart_by_their_keys() -> None:
    """The native core finds a series by a hash of its identity; with 2 bits of it kept, nearly every
    lookup, insertion and eviction goes through the series' keys: still the point stage's observations."""
    sim = Simulator(generate_fleet(services=40, seed=8), seed=8, start=1_800_000_000.0)
    steps = []
    t = 1_800_000_000.0
    for i in range(18):
        e = sim.step(t, 10.0)
        t += 10.0
        steps.append((list(e.metrics), t - 75 if i % 6 == 5 else None))
    assert _same(steps, collide=True) > 20
    assert _same(steps, collide=True, max_series=60) > 0


def test_the_benchmarks_dialects_give_the_point_stages_observations() -> None:
    batches, _ = generate(30_000, 40, seed=3)
    steps: list[tuple[list[bytes], float | None]] = []
    for t, data in batches:
        steps.append(([data], float(t - 60) if t % 60 == 0 and steps else None))
    assert _same(steps) > 50


def test_counters_read_before_a_flush_include_the_waiting_points() -> None:
    batches, _ = generate(2_000, 10, seed=4)
    new, old = IpcStage1(), PointIpcStage1()
    for _, data in batches:
        new.add_serialized(data)
        old.add_serialized(data)
        assert new.counters == old.counters


def test_damaged_requests_are_refused_or_read_as_the_point_stage_reads_them() -> None:
    """Bytes changed or cut short: prost refuses some that upb reads (the core then reads upb's parse),
    both refuse others (counted), and what both read adds up the same."""
    batches, _ = generate(6_000, 12, seed=9)
    rng = random.Random(9)
    steps: list[tuple[list[bytes], float | None]] = []
    for t, data in batches:
        b = bytearray(data)
        for _ in range(rng.randint(0, 2)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.2:
            b = b[:rng.randrange(len(b))]
        # and the request with resource_metrics (field 1) once more as a varint: prost refuses it, upb
        # keeps it as an unknown field (the core reads upb's parse)
        steps.append(([bytes(b), data + b"\x08\x01"], float(t - 60) if t % 60 == 0 else None))
    assert _same(steps) > 20


def test_a_request_in_a_bytearray_is_read_as_the_same_bytes() -> None:
    batches, _ = generate(3_000, 10, seed=5)
    in_place, copied = IpcStage1(), IpcStage1()  # bytes are read in place, anything else copied
    for _, data in batches:
        in_place.add_serialized(data)
        copied.add_serialized(bytearray(data))  # type: ignore[arg-type]
    assert _dicts(in_place.flush(math.inf)) == _dicts(copied.flush(math.inf))
    assert in_place.counters == copied.counters


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(metric_requests(), st.sampled_from(sorted(ACCEPTED_METRICS))), min_size=1,
                max_size=4), st.integers(0, 2**32), st.integers(1, 6))
def test_arbitrary_requests_give_the_point_stages_observations(
        reqs: list[tuple[ExportMetricsServiceRequest, str]], seed: int, max_series: int) -> None:
    rng = random.Random(seed)
    steps: list[tuple[list[bytes], float | None]] = []
    for req, name in reqs:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if rng.random() < 0.8:
                        m.name = name
        data = req.SerializeToString()
        watermark = rng.choice([None, None, rng.uniform(0, 2e10)])
        steps.append(([data, data], watermark))
    _same(steps, max_series=max_series)


def test_a_stage_restored_from_its_checkpoint_carries_on_as_before() -> None:
    from ingest import state

    batches, _ = generate(8_000, 20, seed=6)
    new, old = IpcStage1(), PointIpcStage1()
    for i, (t, data) in enumerate(batches):
        if i in (len(batches) // 3, 2 * len(batches) // 3):  # with points waiting, then after a flush
            new = state.loads(state.dumps(new))
            assert _dicts(new.flush(t - 90)) == _dicts(old.flush(t - 90))
        new.add_serialized(data)
        old.add_serialized(data)
    assert _dicts(new.flush(math.inf)) == _dicts(old.flush(math.inf))
    assert new.counters == old.counters


def test_without_the_native_decoder_the_stage_reads_points_one_by_one(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from topology.stages import ipc

    monkeypatch.setattr(ipc, "NATIVE", False)
    monkeypatch.setattr(ipc, "_warned", False)
    first, second = IpcStage1(window_seconds=30), IpcStage1()
    assert type(first) is PointIpcStage1 and type(second) is PointIpcStage1
    assert first.window_seconds == 30
    assert [r.getMessage() for r in caplog.records].count(
        "the native OTLP metrics decoder is not built (pip install -e .): the IPC stage reads metric points "
        "one by one, several times slower") == 1

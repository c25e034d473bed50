"""A simulated fleet through all ten stage specs from lists: the same windows as the in-process
pipeline, the simulator's catalog and health, and nothing dead-lettered or dropped."""

from __future__ import annotations

import pytest

from tests.ingest.baseline import assert_same_windows, embedded_baseline
from tests.ingest.fleet import FleetRun
from tests.ingest.testing import last_windows
from topology.catalog import HealthEvent, ServiceInfo, TraceSummary
from topology.model import Layer
from topology.store.base import Stores

SERVICES = 20
MINUTES = 3.0
START = 1_800_000_000.0



def _windows(run: FleetRun, layers: tuple[str, ...]) -> dict[object, object]:
    out: dict[object, object] = {}
    for layer in layers:
        out.update(last_windows(run.stage(3, layer).effects))
    return out


@pytest.mark.parametrize("traces_by_id", [True, False])
def test_every_stage_spec_gives_the_in_process_pipelines_windows(stores: Stores, traces_by_id: bool) -> None:
    run = FleetRun(stores)
    sim = run.simulate(SERVICES, MINUTES, START, traces_by_id=traces_by_id)
    end = START + MINUTES * 60
    run.drain(end + 90)
    assert_same_windows(_windows(run, ("network", "ipc", "trace")),
                        embedded_baseline(SERVICES, 42, START, MINUTES))
    truth = sim.truth()["layers"]
    for layer in Layer:
        stored = last_windows(run.stage(3, layer.value.lower()).effects)
        assert {(src, dst) for _, g, _, src, dst in stored if g == "APP"} \
            == {(src, dst) for src, dst in truth[layer.value]}, layer
    # stage 1 of TRACE passed keyed messages through and cut unkeyed ones by trace id
    split = run.stage(1, "trace").counters()
    assert (split["passed_through"] > 0, split["split"] > 0) == (traces_by_id, not traces_by_id)
    # trace summaries reach stage 3; the meta worker writes the catalog and health as published
    assert any(isinstance(e, TraceSummary) for e in run.stage(3, "trace").effects)
    meta = run.stage(1, "meta").effects
    assert {i.name for i in meta if isinstance(i, ServiceInfo)} == set(sim.fleet.apps)
    assert sum(isinstance(e, HealthEvent) for e in meta) >= SERVICES
    # nothing was rejected, and nothing came too late
    assert all(not st.dead for st in run.stages.values())
    assert all(st.counters().get("late_dropped", 0) == 0 for st in run.stages.values())

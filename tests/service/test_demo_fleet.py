"""The demo's fleet process sends a flush's output in parts (service.demo_fleet.parts) over its pipe
(service.fleet_wire, no pickle): written one after the other as they arrive, the parts store what the
whole output would."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from ingest.state import StateError
from service import fleet_wire
from service.demo_fleet import FleetJob, feed, parts
from service.runtime import Runtime
from topology.model import ALL_LAYERS, Granularity
from topology.pipeline import Pipeline, PipelineConfig, PipelineOutput
from topology.sim import Simulator, generate_fleet
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

START = 1_700_000_040.0  # a whole minute


def _output() -> PipelineOutput:
    """Three simulated minutes of a 30-service fleet through the pipeline, every window closed."""
    runtime = Runtime(None, None, Pipeline(), clock=lambda: START)  # type: ignore[arg-type]  # not written
    sim = Simulator(generate_fleet(services=30, seed=5), seed=5, start=START)
    feed(runtime, sim.initial_records(), START)
    for t in range(int(START), int(START) + 180, 10):
        feed(runtime, sim.step(float(t), 10.0), float(t))
    return runtime.pipeline.flush(START + 600)


async def _held(stores: Stores) -> tuple[list[Any], dict[str, Any], list[Any]]:
    """Everything the stores answer about the windows: every layer's edges at both granularities, and
    the nodes they name."""
    span = TimeRange(START - 600, START + 1200)
    edges = [await stores.layers[layer].edges(g, span, now=START + 600)
             for layer in ALL_LAYERS for g in (Granularity.APP, Granularity.CLUSTER)]
    names = {n for es in edges for e in es for n in (e.key.source, e.key.target)}
    traces = [await stores.catalog.recent_traces(name, 1000) for name in sorted(names)]
    return edges, await stores.catalog.known_nodes(names), traces


async def test_parts_store_what_the_whole_output_stores(tmp_path: Path) -> None:
    out = _output()
    assert sum(map(len, out.windows.values())) > 40 and out.traces  # enough to cut into parts
    whole, cut = open_stores(tmp_path / "whole"), open_stores(tmp_path / "cut")
    try:
        once = Runtime(whole, None)
        await once.write(out)
        pieces = list(parts(out, 7))
        assert all(sum(map(len, p.windows.values())) + sum(map(len, p.late.values())) <= 7 for p in pieces)
        assert sum(len(p.traces) for p in pieces) == len(out.traces)
        into = Runtime(cut, None)
        for piece in pieces:
            kind, arrived = fleet_wire.decode(fleet_wire.encode(("out", piece)))
            assert kind == "out"
            await into.write(arrived)
        held = await _held(whole)
        assert held[0] and held[1] and any(held[2])
        assert await _held(cut) == held
        assert into.windows_written == once.windows_written
    finally:
        await whole.close()
        await cut.close()


def test_the_job_and_the_catalog_cross_the_pipe_as_they_are() -> None:
    job = FleetJob(30, 5, 10.0, START, START + 300, START - 3600, "/tmp/truth.json",
                   PipelineConfig(stage1_window=10, provisional=False))
    assert fleet_wire.decode(fleet_wire.encode(("job", job))) == ("job", job)
    sim = Simulator(generate_fleet(services=30, seed=5), seed=5, start=START)
    em = sim.initial_records()
    meta = ("meta", list(em.catalog), list(em.health), list(em.change_events), list(em.leases))
    assert em.catalog and em.leases
    assert fleet_wire.decode(fleet_wire.encode(meta)) == meta


def test_a_pickle_is_not_read() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("unpickled",))

    for data in (pickle.dumps(("out", Boom())), pickle.dumps(("stop",)), b"", b"\x00" * 10):
        with pytest.raises(StateError):
            fleet_wire.decode(data)

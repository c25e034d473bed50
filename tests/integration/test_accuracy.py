"""The embedded default against the simulator's ground truth, at 1,000 services with address churn
and intermediaries (load balancers, API gateways, proxies, NAT gateways) in the network paths.

Everything runs for real: the simulator emits the wire formats, the runtime decodes them, the three
stages of every layer run, and the answers come back from the embedded store's files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from service.demo import feed, persist_meta
from service.runtime import Runtime
from topology.catalog import AddressKind
from topology.model import ALL_LAYERS, Granularity, Layer
from topology.pipeline import Pipeline
from topology.sim import SimConfig, Simulator, generate_fleet
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

T0 = 1_800_000_000.0
STEP = 10.0
MINUTES = 8
DRAIN = 300.0  # run the clock on so every open window closes


@dataclass
class Run:
    sim: Simulator
    stores: Stores
    runtime: Runtime
    end: float


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    data = Path(tmp_path_factory.mktemp("accuracy"))
    stores = open_stores(data)
    now = [T0]  # the runtime's clock follows the simulation: inputs are judged against it (topology.admit)
    runtime = Runtime(stores, data, Pipeline(), clock=lambda: now[0])
    # Ten times the reference churn, so a short run reassigns (and reuses) many addresses.
    sim = Simulator(
        generate_fleet(services=1000, seed=11),
        seed=11,
        start=T0,
        config=SimConfig(churn_per_hour=0.5, edge_change_per_hour=0.3),
    )
    initial = sim.initial_records()
    await persist_meta(stores, initial)
    feed(runtime, initial, T0)
    t = T0
    while t < T0 + MINUTES * 60:
        em = sim.step(t, STEP)
        now[0] = t + STEP
        feed(runtime, em, t)
        await persist_meta(stores, em)
        t += STEP
        await runtime.flush(t)
    for extra in range(0, int(DRAIN) + 1, 30):
        await runtime.flush(t + extra)
    yield Run(sim, stores, runtime, t)
    await stores.close()


async def app_edges(r: Run, layer: Layer, rng: TimeRange) -> set[tuple[str, str]]:
    es = await r.stores.layers[layer].edges(Granularity.APP, rng, now=r.end + DRAIN)
    return {(e.key.source, e.key.target) for e in es}


def score(got: set[Any], expected: set[Any]) -> tuple[float, float]:
    tp = len(got & expected)
    return tp / max(1, len(got)), tp / max(1, len(expected))


def truth_set(truth: dict[str, Any], layer: str | None) -> set[tuple[str, str]]:
    pairs = truth["unified"] if layer is None else truth["layers"][layer]
    return {(a, b) for a, b in pairs}


async def test_the_run_exercised_churn_and_intermediaries(run: Run) -> None:
    redeploys = run.sim.redeploys
    assert len(redeploys) >= 20, "the run must reassign addresses"
    leases = run.sim.lease_history()
    owners_by_ip: dict[str, set[str]] = {}
    for lease in leases:
        owners_by_ip.setdefault(lease.ip, set()).add(lease.owner)
    assert any(len(o) > 1 for o in owners_by_ip.values()), "some address must be reused by another app"
    kinds = {lease.kind for lease in leases}
    assert {AddressKind.LOAD_BALANCER, AddressKind.NAT_GATEWAY} <= kinds
    c = run.runtime.counters()
    assert c["rejected"] == {}
    assert c["records"]["flows"] > 100_000


@pytest.mark.parametrize("layer", [layer.value for layer in ALL_LAYERS])
async def test_each_layer_matches_ground_truth(run: Run, layer: str) -> None:
    got = await app_edges(run, Layer(layer), TimeRange(T0, run.end + DRAIN))
    expected = truth_set(run.sim.truth(), layer)
    assert len(expected) > 500
    precision, recall = score(got, expected)
    assert precision >= 0.99, f"{layer}: precision {precision:.4f}; extra {sorted(got - expected)[:10]}"
    assert recall >= 0.99, f"{layer}: recall {recall:.4f}; missing {sorted(expected - got)[:10]}"


async def test_unified_graph_matches_ground_truth(run: Run) -> None:
    rng = TimeRange(T0, run.end + DRAIN)
    got: set[tuple[str, str]] = set()
    for layer in ALL_LAYERS:
        got |= await app_edges(run, layer, rng)
    precision, recall = score(got, truth_set(run.sim.truth(), None))
    assert precision >= 0.99 and recall >= 0.99, (precision, recall)


async def test_no_edge_is_attributed_to_a_previous_owner_of_an_address(run: Run) -> None:
    """Every NETWORK edge into an app that once held a reused address must be a true edge."""
    truth = truth_set(run.sim.truth(), "NETWORK")
    previous_owners: set[str] = set()
    by_ip: dict[str, list[Any]] = {}
    for lease in run.sim.lease_history():
        by_ip.setdefault(lease.ip, []).append(lease)
    for leases in by_ip.values():
        if len({lease.owner for lease in leases}) > 1:
            previous_owners |= {lease.owner for lease in leases}
    assert previous_owners
    got = await app_edges(run, Layer.NETWORK, TimeRange(T0, run.end + DRAIN))
    misattributed = {
        (s, d) for s, d in got if (s, d) not in truth and (d in previous_owners or s in previous_owners)
    }
    assert misattributed == set()


async def test_cluster_granularity_rolls_up_to_the_app_graph(run: Run) -> None:
    layer = run.stores.layers[Layer.NETWORK]
    rng = TimeRange(T0, run.end + DRAIN)
    clusters = await layer.edges(Granularity.CLUSTER, rng, now=run.end + DRAIN)
    apps = await app_edges(run, Layer.NETWORK, rng)
    assert len(clusters) >= len(apps)
    app_of = {lease.cluster: lease.owner for lease in run.sim.lease_history() if lease.cluster}
    lifted = {
        (app_of.get(e.key.source, e.key.source), app_of.get(e.key.target, e.key.target)) for e in clusters
    }
    assert lifted == apps


async def test_live_window_holds_only_edges_that_carried_recent_traffic(run: Run) -> None:
    """Edges that stopped during the run are gone from the last minutes but present earlier."""
    stopped = [c for c in run.sim.edge_changes if c.at < run.end - 180]
    assert stopped, "the run must stop some edges"
    recent = TimeRange(run.end - 120, run.end)
    live = await app_edges(run, Layer.NETWORK, recent)
    expected_live = truth_set(run.sim.truth(since=recent.start, until=recent.end), "NETWORK")
    precision, recall = score(live, expected_live)
    assert precision >= 0.99 and recall >= 0.99, (precision, recall)
    earlier = await app_edges(run, Layer.NETWORK, TimeRange(T0, T0 + 120))
    gone = [c.retired for c in stopped if c.retired in earlier]
    assert gone, "some stopped edge must have carried traffic early in the run"
    assert not set(gone) & live

"""The ground truth matches, pair for pair and window for window, what was actually emitted."""

from __future__ import annotations

from topology.catalog import AddressKind
from topology.model import Layer
from topology.sim import SimConfig, Simulator, generate_fleet
from topology.timewindow import MINUTE

from .conftest import START, STEP, Run, simulate
from .reference import Observed, ipc_pairs, network_pairs, trace_pairs


def _truth_windows(run: Run, layer: Layer) -> Observed:
    book = run.sim.world.truth
    return {p: set(book.windows(layer, p)) for p in book.pairs(layer)}


def _backends(run: Run) -> dict[str, str]:
    return {i.name: i.backend for i in run.sim.fleet.intermediaries.values() if i.backend}


def test_network_truth_is_exactly_the_client_records_resolved_at_their_start(run: Run) -> None:
    seen, _ = network_pairs(run.all("flow_batches"), run.sim.ownership_at, _backends(run))
    assert seen == _truth_windows(run, Layer.NETWORK)
    assert len(seen) > 100


def test_server_side_records_point_at_the_client_its_nat_or_the_intermediary(run: Run) -> None:
    _, server_side = network_pairs(run.all("flow_batches"), run.sim.ownership_at, _backends(run))
    kinds = {i.name: i.kind for i in run.sim.fleet.intermediaries.values()}
    apps = run.sim.fleet.apps
    seen_kinds = set()
    for _local, remote_owner, _t in server_side:
        kind = kinds.get(remote_owner)
        seen_kinds.add(kind)
        assert kind is not None or remote_owner in apps  # never a sink: sinks have no agent
    assert {AddressKind.NAT_GATEWAY, AddressKind.LOAD_BALANCER, None} <= seen_kinds


def test_network_truth_has_virtual_nodes_and_broker_edges_from_both_sides(run: Run) -> None:
    pairs = run.sim.world.truth.pairs(Layer.NETWORK)
    fleet = run.sim.fleet
    dsts = {d for _, d in pairs}
    assert any(fleet.sinks[d].kind is AddressKind.DATABASE for d in dsts if d in fleet.sinks)
    assert any(fleet.sinks[d].kind is AddressKind.EXTERNAL for d in dsts if d in fleet.sinks)
    kafka = "kafka-events"
    clients = {s for s, d in pairs if d == kafka}
    producers = {e.src for e in fleet.edges if e.dst == kafka and e.kind.value == "produce"}
    consumers = {e.src for e in fleet.edges if e.dst == kafka and e.kind.value == "consume"}
    assert clients & producers and clients & consumers
    assert not any(s == kafka for s, _ in pairs)  # never broker -> consumer


def test_ipc_truth_is_exactly_the_points_that_grew_naming_both_ends(run: Run) -> None:
    seen = ipc_pairs(run.all("metrics"), run.sim.ownership_at)
    assert seen == _truth_windows(run, Layer.IPC)
    assert len(seen) > 30


def test_trace_truth_is_exactly_what_pairing_the_emitted_spans_gives(run: Run) -> None:
    seen, spans = trace_pairs(run.all("spans"))
    assert seen == _truth_windows(run, Layer.TRACE)
    pairs = set(seen)
    assert any(s == "user" for s, _ in pairs)
    fleet = run.sim.fleet
    assert any(d in fleet.sinks and fleet.sinks[d].kind is AddressKind.DATABASE for _, d in pairs)
    uninstrumented = {a for a, x in fleet.apps.items() if not x.instrumented}
    assert {svc for svc, _ in spans}.isdisjoint(uninstrumented)  # uninstrumented apps emit nothing
    assert any(d in uninstrumented for _, d in pairs)  # ... but their callers name them


def test_unified_is_the_union_of_the_layers(run: Run) -> None:
    t = run.sim.truth()
    assert set(t) == {"layers", "unified", "incidents"} and t["incidents"] == []
    assert set(t["layers"]) == {"NETWORK", "IPC", "TRACE"}
    union = {tuple(p) for layer in t["layers"].values() for p in layer}
    assert {tuple(p) for p in t["unified"]} == union
    assert all(isinstance(p, list) and len(p) == 2 for p in t["unified"])


def test_window_truth_only_holds_pairs_seen_in_that_window(run: Run) -> None:
    since, until = START + 120, START + 240
    t = run.sim.truth(since, until)
    everything = run.sim.truth()
    book = run.sim.world.truth
    for layer, pairs in t["layers"].items():
        assert {tuple(p) for p in pairs} <= {tuple(p) for p in everything["layers"][layer]}
        for src, dst in pairs:
            assert any(w + MINUTE > since and w < until for w in book.windows(Layer(layer), (src, dst)))
    assert len(t["unified"]) < len(everything["unified"]) or len(run.steps) * STEP <= 240


def test_a_retired_edge_fades_from_later_windows() -> None:
    r = simulate(services=40, seed=3, steps=60)
    changes = r.sim.edge_changes
    assert changes
    book = r.sim.world.truth
    end = START + 60 * STEP
    faded = 0
    for ch in changes:
        if ch.at > end - 3 * MINUTE:
            continue
        # Skip pairs that carry traffic again later (re-added, or another edge between the same apps).
        again = [
            e
            for e in r.sim.fleet.edges
            if (e.src, e.dst) == ch.retired and (e.active_until is None or e.active_until > ch.at)
        ]
        if again:
            continue
        for layer in (Layer.NETWORK, Layer.IPC, Layer.TRACE):
            assert not [w for w in book.windows(layer, ch.retired) if w >= ch.at + MINUTE]
        assert ch.retired in book.pairs(Layer.NETWORK, None, ch.at)  # it did carry traffic before
        assert list(ch.retired) not in r.sim.truth(ch.at + MINUTE, end)["unified"]
        faded += 1
    assert faded


def test_fractional_start_times_still_resolve_every_record() -> None:
    """A wall-clock start (the demo's) with sub-millisecond fractions: every record starts inside a lease."""
    sim = Simulator(
        generate_fleet(30, 5), seed=5, start=START + 0.1234567, config=SimConfig(churn_per_hour=20.0)
    )
    ems = [sim.step(START + 0.1234567 + i * 7.3, 7.3) for i in range(15)]
    backends = {i.name: i.backend for i in sim.fleet.intermediaries.values() if i.backend}
    seen, _ = network_pairs([b for em in ems for b in em.flow_batches], sim.ownership_at, backends)
    book = sim.world.truth
    assert seen == {p: set(book.windows(Layer.NETWORK, p)) for p in book.pairs(Layer.NETWORK)}
    assert sim.redeploys

"""Redeploys reassign addresses, other apps reuse them, and the leases say who held what when."""

from __future__ import annotations

from topology.catalog import AddressKind
from topology.sim import SimConfig, Simulator, generate_fleet
from topology.wire import flow

from .conftest import START, Run


def test_freed_addresses_are_reused_by_other_apps(run: Run) -> None:
    history = run.sim.lease_history()
    by_ip: dict[str, list[str]] = {}
    for le in sorted(history, key=lambda x: x.start):
        if le.kind is AddressKind.WORKLOAD:
            by_ip.setdefault(le.ip, []).append(le.owner)
    reused = [ip for ip, owners in by_ip.items() if len(set(owners)) > 1]
    assert len(reused) >= 3
    assert run.sim.stats()["addresses_reused"] >= len(reused)


def test_a_reused_address_carries_traffic_for_both_owners(run: Run) -> None:
    """Flows to one address before and after reuse: resolving at start_ms gives each its owner."""
    history = run.sim.lease_history()
    owners: dict[str, set[str]] = {}
    for le in history:
        owners.setdefault(le.ip, set()).add(le.owner)
    reused = {ip for ip, o in owners.items() if len(o) > 1}
    seen: dict[str, set[str]] = {}
    for data in run.all("flow_batches"):
        b = flow.decode(data)
        for rec in b.records[b.records["role"] == flow.ROLE_CLIENT].tolist():
            ip = flow.unpack_ip(rec[3])
            if ip in reused:
                lease = run.sim.ownership_at(ip, rec[0] / 1000)
                assert lease is not None
                seen.setdefault(ip, set()).add(lease.owner)
    assert any(len(o) > 1 for o in seen.values())


def test_ownership_is_time_ranged_and_half_open(run: Run) -> None:
    ended = [le for le in run.sim.lease_history() if le.end is not None]
    assert ended
    le = ended[0]
    assert run.sim.ownership_at(le.ip, le.start) == le
    assert run.sim.ownership_at(le.ip, le.end - 0.001) == le
    after = run.sim.ownership_at(le.ip, le.end)
    assert after is None or after.start == le.end
    assert run.sim.ownership_at("192.0.2.1", START) is None


def test_emitted_leases_replay_to_the_simulators_history(run: Run) -> None:
    """Applying every emitted lease record in order (keyed by ip and start) rebuilds the history."""
    book: dict[tuple[str, float], tuple[str, float | None]] = {}
    for em in [run.initial, *run.steps]:
        for le in em.leases:
            key = (le.ip, le.start)
            if key in book:
                assert book[key][0] == le.owner and book[key][1] is None and le.end is not None
            book[key] = (le.owner, le.end)
    assert book == {(le.ip, le.start): (le.owner, le.end) for le in run.sim.lease_history()}
    # Every address is held by at most one open lease.
    open_ips = [ip for (ip, _s), (_o, end) in book.items() if end is None]
    assert len(open_ips) == len(set(open_ips))


def test_churn_rate_is_about_the_configured_share_per_hour() -> None:
    fleet = generate_fleet(300, 4)
    sim = Simulator(fleet, seed=4, start=START, config=SimConfig(churn_per_hour=0.05, trace_ratio=0.0))
    n = fleet.instance_count()
    for i in range(12):  # one simulated hour in long steps (churn does not depend on the step length)
        sim.step(START + i * 300.0, 300.0)
    moved = sum(r.addresses for r in sim.redeploys)
    assert 0.02 * n <= moved <= 0.10 * n

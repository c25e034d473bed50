"""Fleet generation: deterministic, and shaped like real fleets (facts.md, "Shape of real fleets")."""

from __future__ import annotations

import re
import statistics
from collections import Counter

import pytest

from topology.catalog import AddressKind
from topology.sim import CallKind, Fleet, Role, Style, generate_fleet


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return generate_fleet(1000, 42)


def _signature(f: Fleet) -> list[object]:
    return [
        [
            (
                a.name,
                a.role,
                a.tier,
                a.domain,
                a.team,
                a.style,
                [(c.name, [(i.name, i.ip) for i in c.instances]) for c in a.clusters],
            )
            for a in f.apps.values()
        ],
        [(e.src, e.dst, e.kind, e.via, e.nat, round(e.rate, 9)) for e in f.edges],
        sorted((s.name, tuple(s.ips)) for s in f.sinks.values()),
        sorted((i.name, i.ip, i.backend) for i in f.intermediaries.values()),
    ]


def test_same_seed_same_fleet_and_different_seed_different_fleet() -> None:
    assert _signature(generate_fleet(200, 5)) == _signature(generate_fleet(200, 5))
    assert _signature(generate_fleet(200, 5)) != _signature(generate_fleet(200, 6))


def test_roles_follow_the_entry_middle_leaf_shares(fleet: Fleet) -> None:
    roles = Counter(a.role for a in fleet.apps.values())
    assert len(fleet.apps) == 1000
    assert roles[Role.ENTRY] == 130 and roles[Role.MIDDLE] == 480 and roles[Role.LEAF] == 390


def test_out_degree_is_heavy_tailed_with_a_small_median(fleet: Fleet) -> None:
    out = fleet.out_degree()
    callers = [out[a.name] for a in fleet.apps.values() if a.role is not Role.LEAF and not a.gateway]
    assert 2 <= statistics.median(callers) <= 5
    assert max(out.values()) >= 25  # hubs
    fan_in = sorted(fleet.in_degree().values(), reverse=True)
    assert fan_in[0] >= 40 and statistics.median(fan_in) <= 4


def test_apps_are_reached_from_gateways_mostly_within_depth_6(fleet: Fleet) -> None:
    out: dict[str, list[str]] = {}
    for e in fleet.edges:
        if e.kind is CallKind.RPC and not e.back:
            out.setdefault(e.src, []).append(e.dst)
    depth = {g: 0 for g in fleet.gateways}
    queue = list(fleet.gateways)
    for a in queue:
        for b in out.get(a, ()):
            if b not in depth:
                depth[b] = depth[a] + 1
                queue.append(b)
    assert {a for a in fleet.apps if a not in depth} == {a for a, x in fleet.apps.items() if x.broker}
    depths = Counter(depth.values())
    assert sum(n for d, n in depths.items() if 1 <= d <= 6) >= 0.95 * (len(depth) - len(fleet.gateways))
    assert 0 < sum(e.back for e in fleet.edges) < 0.03 * len(fleet.edges)  # DAG-ish: a few cycles


def test_tiers_are_skewed_to_few_tier_zero(fleet: Fleet) -> None:
    tiers = Counter(a.tier for a in fleet.apps.values())
    assert tiers[0] < tiers[1] < tiers[2] < tiers[3]
    assert tiers[0] <= 0.06 * len(fleet.apps)


def test_sinks_brokers_externals_and_intermediaries(fleet: Fleet) -> None:
    kinds = Counter(s.kind for s in fleet.sinks.values())
    assert 0.05 * 1000 <= kinds[AddressKind.DATABASE] <= 0.10 * 1000
    assert kinds[AddressKind.MESSAGING] >= 1 and kinds[AddressKind.EXTERNAL] >= 3
    assert "api.stripe.example" in fleet.sinks
    fan_in = fleet.in_degree()
    dbs = sorted((fan_in[s] for s, x in fleet.sinks.items() if x.kind is AddressKind.DATABASE), reverse=True)
    assert dbs[0] >= 30 and min(dbs) >= 1  # shared by many callers, none unused
    assert all(
        re.fullmatch(r"[a-z]+-(db|cache|kv|search)(-\d+)?", s)
        for s, x in fleet.sinks.items()
        if x.kind is AddressKind.DATABASE
    )
    brokers = [a for a in fleet.apps.values() if a.broker]
    assert {b.name for b in brokers} >= {"kafka-events"} and all(b.style is Style.NONE for b in brokers)
    for b in brokers:
        kinds_in = {e.kind for e in fleet.edges if e.dst == b.name}
        assert kinds_in == {CallKind.PRODUCE, CallKind.CONSUME}
    inter = Counter(i.kind for i in fleet.intermediaries.values())
    assert inter[AddressKind.LOAD_BALANCER] > 10 and inter[AddressKind.NAT_GATEWAY] >= 2
    assert inter[AddressKind.API_GATEWAY] >= 1 and inter[AddressKind.PROXY] >= 1
    fronted = Counter(i.backend for i in fleet.intermediaries.values() if i.backend)
    assert max(fronted.values()) == 1  # each fronts exactly one app, and one app has at most one
    assert any(e.via for e in fleet.edges) and any(e.nat for e in fleet.edges)
    for e in fleet.edges:
        if e.via:
            assert fleet.intermediaries[e.via].backend == e.dst


def test_instrumentation_mix_and_gateways(fleet: Fleet) -> None:
    styles = Counter(a.style for a in fleet.apps.values())
    share = 1 - styles[Style.NONE] / len(fleet.apps)
    assert 0.62 <= share <= 0.78
    assert all(styles[s] > 100 for s in (Style.OTEL_OLD, Style.OTEL_NEW, Style.SPECTATOR))
    assert any(a.spectator_server for a in fleet.apps.values())
    gws = [fleet.apps[g] for g in fleet.gateways]
    assert gws[0].name == "edge-gateway" and all(g.instrumented and g.user_rate > 0 for g in gws)
    assert all(a.user_rate == 0 for a in fleet.apps.values() if not a.gateway)


def test_names_owners_clusters_and_addresses(fleet: Fleet) -> None:
    domains = {a.domain for a in fleet.apps.values()}
    assert 15 <= len(domains) <= 25
    for a in fleet.apps.values():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", a.name), a.name
        assert 1 <= len(a.clusters) <= 3
        for c in a.clusters:
            assert re.fullmatch(re.escape(a.name) + r"-prod(-[a-z]+)?-v\d{3}", c.name), c.name
            assert c.instances
    teams = Counter(a.team for a in fleet.apps.values())
    assert max(teams.values()) > 3 and len(teams) < len(fleet.apps) / 3
    t = next(iter(fleet.teams.values()))
    assert t.email and t.email.endswith("@example.com") and t.chat.startswith("#") and t.oncall
    ips = [i.ip for a in fleet.apps.values() for c in a.clusters for i in c.instances]
    assert len(set(ips)) == len(ips)
    info = fleet.service_info(fleet.apps["edge-gateway"])
    assert info.tier == 0 and info.owner is not None and info.clusters


def test_ten_thousand_services_generate() -> None:
    f = generate_fleet(10_000, 1)
    assert len(f.apps) == 10_000 and len(f.edges) > 30_000


def test_too_small_a_fleet_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_fleet(5)

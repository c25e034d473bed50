"""NETWORK stage 2: the cases the golden scenarios do not pin down (splits, lateness, routing, two-sided)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from topology.address import AddressBook
from topology.catalog import AddressKind, AddressLease
from topology.model import EdgePartial, Granularity, NodeKind, Side
from topology.stages.network import FlowAggregate, NetworkStage2
from topology.wire.flow import ROLE_CLIENT, ROLE_SERVER

T = 1_700_000_040  # a multiple of 60

BOOK = [
    AddressLease("10.0.0.1", "web", AddressKind.WORKLOAD, T - 3600, cluster="web-v1"),
    AddressLease("10.0.0.2", "mobile", AddressKind.WORKLOAD, T - 3600, cluster="mobile-v1"),
    AddressLease("10.0.1.1", "api", AddressKind.WORKLOAD, T - 3600, cluster="api-v1"),
    AddressLease("10.0.1.2", "api-canary", AddressKind.WORKLOAD, T - 3600, cluster="api-canary-v2"),
    AddressLease("10.0.1.3", "nocluster", AddressKind.WORKLOAD, T - 3600),
    AddressLease("10.0.9.1", "lb", AddressKind.LOAD_BALANCER, T - 3600),
    AddressLease("10.0.9.2", "proxy", AddressKind.PROXY, T - 3600),
    AddressLease("10.0.8.1", "nat", AddressKind.NAT_GATEWAY, T - 3600),
]


def agg(local_app: str, remote: str, role: int = ROLE_CLIENT, *, cluster: str = "", start: float = 5,
        last_start: float | None = None, conns: int = 1, sent: int = 0, received: int = 0, port: int = 443,
        local_addr: str = "") -> FlowAggregate:
    s = round((T + start) * 1000)
    ls = round((T + (start if last_start is None else last_start)) * 1000)
    w = int(T + start) // 10 * 10
    return FlowAggregate(w, 10, local_app, cluster, role, remote, port, 6, conns, sent, received, s, ls,
                         ls + 500, local_addr)


def stage() -> NetworkStage2:
    return NetworkStage2(AddressBook(BOOK), window_seconds=60, grace_seconds=120)


def app_edges(parts: list[EdgePartial]) -> dict[tuple[str, str, Side], Any]:
    out: dict[tuple[str, str, Side], Any] = {}
    for p in parts:
        if p.key.granularity is Granularity.APP:
            k = (p.key.source, p.key.target, p.side)
            out[k] = p.stats if k not in out else out[k].merge(p.stats)
    return out


def test_clients_of_an_intermediary_are_split_across_its_backends_by_their_connections() -> None:
    s = stage()
    s.add([agg("web", "10.0.9.1", conns=8, sent=800),
           agg("api", "10.0.9.1", ROLE_SERVER, cluster="api-v1", conns=6, port=8080),
           agg("api-canary", "10.0.9.1", ROLE_SERVER, cluster="api-canary-v2", conns=2, port=8081)])
    e = app_edges(s.flush(T + 60))
    assert set(e) == {("web", "api", Side.CLIENT), ("web", "api-canary", Side.CLIENT)}
    assert (e[("web", "api", Side.CLIENT)].connections, e[("web", "api", Side.CLIENT)].bytes_sent) == (6, 600)
    assert e[("web", "api-canary", Side.CLIENT)].connections == 2
    assert e[("web", "api-canary", Side.CLIENT)].ports == (8081,)
    assert e[("web", "api", Side.CLIENT)].intermediaries == ("lb",)


def test_late_client_pairs_with_the_backends_kept_from_the_flushed_window() -> None:
    s = stage()
    s.add([agg("web", "10.0.9.1", conns=1), agg("api", "10.0.9.1", ROLE_SERVER, conns=1)])
    assert set(app_edges(s.flush(T + 60))) == {("web", "api", Side.CLIENT)}
    s.add([agg("mobile", "10.0.9.1", conns=4, start=30), agg("web", "10.0.9.1", conns=2, start=31)])
    late = app_edges(s.flush(T + 70))
    assert {k: v.connections for k, v in late.items()} == {("mobile", "api", Side.CLIENT): 4,
                                                          ("web", "api", Side.CLIENT): 2}
    assert s.counters["late_accepted"] == 2


def summed(parts: list[EdgePartial]) -> dict[tuple[Granularity, str, str, Side], Any]:
    out: dict[tuple[Granularity, str, str, Side], Any] = {}
    for p in parts:
        k = (p.key.granularity, p.key.source, p.key.target, p.side)
        out[k] = p.stats if k not in out else out[k].merge(p.stats)
    return out


_BYTES = st.integers(0, 10**7)
_CLIENTS = st.lists(st.tuples(st.sampled_from(["web", "mobile"]), st.integers(0, 50), _BYTES, _BYTES,
                              st.integers(0, 59), st.booleans()), min_size=1, max_size=6)
_BACKENDS = st.lists(st.tuples(st.sampled_from([("api", "api-v1"), ("api-canary", "api-canary-v2")]),
                               st.integers(0, 50), st.integers(0, 59), st.booleans()), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(_CLIENTS, _BACKENDS)
def test_a_join_fed_partly_late_sums_to_what_an_on_time_run_emits(
        clients: list[tuple[str, int, int, int, int, bool]],
        backends: list[tuple[tuple[str, str], int, int, bool]]) -> None:
    """Late clients and late backends (within grace) change only when the split is emitted, never its sum."""
    if all(late for *_, late in backends):
        backends[0] = (*backends[0][:3], False)  # a backend after a flushed fallback is a different rule
    aggs = [(agg(c, "10.0.9.1", conns=n, sent=tx, received=rx, start=t), late)
            for c, n, tx, rx, t, late in clients]
    aggs += [(agg(b, "10.0.9.1", ROLE_SERVER, cluster=cl, conns=n, port=8080, start=t), late)
             for (b, cl), n, t, late in backends]
    on_time = stage()
    on_time.add([a for a, _ in aggs])
    want = summed(on_time.flush(T + 60))
    split = stage()
    split.add([a for a, late in aggs if not late])
    got = split.flush(T + 60)
    split.add([a for a, late in aggs if late])
    got += split.flush(T + 61)
    assert summed(got) == want


def test_a_backend_arriving_after_the_fallback_adds_the_direct_edge_and_is_counted() -> None:
    s = stage()
    s.add([agg("web", "10.0.9.2", conns=3)])
    first = s.flush(T + 60)
    assert [(p.key.target, p.target_kind) for p in first if p.key.granularity is Granularity.APP] == [
        ("proxy", NodeKind.UNINSTRUMENTED)]
    s.add([agg("api", "10.0.9.2", ROLE_SERVER, conns=3, port=8080)])
    e = app_edges(s.flush(T + 61))
    assert {k: v.connections for k, v in e.items()} == {("web", "api", Side.CLIENT): 3}
    assert s.counters["late_backend_after_fallback"] == 1


def test_backends_without_clients_are_counted_and_dropped() -> None:
    s = stage()
    s.add([agg("api", "10.0.9.1", ROLE_SERVER)])
    assert s.flush(T + 60) == []
    assert s.counters["intermediary_without_clients"] == 1


def test_a_nat_record_after_the_client_edge_was_flushed_annotates_it_with_a_zero_count_partial() -> None:
    s = stage()
    s.add([agg("web", "10.0.1.1", cluster="web-v1", conns=2, port=8080)])
    s.flush(T + 60)
    s.add([agg("api", "10.0.8.1", ROLE_SERVER, cluster="api-v1", conns=2, port=8080)])
    parts = s.flush(T + 61)
    assert {(p.key.granularity, p.key.source, p.key.target) for p in parts} == {
        (Granularity.APP, "web", "api"), (Granularity.CLUSTER, "web-v1", "api-v1")}
    for p in parts:
        assert p.stats.intermediaries == ("nat",) and p.stats.connections == 0 and p.side is Side.CLIENT
    assert s.counters["nat_unmatched"] == 0


def test_nodes_without_a_cluster_give_app_edges_only() -> None:
    s = stage()
    s.add([agg("web", "10.0.1.3", cluster="web-v1")])
    parts = s.flush(T + 60)
    assert [(p.key.granularity, p.key.target) for p in parts] == [(Granularity.APP, "nocluster")]
    assert s.counters["no_cluster"] == 1


def test_an_address_changing_hands_inside_an_aggregate_gives_both_owners_an_edge() -> None:
    book = AddressBook([AddressLease("10.0.5.5", "old", AddressKind.WORKLOAD, T - 100, T + 20, "old-v1"),
                        AddressLease("10.0.5.5", "new", AddressKind.WORKLOAD, T + 25, None, "new-v1")])
    s = NetworkStage2(book)
    # first start before the change, last start after it; a one-connection two-sided record too
    s.add([agg("web", "10.0.5.5", start=15, last_start=26, conns=4, sent=100),
           agg("", "10.0.5.5", start=15, last_start=26, conns=1, local_addr="10.0.0.1")])
    e = app_edges(s.flush(T + 60))
    assert {k: (v.connections, v.bytes_sent) for k, v in e.items()} == {
        ("web", "old", Side.CLIENT): (3, 100), ("web", "new", Side.CLIENT): (1, 0),
        ("ip:10.0.0.1", "old", Side.PAIR): (1, 0), ("ip:10.0.0.1", "new", Side.PAIR): (0, 0)}
    assert s.counters["owner_changed_in_aggregate"] == 2


def test_two_sided_records_resolve_both_ends_and_turn_intermediaries_around() -> None:
    s = stage()
    s.add([
        agg("", "10.0.1.1", local_addr="10.0.0.1", conns=2, sent=10, received=20, port=8080),  # web -> api
        agg("", "10.0.9.1", local_addr="10.0.0.2", conns=1, sent=5),  # mobile -> lb
        agg("", "10.0.1.1", local_addr="10.0.9.1", conns=1, port=8080),  # lb -> api, seen by the lb
        agg("", "10.0.9.2", local_addr="10.0.9.1", conns=1),  # lb -> proxy: no workload on either end
    ])
    e = app_edges(s.flush(T + 60))
    assert {k: v.connections for k, v in e.items()} == {("web", "api", Side.PAIR): 2,
                                                       ("mobile", "api", Side.PAIR): 1}
    assert e[("mobile", "api", Side.PAIR)].intermediaries == ("lb",)
    assert s.counters["both_ends_intermediaries"] == 1


def test_windows_are_flushed_once_and_dropped_after_grace() -> None:
    s = stage()
    s.add([agg("web", "10.0.1.1", cluster="web-v1")])
    assert s.flush(T + 59) == []
    assert len(s.flush(T + 60)) == 2
    assert s.flush(T + 61) == []  # nothing new
    s.flush(T + 180)  # grace over for [T, T+60)
    s.add([agg("web", "10.0.1.1")])
    assert s.flush(T + 200) == [] and s.counters["late_dropped"] == 1


def test_route_key_sends_each_join_to_one_worker() -> None:
    s = stage()
    assert s.route_key(agg("web", "10.0.9.1")) == "lb"  # a client of the load balancer
    assert s.route_key(agg("api", "10.0.9.1", ROLE_SERVER)) == "lb"  # its backend
    assert s.route_key(agg("web", "10.0.1.1")) == "api"  # a client edge into api
    assert s.route_key(agg("api", "10.0.8.1", ROLE_SERVER)) == "api"  # api's NAT records meet them
    assert s.route_key(agg("api", "10.0.0.1", ROLE_SERVER)) == "api"
    assert s.route_key(agg("web", "10.7.7.7")) == "ip:10.7.7.7"
    assert s.route_key(agg("", "10.0.1.1", local_addr="10.0.9.1")) == "lb"
    assert s.route_key(agg("", "10.0.1.1", local_addr="10.0.0.1")) == "api"


def test_a_lease_added_between_batches_is_used_for_later_records_of_the_same_window() -> None:
    book = AddressBook([AddressLease("10.0.5.5", "old", AddressKind.WORKLOAD, T - 100, None, "old-v1")])
    s = NetworkStage2(book)
    s.add([agg("web", "10.0.5.5", cluster="web-v1", start=5)])
    book.add(AddressLease("10.0.5.5", "new", AddressKind.WORKLOAD, T + 30, None, "new-v1"))
    s.add([agg("web", "10.0.5.5", cluster="web-v1", start=35),
           agg("web", "10.0.5.5", cluster="web-v1", start=6)])
    e = app_edges(s.flush(T + 60))
    assert {k: v.connections for k, v in e.items()} == {("web", "old", Side.CLIENT): 2,
                                                       ("web", "new", Side.CLIENT): 1}


def test_unattributed_traffic_stays_unknown_and_the_leases_around_it_are_kept() -> None:
    gone = AddressLease("10.0.7.7", "orders", AddressKind.WORKLOAD, T - 600, T, cluster="orders-v1")
    later = AddressLease("10.0.7.7", "orders-db", AddressKind.DATABASE, T + 40)
    far = AddressLease("10.0.7.7", "billing", AddressKind.WORKLOAD, T - 3600, T - 1800, cluster="billing-v1")
    s = NetworkStage2(AddressBook([*BOOK, far, gone, later]), window_seconds=60, grace_seconds=120)
    s.add([agg("web", "10.0.7.7", start=5, conns=3),  # nobody held it between T and T + 40
           agg("web", "10.0.7.8", start=6),  # never leased: nothing around it
           agg("web", "10.0.1.1", start=7)])  # attributed: nothing to keep
    e = app_edges(s.flush(T + 60))
    assert set(e) == {("web", "ip:10.0.7.7", Side.CLIENT), ("web", "ip:10.0.7.8", Side.CLIENT),
                      ("web", "api", Side.CLIENT)}  # never given to orders or orders-db
    assert e[("web", "ip:10.0.7.7", Side.CLIENT)].connections == 3
    assert sorted(s.take_peer_leases(), key=lambda x: x.start) == [gone, later]
    assert s.take_peer_leases() == []  # taken once
    # an aggregate whose owner went away during it: the later, uncovered instant gets its neighbours
    s.add([agg("web", "10.0.7.7", start=-30, last_start=20, conns=2)])
    assert sorted(s.take_peer_leases(), key=lambda x: x.start) == [gone, later]
    # the text form the traffic used names the address, whatever form the lease was written in
    s2 = NetworkStage2(AddressBook([AddressLease("::ffff:10.0.7.9", "cache", AddressKind.DATABASE, T + 50)]))
    s2.add([agg("web", "10.0.7.9", start=5)])
    [hint] = s2.take_peer_leases()
    assert (hint.ip, hint.owner) == ("10.0.7.9", "cache")

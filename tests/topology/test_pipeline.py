"""The in-process pipeline: freshness through provisional windows, without changing final answers."""

from __future__ import annotations

import numpy as np

from topology.catalog import AddressKind, AddressLease
from topology.model import Granularity, Layer
from topology.pipeline import Pipeline, PipelineConfig
from topology.wire import flow

T = 1_800_000_017.0  # 17 s into a minute window


def _batch(records: list[tuple[str, str, int, int, float]], strings: list[str]) -> flow.FlowBatch:
    """records: (local ip, remote ip, role, local app index, start)."""
    r = np.zeros(len(records), dtype=flow.RECORD_V1)
    for i, (local, remote, role, app, start) in enumerate(records):
        r[i]["start_ms"], r[i]["end_ms"] = int(start * 1000), int((start + 0.2) * 1000)
        r[i]["local_addr"], r[i]["remote_addr"] = flow.pack_ip(local), flow.pack_ip(remote)
        r[i]["local_port"], r[i]["remote_port"] = (40000, 443) if role == flow.ROLE_CLIENT else (8080, 40000)
        r[i]["protocol"], r[i]["role"], r[i]["connections"] = flow.PROTO_TCP, role, 1
        r[i]["local_app"], r[i]["bytes_sent"] = app, 100
    return flow.decode(flow.encode(r, strings, emitted_ms=int(T * 1000)))


def _pipeline(provisional: bool) -> Pipeline:
    p = Pipeline(PipelineConfig(provisional=provisional))
    p.add_leases([
        AddressLease("10.0.0.2", "orders-api", AddressKind.WORKLOAD, T - 600),
        AddressLease("10.0.0.3", "billing-api", AddressKind.WORKLOAD, T - 600),
        AddressLease("10.0.5.5", "lb-billing", AddressKind.LOAD_BALANCER, T - 600),
    ])
    return p


def _feed(p: Pipeline) -> None:
    strings = ["", "cart-api", "billing-api"]
    p.add_flows(_batch([
        ("10.0.0.1", "10.0.0.2", flow.ROLE_CLIENT, 1, T),  # direct: cart-api -> orders-api
        ("10.0.0.1", "10.0.5.5", flow.ROLE_CLIENT, 1, T),  # via the load balancer ...
        ("10.0.0.3", "10.0.5.5", flow.ROLE_SERVER, 2, T + 1),  # ... to billing-api
    ], strings))


def _app_edges(windows: list[object]) -> set[tuple[str, str]]:
    return {(w.key.source, w.key.target) for w in windows if w.key.granularity is Granularity.APP}  # type: ignore[attr-defined]


def test_a_direct_edge_is_visible_within_two_seconds_of_the_connection() -> None:
    p = _pipeline(provisional=True)
    _feed(p)
    seen: set[tuple[str, str]] = set()
    for dt in (0.5, 1.0, 1.5, 2.0):
        seen |= _app_edges(p.flush(T + dt).windows.get(Layer.NETWORK, []))
        if ("cart-api", "orders-api") in seen:
            break
    assert ("cart-api", "orders-api") in seen, "the edge must be visible by T + 2 s"


def test_an_intermediary_is_never_reported_before_its_window_closes() -> None:
    """Early output may only hold direct edges: a load balancer's join needs the whole window."""
    p = _pipeline(provisional=True)
    _feed(p)
    early: set[tuple[str, str]] = set()
    for dt in range(1, 40):
        early |= _app_edges(p.flush(T + dt).windows.get(Layer.NETWORK, []))
    assert early == {("cart-api", "orders-api")}
    late = _app_edges(p.flush(T + 60).windows.get(Layer.NETWORK, []))
    assert ("cart-api", "billing-api") in late
    assert ("cart-api", "lb-billing") not in early | late


def _final_windows(provisional: bool) -> dict[tuple[str, str, str], dict[str, object]]:
    p = _pipeline(provisional)
    _feed(p)
    final: dict[tuple[str, str, str], dict[str, object]] = {}
    for dt in range(1, 200, 3):  # last write per key wins, as in the store
        for w in p.flush(T + dt).windows.get(Layer.NETWORK, []):
            final[(w.key.granularity.value, w.key.source, w.key.target)] = w.stats.to_dict()
    return final


def test_provisional_windows_are_replaced_by_the_same_final_answer() -> None:
    assert _final_windows(provisional=True) == _final_windows(provisional=False)
    final = _final_windows(provisional=True)
    assert final[("APP", "cart-api", "billing-api")]["intermediaries"] == ["lb-billing"]
    assert final[("APP", "cart-api", "orders-api")]["connections"] == 1


def test_leases_around_unattributed_traffic_come_out_with_the_windows() -> None:
    p = _pipeline(provisional=False)
    gone = AddressLease("10.0.9.9", "reports-api", AddressKind.WORKLOAD, T - 600, T - 60)
    p.add_leases([gone])
    p.add_flows(_batch([("10.0.0.1", "10.0.9.9", flow.ROLE_CLIENT, 1, T)], ["", "cart-api"]))
    outs = [p.flush(T + dt) for dt in (1, 30, 60, 120)]
    assert [x for o in outs for x in o.peer_leases] == [gone]
    edges = {e for o in outs for e in _app_edges(o.windows.get(Layer.NETWORK, []))}
    assert edges == {("cart-api", "ip:10.0.9.9")}  # never reports-api

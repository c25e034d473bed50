"""VPC flow logs, NETWORK stage 1: orientation, windows, de-duplication across interfaces."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.topology.wire.test_vpcflow import T, records
from topology.stages.vpc import VpcStage
from topology.wire.flow import ROLE_CLIENT
from topology.wire.vpcflow import VpcFlowRecord


@given(st.lists(records, max_size=15))
def test_aggregation_keeps_every_byte_of_one_interface(rs: list[VpcFlowRecord]) -> None:
    rs = [dataclasses.replace(r, interface_id="eni-1") for r in rs]
    aggs = VpcStage().aggregate(rs)
    assert sum(a.bytes_sent + a.bytes_received for a in aggs) == sum(r.bytes for r in rs)
    assert all(a.role == ROLE_CLIENT and a.local_app == "" and a.local_addr for a in aggs)


def rec(src: str, dst: str, sp: int, dp: int, b: int, flags: int | None, eni: str = "eni-1",
        start: int = T + 1, action: str = "ACCEPT", proto: int = 6) -> VpcFlowRecord:
    return VpcFlowRecord(src, dst, sp, dp, proto, b, start, start + 9, 1, action, flags, eni)


def test_tcp_flags_decide_the_client_even_against_the_port_heuristic() -> None:
    # a server listening on a high port (50000) called from a low client port (1024)
    aggs = VpcStage().aggregate([rec("10.0.0.1", "10.0.0.2", 1024, 50000, 10, 2),
                                      rec("10.0.0.2", "10.0.0.1", 50000, 1024, 90, 18)])
    [a] = aggs
    assert (a.local_addr, a.remote_addr, a.server_port) == ("10.0.0.1", "10.0.0.2", 50000)
    assert (a.connections, a.bytes_sent, a.bytes_received) == (1, 10, 90)


def test_without_flags_the_lower_port_is_the_server() -> None:
    [a] = VpcStage().aggregate([rec("10.0.0.2", "10.0.0.1", 5432, 40000, 70, None, proto=17)])
    assert (a.local_addr, a.remote_addr, a.server_port, a.protocol) == ("10.0.0.1", "10.0.0.2", 5432, 17)
    assert (a.connections, a.bytes_sent, a.bytes_received) == (1, 0, 70)


def test_both_interfaces_logging_one_connection_count_once() -> None:
    views = [rec("10.0.0.1", "10.0.0.2", 40000, 443, 10, 2, "eni-c"),
             rec("10.0.0.2", "10.0.0.1", 443, 40000, 90, 18, "eni-c"),
             rec("10.0.0.1", "10.0.0.2", 40000, 443, 10, 2, "eni-s"),
             rec("10.0.0.2", "10.0.0.1", 443, 40000, 90, 18, "eni-s"),
             rec("10.0.0.1", "10.0.0.2", 40001, 443, 5, 3, "eni-c"),  # a second, short connection (SYN+FIN)
             rec("10.0.0.1", "10.0.0.2", 40002, 443, 7, 0, "eni-c"),  # a connection opened earlier
             rec("10.0.0.1", "10.0.0.2", 40003, 22, 7, 2, "eni-c", action="REJECT")]
    p = VpcStage()
    [a] = p.aggregate(views)
    assert (a.connections, a.bytes_sent, a.bytes_received) == (2, 22, 90)
    assert (a.window_start, a.first_start_ms, a.last_end_ms) == (T, (T + 1) * 1000, (T + 10) * 1000)
    assert p.counters["rejected"] == 1


def test_windows_follow_the_start_time() -> None:
    aggs = VpcStage().aggregate([rec("10.0.0.1", "10.0.0.2", 40000, 443, 1, 2, start=T + 9),
                                      rec("10.0.0.1", "10.0.0.2", 40001, 443, 1, 2, start=T + 10)])
    assert [a.window_start for a in aggs] == [T, T + 10]
    with pytest.raises(ValueError):
        VpcStage().aggregate([], window_seconds=0)

"""Real BPF, real connections between network namespaces: the agent's records are exact.

Named servers in namespace B, named clients in A and C (see conftest), a known set of transfers:
short connections, one long-lived connection across several reporting intervals, one IPv6
connection, one anonymous client. The records the agent sends for our addresses must be exactly
these, from both ends, with exact byte counts, roles, addresses, ports, workload names from the
workloads file (command line and network namespace rules) and connection counts.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from agent.attribution import UNATTRIBUTED
from tests.agent.conftest import Hosts, RunningAgent, finish
from topology.address import AddressBook
from topology.wire.flow import ROLE_CLIENT, ROLE_SERVER, unpack_ip

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

BY_SERVICE = {"cmdline": "--service=(?P<svc>[a-z0-9-]+)", "app": "{svc}", "cluster": "{svc}-test"}
COMM = Path(sys.executable).name[:15]  # the kernel's name of an anonymous peer process


def summarize(agent: RunningAgent, ours: set[str]) -> dict[tuple[Any, ...], dict[str, int]]:
    """(app, cluster, role, local ip, remote ip, server port) -> sums, for records touching ``ours``."""
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for strings, r in agent.flows():
        lip, rip = unpack_ip(r["local_addr"]), unpack_ip(r["remote_addr"])
        if lip not in ours and rip not in ours:
            continue
        role = int(r["role"])
        port = int(r["remote_port"] if role == ROLE_CLIENT else r["local_port"])
        s = out[(strings[r["local_app"]], strings[r["local_cluster"]], role, lip, rip, port)]
        s["sent"] += int(r["bytes_sent"])
        s["received"] += int(r["bytes_received"])
        s["connections"] += int(r["connections"])
        s["records"] += 1
        assert r["end_ms"] >= r["start_ms"] > 1_600_000_000_000
        assert r["protocol"] == 6
    return out


def test_records_are_exact(hosts: Hosts, agent_factory: Any) -> None:
    h = hosts
    agent = agent_factory([BY_SERVICE, {"netns": h.c, "app": "batch-job", "cluster": "batch"}])
    a1, b2, b3, c1, b2c = h.ip("a", 1), h.ip("b", 2), h.ip("b", 3), h.ip("c", 1, 251), h.ip("b", 2, 251)
    a6, b6 = h.ip("v6", 1), h.ip("v6", 2)
    h.server(h.b, "stock-db", "0.0.0.0", 7001, reply=300)
    h.server(h.b, "ledger-api", b3, 7002, reply=40)
    h.server(h.b, "search-api", b6, 7003, reply=700)
    for _ in range(3):
        h.client(h.a, "orders-api", b2, 7001, send=1000)
    h.client(h.a, None, b2, 7001, send=55)
    h.client(h.c, None, b2c, 7001, send=77)
    long_lived = h.client(h.a, "orders-api", b3, 7002, send=4000, chunks=4, every=1.3, wait=False)
    h.client(h.a, "orders-api", b6, 7003, send=2000)
    finish(long_lived)
    time.sleep(1.5)
    agent.stop()

    got = summarize(agent, {a1, b2, b3, c1, b2c, a6, b6})
    anon = f"{UNATTRIBUTED}{COMM}"
    want = {
        ("orders-api", "orders-api-test", ROLE_CLIENT, a1, b2, 7001): (3000, 900, 3),
        (anon, "", ROLE_CLIENT, a1, b2, 7001): (55, 300, 1),
        ("batch-job", "batch", ROLE_CLIENT, c1, b2c, 7001): (77, 300, 1),
        ("orders-api", "orders-api-test", ROLE_CLIENT, a6, b6, 7003): (2000, 700, 1),
        ("stock-db", "stock-db-test", ROLE_SERVER, b2, a1, 7001): (1200, 3055, 4),
        ("stock-db", "stock-db-test", ROLE_SERVER, b2c, c1, 7001): (300, 77, 1),
        ("search-api", "search-api-test", ROLE_SERVER, b6, a6, 7003): (700, 2000, 1),
    }
    long_keys = {("orders-api", "orders-api-test", ROLE_CLIENT, a1, b3, 7002): (4000, 40),
                 ("ledger-api", "ledger-api-test", ROLE_SERVER, b3, a1, 7002): (40, 4000)}
    assert set(got) == set(want) | set(long_keys), "records for traffic that did not happen, or missing"
    for key, (sent, received, conns) in want.items():
        s = got[key]
        assert (s["sent"], s["received"], s["connections"]) == (sent, received, conns), key
    for key, (sent, received) in long_keys.items():
        s = got[key]
        assert (s["sent"], s["received"]) == (sent, received), key
        assert s["records"] >= 3, f"{key}: a connection of ~4 s with a 1 s interval is reported per interval"
        assert s["connections"] == s["records"], "each interval record stands for the one connection"

    # A connection between two local processes: exactly one client record and one server record.
    for key in (("orders-api", "orders-api-test", ROLE_CLIENT, a6, b6, 7003),
                ("search-api", "search-api-test", ROLE_SERVER, b6, a6, 7003),
                ("batch-job", "batch", ROLE_CLIENT, c1, b2c, 7001),
                ("stock-db", "stock-db-test", ROLE_SERVER, b2c, c1, 7001)):
        assert got[key]["records"] == 1, key
    (v6,) = [r for _, r in agent.flows() if unpack_ip(r["remote_addr"]) == b6]
    assert v6["role"] == ROLE_CLIENT and v6["remote_port"] == 7003 and v6["local_port"] > 1024

    book = AddressBook(agent.leases())
    owners = {ip: {lease.owner for lease in book.leases(ip)} for ip in (a1, b2, b3, c1, b2c, a6, b6)}
    assert owners == {a1: {"orders-api"}, b2: {"stock-db"}, b3: {"ledger-api"}, c1: {"batch-job"},
                      b2c: {"stock-db"}, a6: {"orders-api"}, b6: {"search-api"}}
    # Every record's remote end resolves, at its start, to the workload on the other side; the anonymous
    # client's connections (and the server records folded with them) never to a wrong one.
    for strings, r in agent.flows():
        rip = unpack_ip(r["remote_addr"])
        if rip not in owners:
            continue
        lease = book.resolve(rip, int(r["start_ms"]) / 1000)
        app = strings[r["local_app"]]
        if r["role"] == ROLE_CLIENT and int(r["remote_port"]) in (7001, 7002, 7003):
            expected = {7001: "stock-db", 7002: "ledger-api", 7003: "search-api"}[int(r["remote_port"])]
            assert lease is not None and lease.owner == expected, (app, rip)
        elif r["role"] == ROLE_SERVER and app in ("ledger-api", "search-api"):
            assert lease is not None and lease.owner == "orders-api", (app, rip)
        elif r["role"] == ROLE_SERVER and rip == c1:
            assert lease is not None and lease.owner == "batch-job"
    counters = agent.agent.kernel_counters
    assert counters["ring_lost"] == 0 and counters["table_full"] == 0
    assert agent.agent.attributor.unattributed_processes >= 1
    assert agent.agent.batcher.unattributed_records >= 1


def test_address_reuse(hosts: Hosts, agent_factory: Any) -> None:
    """A server's address given to another workload: new connections go to the new owner, earlier
    ones stay with the old (stage 2 resolves at each record's start through the agent's leases)."""
    h = hosts
    agent = agent_factory([BY_SERVICE])
    b4 = h.ip("b", 4)
    v1 = h.server(h.b, "inventory-v1", b4, 7004, reply=222)
    h.client(h.a, "orders-api", b4, 7004, send=111)
    time.sleep(1.5)  # the first connection leaves in its own batch
    h.stop(v1)
    h.server(h.b, "inventory-v2", b4, 7004, reply=444)
    h.client(h.a, "orders-api", b4, 7004, send=333)
    time.sleep(1.5)
    agent.stop()

    book = AddressBook(agent.leases())
    assert [lease.owner for lease in book.leases(b4)] == ["inventory-v1", "inventory-v2"]
    clients = [(int(r["bytes_sent"]), book.resolve(b4, int(r["start_ms"]) / 1000))
               for strings, r in agent.flows() if unpack_ip(r["remote_addr"]) == b4]
    assert sorted((sent, lease.owner if lease else None) for sent, lease in clients) == [
        (111, "inventory-v1"), (333, "inventory-v2")]
    servers = {(strings[r["local_app"]], int(r["bytes_received"])) for strings, r in agent.flows()
               if unpack_ip(r["local_addr"]) == b4}
    assert servers == {("inventory-v1", 111), ("inventory-v2", 333)}
    assert agent.agent.leases.counters["moved"] >= 1  # this machine's other traffic may move addresses too

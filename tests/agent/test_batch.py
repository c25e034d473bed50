"""From kernel records to flow batches: byte deltas of long-lived connections, folding, attribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.attribution import Attributor
from agent.batch import Batcher, fold
from agent.leases import Leases
from agent.ledger import Ledger
from agent.process import Processes
from agent.program import CONN, ROLE_CLIENT, ROLE_SERVER
from agent.workloads import parse_rules
from topology.wire import flow
from topology.wire.flow import pack_ip, unpack_ip

MS = 1_000_000
OFFSET = 1_700_000_000_000 * MS  # monotonic -> epoch


def conn(sk: int, role: int, start_ms: int, sent: int, received: int, *, end_ms: int = 0, last_ms: int = 0,
         pid: int = 10, comm: bytes = b"app", lport: int = 40000, rport: int = 80, laddr: str = "10.0.0.1",
         raddr: str = "10.0.0.2") -> np.void:
    r = np.zeros(1, dtype=CONN)[0]
    r["sk"], r["role"], r["pid"], r["comm"], r["established"] = sk, role, pid, comm, 1
    r["start_ns"], r["end_ns"], r["last_ns"] = start_ms * MS, end_ms * MS, last_ms * MS
    r["sent"], r["received"], r["lport"], r["rport"] = sent, received, lport, rport
    r["laddr"], r["raddr"] = pack_ip(laddr), pack_ip(raddr)
    return r


def arr(*rows: np.void) -> np.ndarray:
    out = np.zeros(len(rows), dtype=CONN)
    for i, r in enumerate(rows):
        out[i] = r
    return out


def test_long_lived_connection_reports_each_byte_once() -> None:
    ledger = Ledger()
    first = ledger.scan(arr(conn(1, ROLE_CLIENT, 1000, 500, 20, last_ms=1900)), now_ns=2000 * MS)
    assert (int(first[0]["sent"]), int(first[0]["received"]), int(first[0]["start_ns"]) // MS,
            int(first[0]["end_ns"]) // MS) == (500, 20, 1000, 1900)
    assert len(ledger.scan(arr(conn(1, ROLE_CLIENT, 1000, 500, 20, last_ms=1900)), now_ns=3000 * MS)) == 0
    second = ledger.scan(arr(conn(1, ROLE_CLIENT, 1000, 800, 20, last_ms=3500)), now_ns=4000 * MS)
    got = (int(second[0]["sent"]), int(second[0]["received"]), int(second[0]["start_ns"]) // MS)
    assert got == (300, 0, 3000)  # from the last scan that saw no change
    (closed,) = ledger.closed(arr(conn(1, ROLE_CLIENT, 1000, 900, 25, end_ms=4500)))
    assert (int(closed["sent"]), int(closed["received"]), int(closed["start_ns"]) // MS) == (100, 5, 4000)
    assert len(ledger) == 0


def test_a_reused_socket_address_is_another_connection() -> None:
    ledger = Ledger()
    ledger.scan(arr(conn(7, ROLE_SERVER, 1000, 10, 10)), now_ns=2000 * MS)
    (closed,) = ledger.closed(arr(conn(7, ROLE_SERVER, 5000, 40, 30, end_ms=5100)))  # same sk, new start
    assert (int(closed["sent"]), int(closed["received"])) == (40, 30)


def test_young_connections_wait_for_their_close_or_the_next_scan() -> None:
    ledger = Ledger()
    young = arr(conn(1, ROLE_CLIENT, 1500, 10, 10, last_ms=1600))
    assert len(ledger.scan(young, now_ns=2000 * MS, min_age_ns=1000 * MS)) == 0
    (closed,) = ledger.closed(arr(conn(1, ROLE_CLIENT, 1500, 30, 10, end_ms=2100)))
    assert (int(closed["sent"]), int(closed["start_ns"]) // MS) == (30, 1500)  # one record, whole
    (later,) = ledger.scan(young, now_ns=3000 * MS, min_age_ns=1000 * MS)  # had it stayed open
    assert (int(later["sent"]), int(later["start_ns"]) // MS) == (10, 1500)


def test_idle_open_connections_are_reported_once_and_closed_ones_forgotten() -> None:
    ledger = Ledger()
    assert len(ledger.scan(arr(conn(1, ROLE_CLIENT, 1000, 0, 0)), now_ns=2000 * MS)) == 1
    ledger.scan(arr(), now_ns=3000 * MS)  # closed, its record not drained yet: remembered
    assert len(ledger) == 1
    ledger.scan(arr(), now_ns=4000 * MS)  # its close record was lost (counted in the kernel): forgotten
    assert len(ledger) == 0


def batcher(leases: Leases | None = None) -> Batcher:
    rules = parse_rules([{"comm": "app", "app": "shop", "cluster": "shop-1"}, {"comm": "db", "app": "stock"}])
    return Batcher(Attributor(rules, processes=Processes(Path("/nonexistent"))), leases, host="node-1")


def test_records_are_attributed_folded_and_encoded() -> None:
    b = batcher()
    b.add(arr(conn(1, ROLE_CLIENT, 1000, 100, 10, end_ms=1100, lport=40001),
              conn(2, ROLE_CLIENT, 1050, 200, 20, end_ms=1300, lport=40002),
              conn(3, ROLE_CLIENT, 1060, 7, 7, end_ms=1070, rport=443),
              conn(4, ROLE_SERVER, 1080, 5, 50, end_ms=1090, comm=b"db", pid=11, lport=5432, rport=50123),
              conn(5, ROLE_CLIENT, 1090, 1, 1, end_ms=1095, comm=b"curl", pid=12)), offset_ns=OFFSET)
    data, n = b.take(emitted_ms=42) or (b"", 0)
    batch = flow.decode(data)
    assert (batch.host, batch.emitted_ms, len(batch), n) == ("node-1", 42, 4, 4)
    rows = {(batch.strings[r["local_app"]], batch.strings[r["local_cluster"]], int(r["role"]),
             unpack_ip(r["remote_addr"]), int(r["local_port"]), int(r["remote_port"])):
            (int(r["bytes_sent"]), int(r["bytes_received"]), int(r["connections"]),
             int(r["start_ms"]) - 1_700_000_000_000, int(r["end_ms"]) - 1_700_000_000_000, int(r["pid"]))
            for r in batch.records}
    assert rows == {
        ("shop", "shop-1", ROLE_CLIENT, "10.0.0.2", 0, 80): (300, 30, 2, 1000, 1300, 10),  # folded: port 0
        ("shop", "shop-1", ROLE_CLIENT, "10.0.0.2", 40000, 443): (7, 7, 1, 1060, 1070, 10),
        ("stock", "", ROLE_SERVER, "10.0.0.2", 5432, 50123): (5, 50, 1, 1080, 1090, 11),
        ("unattributed:curl", "", ROLE_CLIENT, "10.0.0.2", 40000, 80): (1, 1, 1, 1090, 1095, 12),
    }
    assert b.unattributed_records == 1
    assert b.take() is None


def test_no_fold_keeps_one_record_per_connection() -> None:
    rows = np.zeros(3, dtype=flow.RECORD_V1)
    rows["local_app"], rows["role"], rows["connections"], rows["remote_port"] = 1, ROLE_CLIENT, 1, 80
    rows["local_port"] = [1, 2, 3]
    rows["remote_addr"] = [pack_ip("10.0.0.2"), pack_ip("10.0.0.3"), pack_ip("10.0.0.2")]
    folded = fold(rows)
    got = sorted((unpack_ip(r["remote_addr"]), int(r["connections"]), int(r["local_port"])) for r in folded)
    assert got == [("10.0.0.2", 2, 0), ("10.0.0.3", 1, 2)]


def test_attributed_records_lease_their_local_address() -> None:
    leases = Leases(lambda pid: False)
    b = batcher(leases)
    b.add(arr(conn(1, ROLE_CLIENT, 1000, 1, 1, end_ms=1001, laddr="10.9.9.9"),
              conn(2, ROLE_CLIENT, 1000, 1, 1, end_ms=1001, laddr="10.9.9.8", comm=b"curl", pid=12)),
          offset_ns=OFFSET)
    (lease,) = leases.due(1_700_000_002.0)
    assert (lease.ip, lease.owner, lease.start) == ("10.9.9.9", "shop", 1_700_000_001.0)

"""Throughput of the NETWORK pipeline, stage 1 -> stage 2 -> stage 3, on one core, no I/O.

    .venv/bin/python -m bench.stage_network [--records 5000000] [--batch 5000] [--apps 1000] [--runs 3]

Input, generated before timing: a seeded synthetic fleet (apps with 1-3 clusters of 2-8 instances,
heavy-tailed callees, ~30% of apps behind a load balancer, databases and brokers as virtual nodes,
a NAT gateway in front of some callers, every address with a previous owner). Each simulated
minute, the same set of hosts (instances drawn from the whole fleet) each emit one encoded batch of
``--batch`` records: half as clients of their app's callees, half as servers for their callers.
After each minute the three stages are flushed with the minute's end as the watermark.

Timed: decoding the batches (``topology.wire.flow.decode``), stage 1, stage 2 and stage 3,
including the flushes. Printed: records/s end to end (median of ``--runs``), time per stage, and
the record counts between stages (the aggregation ratio decides the cost of stages 2 and 3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from bench.machine import header
from topology.address import AddressBook
from topology.catalog import AddressKind, AddressLease
from topology.stages.final import FinalStage
from topology.stages.network import NetworkStage1, NetworkStage2
from topology.wire.flow import PROTO_TCP, RECORD_V1, ROLE_CLIENT, ROLE_SERVER, decode, encode

T0 = 1_700_000_040  # a multiple of 60


@dataclass
class Fleet:
    leases: list[AddressLease]
    inst_addr: np.ndarray  # packed 16-byte addresses, per instance ("S16")
    inst_app: np.ndarray  # app index per instance
    inst_cluster: np.ndarray  # cluster index per instance
    app_names: list[str]
    cluster_names: list[str]
    app_port: np.ndarray
    callees: list[np.ndarray]  # per app: target ids (>= 0 app index, < 0 virtual node -1-i)
    callers: list[np.ndarray]  # per app: calling app indexes
    app_instances: list[np.ndarray]
    lb_addr: dict[int, bytes]  # app -> its load balancer address
    virtual_addr: list[bytes]
    virtual_port: list[int]
    nat_addr: bytes


def _packed(i: int) -> bytes:
    return b"\x00" * 10 + b"\xff\xff" + bytes((10, (i >> 16) & 255, (i >> 8) & 255, i & 255))


def build_fleet(n_apps: int, rng: np.random.Generator) -> Fleet:
    leases: list[AddressLease] = []
    addr_counter = 1
    app_names = [f"app-{i:05d}" for i in range(n_apps)]
    cluster_names: list[str] = []
    inst_addr: list[bytes] = []
    inst_app: list[int] = []
    inst_cluster: list[int] = []
    app_instances: list[list[int]] = [[] for _ in range(n_apps)]
    for a in range(n_apps):
        for c in range(int(rng.integers(1, 4))):
            ci = len(cluster_names)
            cluster_names.append(f"{app_names[a]}-prod-v{c:03d}")
            for _ in range(int(rng.integers(2, 9))):
                addr = _packed(addr_counter)
                addr_counter += 1
                ip = f"10.{addr[13]}.{addr[14]}.{addr[15]}"
                # every address had a previous owner: resolution must pick the lease at flow start
                prev = app_names[(a + 7) % n_apps]
                leases.append(AddressLease(ip, prev, AddressKind.WORKLOAD, T0 - 86400, T0 - 3600,
                                           f"{prev}-prod-v999"))
                leases.append(AddressLease(ip, app_names[a], AddressKind.WORKLOAD, T0 - 3000, None,
                                           cluster_names[ci]))
                app_instances[a].append(len(inst_addr))
                inst_addr.append(addr)
                inst_app.append(a)
                inst_cluster.append(ci)

    def new_addr(owner: str, kind: AddressKind) -> bytes:
        nonlocal addr_counter
        addr = _packed(addr_counter)
        addr_counter += 1
        leases.append(AddressLease(f"10.{addr[13]}.{addr[14]}.{addr[15]}", owner, kind, T0 - 3000))
        return addr

    lb_addr = {a: new_addr(f"lb-{a:05d}", AddressKind.LOAD_BALANCER)
               for a in range(n_apps) if rng.random() < 0.3}
    n_virtual = max(1, n_apps // 10)
    virtual_addr, virtual_port = [], []
    for v in range(n_virtual):
        kind = AddressKind.MESSAGING if v % 10 == 0 else AddressKind.DATABASE
        virtual_addr.append(new_addr(f"{'broker' if v % 10 == 0 else 'db'}-{v:04d}", kind))
        virtual_port.append(9092 if v % 10 == 0 else 5432)
    nat = new_addr("nat-egress", AddressKind.NAT_GATEWAY)
    callees: list[np.ndarray] = []
    callers: list[list[int]] = [[] for _ in range(n_apps)]
    for a in range(n_apps):
        k = min(int(rng.zipf(1.8)), 20)
        targets = [int(x) for x in rng.choice(n_apps, size=k, replace=False) if x != a]
        if rng.random() < 0.3:
            targets.append(-1 - int(rng.integers(0, n_virtual)))
        if not targets:
            targets = [(a + 1) % n_apps]
        callees.append(np.array(targets))
        for t in targets:
            if t >= 0:
                callers[t].append(a)
    return Fleet(leases, np.array(inst_addr, dtype="S16"), np.array(inst_app), np.array(inst_cluster),
                 app_names, cluster_names, rng.choice([80, 443, 7001, 8080, 8443, 9000], n_apps), callees,
                 [np.array(c if c else [(i + 1) % n_apps]) for i, c in enumerate(callers)],
                 [np.array(x) for x in app_instances], lb_addr, virtual_addr, virtual_port, nat)


def host_batch(f: Fleet, host: int, minute: int, n: int, rng: np.random.Generator) -> bytes:
    app, cluster = int(f.inst_app[host]), int(f.inst_cluster[host])
    recs = np.zeros(n, dtype=RECORD_V1)
    start = (T0 + 60 * minute) * 1000 + rng.integers(0, 60_000, n)
    recs["start_ms"] = start
    recs["end_ms"] = start + rng.integers(1, 3000, n)
    recs["local_addr"] = f.inst_addr[host]
    recs["protocol"] = PROTO_TCP
    recs["local_app"], recs["local_cluster"] = 1, 2
    recs["connections"] = 1
    recs["bytes_sent"] = rng.integers(100, 100_000, n)
    recs["bytes_received"] = rng.integers(100, 1_000_000, n)
    client = rng.random(n) < 0.5
    nc = int(client.sum())
    # client side: a callee (heavy use of the first ones), then one of its instances or its load balancer
    targets = f.callees[app][np.minimum(rng.zipf(1.5, nc) - 1, len(f.callees[app]) - 1)]
    remote = np.empty(nc, dtype="S16")
    port = np.empty(nc, dtype=np.uint16)
    for t in np.unique(targets):
        sel = targets == t
        m = int(sel.sum())
        if t < 0:
            remote[sel] = f.virtual_addr[-1 - t]
            port[sel] = f.virtual_port[-1 - t]
        elif int(t) in f.lb_addr:
            remote[sel] = f.lb_addr[int(t)]
            port[sel] = 443
        else:
            remote[sel] = f.inst_addr[rng.choice(f.app_instances[t], m)]
            port[sel] = f.app_port[t]
    recs["role"][client] = ROLE_CLIENT
    recs["remote_addr"][client] = remote
    recs["remote_port"][client] = port
    recs["local_port"][client] = rng.integers(32768, 61000, nc)
    # server side: a caller instance, the load balancer when this app has one, sometimes through the NAT
    ns = n - nc
    srv = ~client
    recs["role"][srv] = ROLE_SERVER
    recs["local_port"][srv] = f.app_port[app]
    recs["remote_port"][srv] = rng.integers(32768, 61000, ns)
    if app in f.lb_addr:
        recs["remote_addr"][srv] = f.lb_addr[app]
    else:
        callers = f.callers[app][rng.integers(0, len(f.callers[app]), ns)]
        addrs = np.empty(ns, dtype="S16")
        for c in np.unique(callers):
            sel = callers == c
            addrs[sel] = f.inst_addr[rng.choice(f.app_instances[c], int(sel.sum()))]
        addrs[rng.random(ns) < 0.02] = f.nat_addr
        recs["remote_addr"][srv] = addrs
    strings = ["", f.app_names[app], f.cluster_names[cluster]]
    return encode(recs, strings, f"host-{host}", (T0 + 60 * (minute + 1)) * 1000)


def run(blobs: list[list[bytes]], leases: list[AddressLease]) -> dict[str, float]:
    book = AddressBook(leases)
    s1, s2, s3 = NetworkStage1(10), NetworkStage2(book, 60, 120), FinalStage(60, 120)
    t = {"decode+stage1": 0.0, "stage2": 0.0, "stage3": 0.0}
    counts = {"aggregates": 0, "partials": 0, "windows": 0}
    clock = time.process_time  # CPU time of this process, per stage: the machine is shared
    begin, wall = clock(), time.perf_counter()
    for minute, batches in enumerate(blobs):
        a = clock()
        for blob in batches:
            s1.add(decode(blob))
        wm = T0 + 60 * (minute + 1)
        aggs = s1.flush(wm)
        b = clock()
        s2.add(aggs)
        parts = s2.flush(wm)
        c = clock()
        s3.add(parts)
        windows = s3.flush(wm)
        d = clock()
        t["decode+stage1"] += b - a
        t["stage2"] += c - b
        t["stage3"] += d - c
        counts["aggregates"] += len(aggs)
        counts["partials"] += len(parts)
        counts["windows"] += len(windows)
    t["cpu"] = clock() - begin
    t["wall"] = time.perf_counter() - wall
    return {**t, **{k: float(v) for k, v in counts.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--apps", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    print(header("NETWORK stages 1 -> 2 -> 3, one core, no I/O"))
    rng = np.random.default_rng(args.seed)
    fleet = build_fleet(args.apps, rng)
    hosts_per_minute = max(1, args.records // (args.batch * args.minutes))
    hosts = rng.choice(len(fleet.inst_addr), size=min(hosts_per_minute, len(fleet.inst_addr)), replace=False)
    g0 = time.perf_counter()
    blobs = [[host_batch(fleet, int(h), m, args.batch, rng) for h in hosts] for m in range(args.minutes)]
    total = sum(len(b) for m in blobs for b in m)
    n_records = sum(len(decode(b)) for m in blobs for b in m)
    print(f"# input: {args.apps} apps, {len(fleet.inst_addr)} instances, {len(fleet.leases)} leases; "
          f"{len(hosts)} hosts x {args.minutes} minutes = {sum(map(len, blobs))} batches of {args.batch}, "
          f"{n_records:,} records, {total / 1e6:.0f} MB encoded "
          f"(generated in {time.perf_counter() - g0:.0f} s)")
    results = []
    for i in range(args.runs):
        r = run(blobs, fleet.leases)
        results.append(r)
        print(f"run {i + 1}: {n_records / r['wall']:,.0f} records/s wall ({r['wall']:.2f} s), "
              f"{n_records / r['cpu']:,.0f} records/s CPU ({r['cpu']:.2f} s: decode+stage1 "
              f"{r['decode+stage1']:.2f}, stage2 {r['stage2']:.2f}, stage3 {r['stage3']:.2f})  "
              f"aggregates {r['aggregates']:,.0f}  partials {r['partials']:,.0f}  "
              f"windows {r['windows']:,.0f}")
    wall = statistics.median(n_records / r["wall"] for r in results)
    cpu = statistics.median(n_records / r["cpu"] for r in results)
    print(f"median over {args.runs} runs: {wall:,.0f} records/s wall clock, "
          f"{cpu:,.0f} records/s of CPU time; "
          f"{n_records / results[0]['aggregates']:.1f} records per stage-1 aggregate; "
          f"load average before: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

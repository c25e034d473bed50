"""What a NETWORK stage-1 and stage-2 checkpoint costs per commit: the whole state against an incremental one.

    .venv/bin/python -m bench.checkpoint_cost [--rate 50000] [--minutes 3.5] [--warm-minutes 3]

The flows of ``bench.kafka_e2e`` (300 apps, heavy-tailed callees, new keys most seconds) go through
NETWORK stages 1 and 2 in this process, one simulated second at a time, as a worker with early
flushes every second runs them (stage 1's early and closing flushes into stage 2, then stage 2's
closing and early flushes). After each simulated second past ``--warm-minutes`` (stage 2 then
holds its open window and the closed ones in their grace period) the same state is checkpointed
three ways, in rotating order: ``before``, the whole state with each edge accumulator an object (the
window schema of version 1, what every commit wrote before incremental checkpoints); ``whole``, the
whole state with accumulators as columns (version 2); ``incremental`` (``checkpoint.Log.records``:
the head and the windows changed since the last commit, as columns). Printed: CPU milliseconds and
bytes per commit, median / p95 / max, and the ratios. CPU time, not
wall time, so a loaded machine changes the figures little.

Stage 1 (one partition receiving every record; a worker's partitions each hold their share) is
measured the same way after the same flushes: ``s1 whole`` (what every commit wrote before its
windows became sections) against ``s1 incremental`` (the head, the open windows' rows that changed
and the key sets that grew).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import numpy as np

from bench.kafka_e2e import Batches, leases
from bench.machine import header
from ingest import checkpoint, state
from ingest.clock import MergedClock
from ingest.record import Partition
from topology.address import AddressBook
from topology.admit import admit_flows
from topology.stages.network_stage1 import NetworkStage1
from topology.stages.network_stage2 import NetworkStage2, _Window

LATENESS = 5.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=50_000, help="flow records per simulated second")
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--minutes", type=float, default=3.5, help="simulated minutes in all")
    p.add_argument("--warm-minutes", type=float, default=3.0, help="simulated minutes before measuring")
    args = p.parse_args()
    print(header("checkpoint_cost: NETWORK stages 1 and 2, whole against incremental checkpoints"))
    start = float(int(time.time()) // 60 * 60)
    book = AddressBook()
    for lease in leases(start):
        book.add(lease)
    s1, s2 = NetworkStage1(10), NetworkStage2(book, 60, 120)
    batches = Batches(16, args.batch)
    shared = {"addresses": book}
    log = checkpoint.Log()
    tp = Partition("bench.network.1", 0)
    clock = MergedClock()
    ways = ("before", "whole", "incremental", "s1 whole", "s1 incremental")
    log1 = checkpoint.Log()
    tp1 = Partition("bench.flows", 0)
    ms: dict[str, list[float]] = {w: [] for w in ways}
    size: dict[str, list[int]] = {w: [] for w in ways}
    per_second = max(1, args.rate // args.batch)
    i = 0
    seconds = int(args.minutes * 60)
    for sec in range(seconds):
        now = start + sec + 1
        for _ in range(per_second):
            kept = admit_flows(batches.encode(i, int(now * 1000)), now).kept
            assert kept is not None
            s1.add(kept)
            i += 1
        s2.add(s1.flush(now - LATENESS))
        s2.add(s1.flush(now - LATENESS, early=True))
        s2.flush(now - LATENESS)
        s2.flush(now - LATENESS, early=True, new_only=True)
        s2.take_peer_leases()
        clock.observe("bench.flows:0", now - LATENESS)
        if sec + 1 < args.warm_minutes * 60:
            continue
        if sec + 1 == int(args.warm_minutes * 60):
            log.records(tp, sec, s2, clock, shared)  # a worker's first checkpoint writes every window
            log1.records(tp1, sec, s1, clock, shared)
            continue
        for k in range(3):
            way = ways[(sec + k) % 3]
            t0 = time.process_time()
            if way == "incremental":
                n = sum(len(v or b"") for _, v, _ in log.records(tp, sec, s2, clock, shared))
            elif way == "whole":
                n = len(checkpoint.encode(checkpoint.Saved(s2, clock), shared))
            else:
                with _objects():
                    n = len(checkpoint.encode(checkpoint.Saved(s2, clock), shared))
            ms[way].append((time.process_time() - t0) * 1000)
            size[way].append(n)
        for k in range(2):
            way = ways[3 + (sec + k) % 2]
            t0 = time.process_time()
            if way == "s1 incremental":
                n = sum(len(v or b"") for _, v, _ in log1.records(tp1, sec, s1, clock, shared))
            else:
                n = len(checkpoint.encode(checkpoint.Saved(s1, clock), shared))
            ms[way].append((time.process_time() - t0) * 1000)
            size[way].append(n)
    print(f"# {args.rate:,} flow records per simulated second, {seconds} s simulated, "
          f"{len(ms['whole'])} commits measured; stage 2 holds {len(s2._windows)} windows")
    for way in ways:
        m, b = ms[way], size[way]
        print(f"{way:12s} CPU ms p50 {np.percentile(m, 50):8.1f}  p95 {np.percentile(m, 95):8.1f}  "
              f"max {max(m):8.1f}   bytes p50 {np.percentile(b, 50):12,.0f}  "
              f"p95 {np.percentile(b, 95):12,.0f}")
    for way in ways[1:3]:
        print(f"before/{way}: CPU p50 {np.percentile(ms['before'], 50) / np.percentile(ms[way], 50):.1f}x  "
              f"p95 {np.percentile(ms['before'], 95) / np.percentile(ms[way], 95):.1f}x  "
              f"bytes p50 {np.percentile(size['before'], 50) / np.percentile(size[way], 50):.1f}x")
    whole, inc = ms["s1 whole"], ms["s1 incremental"]
    print(f"stage 1 whole/incremental: CPU p50 {np.percentile(whole, 50) / np.percentile(inc, 50):.1f}x  "
          f"p95 {np.percentile(whole, 95) / np.percentile(inc, 95):.1f}x  bytes p50 "
          f"{np.percentile(size['s1 whole'], 50) / np.percentile(size['s1 incremental'], 50):.1f}x")


@contextlib.contextmanager
def _objects() -> Iterator[None]:
    """Windows written as before version 2: each edge accumulator an object."""
    schema = state._BY_CLASS[_Window]
    state._BY_CLASS[_Window] = state.Schema(_Window, "network2.window", state._WINDOW_V1)
    try:
        yield
    finally:
        state._BY_CLASS[_Window] = schema


if __name__ == "__main__":
    main()

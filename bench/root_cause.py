"""Accuracy of ``rootCause`` on simulated incidents, against two baselines, and its latency.

    .venv/bin/python -m bench.root_cause [--services 1000] [--seeds 1 2 3 4] [--per-seed 50]
    .venv/bin/python -m bench.root_cause --services 10000 --seeds 7 --per-seed 20   # latency at 10k

For each seed: the simulator's fleet and its incidents (``topology/sim/faults.py``: every kind in
turn, roots drawn among those with callers two or more hops above). Incidents run in *slots*: each
slot starts up to ``--per-slot`` incidents whose symptoms do not overlap, writes a 40-minute
baseline and a 10-minute incident window to a fresh embedded store, then asks ``rootCause`` from a
symptomatic caller two or more hops above each root. Change events (the bad deploys', and one
unrelated deploy or configuration change per 50 apps per slot) and health events (the faults')
are stored as the simulator emits them.

The store gets the simulator's per-edge traffic directly as one-minute IPC windows (requests,
errors from ``World.error_rate``, latency sketches of samples around ``World.latency``), three
minutes in each window, not the wire formats: this measures the ranking, not ingestion (the
README walkthrough test runs an incident through the whole demo pipeline).

Baselines, over the same walked graph and windows: **errors**, the upstream service whose incoming
calls have the highest error rate now; **pagerank**, a personalised PageRank from the asked service
over its calls, each call weighted by the error rate and latency growth of the calls into its target, with
weaker backward edges and a self-loop for a node more anomalous than its callees (MonitorRank's
random walk, restart 0.15). Incidents are asked only from services that have no other incident of
the same slot within the depth asked (so each question has one right answer).

Latency is measured in a process set up like the server: its garbage-collector thresholds
(``service.server.GC_THRESHOLDS``) and the heap frozen once a slot's data is written, as the server
freezes it once its stores are open (``service.app.freeze_heap``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import pathlib
import random
import tempfile
import time
from collections import Counter, defaultdict

import numpy as np

from bench.machine import header, percentiles
from service.app import freeze_heap
from service.server import GC_THRESHOLDS
from topology.catalog import HealthState
from topology.change import ChangeEvent, ChangeKind
from topology.model import Direction, EdgeKey, EdgeWindow, Granularity, Layer, NodeKind
from topology.query import traverse
from topology.rootcause import root_cause
from topology.sim import SimConfig, Simulator, generate_fleet
from topology.sim.faults import Fault, FaultKind
from topology.sim.fleet import CallKind
from topology.sketch import LatencySketch
from topology.stats import EdgeStats
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

T0 = 1_800_000_000.0
SLOT = 3600.0
WINDOW = 600.0
BASELINE_MINUTES = (-45, -30, -15)  # minutes before the slot's end holding baseline traffic
CURRENT_MINUTES = (-8, -5, -2)  # and incident traffic
SAMPLES = 60  # latency samples per edge-minute
DEPTH = 6


def edge_windows(sim: Simulator, minute: float, rng: np.random.Generator) -> list[EdgeWindow]:
    w = sim.world
    out: list[EdgeWindow] = []
    for e in w.active_edges():
        if e.kind not in (CallKind.RPC, CallKind.DATABASE):
            continue
        requests = int(rng.poisson(max(e.rate, 0.05) * 60.0))
        if requests == 0:
            continue
        errors = int(rng.binomial(requests, w.error_rate(e)))
        samples = w.latency(e) * np.exp(rng.normal(0.0, 0.6, min(requests, SAMPLES)))
        sketch = LatencySketch.of(samples.tolist())
        stats = EdgeStats(first_seen=minute, last_seen=minute + 59, requests=requests, errors=errors,
                          latency=sketch, latency_sum=float(samples.mean()) * requests)
        kind = NodeKind.DATABASE if e.dst in w.fleet.sinks else NodeKind.SERVICE
        out.append(EdgeWindow(EdgeKey(Layer.IPC, Granularity.APP, e.src, e.dst), int(minute), 60, stats,
                              NodeKind.SERVICE, kind))
    return out


def pick_incidents(sim: Simulator, kinds: list[FaultKind], per_slot: int, r: random.Random) -> list[
    tuple[str, FaultKind]
]:
    """Roots of up to ``per_slot`` incidents whose callers (4 hops) do not overlap."""
    callers = sim.faults.callers()
    taken: set[str] = set()
    chosen: list[tuple[str, FaultKind]] = []
    for kind in kinds:
        pool = sim.faults.candidates(kind)
        r.shuffle(pool)
        for root in pool[:40]:
            reach, frontier = {root}, {root}
            for _ in range(4):
                frontier = {c for n in frontier for c in callers.get(n, ()) if c not in reach}
                reach |= frontier
            if reach & taken:
                continue
            taken |= reach
            chosen.append((root, kind))
            break
        if len(chosen) >= per_slot:
            break
    return chosen


async def baselines(stores: Stores, asked: str, current: TimeRange,
                    now: float) -> tuple[list[str], list[str]]:
    walk = await traverse(stores.layers, [asked], Direction.UPSTREAM, DEPTH, layers=[Layer.IPC], time=current,
                          now=now)
    names = [asked, *(d.name for d in walk.reached)]
    ipc = stores.layers[Layer.IPC]
    base_range = TimeRange(current.start - 4 * WINDOW, current.start)
    now_edges = await ipc.neighbors(names, Direction.UPSTREAM, Granularity.APP, current, now)
    base_edges = await ipc.neighbors(names, Direction.UPSTREAM, Granularity.APP, base_range, now)
    base = {(s.key.source, s.key.target): s.stats for s in base_edges}
    into_err: dict[str, float] = defaultdict(float)
    into_weight: dict[str, float] = defaultdict(float)
    for s in now_edges:
        st = s.stats
        if not st.requests:
            continue
        err = st.errors / st.requests
        into_err[s.key.target] = max(into_err[s.key.target], err)
        b = base.get((s.key.source, s.key.target))
        growth = 0.0
        p_now, p_base = st.latency_quantile(0.99), (b.latency_quantile(0.99) if b is not None else None)
        if p_now and p_base:
            growth = max(0.0, math.log2(p_now / p_base))
        into_weight[s.key.target] = max(into_weight[s.key.target], err + 0.1 * growth)
    upstream = [n for n in names if n != asked]
    by_errors = sorted(upstream, key=lambda n: (-into_err.get(n, 0.0), n))
    # personalised PageRank over calls, restart at the asked service
    index = {n: i for i, n in enumerate(names)}
    m = np.zeros((len(names), len(names)))
    best_out: dict[str, float] = defaultdict(float)
    for s in now_edges:
        a, b2 = index.get(s.key.source), index.get(s.key.target)
        if a is not None and b2 is not None:
            m[b2, a] = 1e-3 + into_weight.get(s.key.target, 0.0)  # forward: to the anomalous callee
            m[a, b2] = 0.3 * (1e-3 + into_weight.get(s.key.source, 0.0))  # backward, weaker
            best_out[s.key.source] = max(best_out[s.key.source], into_weight.get(s.key.target, 0.0))
    for n, i in index.items():  # stay on a node more anomalous than everything it calls
        m[i, i] += max(0.0, into_weight.get(n, 0.0) - best_out.get(n, 0.0))
    cols = m.sum(axis=0)
    cols[cols == 0] = 1.0
    m /= cols
    restart = np.zeros(len(names))
    restart[0] = 1.0
    p = restart.copy()
    for _ in range(50):
        p = 0.85 * m @ p + 0.15 * restart
    by_pagerank = [names[i] for i in np.argsort(-p, kind="stable") if names[i] != asked]
    return by_errors, by_pagerank


async def run_seed(seed: int, services: int, per_seed: int, per_slot: int, data: pathlib.Path,
                   results: list[dict[str, object]], timings: list[float],
                   cpu: list[float] | None = None) -> None:
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    sim = Simulator(generate_fleet(services, seed), seed=seed, start=T0,
                    config=SimConfig(churn_per_hour=0.0, edge_change_per_hour=0.0, incidents_per_app_day=0.0,
                                     config_changes_per_app_day=0.0))
    kinds = list(FaultKind)
    apps = sorted(sim.world.fleet.apps)
    done = 0
    slot = 0
    while done < per_seed:
        end = T0 + (slot + 1) * SLOT
        stores = open_stores(data / f"s{seed}-{slot}")
        try:
            r.shuffle(kinds)
            chosen = pick_incidents(sim, kinds * 2, min(per_slot, per_seed - done), r)
            for minute in BASELINE_MINUTES:
                await stores.layers[Layer.IPC].upsert_windows(edge_windows(sim, end + 60 * minute, rng))
            start = end - WINDOW
            for root, kind in chosen:
                sim.inject(root, kind, start, WINDOW - 1)
            changes, health = sim.faults.step(start, start + 1)
            noise = [ChangeEvent(a, r.choice((ChangeKind.DEPLOY, ChangeKind.CONFIG)),
                                 end - r.uniform(0, 2400), "routine change", f"v{r.randrange(1000)}")
                     for a in r.sample(apps, len(apps) // 50)]
            await stores.catalog.record_changes(changes + noise)
            await stores.catalog.record_health(health)
            for minute in CURRENT_MINUTES:
                await stores.layers[Layer.IPC].upsert_windows(edge_windows(sim, end + 60 * minute, rng))
            freeze_heap()  # as the server does once its stores are open
            faults: list[Fault] = sim.incidents_so_far[-len(chosen):] if chosen else []
            roots = {f.root for f in faults}
            callees = _callees(sim)
            for fault in faults:
                # asked from two or more hops above the root, where no other root of the slot is in reach
                others = roots - {fault.root}
                far = sorted(n for n, h in fault.hops.items() if h >= 2 and not _reach(callees, n) & others)
                if not far:
                    continue
                asked = r.choice(far)
                t, c = time.perf_counter(), time.process_time()
                report = await root_cause(stores.layers, stores.catalog, asked, at=end, window=WINDOW,
                                          depth=DEPTH, now=end + 1, first=10)
                timings.append(1000 * (time.perf_counter() - t))
                if cpu is not None:
                    cpu.append(1000 * (time.process_time() - c))
                by_errors, by_pagerank = await baselines(stores, asked, TimeRange(end - WINDOW, end), end + 1)
                results.append({
                    "kind": fault.kind.value, "root": fault.root, "asked": asked, "hops": fault.hops[asked],
                    "ours": [c.service for c in report.candidates], "verdict": report.verdict.value,
                    "errors": by_errors[:10], "pagerank": by_pagerank[:10],
                })
                done += 1
            sim.faults.step(end, end + 1)  # every fault of the slot ends
            assert all(h.status is HealthState.HEALTHY for h in sim.faults.step(end + 1, end + 2)[1])
        finally:
            await stores.close()
            gc.unfreeze()  # the slot's store is gone: its objects may be collected again
        slot += 1


def _callees(sim: Simulator) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in sim.world.active_edges():
        if e.kind in (CallKind.RPC, CallKind.DATABASE):
            out.setdefault(e.src, set()).add(e.dst)
    return out


def _reach(callees: dict[str, set[str]], name: str) -> set[str]:
    """What ``name`` depends on within the depth rootCause is asked with."""
    seen, frontier = {name}, {name}
    for _ in range(DEPTH):
        frontier = {c for n in frontier for c in callees.get(n, ()) if c not in seen}
        seen |= frontier
    return seen


def _ranked(result: dict[str, object], key: str) -> list[str]:
    value = result[key]
    return [str(v) for v in value] if isinstance(value, list) else []


def accuracy(results: list[dict[str, object]], key: str, k: int) -> float:
    hits = sum(1 for x in results if x["root"] in _ranked(x, key)[:k])
    return hits / len(results) if results else 0.0


async def main_async(args: argparse.Namespace) -> None:
    gc.set_threshold(*GC_THRESHOLDS)  # the server's collector settings (service/server.py)
    results: list[dict[str, object]] = []
    timings: list[float] = []
    cpu: list[float] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            await run_seed(seed, args.services, args.per_seed, args.per_slot, pathlib.Path(tmp), results,
                           timings, cpu)
    print(header(f"rootCause accuracy: {len(results)} incidents, {args.services} services, "
                 f"seeds {args.seeds}"))
    print(f"# took {time.monotonic() - began:.0f} s")
    print(f"{'method':<10} {'top-1':>6} {'top-3':>6}")
    for key in ("ours", "errors", "pagerank"):
        print(f"{key:<10} {accuracy(results, key, 1):>6.3f} {accuracy(results, key, 3):>6.3f}")
    print("\nby kind (ours top-1 / top-3, n):")
    for kind in FaultKind:
        sub = [x for x in results if x["kind"] == kind.value]
        top1, top3 = accuracy(sub, "ours", 1), accuracy(sub, "ours", 3)
        print(f"  {kind.value:<17} {top1:.3f} / {top3:.3f}  n={len(sub)}")
    print(f"\nverdicts: {dict(Counter(str(x['verdict']) for x in results))}")
    hops = Counter(int(str(x["hops"])) for x in results)
    print(f"hops from the asked service to the root: {dict(sorted(hops.items()))}")
    pct = percentiles(timings)
    print(f"rootCause latency ms: p50 {pct['p50']:.1f}  p95 {pct['p95']:.1f}  p99 {pct['p99']:.1f}  "
          f"max {pct['max']:.1f}")
    pct = percentiles(cpu)  # all threads of this process: on a shared machine, what the query itself cost
    print(f"rootCause CPU ms:     p50 {pct['p50']:.1f}  p95 {pct['p95']:.1f}  p99 {pct['p99']:.1f}  "
          f"max {pct['max']:.1f}")
    misses = [x for x in results if x["root"] not in _ranked(x, "ours")[:1]]
    for x in misses[: args.show_misses]:
        print(f"  miss: {x['kind']} root={x['root']} asked={x['asked']} hops={x['hops']} "
              f"got={_ranked(x, 'ours')[:3]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--per-seed", type=int, default=50)
    p.add_argument("--per-slot", type=int, default=5)
    p.add_argument("--show-misses", type=int, default=10)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()

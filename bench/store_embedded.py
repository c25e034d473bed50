"""Benchmark of the embedded store on a synthetic fleet, in process (no HTTP, no simulator).

    .venv/bin/python -m bench.store_embedded [--services 10000] [--minutes 60] [--queries 1000]

Builds a heavy-tailed service graph (log-normal out-degree, median ~3, popular callees and shared
databases get most callers), derives the three layers (NETWORK sees every edge and the databases,
IPC the edges of ~70% instrumented callers, TRACE a sample of edges, not every minute), writes one
simulated hour of minute windows layer by layer as stage 3 would (one upsert per layer per minute),
then measures queries, the roll-up, a reopen, disk and memory. Input is generated before each
timed upsert; only the store's time is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import pathlib
import resource
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable

import numpy as np

from bench.machine import header, percentiles
from topology import query
from topology.model import ALL_LAYERS, Direction, EdgeKey, EdgeWindow, Granularity, Layer, NodeKind
from topology.sketch import LatencySketch
from topology.stats import EdgeStats
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.store.embedded_layer import DEFAULT_HOT_MINUTES
from topology.timewindow import MINUTE, TimeRange

T0 = 1_700_006_400
APP = Granularity.APP


class Fleet:
    def __init__(self, services: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        n_db = max(1, services * 7 // 100)
        self.apps = [f"svc-{i:05d}" for i in range(services)]
        self.dbs = [f"db-{i:04d}" for i in range(n_db)]
        out_degree = np.minimum(np.round(rng.lognormal(np.log(3), 0.9, services)).astype(int), 400)
        popularity = 1.0 / np.arange(1, services + 1) ** 0.9  # Zipf-like: a few hubs
        popularity /= popularity.sum()
        edges: set[tuple[int, int]] = set()
        for src in range(services):
            k = int(out_degree[src])
            if k == 0:
                continue
            for dst in rng.choice(services, size=k, p=popularity):
                if dst != src:
                    edges.add((src, int(dst)))
        self.app_edges = sorted(edges)
        db_pop = 1.0 / np.arange(1, n_db + 1) ** 0.7
        db_pop /= db_pop.sum()
        self.db_edges = sorted(
            {(s, int(rng.choice(n_db, p=db_pop))) for s in range(services) if rng.random() < 0.6}
        )
        instrumented = rng.random(services) < 0.7
        self.layers: dict[Layer, list[tuple[str, str, NodeKind]]] = {
            Layer.NETWORK: [(self.apps[s], self.apps[t], NodeKind.SERVICE) for s, t in self.app_edges]
            + [(self.apps[s], self.dbs[d], NodeKind.DATABASE) for s, d in self.db_edges],
            Layer.IPC: [
                (self.apps[s], self.apps[t], NodeKind.SERVICE) for s, t in self.app_edges if instrumented[s]
            ],
            Layer.TRACE: [
                (self.apps[s], self.apps[t], NodeKind.SERVICE)
                for s, t in self.app_edges
                if rng.random() < 0.8
            ]
            + [
                (self.apps[s], self.dbs[d], NodeKind.DATABASE) for s, d in self.db_edges if rng.random() < 0.5
            ],
        }
        # Latency of a window: one of a pool of sketches of log-normal calls (median 2-50 ms, sigma 0.7;
        # 1,000 calls for IPC, 25 for TRACE), so windows have real sizes (60-200 buckets) at little cost.
        pool = np.random.default_rng(seed + 1)  # its own generator: the fleet and traffic stay as they were
        medians = np.exp(pool.uniform(np.log(0.002), np.log(0.05), 64))
        self.ipc_latency = [LatencySketch.of(pool.lognormal(np.log(m), 0.7, 1000).tolist()) for m in medians]
        self.trace_latency = [LatencySketch.of(pool.lognormal(np.log(m), 0.7, 25).tolist()) for m in medians]
        self.in_degree = np.zeros(services, dtype=int)
        for _, t in self.app_edges:
            self.in_degree[t] += 1

    def windows(self, layer: Layer, minute: int) -> list[EdgeWindow]:
        rng = self.rng
        edges = self.layers[layer]
        start = T0 + minute * MINUTE
        n = len(edges)
        active = np.ones(n, dtype=bool) if layer is not Layer.TRACE else rng.random(n) < 0.5
        req = rng.integers(1, 5000, n)
        out: list[EdgeWindow] = []
        first, last = float(start), float(start + 59)
        for i in np.flatnonzero(active):
            src, dst, kind = edges[i]
            r = int(req[i])
            if layer is Layer.NETWORK:
                s = EdgeStats(
                    first_seen=first,
                    last_seen=last,
                    protocol="tcp",
                    ports=(5432 if kind is NodeKind.DATABASE else 8080,),
                    connections=r // 50 + 1,
                    bytes_sent=r * 700,
                    bytes_received=r * 2100,
                )
            else:
                b = int(i % 12) + 2
                if layer is Layer.IPC:
                    lat = self.ipc_latency[(int(i) + minute) % len(self.ipc_latency)]
                    s = EdgeStats(
                        first_seen=first,
                        last_seen=last,
                        protocol="http",
                        requests=r,
                        errors=r // 100,
                        latency=lat,
                        latency_sum=float(r * 0.004 * 2**b / 4),
                        endpoints=(f"GET /v1/{dst[-3:]}", "POST /v1/items"),
                    )
                else:
                    r = r // 100 + 1
                    lat = self.trace_latency[(int(i) + minute) % len(self.trace_latency)]
                    s = EdgeStats(
                        first_seen=first,
                        last_seen=last,
                        requests=r,
                        errors=int(i % 50 == 0),
                        latency=lat,
                        latency_sum=float(r * 0.001 * 2**b),
                        exemplars=(f"{minute:08x}{int(i):024x}",),
                        connection_type="database" if kind is NodeKind.DATABASE else None,
                    )
            out.append(EdgeWindow(EdgeKey(layer, APP, src, dst), start, MINUTE, s, target_kind=kind))
        return out


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def disk_mib(path: pathlib.Path, suffix: str = "") -> float:
    return sum(p.stat().st_size for p in path.iterdir() if p.name.endswith(suffix)) / 2**20


class Clock:
    """Wall time and this process's CPU time (all threads): on a shared machine CPU time is steadier."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


Query = Callable[[Stores, str, TimeRange, float], Awaitable[int]]


async def q1_store(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    """LayerStore.traverse up 3 and down 3 on each layer, the six calls concurrently."""
    results = await asyncio.gather(
        *(
            stores.layers[layer].traverse([name], d, 3, APP, rng, now)
            for layer in ALL_LAYERS
            for d in (Direction.UPSTREAM, Direction.DOWNSTREAM)
        )
    )
    return sum(len(r.edges) for r in results)


def _walked(walk: query.UnifiedTraversal) -> int:
    """Edges walked, counted once per layer that has them."""
    return sum(len(m) for m in walk.walked.values())


async def q1_unified(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    """What the GraphQL service runs for Q1: topology.query.traverse (level by level, layers merged
    at each level through LayerStore.neighbors), upstream and downstream concurrently."""
    up, down = await asyncio.gather(
        query.traverse(stores.layers, [name], Direction.UPSTREAM, 3, time=rng, now=now),
        query.traverse(stores.layers, [name], Direction.DOWNSTREAM, 3, time=rng, now=now),
    )
    return _walked(up) + _walked(down)


async def q2_unified(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    walk = await query.traverse(stores.layers, [name], Direction.DOWNSTREAM, 5, time=rng, now=now)
    return _walked(walk)


async def run_queries(
    label: str, fn: Query, stores: Stores, names: list[str], rng: TimeRange, now: float
) -> None:
    wall: list[float] = []
    cpu: list[float] = []
    sizes: list[int] = []
    for name in names:
        c = Clock()
        sizes.append(await fn(stores, name, rng, now))
        w, u = c.stop()
        wall.append(w * 1000)
        cpu.append(u * 1000)
    print(f"{label:44s} n={len(names):5d}  wall {fmt(percentiles(wall))}")
    print(
        f"{'':44s} {'':7s}  cpu  {fmt(percentiles(cpu))}  (edges: median {int(np.median(sizes))}, "
        f"max {max(sizes)})"
    )


def fmt(p: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:7.2f}" for k, v in p.items()) + " ms"


async def run(args: argparse.Namespace) -> None:
    print(header("embedded store benchmark (bench/store_embedded.py)"))
    c = Clock()
    fleet = Fleet(args.services, args.seed)
    print(
        f"# fleet: {args.services} services, {len(fleet.dbs)} databases, {len(fleet.app_edges)} app edges; "
        + ", ".join(f"{layer.value} {len(e)} edges" for layer, e in fleet.layers.items())
        + f" (built in {c.stop()[0]:.1f} s)"
    )
    root = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix="store-bench-"))
    shutil.rmtree(root, ignore_errors=True)
    base_rss = current_rss_mib()
    stores = open_stores(root, hot_minutes=args.hot_minutes)
    upsert_wall = upsert_cpu = 0.0
    n_windows = 0
    for minute in range(args.minutes):
        for layer in ALL_LAYERS:
            ws = fleet.windows(layer, minute)
            c = Clock()
            await stores.layers[layer].upsert_windows(ws)
            w, u = c.stop()
            upsert_wall += w
            upsert_cpu += u
            n_windows += len(ws)
        if minute % 10 == 9:
            print(
                f"#   minute {minute + 1}: {n_windows:,} windows, "
                f"{n_windows / upsert_wall:,.0f} windows/s wall, "
                f"{n_windows / upsert_cpu:,.0f} per CPU second",
                flush=True,
            )
    gc.collect()
    print(
        f"upsert: {n_windows:,} minute windows (one upsert per layer per minute): "
        f"{n_windows / upsert_wall:,.0f} windows/s wall, {n_windows / upsert_cpu:,.0f} windows per CPU second"
    )
    print(
        f"memory after writing: RSS {current_rss_mib():,.0f} MiB "
        f"({current_rss_mib() - base_rss:,.0f} MiB above the start, fleet generator included)"
    )

    now = T0 + args.minutes * MINUTE
    live = TimeRange(now - 15 * MINUTE, now)
    pick = np.random.default_rng(args.seed + 1)
    names = [fleet.apps[i] for i in pick.choice(len(fleet.apps), size=args.queries, replace=False)]
    hubs = [fleet.apps[i] for i in np.argsort(-fleet.in_degree)[:10]]
    await run_queries("Q1 store traverse up3+down3 x3 layers (cold)", q1_store, stores, names, live, now)
    await run_queries("Q1 store traverse up3+down3 x3 layers (warm)", q1_store, stores, names, live, now)
    await run_queries("Q1 unified query.traverse up3+down3 (warm)", q1_unified, stores, names, live, now)
    await run_queries(
        "Q2 unified blast radius down5, 10 hubs", q2_unified, stores, hubs * args.blast_runs, live, now
    )
    past = TimeRange(now - 35 * MINUTE, now - 30 * MINUTE)
    half = names[: max(1, len(names) // 2)]
    await run_queries("Q3 unified Q1 30 min ago, 5 min (cold)", q1_unified, stores, half, past, now)
    await run_queries("Q3 unified Q1 30 min ago, 5 min (warm)", q1_unified, stores, half, past, now)

    c = Clock()
    reports = [await stores.layers[layer].rollup(now + 1) for layer in ALL_LAYERS]
    w, u = c.stop()
    print(f"rollup: {sum(r.built for r in reports):,} hour windows built in {w:.1f} s wall, {u:.1f} s CPU")
    counts = {layer.value: await stores.layers[layer].window_count() for layer in ALL_LAYERS}
    await stores.close()
    print(
        f"disk: {disk_mib(root):,.0f} MiB in {root}: databases {disk_mib(root, '.db'):,.0f} MiB, "
        f"hot ring snapshots {disk_mib(root, '.npz'):,.0f} MiB; windows {counts}"
    )
    print(f"peak RSS of this process: {rss_mib():,.0f} MiB")
    del stores
    gc.collect()
    before = current_rss_mib()
    c = Clock()
    stores = open_stores(root, hot_minutes=args.hot_minutes)
    w, u = c.stop()
    print(
        f"reopen: {w:.1f} s wall, {u:.1f} s CPU, "
        f"RSS +{current_rss_mib() - before:,.0f} MiB (the store's memory)"
    )
    await run_queries("Q1 unified after reopen", q1_unified, stores, names[:200], live, now)
    await stores.close()
    if not args.keep:
        shutil.rmtree(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--blast-runs", type=int, default=10)
    p.add_argument("--hot-minutes", type=int, default=DEFAULT_HOT_MINUTES)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", help="store directory (default: a temporary one, deleted at the end)")
    p.add_argument("--keep", action="store_true", help="keep the store directory")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()

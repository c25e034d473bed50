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

import numpy as np

from bench.machine import header, percentiles
from topology.model import ALL_LAYERS, Direction, EdgeKey, EdgeWindow, Granularity, Layer, NodeKind
from topology.stats import N_BUCKETS, EdgeStats
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import HOUR, MINUTE, TimeRange

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
        self.db_edges = sorted({(s, int(rng.choice(n_db, p=db_pop))) for s in range(services)
                                if rng.random() < 0.6})
        instrumented = rng.random(services) < 0.7
        self.layers: dict[Layer, list[tuple[str, str, NodeKind]]] = {
            Layer.NETWORK: [(self.apps[s], self.apps[t], NodeKind.SERVICE) for s, t in self.app_edges]
            + [(self.apps[s], self.dbs[d], NodeKind.DATABASE) for s, d in self.db_edges],
            Layer.IPC: [(self.apps[s], self.apps[t], NodeKind.SERVICE) for s, t in self.app_edges if instrumented[s]],
            Layer.TRACE: [(self.apps[s], self.apps[t], NodeKind.SERVICE) for s, t in self.app_edges
                          if rng.random() < 0.8]
            + [(self.apps[s], self.dbs[d], NodeKind.DATABASE) for s, d in self.db_edges if rng.random() < 0.5],
        }
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
                s = EdgeStats(first_seen=first, last_seen=last, protocol="tcp", ports=(5432 if kind is NodeKind.DATABASE
                              else 8080,), connections=r // 50 + 1, bytes_sent=r * 700, bytes_received=r * 2100)
            else:
                b = int(i % 12) + 2
                lat = [0] * N_BUCKETS
                lat[b], lat[b + 1], lat[b + 2] = r // 2, r // 3, r - r // 2 - r // 3
                if layer is Layer.IPC:
                    s = EdgeStats(first_seen=first, last_seen=last, protocol="http", requests=r, errors=r // 100,
                                  latency=tuple(lat), latency_sum=float(r * 0.004 * 2**b / 4),
                                  endpoints=(f"GET /v1/{dst[-3:]}", "POST /v1/items"))
                else:
                    r = r // 100 + 1
                    lat = [0] * N_BUCKETS
                    lat[b] = r
                    s = EdgeStats(first_seen=first, last_seen=last, requests=r, errors=int(i % 50 == 0),
                                  latency=tuple(lat), latency_sum=float(r * 0.001 * 2**b),
                                  exemplars=(f"{minute:08x}{int(i):024x}",),
                                  connection_type="database" if kind is NodeKind.DATABASE else None)
            out.append(EdgeWindow(EdgeKey(layer, APP, src, dst), start, MINUTE, s, target_kind=kind))
        return out


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def disk_mib(path: pathlib.Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir()) / 2**20


async def q1(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    """Upstream depth 3 and downstream depth 3 on every layer (sequential, in process)."""
    n = 0
    for layer in ALL_LAYERS:
        st = stores.layers[layer]
        for d in (Direction.UPSTREAM, Direction.DOWNSTREAM):
            n += len((await st.traverse([name], d, 3, APP, rng, now)).edges)
    return n


async def q1_concurrent(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    results = await asyncio.gather(*(stores.layers[layer].traverse([name], d, 3, APP, rng, now)
                                     for layer in ALL_LAYERS for d in (Direction.UPSTREAM, Direction.DOWNSTREAM)))
    return sum(len(r.edges) for r in results)


async def blast(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    results = await asyncio.gather(*(stores.layers[layer].traverse([name], Direction.DOWNSTREAM, 5, APP, rng, now)
                                     for layer in ALL_LAYERS))
    return sum(len(r.edges) for r in results)


async def timed(samples: list[float], coro: asyncio.Future[int] | object) -> int:
    t = time.perf_counter()
    n = await coro  # type: ignore[misc]
    samples.append((time.perf_counter() - t) * 1000)
    return int(n)


def fmt(p: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:8.2f}" for k, v in p.items()) + " ms"


async def run(args: argparse.Namespace) -> None:
    print(header("embedded store benchmark (bench/store_embedded.py)"))
    t = time.perf_counter()
    fleet = Fleet(args.services, args.seed)
    print(f"# fleet: {args.services} services, {len(fleet.dbs)} databases, {len(fleet.app_edges)} app edges; "
          + ", ".join(f"{layer.value} {len(e)} edges" for layer, e in fleet.layers.items())
          + f" (built in {time.perf_counter() - t:.1f} s)")
    root = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix="store-bench-"))
    if root.exists():
        shutil.rmtree(root)
    base_rss = current_rss_mib()
    stores = open_stores(root)
    upsert_s = 0.0
    n_windows = 0
    for minute in range(args.minutes):
        for layer in ALL_LAYERS:
            ws = fleet.windows(layer, minute)
            t = time.perf_counter()
            await stores.layers[layer].upsert_windows(ws)
            upsert_s += time.perf_counter() - t
            n_windows += len(ws)
        if minute % 10 == 9:
            print(f"#   minute {minute + 1}: {n_windows} windows, {n_windows / upsert_s:,.0f} windows/s so far",
                  flush=True)
    gc.collect()
    print(f"upsert: {n_windows:,} minute windows in {upsert_s:.1f} s = {n_windows / upsert_s:,.0f} windows/s "
          f"(one upsert per layer per minute)")
    print(f"memory after load: RSS {current_rss_mib():,.0f} MiB (store + fleet generator; "
          f"{current_rss_mib() - base_rss:,.0f} MiB above the start)")

    now = T0 + args.minutes * MINUTE
    live = TimeRange(now - 15 * MINUTE, now)
    pick = np.random.default_rng(args.seed + 1)
    names = [fleet.apps[i] for i in pick.choice(len(fleet.apps), size=args.queries, replace=False)]
    for label, fn in (("Q1 cold (first touch)", q1), ("Q1 warm", q1), ("Q1 warm, layers concurrently", q1_concurrent)):
        samples: list[float] = []
        edges = [await timed(samples, fn(stores, name, live, now)) for name in names]
        print(f"{label:34s} traverse up 3 + down 3 x 3 layers, {len(names)} services: {fmt(percentiles(samples))}"
              f"  (median {int(np.median(edges))} edges, max {max(edges)})")
    hubs = [fleet.apps[i] for i in np.argsort(-fleet.in_degree)[:10]]
    samples = []
    edges = [await timed(samples, blast(stores, h, live, now)) for _ in range(args.blast_runs) for h in hubs]
    print(f"{'Q2 blast radius':34s} down 5 x 3 layers, 10 most depended-on x {args.blast_runs}: "
          f"{fmt(percentiles(samples))}  (median {int(np.median(edges))} edges, max {max(edges)})")
    past = TimeRange(now - 35 * MINUTE, now - 30 * MINUTE)
    samples = []
    for name in names[: args.queries // 2]:
        await timed(samples, q1(stores, name, past, now))
    print(f"{'Q3 30 min ago, 5 min window':34s} {len(names) // 2} services: {fmt(percentiles(samples))}")

    t = time.perf_counter()
    reports = [await stores.layers[layer].rollup(now + 1) for layer in ALL_LAYERS]
    print(f"rollup of the hour: {time.perf_counter() - t:.1f} s, {sum(r.built for r in reports):,} hour windows built")
    counts = {layer.value: await stores.layers[layer].window_count() for layer in ALL_LAYERS}
    await stores.close()
    print(f"disk: {disk_mib(root):,.0f} MiB in {root} ({counts})")
    print(f"peak RSS of this process: {rss_mib():,.0f} MiB")
    gc.collect()
    before = current_rss_mib()
    t = time.perf_counter()
    stores = open_stores(root)
    print(f"reopen: {time.perf_counter() - t:.1f} s, RSS +{current_rss_mib() - before:,.0f} MiB")
    samples = []
    for name in names[:200]:
        await timed(samples, q1(stores, name, live, now))
    print(f"{'Q1 after reopen':34s} 200 services: {fmt(percentiles(samples))}")
    await stores.close()
    if not args.keep:
        shutil.rmtree(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--blast-runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", help="store directory (default: a temporary one, deleted at the end)")
    p.add_argument("--keep", action="store_true", help="keep the store directory")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()

"""Benchmark of the JanusGraph store: the embedded benchmark's workload on a real JanusGraph Server.

    .venv/bin/python -m bench.store_janusgraph [--services 10000] [--minutes 60] [--queries 200]
        [--url ws://...]  [--with-embedded]

Without ``--url`` it starts its own server with the berkeleyje backend (docker/janusgraph/dev.sh,
instance ``bench``, port 18199, data under var/janusgraph/bench, wiped first) and stops it at the
end. The fleet, the windows and the queries come from bench/store_embedded.py (same generator,
same seed): one simulated hour of minute windows written layer by layer as stage 3 would (one
``upsert_windows`` per layer per minute), then Q1 (up 3 + down 3 on every layer) through the store
and through topology.query (what the GraphQL service runs), Q2 (blast radius of hubs), the
roll-up. ``--with-embedded`` feeds the same windows to the embedded store in the same run and
prints its figures beside.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import numpy as np

from bench.machine import header
from bench.store_embedded import Clock, Fleet, q1_store, run_queries
from topology import query
from topology.model import ALL_LAYERS, Direction
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.store.janusgraph import open_janusgraph_stores
from topology.store.janusgraph_layer import JanusGraphLayerStore
from topology.timewindow import MINUTE, Retention, TimeRange

T0 = 1_700_006_400
ROOT = pathlib.Path(__file__).resolve().parents[1]
DEV_SH = ROOT / "docker" / "janusgraph" / "dev.sh"


def server_env(port: int, heap: str) -> dict[str, str]:
    return dict(
        os.environ,
        BACKEND="berkeleyje",
        JANUSGRAPH_PORT=str(port),
        JANUSGRAPH_INSTANCE="bench",
        JANUSGRAPH_HEAP=heap,
    )


def start_server(port: int, heap: str) -> str:
    env = server_env(port, heap)
    subprocess.run(["bash", str(DEV_SH), "stop"], env=env, check=False, capture_output=True)
    shutil.rmtree(ROOT / "var" / "janusgraph" / "bench" / "data", ignore_errors=True)
    c = Clock()
    out = subprocess.run(["bash", str(DEV_SH), "start"], env=env, check=True, capture_output=True, text=True)
    print(f"# server: JanusGraph 1.1 berkeleyje, heap {heap}, started in {c.stop()[0]:.1f} s")
    return out.stdout.strip().splitlines()[-1]


def stop_server(port: int, heap: str) -> None:
    env = server_env(port, heap)
    subprocess.run(["bash", str(DEV_SH), "stop"], env=env, check=False, capture_output=True)


async def q1_unified(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    """What the GraphQL service runs for Q1: topology.query.traverse up 3 and down 3, all layers."""
    up, down = await asyncio.gather(
        query.traverse(stores.layers, [name], Direction.UPSTREAM, 3, time=rng, now=now),
        query.traverse(stores.layers, [name], Direction.DOWNSTREAM, 3, time=rng, now=now),
    )
    return len(up.reached) + len(down.reached)


async def q2_unified(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    walk = await query.traverse(stores.layers, [name], Direction.DOWNSTREAM, 5, time=rng, now=now)
    return len(walk.reached)


def data_mib() -> float:
    d = ROOT / "var" / "janusgraph" / "bench" / "data"
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / 2**20 if d.exists() else 0.0


class Meter:
    """Windows written and store time spent, for one store."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.n = 0
        self.wall = 0.0
        self.first: tuple[int, float] = (0, 0.0)

    def report(self, minutes: int) -> None:
        n0, w0 = self.first
        steady = (self.n - n0) / (self.wall - w0) if minutes > 1 else self.n / self.wall
        print(f"{self.label} load: {self.n:,} minute windows of {minutes} simulated minutes in "
              f"{self.wall:.1f} s ({self.n / self.wall:,.0f} windows/s overall, {steady:,.0f} windows/s "
              "after the first minute)")
        per_minute = (self.wall - w0) / (minutes - 1) if minutes > 1 else self.wall
        how = "measured" if minutes == 60 else f"extrapolated from {minutes} minutes"
        print(f"{self.label} time to load one simulated hour: {w0 + 59 * per_minute:,.0f} s ({how})")


async def load(targets: dict[str, Stores], fleet: Fleet, minutes: int) -> None:
    """Write every minute's windows, layer by layer, to every target store; print rates."""
    meters = {label: Meter(label) for label in targets}
    for minute in range(minutes):
        for layer in ALL_LAYERS:
            ws = fleet.windows(layer, minute)  # generated once, written to every store
            for label, stores in targets.items():
                m = meters[label]
                c = Clock()
                await stores.layers[layer].upsert_windows(ws)
                m.wall += c.stop()[0]
                m.n += len(ws)
        for m in meters.values():
            if minute == 0:
                m.first = (m.n, m.wall)
                print(f"#   {m.label} minute 1 (creates every node and edge): {m.n:,} windows in "
                      f"{m.wall:.1f} s = {m.n / m.wall:,.0f} windows/s", flush=True)
            elif minute % 5 == 4 or minute == minutes - 1:
                steady = (m.n - m.first[0]) / (m.wall - m.first[1])
                print(f"#   {m.label} minute {minute + 1}: {m.n:,} windows, {m.wall:.1f} s, "
                      f"steady state {steady:,.0f} windows/s", flush=True)
    for m in meters.values():
        m.report(minutes)


async def run(args: argparse.Namespace) -> None:
    print(header("JanusGraph store benchmark (bench/store_janusgraph.py)"))
    c = Clock()
    fleet = Fleet(args.services, args.seed)
    print(
        f"# fleet: {args.services} services, {len(fleet.dbs)} databases, {len(fleet.app_edges)} app edges; "
        + ", ".join(f"{layer.value} {len(e)} edges" for layer, e in fleet.layers.items())
        + f" (built in {c.stop()[0]:.1f} s)"
    )
    own = args.url is None
    url = start_server(args.port, args.heap) if own else args.url
    print(f"# server: {url}, pool size {args.pool_size}, batch size {args.batch_size}")
    try:
        stores = await open_janusgraph_stores(url, Retention(), pool_size=args.pool_size, require=True)
        for layer_store in stores.layers.values():
            assert isinstance(layer_store, JanusGraphLayerStore)
            layer_store.batch_size = args.batch_size
            if not own:
                await layer_store.clear()
        embedded: Stores | None = None
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="store-bench-"))
        targets = {"janusgraph": stores}
        if args.with_embedded:
            embedded = targets["embedded"] = open_stores(tmp / "embedded")
        await load(targets, fleet, args.minutes)
        if own:
            print(f"# berkeleyje data: {data_mib():,.0f} MiB")

        now = T0 + args.minutes * MINUTE
        live = TimeRange(now - 15 * MINUTE, now)
        pick = np.random.default_rng(args.seed + 1)
        names = [fleet.apps[i] for i in pick.choice(len(fleet.apps), size=args.queries, replace=False)]
        hubs = [fleet.apps[i] for i in np.argsort(-fleet.in_degree)[:10]]
        for label, s in (("janusgraph", stores), ("embedded", embedded)):
            if s is None:
                continue
            await run_queries(f"{label} Q1 store traverse up3+down3 x3 layers", q1_store, s, names, live, now)
            await run_queries(f"{label} Q1 unified query.traverse up3+down3", q1_unified, s, names, live, now)
            await run_queries(f"{label} Q2 unified blast radius down5, 10 hubs", q2_unified, s,
                              hubs * args.blast_runs, live, now)
        c = Clock()
        reports = [await stores.layers[layer].rollup(now + 1) for layer in ALL_LAYERS]
        built = sum(r.built for r in reports)
        print(f"janusgraph rollup: {built:,} hour windows built in {c.stop()[0]:.1f} s")
        await stores.close()
        if embedded is not None:
            await embedded.close()
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if own and not args.keep:
            stop_server(args.port, args.heap)
            shutil.rmtree(ROOT / "var" / "janusgraph" / "bench" / "data", ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--blast-runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--url", help="an already running server (its graphs are cleared first)")
    p.add_argument("--port", type=int, default=18199, help="port of the server this benchmark starts")
    p.add_argument("--heap", default="2g", help="JVM heap of the server this benchmark starts")
    p.add_argument("--pool-size", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--with-embedded", action="store_true", help="also run the embedded store, same windows")
    p.add_argument("--keep", action="store_true", help="leave the server this benchmark started running")
    t = time.perf_counter()
    asyncio.run(run(p.parse_args()))
    print(f"# total {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()

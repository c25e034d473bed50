"""Benchmark of the JanusGraph store: the embedded benchmark's workload on a real JanusGraph Server.

    .venv/bin/python -m bench.store_janusgraph [--services 10000] [--minutes 60] [--queries 200]
        [--url ws://...]  [--with-embedded]  [--backend berkeleyje|cql]  [--loaded]

Without ``--url`` it starts its own server (docker/janusgraph/dev.sh, port 18199) and stops it at the
end: with ``--backend berkeleyje`` (default) instance ``bench``, data under var/janusgraph/bench, wiped
first; with ``--backend cql`` instance ``bench-cql`` on the local Cassandra node of
docker/cassandra/dev.sh (started if need be), keyspaces ``bench_network``, ``bench_ipc``,
``bench_trace``, ``bench_catalog``, dropped first. Storage is measured at the end: berkeleyje, the
size of its files; cql, the size of the bench keyspaces' directories after Cassandra was stopped,
which drains the node (every memtable flushed to SSTables; nodetool needs JMX, which the dev node
does not open), then started again.

The fleet, the windows and the queries come from bench/store_embedded.py (same generator, same
seed): one simulated hour of minute windows written layer by layer as stage 3 would (one
``upsert_windows`` per layer per minute), then Q1 (up 3 + down 3 on every layer) through the store
and through topology.query (what the GraphQL service runs), each with and without edge stats (the
service asks for none unless ``perLayer`` is selected, and then only for the page's edges: the last
Q1 line, 100 per direction), Q2 (blast radius of hubs), the
roll-up. ``--with-embedded`` feeds the same windows to the embedded store in the same run and
prints its figures beside. ``--url URL --loaded --blast-runs 0`` measures Q1 only, on a server that
already holds this fleet's windows (the same ``--services``, ``--seed`` and ``--minutes``): nothing
is cleared or written. Each query line is followed by the round trips (Gremlin requests) per query
and, for a local server (``--server-pid PID`` with ``--url``), the server's CPU per query.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
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
from topology.model import ALL_LAYERS, Direction, Granularity
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.store.janusgraph import open_janusgraph_stores
from topology.store.janusgraph_layer import JanusGraphLayerStore
from topology.timewindow import MINUTE, Retention, TimeRange

T0 = 1_700_006_400
ROOT = pathlib.Path(__file__).resolve().parents[1]
DEV_SH = ROOT / "docker" / "janusgraph" / "dev.sh"
CASSANDRA_SH = ROOT / "docker" / "cassandra" / "dev.sh"
KEYSPACE_PREFIX = "bench_"


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, BACKEND=args.backend, JANUSGRAPH_PORT=str(args.port), JANUSGRAPH_HEAP=args.heap,
               JANUSGRAPH_INSTANCE="bench" if args.backend == "berkeleyje" else "bench-cql")
    if args.backend == "cql":
        env.update(CASSANDRA_HOST="127.0.0.1", CASSANDRA_PORT=str(args.cassandra_port),
                   JANUSGRAPH_KEYSPACE_PREFIX=KEYSPACE_PREFIX)
    return env


def cassandra(args: argparse.Namespace, action: str) -> None:
    env = dict(os.environ, CASSANDRA_PORT=str(args.cassandra_port))
    subprocess.run(["bash", str(CASSANDRA_SH), action], env=env, check=True, capture_output=True)


def drop_bench_keyspaces(port: int) -> None:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=120)
    cluster = Cluster(["127.0.0.1"], port=port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        session = cluster.connect()
        for row in session.execute("SELECT keyspace_name FROM system_schema.keyspaces"):
            if row.keyspace_name.startswith(KEYSPACE_PREFIX):
                session.execute(f'DROP KEYSPACE "{row.keyspace_name}"')
    finally:
        cluster.shutdown()


def start_server(args: argparse.Namespace) -> str:
    env = server_env(args)
    subprocess.run(["bash", str(DEV_SH), "stop"], env=env, check=False, capture_output=True)
    shutil.rmtree(ROOT / "var" / "janusgraph" / "bench" / "data", ignore_errors=True)
    if args.backend == "cql":
        cassandra(args, "start")
        drop_bench_keyspaces(args.cassandra_port)
    c = Clock()
    out = subprocess.run(["bash", str(DEV_SH), "start"], env=env, check=True, capture_output=True, text=True)
    print(f"# server: JanusGraph 1.1 {args.backend}, heap {args.heap}, started in {c.stop()[0]:.1f} s")
    return out.stdout.strip().splitlines()[-1]


def server_pid(args: argparse.Namespace) -> int | None:
    """The JanusGraph server's process: ``--server-pid``, or the one this benchmark started."""
    if args.server_pid:
        return int(args.server_pid)
    instance = "bench" if args.backend == "berkeleyje" else "bench-cql"
    pidfile = ROOT / "var" / "run" / f"janusgraph-{instance}.pid"
    return int(pidfile.read_text()) if args.url is None and pidfile.exists() else None


def stop_server(args: argparse.Namespace) -> None:
    subprocess.run(["bash", str(DEV_SH), "stop"], env=server_env(args), check=False, capture_output=True)


def _mib(d: pathlib.Path) -> float:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / 2**20 if d.exists() else 0.0


def cql_data_mib(args: argparse.Namespace) -> float:
    """The bench keyspaces' SSTables after a drain (stop), with the node started again."""
    cassandra(args, "stop")
    data = ROOT / "var" / "cassandra" / f"state-{args.cassandra_port}" / "data" / "data"
    mib = sum(_mib(d) for d in data.glob(f"{KEYSPACE_PREFIX}*"))
    cassandra(args, "start")
    return mib


async def q1_unified(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    """What the GraphQL service runs for Q1: topology.query.traverse up 3 and down 3, all layers."""
    up, down = await asyncio.gather(
        query.traverse(stores.layers, [name], Direction.UPSTREAM, 3, time=rng, now=now),
        query.traverse(stores.layers, [name], Direction.DOWNSTREAM, 3, time=rng, now=now),
    )
    return len(up.reached) + len(down.reached)


async def q1_store_bare(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    """Q1 through the store without edge stats: LayerStore.traverse up 3 and down 3, every layer."""
    results = await asyncio.gather(*(
        stores.layers[layer].traverse([name], d, 3, Granularity.APP, rng, now, with_stats=False)
        for layer in ALL_LAYERS for d in (Direction.UPSTREAM, Direction.DOWNSTREAM)
    ))
    return sum(len(r.edges) for r in results)


async def q1_unified_bare(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    """Q1 as the GraphQL service runs it when no edge stats are selected (no ``perLayer``)."""
    up, down = await asyncio.gather(
        query.traverse(stores.layers, [name], Direction.UPSTREAM, 3, time=rng, now=now, with_stats=False),
        query.traverse(stores.layers, [name], Direction.DOWNSTREAM, 3, time=rng, now=now, with_stats=False),
    )
    return len(up.reached) + len(down.reached)


PAGE = 100  # the default page of a GraphQL connection (TOPOLOGY_DEFAULT_PAGE)
_READS_PAGE_STATS = "stats_on_fetch" in inspect.signature(query.traverse).parameters


async def q1_graphql_per_layer(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    """Q1 as the GraphQL service runs it when ``perLayer`` (edge stats) is selected: the walk, then the
    stats of the first page's edges (a tree from before ``stats_on_fetch``: every edge's stats)."""
    async def one(direction: Direction) -> int:
        if not _READS_PAGE_STATS:
            return len((await query.traverse(stores.layers, [name], direction, 3, time=rng, now=now)).reached)
        walk = await query.traverse(stores.layers, [name], direction, 3, time=rng, now=now,
                                    stats_on_fetch=True)
        await walk.fetch_edges(walk.reached[:PAGE])
        return len(walk.reached)

    up, down = await asyncio.gather(one(Direction.UPSTREAM), one(Direction.DOWNSTREAM))
    return up + down


async def q2_unified(stores: Stores, name: str, rng: TimeRange, now: float) -> int:
    walk = await query.traverse(stores.layers, [name], Direction.DOWNSTREAM, 5, time=rng, now=now)
    return len(walk.reached)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a local process, from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_pid(args: argparse.Namespace) -> int | None:
    """The local Cassandra node's process (cql only): docker/cassandra/dev.sh's pid file."""
    if args.backend != "cql":
        return None
    name = "cassandra" if args.cassandra_port == 19042 else f"cassandra-{args.cassandra_port}"
    pidfile = ROOT / "var" / "run" / f"{name}.pid"
    try:
        pid = int(pidfile.read_text())
        process_cpu(pid)
    except (OSError, ValueError):
        return None
    return pid


class RoundTrips:
    """Prints the Gremlin requests per query that the ``with`` block's queries sent (JanusGraph only),
    the server's CPU per query when its process is known (``--server-pid``, or the server this
    benchmark started), and the Cassandra node's CPU per query (cql, the local node)."""

    def __init__(self, stores: Stores, queries: int, server_pid: int | None = None,
                 node: int | None = None) -> None:
        self.pools = [s.pool for s in stores.layers.values() if isinstance(s, JanusGraphLayerStore)]
        self.queries = queries
        self.pids = {"server": server_pid, "Cassandra node": node}
        self.sent = 0
        self.cpu: dict[str, float] = {}

    def __enter__(self) -> None:
        self.sent = sum(p.requests for p in self.pools)
        self.cpu = {k: process_cpu(pid) for k, pid in self.pids.items() if pid}

    def __exit__(self, *exc: object) -> None:
        if self.pools and exc[0] is None:
            n = sum(p.requests for p in self.pools) - self.sent
            ms = {k: (process_cpu(pid) - self.cpu[k]) * 1000 / self.queries
                  for k, pid in self.pids.items() if pid and k in self.cpu}
            cpu = "".join(f"; {k} CPU {v:.1f} ms per query" for k, v in ms.items())
            print(f"{'':44s} {'':7s}  round trips: {n:,} ({n / self.queries:.1f} per query){cpu}")


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


async def load(targets: dict[str, Stores], fleet: Fleet, minutes: int) -> int:
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
    return next(iter(meters.values())).n


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
    url = start_server(args) if own else args.url
    print(f"# server: {url}, pool size {args.pool_size}, batch size {args.batch_size}")
    try:
        stores = await open_janusgraph_stores(url, Retention(), pool_size=args.pool_size, require=True)
        for layer_store in stores.layers.values():
            assert isinstance(layer_store, JanusGraphLayerStore)
            layer_store.batch_size = args.batch_size
            if not own and not args.loaded:
                await layer_store.clear()
        embedded: Stores | None = None
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="store-bench-"))
        targets = {"janusgraph": stores}
        if args.with_embedded:
            embedded = targets["embedded"] = open_stores(tmp / "embedded")
        written = 0 if args.loaded else await load(targets, fleet, args.minutes)

        now = T0 + args.minutes * MINUTE
        live = TimeRange(now - 15 * MINUTE, now)
        pick = np.random.default_rng(args.seed + 1)
        names = [fleet.apps[i] for i in pick.choice(len(fleet.apps), size=args.queries, replace=False)]
        hubs = [fleet.apps[i] for i in np.argsort(-fleet.in_degree)[:10]]
        for label, s in (("janusgraph", stores), ("embedded", embedded)):
            if s is None:
                continue
            for what, fn in (("Q1 store traverse up3+down3 x3 layers", q1_store),
                             ("Q1 store traverse, no edge stats", q1_store_bare),
                             ("Q1 unified query.traverse up3+down3", q1_unified),
                             ("Q1 unified, no edge stats (GraphQL)", q1_unified_bare),
                             ("Q1 GraphQL perLayer (stats of a page)", q1_graphql_per_layer)):
                if args.only and not any(word in what for word in args.only.split(",")):
                    continue
                with RoundTrips(s, len(names), *((server_pid(args), node_pid(args)) if s is stores else ())):
                    await run_queries(f"{label} {what}", fn, s, names, live, now)
            if args.blast_runs:
                await run_queries(f"{label} Q2 unified blast radius down5, 10 hubs", q2_unified, s,
                                  hubs * args.blast_runs, live, now)
        if not args.loaded:
            c = Clock()
            reports = [await stores.layers[layer].rollup(now + 1) for layer in ALL_LAYERS]
            built = sum(r.built for r in reports)
            print(f"janusgraph rollup: {built:,} hour windows built in {c.stop()[0]:.1f} s")
        await stores.close()
        if embedded is not None:
            await embedded.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if own:
            storage(args, written)
    finally:
        if own and not args.keep:
            stop_server(args)
            shutil.rmtree(ROOT / "var" / "janusgraph" / "bench" / "data", ignore_errors=True)


def storage(args: argparse.Namespace, written: int) -> None:
    """Bytes per stored minute window, and what a simulated day of minute windows takes."""
    if args.backend == "cql":
        stop_server(args)  # nothing writes while the node drains
        mib = cql_data_mib(args)
    else:
        mib = _mib(ROOT / "var" / "janusgraph" / "bench" / "data")
    per_window = mib * 2**20 / written
    day = written / args.minutes * 24 * 60
    print(f"# {args.backend} data: {mib:,.1f} MiB for {written:,} minute windows = {per_window:,.0f} bytes "
          f"per window; a simulated day ({day:,.0f} minute windows) ≈ {day * per_window / 2**30:,.2f} GiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--blast-runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--url", help="an already running server (its graphs are cleared first)")
    p.add_argument("--backend", choices=("berkeleyje", "cql"), default="berkeleyje",
                   help="storage of the server this benchmark starts (cql: on docker/cassandra's node)")
    p.add_argument("--cassandra-port", type=int, default=19042, help="CQL port of the local Cassandra node")
    p.add_argument("--port", type=int, default=18199, help="port of the server this benchmark starts")
    p.add_argument("--heap", default="2g", help="JVM heap of the server this benchmark starts")
    p.add_argument("--pool-size", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--with-embedded", action="store_true", help="also run the embedded store, same windows")
    p.add_argument("--keep", action="store_true", help="leave the server this benchmark started running")
    p.add_argument("--server-pid", type=int,
                   help="with --url: the local server's process id, to print its CPU per query")
    p.add_argument("--only", help="run only the Q1 lines whose label holds one of these comma-separated "
                   "words (e.g. 'GraphQL' for the two the service runs)")
    p.add_argument("--loaded", action="store_true",
                   help="with --url: the server holds this fleet's windows already; query, write nothing")
    args = p.parse_args()
    if args.loaded and args.url is None:
        p.error("--loaded queries a server given by --url")
    t = time.perf_counter()
    asyncio.run(run(args))
    print(f"# total {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()

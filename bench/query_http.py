"""GraphQL over HTTP against one server process on the embedded store (Q1, Q2, Q3 of performance.md).

    .venv/bin/python -m bench.query_http [--services 1000] [--minutes 60] [--queries 300] [--concurrency 16]
        [--only q1,q1c,q2,q3] [--distinct] [--demo [--settle 60] [--control ROUNDS] [--repo DIR]]

Writes a synthetic fleet (the heavy-tailed graph of ``bench/store_embedded.py``: three layers, one
simulated hour of minute windows) plus catalog entries, owners and health into a fresh data
directory, starts ``uvicorn`` with the app in a separate process (its clock pinned to the end of
the simulated hour), and measures from this process with an HTTP keep-alive client:

* Q1 ``service { upstream(depth: 3) downstream(depth: 3) healthStatus owner }``, all layers merged,
  sequential (p50/p95/p99) and with ``--concurrency`` clients (requests/s);
* Q2 ``blastRadius(depth: 5)`` on the 10 most depended-on services;
* Q3 Q1 at a past time (``at`` 30 minutes ago, 5-minute window).

``--demo`` measures Q1 as a user meets it instead: it starts ``topology demo --services N`` (its live
simulation ingesting: the fleet's process sends its pipeline's output to the server, which stores it;
``--repo`` runs the server from another checkout, e.g. a ``git worktree`` of the code before a
change, where the fleet ran inside the server), waits until ``/healthz`` answers and then
``--settle`` seconds more (default 60), and runs Q1 sequentially and with ``--concurrency`` clients
on names from the demo's catalog, with the clock running (the answers change as data arrives). Each
phase also prints the server's CPU per request and the fleet process's CPU per second (how busy
ingest stays). ``--control ROUNDS`` then alternates rounds of 100 sequential Q1 with the fleet
process running and stopped: the same moment's latency with no ingest at all, the machine's floor.
``--distinct`` (either mode) asks each name once per phase, so no answer is asked for twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.machine import header, percentiles

Q1 = """query Q1($name: String!) { service(name: $name) { name healthStatus { status } owner { team email }
  upstream(depth: 3) { totalCount edges { node { depth via service { name } edge { layers } } } }
  downstream(depth: 3) { totalCount edges { node { depth via service { name } edge { layers } } } } } }"""
Q2 = """query Q2($name: String!) { blastRadius(name: $name, depth: 5) { total countsByTier { tier count }
  teams { team email chat } } }"""
Q3 = """query Q3($name: String!, $at: DateTime!) { service(name: $name) { name healthStatus { status }
  owner { team } upstream(depth: 3, at: $at, window: "5m") { totalCount edges { node { depth via
  service { name } } } } downstream(depth: 3, at: $at, window: "5m") { totalCount edges { node { depth via
  service { name } } } } } }"""
NAMES = "{ services(first: 1000) { edges { node { name } } } }"


async def build(
    data_dir: pathlib.Path, services: int, minutes: int, seed: int
) -> tuple[float, list[str], list[str]]:
    """Fill ``data_dir``; return (now, all app names, the 10 most depended-on)."""

    from bench.store_embedded import T0, Fleet
    from topology.catalog import HealthEvent, HealthState, Owner, ServiceInfo
    from topology.model import ALL_LAYERS, Granularity, NodeInfo
    from topology.store.embedded import open_stores

    fleet = Fleet(services, seed)
    stores = open_stores(data_dir)
    nodes: dict[str, NodeInfo] = {}
    for minute in range(minutes):
        for layer in ALL_LAYERS:
            windows = fleet.windows(layer, minute)
            await stores.layers[layer].upsert_windows(windows)
            if minute == 0:
                for w in windows:
                    for name, kind in ((w.key.source, w.source_kind), (w.key.target, w.target_kind)):
                        old = nodes.get(name)
                        seen = frozenset({layer}) | (old.layers if old else frozenset())
                        nodes[name] = NodeInfo(name, kind, Granularity.APP, None, seen, w.window_start,
                                               w.window_start + 60)
    await stores.catalog.register_nodes(list(nodes.values()))
    rnd = random.Random(seed)
    teams = [f"team-{i:03d}" for i in range(max(1, services // 8))]
    await stores.catalog.upsert_services([
        ServiceInfo(name, rnd.choice((0, 1, 1, 2, 2, 2, 3)), rnd.choice(("payments", "playback", "identity",
                    "growth", "studio")), Owner(t := rnd.choice(teams), f"{t}@example.com", f"#{t}"))
        for name in fleet.apps])
    now = float(T0 + minutes * 60)
    await stores.catalog.record_health([
        HealthEvent(name, rnd.choice(list(HealthState)), now - rnd.randint(60, 3 * 3600))
        for name in fleet.apps if rnd.random() < 0.3])
    await stores.close()
    return now, fleet.apps, _hubs(fleet)


def _hubs(fleet: Any) -> list[str]:
    import numpy as np

    return [fleet.apps[i] for i in np.argsort(-fleet.in_degree)[:10]]


def rebuild_answers(services: int, minutes: int, seed: int) -> tuple[float, list[str], list[str]]:
    """What :func:`build` returns, without writing (for ``--reuse`` of a directory it filled)."""
    from bench.store_embedded import T0, Fleet

    fleet = Fleet(services, seed)
    return float(T0 + minutes * 60), fleet.apps, _hubs(fleet)


def serve(data_dir: str, port: int, now: float, gc_freeze: bool = True) -> None:
    """The server process: the app over the stores in ``data_dir``, clock pinned to ``now``.
    ``gc_freeze``: as ``topology serve`` does, move everything alive after opening (the stores' index)
    out of the cyclic collector's reach (:func:`service.app.freeze_heap`); off to compare."""
    import uvicorn

    from service.app import create_app, freeze_heap
    from service.config import ServiceConfig
    from topology.store.embedded import open_stores

    stores = open_stores(data_dir)
    app = create_app(stores, ServiceConfig.from_env(), clock=lambda: now)
    if gc_freeze:
        freeze_heap()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def post(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], samples: list[float]
) -> None:
    t = time.perf_counter()
    r = await client.post("/graphql", json={"query": query, "variables": variables})
    samples.append((time.perf_counter() - t) * 1000)
    body = r.json()
    if r.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"query failed: {r.status_code} {body.get('errors')}")


def fmt(p: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:8.2f}" for k, v in p.items()) + " ms"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 where /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """The server's CPU time per request over a phase: steadier than wall time on a shared machine."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = cpu_seconds(pid)

    def per_request(self, n: int) -> str:
        used = cpu_seconds(self.pid) - self.start
        return f"  server CPU {used * 1000 / max(n, 1):.2f} ms/request"


class ChildCpu:
    """The CPU of a server's child processes (the demo's simulated fleet) over a phase, per second of
    wall time: how busy the ingest the queries meet stays."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = self._used()
        self.began = time.monotonic()

    def _used(self) -> float:
        return sum(cpu_seconds(child) for child in _children(self.pid))  # 0 for one that ended

    def per_second(self) -> str:
        return f"  fleet process CPU {(self._used() - self.start) / (time.monotonic() - self.began):.2f} s/s"


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


async def measure(
    base: str, pid: int, names: list[str], hubs: list[str], now: float, args: argparse.Namespace
) -> None:
    picks = pick(names, args.queries, args)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        for _ in range(1200):  # wait for the server (reopening a store after an unclean close is slow)
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        warm: list[float] = []
        for name in picks[: min(50, len(picks))]:
            await post(client, Q1, {"name": name}, warm)

        print(f"# {load()}")
        phases = set(args.only.split(","))
        if "q1" in phases:
            await q1_sequential(client, pid, picks, "Q1 sequential")
        if "q1c" in phases:
            await q1_concurrent(client, pid, concurrent_picks(names, picks, args), args, "Q1 concurrent")

        samples: list[float] = []
        cpu = ServerCpu(pid)
        for _ in range(args.blast_runs if "q2" in phases else 0):
            for hub in hubs:
                await post(client, Q2, {"name": hub}, samples)
        if samples:
            print(f"{'Q2 blastRadius(depth: 5)':28s} 10 most depended-on x {args.blast_runs}: "
                  f"{fmt(percentiles(samples))}{cpu.per_request(len(samples))}")

        at = datetime.fromtimestamp(now - 30 * 60, tz=UTC).isoformat()
        samples = []
        cpu = ServerCpu(pid)
        for name in picks if "q3" in phases else ():
            await post(client, Q3, {"name": name, "at": at}, samples)
        if samples:
            print(f"{'Q3 at -30 min, 5 min window':28s} {len(picks)} services: {fmt(percentiles(samples))}"
                  f"{cpu.per_request(len(samples))}")
        print(f"# {load()}")


async def q1_sequential(client: httpx.AsyncClient, pid: int, picks: list[str], title: str) -> None:
    samples: list[float] = []
    cpu, fleet = ServerCpu(pid), ChildCpu(pid)
    for name in picks:
        await post(client, Q1, {"name": name}, samples)
    print(f"{title:28s} {len(picks)} services: {fmt(percentiles(samples))}{cpu.per_request(len(samples))}"
          f"{fleet.per_second()}", flush=True)


async def q1_concurrent(client: httpx.AsyncClient, pid: int, queue: list[str], args: argparse.Namespace,
                        title: str) -> None:
    """Q1 for every name in ``queue`` from ``--concurrency`` clients: requests/s and latency."""
    samples: list[float] = []
    cpu, fleet = ServerCpu(pid), ChildCpu(pid)

    async def worker() -> None:
        while queue:
            await post(client, Q1, {"name": queue.pop()}, samples)

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    wall = time.perf_counter() - t
    print(f"{title:28s} {args.concurrency} clients, {len(samples)} requests: "
          f"{len(samples) / wall:8.1f} requests/s  {fmt(percentiles(samples))}"
          f"{cpu.per_request(len(samples))}{fleet.per_second()}", flush=True)


def pick(names: list[str], n: int, args: argparse.Namespace) -> list[str]:
    """``n`` names at random (``--distinct``: without repeats)."""
    rnd = random.Random(args.seed + 1)
    return rnd.sample(names, min(n, len(names))) if args.distinct else [rnd.choice(names) for _ in range(n)]


def concurrent_picks(names: list[str], picks: list[str], args: argparse.Namespace) -> list[str]:
    """The names of the concurrent phase: the sequential ones twice (a widget asking again), or with
    ``--distinct`` twice as many others, none asked before."""
    if not args.distinct:
        return list(picks) * 2
    rest = [n for n in names if n not in set(picks)]
    return random.Random(args.seed + 2).sample(rest, min(2 * len(picks), len(rest)))


async def wait_until(client: httpx.AsyncClient, path: str, patience: float) -> None:
    end = time.monotonic() + patience
    while time.monotonic() < end:
        try:
            if (await client.get(path)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"the server did not answer {path} within {patience:.0f} s")


async def measure_demo(base: str, pid: int, args: argparse.Namespace) -> None:
    """Q1 against the running demo: sequential, then ``--concurrency`` clients."""
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        t = time.monotonic()
        await wait_until(client, "/healthz", args.ready_timeout)
        print(f"# /healthz answered after {time.monotonic() - t:.0f} s; waiting {args.settle:.0f} s more "
              f"({load()})", flush=True)
        await asyncio.sleep(args.settle)
        r = await client.post("/graphql", json={"query": NAMES})
        names = [e["node"]["name"] for e in r.json()["data"]["services"]["edges"]]
        if not names:
            raise SystemExit("the demo's catalog is empty")
        picks = pick(names, args.queries, args)
        print(f"# {load()}; {len(names)} names to ask about", flush=True)
        await q1_sequential(client, pid, picks, "Q1 sequential, ingesting")
        queue = concurrent_picks(names, picks, args)
        await q1_concurrent(client, pid, queue, args, "Q1 concurrent, ingesting")
        print(f"# {load()}")
        if args.control:
            await paused_control(client, pid, names, args)


async def paused_control(client: httpx.AsyncClient, pid: int, names: list[str],
                         args: argparse.Namespace) -> None:
    """Sequential Q1 in ``--control`` rounds of 100, alternately with the demo's fleet process (its
    child processes) running and stopped (SIGSTOP): what ingest still costs a query, against what the
    machine allows at the same moment without any."""
    children = _children(pid)
    if not children:
        print("# --control: the server has no child process (its fleet runs inside it)")
        return
    rnd = random.Random(args.seed + 3)
    samples: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.control):
        for paused in (False, True):
            for child in children if paused else ():
                os.kill(child, signal.SIGSTOP)
            try:
                await asyncio.sleep(1.0)
                for _ in range(100):
                    await post(client, Q1, {"name": rnd.choice(names)}, samples[paused])
            finally:
                for child in children if paused else ():
                    os.kill(child, signal.SIGCONT)
    for paused in (False, True):
        title = "Q1 sequential, fleet stopped" if paused else "Q1 sequential, ingesting"
        got = samples[paused]
        print(f"{title:28s} {len(got)} in {args.control} rounds: {fmt(percentiles(got))}")
    print(f"# {load()}")


def stop(server: subprocess.Popen[Any], patience: float) -> None:
    """Interrupt the server as Ctrl-C would (it closes its stores), killing it after ``patience`` s."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def run_demo(args: argparse.Namespace) -> int:
    repo = pathlib.Path(args.repo).resolve()
    data = tempfile.mkdtemp(prefix="query-http-demo-")
    port = free_port()
    log = pathlib.Path(data) / "server.log"
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "unknown"
    print(f"# topology demo --services {args.services} from {repo} (server commit {commit}); Q1 pages hold "
          "the default 100 dependencies")
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "demo", "--services", str(args.services), "--port", str(port),
         "--data-dir", str(pathlib.Path(data) / "store")],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo), "TOPOLOGY_GRAPHIQL": "false"},
        stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        asyncio.run(measure_demo(f"http://127.0.0.1:{port}", server.pid, args))
    finally:
        stop(server, 60)
        if server.returncode not in (0, -2, -15):
            print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)
    return 0


def _phases(text: str) -> str:
    unknown = set(text.split(",")) - {"q1", "q1c", "q2", "q3"}
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phases {sorted(unknown)}: use q1, q1c, q2, q3")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--blast-runs", type=int, default=10)
    p.add_argument("--only", default="q1,q1c,q2,q3", type=_phases,
                   help="the phases to run, comma-separated (q1: Q1 sequential, q1c: Q1 concurrent, q2, q3)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data-dir", help="where to build the store (default: a temporary directory)")
    p.add_argument("--reuse", action="store_true",
                   help="measure the store already in --data-dir (built earlier with the same --services, "
                   "--minutes and --seed) instead of building it again")
    p.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                   help="the server does not freeze the heap after opening the stores (topology serve does)")
    p.add_argument("--distinct", action="store_true",
                   help="no name asked twice (the concurrent phase asks other names than the sequential one)")
    p.add_argument("--demo", action="store_true",
                   help="measure Q1 against `topology demo --services N` while it ingests (see above)")
    p.add_argument("--settle", type=float, default=60.0,
                   help="--demo: seconds to wait after /healthz answers before measuring")
    p.add_argument("--ready-timeout", type=float, default=1800.0,
                   help="--demo: seconds to wait for /healthz")
    p.add_argument("--control", type=int, default=0, metavar="ROUNDS",
                   help="--demo: then ROUNDS x 100 sequential Q1 with the fleet process running, and as many "
                   "with it stopped (SIGSTOP), alternately")
    p.add_argument("--repo", default=str(pathlib.Path(__file__).resolve().parent.parent),
                   help="--demo: the checkout the server runs from")
    p.add_argument("--serve", nargs=3, metavar=("DATA_DIR", "PORT", "NOW"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), float(args.serve[2]), args.gc_freeze)
        return 0

    print(header("GraphQL over HTTP (bench/query_http.py)"))
    if args.demo:
        return run_demo(args)
    if args.reuse and not args.data_dir:
        p.error("--reuse needs --data-dir")
    root = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix="query-http-"))
    t = time.perf_counter()
    if args.reuse:
        now, names, hubs = rebuild_answers(args.services, args.minutes, args.seed)
        made = f"reused from {root}"
    else:
        if root.exists():
            shutil.rmtree(root)
        now, names, hubs = asyncio.run(build(root, args.services, args.minutes, args.seed))
        made = f"built in {time.perf_counter() - t:.0f} s"
    print(f"# fleet: {args.services} services, {args.minutes} minutes of windows, {made}; "
          "one uvicorn process, Q1 pages hold the default 100 dependencies"
          + ("" if args.gc_freeze else "; server without gc.freeze()"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.query_http", "--serve", str(root), str(port), str(now),
         *([] if args.gc_freeze else ["--no-gc-freeze"])],
        env={**os.environ, "TOPOLOGY_GRAPHIQL": "false"},
    )
    try:
        asyncio.run(measure(f"http://127.0.0.1:{port}", server.pid, names, hubs, now, args))
    finally:
        stop(server, 20)
        if not args.data_dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

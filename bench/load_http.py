"""Many concurrent GraphQL clients against one ``topology demo`` while ingest continues (issue 8: Load).

    .venv/bin/python -m bench.load_http [--services 1000] [--clients 200] [--seconds 60] [--repo DIR]

Starts ``topology demo`` (``--repo``: run the server from another checkout, e.g. a ``git worktree``
of an older commit, to measure "before"), waits until its live map answers and its history is filled
(the demo's start-up; ``--during-fill`` measures during it instead), then for ``--seconds``:

* ``--clients`` concurrent keep-alive clients, each looping over a random mix of ``service`` with
  ``upstream``/``downstream`` (depth 2), ``blastRadius`` and ``topology`` pages (100 edges, following
  the cursor);
* ``topology simulate --http`` (from this checkout) POSTing a second simulated fleet's traffic into
  the same server (flows, OTLP spans and metrics, catalog, health, leases) at ``--ingest-rate``
  simulated seconds per second;
* a separate probe process asking ``/healthz`` every 100 ms (its own process, so this client's
  event loop does not count in the probe's latency);
* the server's RSS from ``/proc`` every second.

Prints errors (HTTP status other than 200, GraphQL ``errors``, transport errors), requests/s and
latency percentiles per query kind, the ``/healthz`` percentiles and the RSS over time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.machine import header, percentiles

SERVICE = """query S($name: String!) { service(name: $name) { name tier owner { team }
  upstream(depth: 2) { totalCount edges { node { depth service { name } } } }
  downstream(depth: 2) { totalCount edges { node { depth service { name } } } } } }"""
BLAST = """query B($name: String!) { blastRadius(name: $name, depth: 5) { total countsByTier { tier count }
  teams { team } } }"""
PAGE = """query T($after: String) { topology(first: 100, after: $after) { edges { source target layers }
  pageInfo { hasNextPage endCursor } } }"""
NAMES = "{ services(first: 1000) { edges { node { name } } } }"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def probe(port: int, seconds: float) -> int:
    """The /healthz probe (run as its own process): one latency in ms per line, -1 for a failure."""
    end = time.monotonic() + seconds
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            ms = (time.perf_counter() - t) * 1000 if r.status == 200 else -1.0
        except (OSError, http.client.HTTPException):
            ms = -1.0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        print(f"{ms:.3f}", flush=True)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - t)))
    return 0


async def wait_ready(client: httpx.AsyncClient, patience: float) -> list[str]:
    """Wait until the demo's map answers; return its service names."""
    end = time.monotonic() + patience
    while time.monotonic() < end:
        with contextlib.suppress(httpx.TransportError, ValueError, KeyError, TypeError):
            r = await client.post("/graphql", json={"query": "{ topology(first: 10) { edges { source } } }"})
            if r.status_code == 200 and r.json()["data"]["topology"]["edges"]:
                names = (await client.post("/graphql", json={"query": NAMES})).json()
                return [e["node"]["name"] for e in names["data"]["services"]["edges"]]
        await asyncio.sleep(1.0)
    raise SystemExit(f"the demo did not answer within {patience:.0f} s")


class Load:
    def __init__(self, names: list[str], seed: int) -> None:
        self.names = names
        self.rnd = random.Random(seed)
        self.latency: dict[str, list[float]] = {"service": [], "blastRadius": [], "topology": []}
        self.errors: Counter[str] = Counter()

    async def client(self, c: httpx.AsyncClient, end: float) -> None:
        cursor: str | None = None
        while time.monotonic() < end:
            kind = self.rnd.choice(("service", "service", "blastRadius", "topology"))
            if kind == "topology":
                body: dict[str, Any] = {"query": PAGE, "variables": {"after": cursor}}
            else:
                body = {"query": SERVICE if kind == "service" else BLAST,
                        "variables": {"name": self.rnd.choice(self.names)}}
            t = time.perf_counter()
            try:
                r = await c.post("/graphql", json=body)
            except httpx.HTTPError as e:
                self.errors[f"transport {type(e).__name__}"] += 1
                continue
            self.latency[kind].append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                self.errors[f"HTTP {r.status_code}"] += 1
                continue
            answer = r.json()
            if answer.get("errors"):
                codes = {str((e.get("extensions") or {}).get("code")) for e in answer["errors"]}
                self.errors["GraphQL " + ",".join(sorted(codes))] += 1
            elif kind == "topology":
                info = answer["data"]["topology"]["pageInfo"]
                cursor = info["endCursor"] if info["hasNextPage"] else None


def run(args: argparse.Namespace) -> None:
    repo = Path(args.repo).resolve()
    here = Path(__file__).resolve().parent.parent
    data = tempfile.mkdtemp(prefix="load-http-")
    port = free_port()
    env = {**os.environ, "LOG_LEVEL": "INFO", "PYTHONPATH": str(repo)}
    log = Path(data) / "server.log"  # the demo says there when its history is filled
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "demo", "--services", str(args.services), "--port", str(port),
         "--data-dir", str(Path(data) / "store")], cwd=repo, env=env, stdout=subprocess.DEVNULL,
        stderr=log.open("wb"))
    sim_env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(here)}
    base = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[Any]] = []

    def start_side_load() -> None:
        """Ingest into the same server, and the /healthz probe: started once the map answers."""
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "service.cli", "simulate", "--http", base, "--services",
             str(args.services), "--seed", "7", "--minutes", str(args.seconds * args.ingest_rate / 60),
             "--rate", str(args.ingest_rate), "--step", "5"],
            cwd=here, env=sim_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.load_http", "--probe", str(port), "--seconds", str(args.seconds)],
            cwd=here, env=sim_env, stdout=subprocess.PIPE, text=True))

    try:
        filled = None if args.during_fill else lambda: b"history filled" in log.read_bytes()
        load, rss, wall = asyncio.run(measure(args, base, server.pid, repo, start_side_load, filled))
        probe_out, _ = procs[1].communicate(timeout=60)
        report(args, load, rss, wall, [float(x) for x in probe_out.split()], server.pid, procs[0].poll())
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        server.terminate()
        for p in [*procs, server]:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if procs and procs[0].returncode not in (0, -15) and procs[0].stderr:
            print("  simulate: " + procs[0].stderr.read().decode(errors="replace")[-600:], file=sys.stderr)
        err = log.read_text(errors="replace") if log.exists() else ""
        if server.returncode not in (0, -15) and err:
            print(err[-2000:], file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)


async def measure(args: argparse.Namespace, base: str, pid: int, repo: Path, start_side_load: Any,
                  filled: Any) -> tuple[Load, list[tuple[float, int]], float]:
    pool = max(1, args.clients)
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as c:
        names = await wait_ready(c, args.ready_timeout)
        waited = time.monotonic()
        while filled is not None and not filled():  # the demo's start-up: its history fill
            if time.monotonic() - waited > args.ready_timeout:
                raise SystemExit("the demo did not finish its history fill")
            await asyncio.sleep(1.0)
        print(f"# measuring {'during' if filled is None else 'after'} the demo's history fill "
              f"(waited {time.monotonic() - waited:.0f} s)", flush=True)
        print(f"# server {repo} pid {pid}, {len(names)} services; RSS at start "
              f"{rss_kib(pid) / 1024:.0f} MiB; load average {os.getloadavg()[0]:.1f}", flush=True)
        start_side_load()
        load = Load(names, args.seed)
        rss: list[tuple[float, int]] = []
        t0 = time.monotonic()
        end = t0 + args.seconds

        async def sample() -> None:
            while time.monotonic() < end:
                rss.append((time.monotonic() - t0, rss_kib(pid)))
                await asyncio.sleep(1.0)

        await asyncio.gather(sample(), *(load.client(c, end) for _ in range(args.clients)))
        return load, rss, time.monotonic() - t0


def report(args: argparse.Namespace, load: Load, rss: list[tuple[float, int]], wall: float,
           healthz: list[float], pid: int, sim_rc: int | None) -> None:
    def fmt(samples: list[float]) -> str:
        return "  ".join(f"{k} {v:8.1f}" for k, v in percentiles(samples).items()) + " ms"

    total = sum(len(v) for v in load.latency.values())
    wall = max(wall, 1e-9)
    print(f"{args.clients} clients, {wall:.0f} s: {total} queries, {total / wall:.1f}/s, "
          f"errors {sum(load.errors.values())} {dict(load.errors)}")
    for kind, samples in load.latency.items():
        print(f"  {kind:12s} {len(samples):6d}  {fmt(samples)}")
    ok = [x for x in healthz if x >= 0]
    print(f"  /healthz     {len(healthz):6d}  {fmt(ok)}, failed {len(healthz) - len(ok)}")
    steps = [f"{t:.0f}s {kib / 1024:.0f}" for t, kib in rss[:: max(1, len(rss) // 8)]]
    print(f"  RSS MiB over time: {', '.join(steps)}; max {max(k for _, k in rss) / 1024:.0f}, "
          f"peak (VmHWM) {rss_kib(pid, 'VmHWM') / 1024:.0f}")
    print(f"  ingest: simulate --http {'still running' if sim_rc is None else f'exited {sim_rc}'}"
          f"; load average {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--ingest-rate", type=float, default=2.0, help="simulated seconds of ingest per second")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent),
                   help="checkout the server runs from (default: this one)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--during-fill", action="store_true",
                   help="measure as soon as the live map answers, while the demo still fills its history "
                        "(default: once it is filled, the demo's steady state)")
    p.add_argument("--probe", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        return probe(args.probe, args.seconds)
    print(header(f"HTTP load: {args.clients} clients x {args.seconds:.0f} s on the {args.services}-service "
                 "demo with ingest"), flush=True)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The server side of OTLP/HTTP span ingest: CPU per span, burst against paced, and idle (issue 12 item 1).

    .venv/bin/python -m bench.otlp_http_cost [--services 1000] [--minutes 4] [--rate 2200] [--idle 30]
                                             [--repo DIR ...] [--rounds 1] [--modes idle burst paced]
                                             [--profile DIR]

For each round and each ``--repo`` (a checkout whose server is measured, e.g. a ``git worktree`` of an
older commit for "before"; several are interleaved round by round), and each mode, a fresh
``topology serve --embedded`` on a data directory and port of its own:

* ``idle``: nothing is sent; the server's CPU over ``--idle`` seconds, after it answered ``/healthz``
  and settled for 3 s, as CPU-seconds per minute;
* ``burst``: the simulator's span payloads (``topology simulate --out``, ``--minutes`` of a
  ``--services`` fleet starting now, written before the server starts) POSTed to ``/v1/traces`` over 4
  keep-alive connections as fast as the server answers;
* ``paced``: the same payloads at ``--rate`` spans per second (a steady trickle; each post leaves at
  its scheduled time, still over 4 connections).

CPU is the server process's utime + stime (``/proc/<pid>/stat``) from just before the first post until
the flushes after the last one are done (``--tail`` seconds: the pairing wait, so the spans' expiry
and their last windows are counted too). A 429 is sent again after its ``Retry-After``. Printed per
run: spans per CPU-second, the CPU-seconds, the wall time, the spans the server counted, 429s and the
spans the pairer dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.late_burst import counts, wait_up
from bench.load_http import free_port
from bench.machine import header

HERE = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
MODES = ("idle", "burst", "paced")


def proc_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    return sum(proc_seconds(pid))


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling process ``pid``'s threads at 50 Hz without stopping it, until it exits or is sent
    SIGINT; collapsed stacks (``--format raw``) to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking",
                             "-r", "50", "--format", "raw", "-o", str(out), "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def span_counts(files: list[Path]) -> list[int]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    return [sum(len(ss.spans) for rs in ExportTraceServiceRequest.FromString(f.read_bytes()).resource_spans
                for ss in rs.scope_spans) for f in files]


def simulate(services: int, minutes: float, out: Path, repo: Path = HERE) -> list[Path]:
    """``minutes`` of a fleet's spans starting now, written to ``out`` by the simulator of ``repo``."""
    subprocess.run(
        [sys.executable, "-m", "service.cli", "simulate", "--out", str(out), "--services", str(services),
         "--minutes", str(minutes), "--start", str(int(time.time()))],
        cwd=repo, env={**os.environ, "LOG_LEVEL": "ERROR", "PYTHONPATH": str(repo)}, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return sorted((out / "otlp_spans").iterdir())


async def post(port: int, bodies: list[bytes], spans: list[int], rate: float | None,
               connections: int = 4) -> int:
    """POST ``bodies`` over ``connections`` keep-alive connections, paced at ``rate`` spans/s if given;
    returns the 429/503 answers."""
    import httpx

    order = iter(range(len(bodies)))
    due = [0.0]
    for n in spans[:-1]:
        due.append(due[-1] + n / rate if rate else 0.0)
    busy = 0
    t0 = time.monotonic()

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal busy
        for i in order:
            if rate:
                await asyncio.sleep(max(0.0, t0 + due[i] - time.monotonic()))
            while True:
                r = await client.post("/v1/traces", content=bodies[i],
                                      headers={"content-type": "application/x-protobuf"})
                if r.status_code not in (429, 503):
                    break
                busy += 1
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            if r.status_code != 200:
                raise SystemExit(f"POST /v1/traces answered {r.status_code}: {r.text[:200]}")

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as client:
        await asyncio.gather(*(sender(client) for _ in range(connections)))
    return busy


def run(repo: Path, mode: str, args: argparse.Namespace, bodies: list[bytes],
        spans: list[int]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"otlp-cost-{mode}-"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--embedded", str(work / "store"),
         "--port", str(port)],
        cwd=repo, env={**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("wb"))
    try:
        wait_up(port)
        time.sleep(3.0)
        c0, t0 = cpu_seconds(server.pid), time.monotonic()
        if mode == "idle":
            time.sleep(args.idle)
            cpu, wall = cpu_seconds(server.pid) - c0, time.monotonic() - t0
            return {"mode": mode, "cpu": cpu, "wall": wall, "per_min": cpu / wall * 60}
        spy = None
        if args.profile:  # py-spy samples the server's threads (not blocking it) until the tail ends
            spy = py_spy(server.pid, Path(args.profile) / f"{repo.name}-{mode}-{int(time.time())}.txt")
        busy = asyncio.run(post(port, bodies, spans, args.rate if mode == "paced" else None))
        posted = time.monotonic() - t0
        time.sleep(args.tail)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        cpu, wall = cpu_seconds(server.pid) - c0, time.monotonic() - t0
        seen = counts(port)
        return {"mode": mode, "cpu": cpu, "wall": wall, "posted": posted, "busy": busy,
                "spans": seen["spans"], "dropped": seen["pairing_dropped"], "per_cpu_s": sum(spans) / cpu}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


def line(repo: Path, r: dict[str, Any]) -> str:
    if r["mode"] == "idle":
        return (f"{repo.name:>14s}  idle   {r['per_min']:.3f} CPU-s per minute "
                f"({r['cpu']:.2f} CPU-s in {r['wall']:.0f} s)")
    return (f"{repo.name:>14s}  {r['mode']:5s}  {r['per_cpu_s'] / 1000:6.1f} k spans per CPU-second "
            f"({r['cpu']:.2f} CPU-s; posted in {r['posted']:.1f} s, +{r['wall'] - r['posted']:.0f} s tail; "
            f"server counted {r['spans']:.0f} spans, 429s {r['busy']}, pairer dropped {r['dropped']:.0f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--rate", type=float, default=2200.0, help="spans per second in the paced mode")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of the idle measurement")
    p.add_argument("--tail", type=float, default=12.0, help="seconds measured after the last post")
    p.add_argument("--repo", nargs="+", default=[str(HERE)], help="checkouts whose servers are measured")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--sim-repo", default=str(HERE), help="checkout whose simulator writes the spans")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--profile", help="write a py-spy profile (collapsed stacks) of each server run here")
    args = p.parse_args(argv)
    repos = [Path(r).resolve() for r in args.repo]
    print(header(f"OTLP/HTTP span ingest, server CPU: {args.services} services, "
                 f"{args.minutes:g} simulated min"))
    print(f"# servers: {', '.join(str(r) for r in repos)}; 4 keep-alive connections; paced at {args.rate:g} "
          f"spans/s; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[tuple[Path, str], list[dict[str, Any]]] = {}
    sim = Path(tempfile.mkdtemp(prefix="otlp-cost-sim-"))
    try:
        for _ in range(args.rounds):
            for mode in args.modes:
                for repo in repos:
                    bodies: list[bytes] = []
                    spans: list[int] = []
                    if mode != "idle":  # spans of "now", written before the server starts
                        shutil.rmtree(sim, ignore_errors=True)
                        files = simulate(args.services, args.minutes, sim, Path(args.sim_repo))
                        bodies, spans = [f.read_bytes() for f in files], span_counts(files)
                    r = run(repo, mode, args, bodies, spans)
                    results.setdefault((repo, mode), []).append(r)
                    print(line(repo, r), flush=True)
    finally:
        shutil.rmtree(sim, ignore_errors=True)
    if args.rounds > 1:
        print("# medians")
        for (repo, mode), rs in results.items():
            key = "per_min" if mode == "idle" else "per_cpu_s"
            med = statistics.median(r[key] for r in rs)
            print(f"{repo.name:>14s}  {mode:5s}  " + (f"{med:.3f} CPU-s per minute" if mode == "idle"
                                                       else f"{med / 1000:.1f} k spans per CPU-second"))
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

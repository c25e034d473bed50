"""The fixed CPU cost of an OTLP/HTTP request, and OTLP/HTTP metrics points per CPU-second (issue 12 item 1).

    .venv/bin/python -m bench.http_request_cost [--modes one metrics] [--requests 3000] [--services 1000]
                                                [--minutes 2] [--repo DIR ...] [--rounds 1] [--auth]
                                                [--profile DIR]

For each round, mode and ``--repo`` (a checkout whose server is measured, e.g. a ``git worktree`` of an
older commit for "before"; several are interleaved run by run), a fresh ``topology serve --embedded``
on a data directory and port of its own:

* ``one``: ``--requests`` POSTs to ``/v1/traces`` of one span each (distinct ids, a server span of a
  service calling another, timed now), over 4 keep-alive connections as fast as the server answers:
  what a request costs before its spans are touched (HTTP, routing, middlewares, admission), printed
  as server CPU per request;
* ``ipc``: ``--points`` metric points of ``bench.stage_ipc``'s fleet (2,000 services, four dialects,
  ~16 points a request; the in-process IPC bench's requests), timed from 15 s after they are made (so
  after the server started), POSTed to
  ``/v1/metrics`` in order over 4 connections as fast as it answers: points per server CPU-second;
* ``metrics``: the simulator's metrics requests (``topology simulate --out``, ``--minutes`` of a
  ``--services`` fleet starting now, written before the server starts) POSTed to ``/v1/metrics`` over 4
  connections as fast as it answers, printed as points per server CPU-second.

CPU is the server process's utime + stime (``/proc/<pid>/stat``) from just before the first post until
2 s after the last answer (``--tail``), after ``--warmup`` requests (and a tail) that are not measured:
a server's first requests import and warm up what requests use. The client is a small raw HTTP/1.1
client (pre-built requests, ``Content-Length`` answers) so that it takes little of the machine's CPU
from the server. ``--auth`` serves with a tokens file and sends its bearer token (authentication on).
``--profile DIR`` writes a py-spy profile (collapsed stacks) of each run's server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.late_burst import wait_up
from bench.load_http import free_port
from bench.machine import header
from bench.otlp_http_cost import cpu_seconds, proc_seconds, py_spy, simulate

HERE = Path(__file__).resolve().parent.parent
MODES = ("one", "metrics", "ipc")
TOKEN = "bench-http-request-cost-token"


def kernel_seconds(pid: int) -> float:
    """stime of process ``pid`` (all its threads), in seconds: the kernel's share of :func:`cpu_seconds`."""
    return proc_seconds(pid)[1]


def one_span_bodies(n: int, seed: int = 7) -> list[bytes]:
    """``n`` ExportTraceServiceRequests of one server span each, distinct ids, ending now."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    rng = random.Random(seed)
    now = time.time_ns()
    out = []
    for i in range(n):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key="service.name",
                                               value=AnyValue(string_value=f"svc-{i % 50}")))
        span = rs.scope_spans.add().spans.add()
        span.trace_id, span.span_id = rng.randbytes(16), rng.randbytes(8)
        span.parent_span_id = rng.randbytes(8)
        span.name, span.kind = "GET /thing", Span.SPAN_KIND_SERVER
        span.start_time_unix_nano, span.end_time_unix_nano = now - 5_000_000, now
        out.append(req.SerializeToString())
    return out


def ipc_bodies(points: int) -> tuple[list[bytes], list[int]]:
    """``bench.stage_ipc``'s requests of about ``points`` points, their event times starting 15 s from now
    (after the server has started: windows before its start would take the late-data road)."""
    from bench import stage_ipc
    from topology.wire.metric_columns import metric_columns

    saved = stage_ipc.T0
    try:
        stage_ipc.T0 = int(time.time()) + 15 - stage_ipc.INTERVAL
        out, _ = stage_ipc.generate(points, 2000, 1)
    finally:
        stage_ipc.T0 = saved
    bodies = [b for _, b in out]
    return bodies, [len(metric_columns(b).points) for b in bodies]


def metric_points(files: list[Path]) -> list[int]:
    from topology.wire.otlp import metrics_view

    def points(data: bytes) -> int:
        n = 0
        for rm in metrics_view(data).resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for kind in ("gauge", "sum", "histogram", "exponential_histogram", "summary"):
                        if m.HasField(kind):
                            n += len(getattr(m, kind).data_points)
        return n

    return [points(f.read_bytes()) for f in files]


def request_bytes(path: str, body: bytes, port: int, token: str | None) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/x-protobuf\r\n"
            f"content-length: {len(body)}\r\nuser-agent: bench\r\n")
    if token:
        head += f"authorization: Bearer {token}\r\n"
    return head.encode() + b"\r\n" + body


async def post_all(port: int, requests: list[bytes], connections: int = 4) -> tuple[int, int]:
    """Send every request (pre-built bytes) over ``connections`` keep-alive connections, one at a time on
    each; returns (200s, 429/503s resent after their Retry-After)."""
    order = iter(range(len(requests)))
    ok = busy = 0

    async def conn() -> None:
        nonlocal ok, busy
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in order:
                while True:
                    writer.write(requests[i])
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    length = 0
                    retry = 1.0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        name = name.strip().lower()
                        if name == b"content-length":
                            length = int(value)
                        elif name == b"retry-after":
                            retry = float(value)
                    body = await reader.readexactly(length)
                    if status in (429, 503):
                        busy += 1
                        await asyncio.sleep(retry)
                        continue
                    if status != 200:
                        raise SystemExit(f"answered {status}: {body[:200]!r}")
                    ok += 1
                    break
        finally:
            writer.close()

    await asyncio.gather(*(conn() for _ in range(connections)))
    return ok, busy


def run(repo: Path, mode: str, args: argparse.Namespace, bodies: list[bytes],
        items: list[int], warm: list[bytes]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"http-cost-{mode}-"))
    port = free_port()
    env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(repo)}
    token = None
    if args.auth:
        token = TOKEN
        from service.tokens import hash_token

        line = json.dumps({"name": "bench", "sha256": hash_token(TOKEN), "scopes": ["ingest", "read"]})
        (work / "tokens").write_text(line + "\n")
        env["TOPOLOGY_TOKENS_FILE"] = str(work / "tokens")
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--embedded", str(work / "store"),
         "--port", str(port)],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("wb"))
    path = "/v1/traces" if mode == "one" else "/v1/metrics"
    requests = [request_bytes(path, b, port, token) for b in bodies]
    warmups = [request_bytes(path, b, port, token) for b in warm]
    try:
        wait_up(port)
        time.sleep(3.0)
        spy = None
        if args.profile:
            spy = py_spy(server.pid, Path(args.profile) / f"{repo.name}-{mode}-{int(time.time())}.txt")
            time.sleep(1.0)
        if args.warmup:  # first requests import and warm what a request uses: not what each costs
            asyncio.run(post_all(port, warmups[:args.warmup]))
            time.sleep(args.tail)
        c0, t0, k0 = cpu_seconds(server.pid), time.monotonic(), kernel_seconds(server.pid)
        ok, busy = asyncio.run(post_all(port, requests))
        posted = time.monotonic() - t0
        time.sleep(args.tail)
        cpu, wall = cpu_seconds(server.pid) - c0, time.monotonic() - t0
        kernel = kernel_seconds(server.pid) - k0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        return {"mode": mode, "cpu": cpu, "kernel": kernel, "wall": wall, "posted": posted, "ok": ok,
                "busy": busy, "requests": len(requests), "items": sum(items)}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.returncode not in (0, -signal.SIGTERM):
            print((work / "server.log").read_text()[-2000:], file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


def figure(r: dict[str, Any]) -> float:
    """µs of server CPU per request (one), or points per server CPU-second (metrics)."""
    return r["cpu"] / r["requests"] * 1e6 if r["mode"] == "one" else r["items"] / r["cpu"]


def line(repo: Path, r: dict[str, Any]) -> str:
    what = (f"{figure(r):7.0f} µs server CPU per request" if r["mode"] == "one"
            else f"{figure(r) / 1000:7.1f} k points per server CPU-second")
    return (f"{repo.name:>16s}  {r['mode']:7s}  {what}  ({r['cpu']:.2f} CPU-s of which {r['kernel']:.2f} in "
            f"the kernel, {r['requests']} requests, "
            f"{r['items']} items, posted in {r['posted']:.1f} s, 429/503 {r['busy']}; load "
            f"{os.getloadavg()[0]:.1f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--requests", type=int, default=3000, help="one-span requests per run")
    p.add_argument("--points", type=int, default=300_000, help="metric points of the ipc mode")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=2.0, help="simulated minutes of metrics")
    p.add_argument("--tail", type=float, default=2.0, help="seconds measured after the last answer")
    p.add_argument("--repo", nargs="+", default=[str(HERE)], help="checkouts whose servers are measured")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--warmup", type=int, default=200, help="requests sent (other spans, or the last metric "
                   "requests) before the measurement")
    p.add_argument("--auth", action="store_true", help="serve with a tokens file and send the token")
    p.add_argument("--profile", help="write a py-spy profile (collapsed stacks) of each server run here")
    args = p.parse_args(argv)
    repos = [Path(r).resolve() for r in args.repo]
    print(header(f"OTLP/HTTP fixed cost per request and metrics points: {args.requests} one-span requests, "
                 f"{args.services} services x {args.minutes:g} simulated min of metrics"))
    print(f"# servers: {', '.join(str(r) for r in repos)}; 4 keep-alive connections; auth "
          f"{'on' if args.auth else 'off'}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[tuple[Path, str], list[dict[str, Any]]] = {}
    sim = Path(tempfile.mkdtemp(prefix="http-cost-sim-"))
    try:
        for _ in range(args.rounds):
            for mode in args.modes:
                for repo in repos:
                    if mode == "one":
                        bodies, items = one_span_bodies(args.requests), [1] * args.requests
                    elif mode == "ipc":
                        bodies, items = ipc_bodies(args.points)
                    else:  # metrics of "now", written before the server starts
                        shutil.rmtree(sim, ignore_errors=True)
                        simulate(args.services, args.minutes, sim)  # its spans and metrics: the metrics
                        files = sorted((sim / "otlp_metrics").iterdir())
                        bodies, items = [f.read_bytes() for f in files], metric_points(files)
                    warm = one_span_bodies(args.warmup, seed=8) if mode == "one" else bodies[::-1]
                    r = run(repo, mode, args, bodies, items, warm)
                    results.setdefault((repo, mode), []).append(r)
                    print(line(repo, r), flush=True)
    finally:
        shutil.rmtree(sim, ignore_errors=True)
    if args.rounds > 1:
        print("# medians")
        for (repo, mode), rs in results.items():
            med = statistics.median(figure(r) for r in rs)
            print(f"{repo.name:>16s}  {mode:7s}  " + (f"{med:.0f} µs per request" if mode == "one"
                                                       else f"{med / 1000:.1f} k points per CPU-second"))
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Demo start to first answer: `topology demo` on a fresh directory until a multi-hop query answers.

    .venv/bin/python -m bench.demo_start [--services 1000] [--runs 3]

Measures, per run, the seconds from starting the process to (a) the first HTTP answer and (b) the
first non-empty ``upstream(depth: 3)`` of an edge gateway, then (c) until a query 30 minutes in the
past answers (the history fill). Target for (b): 30 s at 1,000 services.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

import httpx

from bench.machine import header

Q = (
    'query($at: DateTime) { service(name: "edge-gateway") '
    '{ upstream(depth: 3, at: $at, window: "5m") { totalCount } } }'
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one(services: int, history_timeout: float) -> tuple[float, float, float | None]:
    data = tempfile.mkdtemp(prefix="demo-start-")
    port = _free_port()
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        "demo",
        "--services",
        str(services),
        "--port",
        str(port),
        "--data-dir",
        data,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/graphql"
    first_http = first_answer = history = None
    try:
        async with httpx.AsyncClient(timeout=30) as c:
            while history is None:
                if time.monotonic() - t0 > history_timeout:
                    break
                try:
                    live = (await c.post(base, json={"query": Q})).json()
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
                    continue
                first_http = first_http or time.monotonic() - t0
                svc = (live.get("data") or {}).get("service")
                if first_answer is None and svc and svc["upstream"]["totalCount"] > 0:
                    first_answer = time.monotonic() - t0
                if first_answer is not None:
                    at = datetime.fromtimestamp(time.time() - 1800, UTC).isoformat()
                    past = (await c.post(base, json={"query": Q, "variables": {"at": at}})).json()
                    psvc = (past.get("data") or {}).get("service")
                    if psvc and psvc["upstream"]["totalCount"] > 0:
                        history = time.monotonic() - t0
                await asyncio.sleep(0.5)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 60)
    if first_http is None or first_answer is None:
        raise SystemExit("the demo never answered")
    return first_http, first_answer, history


async def run(args: argparse.Namespace) -> None:
    print(header(f"demo start to first answer, {args.services} services"))
    answers = []
    for i in range(args.runs):
        http, first, hist = await one(args.services, args.history_timeout)
        answers.append(first)
        h = f"{hist:.1f} s" if hist is not None else f"not within {args.history_timeout:.0f} s"
        print(
            f"run {i + 1}: first HTTP answer {http:.1f} s, first multi-hop answer {first:.1f} s, "
            f"30-minutes-ago answer {h}",
            flush=True,
        )
    print(f"median first multi-hop answer {statistics.median(answers):.1f} s   (target <= 30 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--history-timeout", type=float, default=600.0)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()

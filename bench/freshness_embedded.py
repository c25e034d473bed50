"""Freshness on the embedded default: a new connection -> its edge visible over GraphQL.

    .venv/bin/python -m bench.freshness_embedded [--samples 40]

Starts ``topology serve --embedded`` on a fresh directory, registers address leases, then for each
sample POSTs a flow batch for a connection between two apps that never talked before (the record is
stamped with the time it is sent, as the agent does when a short connection closes) and polls
``service(name) { upstream(depth: 1) }`` over HTTP until the edge shows up. Prints p50/p95/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time

import httpx
import numpy as np

from bench.machine import header, percentiles
from topology.wire import flow

FLOWS = {"content-type": "application/x-topology-flows"}  # each ingest route takes its own type
QUERY = (
    "query($n: String!) { service(name: $n) { upstream(depth: 1) { edges { node { service { name } } } } } }"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batch(i: int, now: float) -> bytes:
    r = np.zeros(1, dtype=flow.RECORD_V1)
    r["start_ms"], r["end_ms"] = int(now * 1000) - 50, int(now * 1000)
    r["local_addr"], r["remote_addr"] = (
        flow.pack_ip(f"10.1.{i // 250}.{i % 250 + 1}"),
        flow.pack_ip(f"10.2.{i // 250}.{i % 250 + 1}"),
    )
    r["local_port"], r["remote_port"], r["protocol"], r["role"] = 40000, 443, flow.PROTO_TCP, flow.ROLE_CLIENT
    r["local_app"], r["connections"], r["bytes_sent"] = 1, 1, 512
    return flow.encode(r, ["", f"fresh-client-{i}"], host="bench", emitted_ms=int(now * 1000))


async def run(args: argparse.Namespace) -> None:
    print(header("freshness, embedded: new connection -> edge over GraphQL"))
    data = tempfile.mkdtemp(prefix="fresh-")
    port = _free_port()
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--embedded",
        data,
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    samples: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            for _ in range(200):
                try:
                    if (await c.get(base + "/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            now = time.time()
            leases = [
                {
                    "ip": f"10.2.{i // 250}.{i % 250 + 1}",
                    "owner": f"fresh-server-{i}",
                    "kind": "WORKLOAD",
                    "start": now - 60,
                }
                for i in range(args.samples)
            ]
            (await c.post(base + "/ingest/addresses", json=leases)).raise_for_status()
            for i in range(args.samples):
                t0 = time.time()
                r = await c.post(base + "/ingest/flows", content=_batch(i, t0), headers=FLOWS)
                r.raise_for_status()
                name = f"fresh-client-{i}"
                while True:
                    r = (
                        await c.post(base + "/graphql", json={"query": QUERY, "variables": {"n": name}})
                    ).json()
                    svc = (r.get("data") or {}).get("service")
                    if svc and svc["upstream"]["edges"]:
                        samples.append((time.time() - t0) * 1000)
                        break
                    if time.time() - t0 > 120:
                        raise SystemExit(f"edge for {name} did not appear within 120 s")
                    await asyncio.sleep(0.05)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    p = percentiles(samples)
    print(
        f"samples {len(samples)}  p50 {p['p50'] / 1000:.2f} s  p95 {p['p95'] / 1000:.2f} s  "
        f"p99 {p['p99'] / 1000:.2f} s  max {p['max'] / 1000:.2f} s   (target p95 <= 2 s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=40)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()

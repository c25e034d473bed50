"""Bursts and late spans over OTLP/HTTP into ``topology serve`` (issue 12 item 2): TRACE recall.

    .venv/bin/python -m bench.late_burst [--services 200] [--minutes 10] [--repo DIR] [--scenario burst late]

Each scenario writes ``--minutes`` of a simulated fleet's traffic to files first (``topology simulate
--out``, with ``--truth``), runs a fresh ``topology serve`` on an embedded store (``--repo``: the server
of another checkout, e.g. a ``git worktree`` of an older commit, to measure "before"), and POSTs the
OTLP span payloads to ``/v1/traces`` with ``--senders`` concurrent clients, as fast as the server
answers; a 429/503 is sent again after its ``Retry-After``, as the OpenTelemetry exporters do:

* ``burst``: traffic of the ``--minutes`` starting now, all of it within seconds (a Collector's
  backlog, a replay): spans that wait for their other side pile up;
* ``late``: the same minutes ending 15 minutes ago (a Collector delivering after an outage).

Then the server is stopped with SIGTERM (it writes every open window), its store opened here, and the
TRACE APP edges over the simulated range compared with the simulator's truth (``--truth``): recall,
precision, a few of the missing edges. Also printed: the server's counts (``/metrics`` before
the stop) of spans the pairer dropped (capacity), late partials dropped and merged, 429 answers, and
the wall time of the posting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.load_http import free_port
from bench.machine import header
from topology.model import Granularity, Layer, NodeKind
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

HERE = Path(__file__).resolve().parent.parent


def wait_up(port: int, patience: float = 60.0) -> None:
    end = time.monotonic() + patience
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server did not answer within {patience:.0f} s")


def counts(port: int) -> dict[str, float]:
    """The server's counts that say what became of the spans."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {"pairing_dropped": 0.0, "too_late": 0.0, "late_merged": 0.0, "traces_4xx": 0.0, "spans": 0.0}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lab = s.labels
            if s.name == "topology_ingest_stage_events_total":
                key = (lab.get("layer"), lab.get("event"))
                if key == ("trace", "dropped"):
                    out["pairing_dropped"] += s.value
                elif key == ("trace", "spans"):
                    out["spans"] += s.value
                elif key == ("all", "late_dropped"):
                    out["too_late"] += s.value
                elif key == ("all", "late_merged"):
                    out["late_merged"] += s.value
            elif (s.name == "topology_http_requests_total" and lab.get("route") == "/v1/traces"
                  and lab.get("status") == "4xx"):
                out["traces_4xx"] += s.value
    return out


async def stored(data: Path, start: float, end: float) -> dict[tuple[str, str], NodeKind]:
    stores = open_stores(data)
    try:
        es = await stores.layers[Layer.TRACE].edges(Granularity.APP, TimeRange(start - 60, end + 120),
                                                    time.time() + 3600)
        return {(e.key.source, e.key.target): e.target_kind for e in es}
    finally:
        await stores.close()


async def post_all(port: int, files: list[Path], senders: int) -> tuple[int, Counter[int]]:
    """POST every payload to /v1/traces (``senders`` at a time); returns the 429/503 answers and the
    posts that failed in the end, by status."""
    import httpx

    queue = list(reversed(files))
    busy = 0
    failed: Counter[int] = Counter()

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal busy
        while queue:
            body = queue.pop().read_bytes()
            for _ in range(100):
                r = await client.post("/v1/traces", content=body,
                                      headers={"content-type": "application/x-protobuf"})
                if r.status_code not in (429, 503):
                    break
                busy += 1
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            if r.status_code != 200:
                failed[r.status_code] += 1

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        await asyncio.gather(*(sender(client) for _ in range(senders)))
    return busy, failed


def scenario(args: argparse.Namespace, name: str) -> dict[str, Any]:
    repo = Path(args.repo).resolve()
    work = Path(tempfile.mkdtemp(prefix=f"late-burst-{name}-"))
    data, out, truth_file, log = work / "store", work / "sim", work / "truth.json", work / "server.log"
    now = float(int(time.time()) // 60 * 60)
    start = now if name == "burst" else now - 15 * 60 - args.minutes * 60
    subprocess.run(
        [sys.executable, "-m", "service.cli", "simulate", "--out", str(out), "--services", str(args.services),
         "--minutes", str(args.minutes), "--start", str(start), "--truth", str(truth_file)],
        cwd=HERE, env={**os.environ, "LOG_LEVEL": "ERROR", "PYTHONPATH": str(HERE)}, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = sorted((out / "otlp_spans").iterdir())
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--data-dir", str(data), "--port", str(port)],
        cwd=repo, env={**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(repo),
                       **({"TOPOLOGY_TRACE_CAPACITY": args.capacity} if args.capacity else {})},
        stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        wait_up(port)
        t0 = time.monotonic()
        busy, failed = asyncio.run(post_all(port, files, args.senders))
        wall = time.monotonic() - t0
        time.sleep(1.5)  # the server's flusher takes in what the last requests brought
        seen = counts(port)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=300)
        truth = json.loads(truth_file.read_text())
        want = {(s, t) for s, t in truth["layers"]["TRACE"]}
        got = set(asyncio.run(stored(data, start, start + args.minutes * 60)))
        return {"scenario": name, "truth": len(want), "found": len(want & got), "missing": len(want - got),
                # one post of a trace refused: its calls become edges from "user" or to a peer
                "extra": len(got - want), "recall": len(want & got) / len(want) if want else 1.0,
                "precision": len(want & got) / len(got) if got else 1.0, "wall_s": wall,
                "payloads": len(files), "busy": busy, "failed": dict(failed) or 0,
                "missing_sample": sorted(want - got)[:4], "extra_sample": sorted(got - want)[:4], **seen}
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--repo", default=str(HERE), help="checkout whose server is measured (default: this one)")
    p.add_argument("--scenario", nargs="+", default=["burst", "late"], choices=["burst", "late"])
    p.add_argument("--senders", type=int, default=4, help="concurrent POSTs")
    p.add_argument("--capacity", help="TOPOLOGY_TRACE_CAPACITY of the server (default: its own)")
    args = p.parse_args(argv)
    print(header(f"bursts and late spans over OTLP/HTTP, {args.services} services, {args.minutes:g} min"))
    print(f"# server from {Path(args.repo).resolve()}, pairing capacity {args.capacity or 'its default'}, "
          f"{args.senders} senders")
    for name in args.scenario:
        r = scenario(args, name)
        print(f"{name:5s}  recall {r['recall']:.4f} ({r['found']}/{r['truth']} TRACE edges, {r['missing']} "
              f"missing, {r['extra']} extra), precision {r['precision']:.4f}")
        print(f"       {r['spans']:.0f} spans in {r['payloads']} posts in {r['wall_s']:.1f} s, "
              f"429/503 answers {r['busy']} (failed posts {r['failed']}); "
              f"dropped by the pairer {r['pairing_dropped']:.0f}; "
              f"late partials merged {r['late_merged']:.0f}, dropped {r['too_late']:.0f}")
        for what in ("missing", "extra"):
            if r[f"{what}_sample"]:
                print(f"       {what} e.g. {r[f'{what}_sample']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

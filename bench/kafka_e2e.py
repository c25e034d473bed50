"""End to end through the real broker: flow batches -> Kafka -> NETWORK stages 1, 2, 3 -> embedded store.

    make kafka
    .venv/bin/python -m bench.kafka_e2e [--rate 250000] [--seconds 60] [--stage1-workers 1] [--batch 5000]
                                        [--early-interval 1.0]

Stages 1 and 2 run as separate worker processes (``topology ingest``), stage 3 in this process
with the embedded store, so edges can be looked up the moment they are written. A producer in this
process sends flow batches (wire format v1, ``--batch`` records each, current timestamps) at
``--rate`` records per second for ``--seconds``. Printed:

* offered and consumed flow records per second (stage 1's ``topology_ingest_items_in_total``), and
  stage 1's consumer lag (flow records not yet read) every 10 s: sustained = lag not growing;
* freshness: every 2 s a connection between two apps never seen before is put into a batch; the
  time until its edge is in the store (what GraphQL answers from) is measured, p50/p95/max.
  The windows are the defaults (10 s at stage 1, 60 s at stages 2-3, 5 s lateness). Every worker
  makes an early flush at most every ``--early-interval`` seconds (``WorkerOptions.early_interval``):
  stage 1 sends the aggregates of keys new in their open window, stage 2 the direct edges new in
  theirs, stage 3 writes new edges' open windows provisionally, so a new edge crosses the three
  stages in a few commit intervals (each with a checkpoint of the stage's state) instead of waiting
  for its 60 s window to close. ``--early-interval 0`` turns that off (the edge then appears when
  its window closes, ~40-60 s) and shows what early emission costs in throughput.
  The test data is adversarial for early emission: callees are drawn at random per record, so most
  stage-1 keys of a 10 s window were not in the one before and go out early.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

from bench.machine import header, percentiles
from ingest.main import build_worker
from ingest.publisher import lease_key
from ingest.security import client_options
from ingest.topics import Topics, delete_prefixed, ensure_topics
from ingest.worker import WorkerOptions
from topology.catalog import AddressKind, AddressLease
from topology.model import Granularity, Layer
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange
from topology.wire import flow

ROOT = Path(__file__).resolve().parents[1]
APPS = 300


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def leases(now: float) -> list[AddressLease]:
    out = [AddressLease(ip(1000 + i), f"app-{i:03d}", AddressKind.WORKLOAD, now - 3600, None,
                        f"app-{i:03d}-prod") for i in range(APPS)]
    out.append(AddressLease(ip(999), "fresh-target", AddressKind.WORKLOAD, now - 3600, None,
                            "fresh-target-prod"))
    return out


class Batches:
    """Pre-built batches whose timestamps are refreshed at send time."""

    def __init__(self, n: int, size: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.size = size
        self.templates = []
        for b in range(n):
            recs = np.zeros(size, dtype=flow.RECORD_V1)
            local = rng.integers(0, APPS, size)
            remote = (local + 1 + rng.zipf(1.6, size) % (APPS - 1)) % APPS  # heavy-tailed callees
            server = rng.random(size) < 0.5
            recs["local_addr"] = [flow.pack_ip(ip(1000 + int(i))) for i in local]
            recs["remote_addr"] = [flow.pack_ip(ip(1000 + int(i))) for i in remote]
            recs["role"] = np.where(server, flow.ROLE_SERVER, flow.ROLE_CLIENT)
            recs["local_port"] = np.where(server, 8080, rng.integers(32768, 60000, size))
            recs["remote_port"] = np.where(server, rng.integers(32768, 60000, size), 8080)
            recs["protocol"] = flow.PROTO_TCP
            strings = ["", *(f"app-{i:03d}" for i in range(APPS)),
                       *(f"app-{i:03d}-prod" for i in range(APPS))]
            recs["local_app"] = local + 1
            recs["local_cluster"] = local + 1 + APPS
            recs["bytes_sent"] = rng.integers(100, 100_000, size)
            recs["bytes_received"] = rng.integers(100, 100_000, size)
            recs["connections"] = 1
            self.templates.append((recs, strings, f"host-{b}"))
        self.offsets = np.sort(rng.integers(0, 900, size))

    def encode(self, i: int, now_ms: int, fresh: str | None = None) -> bytes:
        recs, strings, host = self.templates[i % len(self.templates)]
        recs = recs.copy()
        recs["start_ms"] = now_ms - 1000 + self.offsets
        recs["end_ms"] = recs["start_ms"] + 50
        if fresh is not None:  # one connection of an app never seen before
            strings = [*strings, fresh]
            recs[0]["local_app"] = len(strings) - 1
            recs[0]["local_cluster"] = 0
            recs[0]["role"] = flow.ROLE_CLIENT
            recs[0]["remote_addr"] = flow.pack_ip(ip(999))
        return flow.encode(recs, strings, host=host, emitted_ms=now_ms)


def metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.M))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stage_figures(port: int | None, final: Any = None) -> dict[str, float]:
    """Commits and their mean duration, batches and their mean processing time, of one stage worker
    (from its metrics endpoint, or the in-process worker ``final``)."""
    out: dict[str, float] = {}
    for short, name in (("commit", "topology_ingest_commit_duration_seconds"),
                        ("batch", "topology_ingest_batch_duration_seconds")):
        if port is not None:
            total, count = metric(port, f"{name}_sum"), metric(port, f"{name}_count")
        else:
            samples = {s.name: s.value for m in final.metrics.ingest.collect() for s in m.samples}
            total, count = samples.get(f"{name}_sum", math.nan), samples.get(f"{name}_count", math.nan)
        out[f"{short}s"] = count
        out[f"{short}_ms"] = total / count * 1000 if count else float("nan")
    return out


def spawn(stage: int, instance: str, bootstrap: str, prefix: str, port: int, log: Path,
          early_interval: float) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "service.cli", "ingest", "--stage", str(stage), "--layer", "network",
            "--bootstrap", bootstrap, "--topic-prefix", prefix, "--instance", instance,
            "--metrics-port", str(port), "--log-level", "WARNING", "--early-interval", str(early_interval)]
    with log.open("ab") as f:
        return subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=f,
                                stderr=subprocess.STDOUT)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = args.bootstrap
    topics = Topics(f"bench-{uuid.uuid4().hex[:6]}.")
    await ensure_topics(bootstrap, topics, args.partitions)
    tmp = Path(tempfile.mkdtemp(prefix="kafka-e2e-"))
    procs: list[subprocess.Popen[bytes]] = []
    ports1 = [19500 + i for i in range(args.stage1_workers)]
    try:
        producer = AIOKafkaProducer(**client_options(bootstrap), linger_ms=5, acks=1,
                                    max_batch_size=2 * 1024 * 1024, max_request_size=8 * 1024 * 1024)
        await producer.start()
        now = time.time()
        for lease in leases(now):
            await producer.send(topics.addresses, json.dumps(lease.to_dict()).encode(), key=lease_key(lease))
        await producer.flush()
        for i, port in enumerate(ports1):
            procs.append(spawn(1, f"bench1-{i}", bootstrap, topics.prefix, port, tmp / f"stage1-{i}.log",
                               args.early_interval))
        procs.append(spawn(2, "bench2", bootstrap, topics.prefix, 19599, tmp / "stage2.log",
                           args.early_interval))
        stores = open_stores(tmp / "store")
        stop = asyncio.Event()
        final = build_worker(3, "network", topics, stores,
                             WorkerOptions(bootstrap=bootstrap, instance="bench3",
                                           early_interval=args.early_interval))
        final_task = asyncio.create_task(final.run(stop))
        batches = Batches(16, args.batch)
        await asyncio.sleep(8)  # workers join their groups
        fresh_sent: dict[str, float] = {}
        fresh_seen: dict[str, float] = {}

        async def watch() -> None:
            while not stop.is_set():
                pending = [n for n in fresh_sent if n not in fresh_seen]
                if pending:
                    t = time.time()
                    found = await stores.layers[Layer.NETWORK].nodes(pending)
                    for n in found:
                        fresh_seen[n] = t
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        per_msg = args.batch
        interval = per_msg / args.rate
        sent = 0
        samples: list[tuple[float, float, float]] = []  # (t, consumed records, lag messages)
        t0 = time.monotonic()
        cpu0 = time.process_time()
        next_fresh = t0
        next_sample = t0
        i = 0
        while (el := time.monotonic() - t0) < args.seconds:
            target = t0 + i * interval
            if target > time.monotonic():
                await asyncio.sleep(target - time.monotonic())
            fresh = None
            if time.monotonic() >= next_fresh:
                fresh = f"fresh-{len(fresh_sent):04d}"
                next_fresh += 2.0
            data = batches.encode(i, int(time.time() * 1000), fresh)
            await producer.send(topics.flows, data, key=str(i % 64).encode())
            if fresh is not None:
                fresh_sent[fresh] = time.time()
            sent += per_msg
            i += 1
            if time.monotonic() >= next_sample:
                consumed = sum(metric(p, "topology_ingest_items_in_total") for p in ports1)
                lag = sum(metric(p, "topology_ingest_lag_records") for p in ports1)
                samples.append((el, consumed, lag))
                next_sample += 10.0
        await producer.flush()
        offered_s = time.monotonic() - t0
        consumed = sum(metric(p, "topology_ingest_items_in_total") for p in ports1)
        lag = sum(metric(p, "topology_ingest_lag_records") for p in ports1)
        samples.append((offered_s, consumed, lag))
        # freshness: wait for the last fresh edges (without early flushes their window must close)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if len(fresh_seen) >= len(fresh_sent):
                break
            await asyncio.sleep(0.5)
        await producer.stop()
        stages = {f"stage 1-{i}": {**stage_figures(port), "cpu_s": cpu_seconds(procs[i].pid)}
                  for i, port in enumerate(ports1)}
        stages["stage 2"] = {**stage_figures(19599), "cpu_s": cpu_seconds(procs[-1].pid)}
        stages["stage 3 + producer"] = {**stage_figures(None, final), "cpu_s": time.process_time() - cpu0}
        fresh_ms = [(fresh_seen[n] - t) * 1000 for n, t in fresh_sent.items() if n in fresh_seen]
        span = TimeRange(now - 600, time.time() + 60)
        edges = await stores.layers[Layer.NETWORK].edges(Granularity.APP, span, time.time())
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await final_task
        await stores.close()
        return {"sent": sent, "offered_s": offered_s, "samples": samples, "fresh_ms": fresh_ms,
                "fresh_missing": len(fresh_sent) - len(fresh_ms), "edges": len(edges), "stages": stages,
                "load": os.getloadavg()}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        with contextlib.suppress(Exception):
            await delete_prefixed(bootstrap, topics.prefix)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    p.add_argument("--rate", type=float, default=250_000.0, help="flow records per second offered")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--batch", type=int, default=5000, help="flow records per Kafka message")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--stage1-workers", type=int, default=1)
    p.add_argument("--early-interval", type=float, default=1.0,
                   help="seconds between early flushes of open windows in every worker (0: off)")
    args = p.parse_args()
    print(header("kafka_e2e: flow batches -> Kafka -> NETWORK stages 1-3 -> embedded store"))
    print(f"# rate {args.rate:,.0f} records/s offered for {args.seconds:.0f} s, {args.batch} records/msg, "
          f"{args.partitions} partitions, {args.stage1_workers} stage-1 worker(s), 1 stage-2, "
          f"stage 3 in-process, early interval {args.early_interval:g} s")
    r = asyncio.run(run(args))
    print(f"offered   {r['sent'] / r['offered_s']:,.0f} records/s ({r['sent']:,} in {r['offered_s']:.1f} s)")
    print("t(s)  consumed(records/s, last 10 s)  stage-1 lag (records)")
    prev_t, prev_c = 0.0, 0.0
    for t, c, lag in r["samples"]:
        rate = (c - prev_c) / (t - prev_t) if t > prev_t else 0.0
        print(f"{t:5.0f}  {rate:14,.0f}  {lag * args.batch:14,.0f}")
        prev_t, prev_c = t, c
    first = r["samples"][1] if len(r["samples"]) > 2 else r["samples"][0]
    total = (r["samples"][-1][1] - first[1]) / max(1e-9, r["samples"][-1][0] - first[0])
    growing = r["samples"][-1][2] > first[2] * 1.2 + 2
    print(f"sustained {total:,.0f} records/s consumed; lag {'GROWING' if growing else 'not growing'}")
    pc = percentiles(r["fresh_ms"])
    print(f"freshness (new connection -> edge in the store): p50 {pc['p50'] / 1000:.1f} s  "
          f"p95 {pc['p95'] / 1000:.1f} s  max {pc['max'] / 1000:.1f} s  ({len(r['fresh_ms'])} edges, "
          f"{r['fresh_missing']} not seen)")
    print(f"edges stored {r['edges']}")
    consumed = r["samples"][-1][1]
    print(f"# {consumed:,.0f} flow records consumed; CPU since the workers started (stage 3 shares this "
          "process with the producer: CPU since the first send); CPU s/M: per million flow records consumed")
    print("stage               CPU s  CPU s/M  commits  ms/commit  batches  ms/batch")
    for name, f in r["stages"].items():
        print(f"{name:18s} {f['cpu_s']:6.1f}  {f['cpu_s'] / consumed * 1e6:7.2f}  {f['commits']:7.0f}  "
              f"{f['commit_ms']:9.1f}  {f['batchs']:7.0f}  {f['batch_ms']:8.1f}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in r['load'])}")


if __name__ == "__main__":
    main()

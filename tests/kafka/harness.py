"""Running the Kafka workers in tests: in this process (asyncio tasks) or as real processes
(``python -m service.cli ingest``, for ``kill -9``), and reading back what they stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.main import build_worker
from ingest.topics import Topics, delete_prefixed, ensure_topics
from ingest.worker import Worker, WorkerOptions
from tests.ingest.baseline import assert_same_windows as assert_same_windows  # re-exported for the tests
from tests.ingest.baseline import embedded_baseline as embedded_baseline
from topology.model import Granularity, Layer
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("network", "ipc", "trace")
ALL_STAGES: tuple[tuple[int, str], ...] = tuple((s, layer) for layer in LAYERS for s in (1, 2, 3))

# Fast enough for tests, same code paths as production.
TEST_OPTIONS: dict[str, Any] = {"idle_seconds": 5.0, "min_commit_interval": 0.5, "max_commit_interval": 5.0}


@contextlib.asynccontextmanager
async def prefixed_topics(bootstrap: str, label: str, partitions: int = 2) -> AsyncIterator[Topics]:
    topics = Topics(f"{label}.")
    await ensure_topics(bootstrap, topics, partitions)
    try:
        yield topics
    finally:
        with contextlib.suppress(Exception):
            await delete_prefixed(bootstrap, topics.prefix)


class InProcess:
    """Workers as asyncio tasks of this process, sharing one set of stores."""

    def __init__(self, bootstrap: str, topics: Topics, stores: Stores,
                 stages: Iterable[tuple[int, str]] = ALL_STAGES, meta: bool = True, **options: Any) -> None:
        opts = {**TEST_OPTIONS, **options}
        self.stop = asyncio.Event()
        self.workers: list[Worker] = []
        for stage, layer in stages:
            o = WorkerOptions(bootstrap=bootstrap, instance=f"t{stage}{layer}", **opts)
            self.workers.append(build_worker(stage, layer, topics, stores if stage == 3 else None, o))
        if meta:
            o = WorkerOptions(bootstrap=bootstrap, instance="tmeta", **opts)
            self.workers.append(build_worker(1, "meta", topics, stores, o))
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> InProcess:
        self.tasks = [asyncio.create_task(w.run(self.stop)) for w in self.workers]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)

    def worker(self, stage: int, layer: str) -> Worker:
        return next(w for w in self.workers if w.spec.stage == stage and w.spec.layer == layer)

    def clock(self, stage: int, layer: str) -> float:
        w = self.worker(stage, layer)
        if not w.parts:
            return -math.inf
        return min(ps.clock.now for ps in w.parts.values())

    def describe(self, target: float) -> str:
        """Every worker's sessions, assignment and partition clocks (relative to ``target``): what a
        failed wait says of where the pipeline stands."""
        rows = []
        for w, task in zip(self.workers, self.tasks, strict=True):
            clocks = {f"{tp[0].rsplit('.', 2)[-1]}/{tp[1]}": round(ps.clock.now - target, 1)
                      for tp, ps in sorted(w.parts.items())}
            ended = "" if not task.done() else " (ENDED)"
            rows.append(f"{w.name}{ended}: sessions {w.sessions}, checkpoints {w.committed_checkpoints}, "
                        f"assigned {len(w.assigned)}, outputs pending {w.pending.outputs}, clocks {clocks}")
        return "; ".join(rows)

    async def wait_written(self, limit: float = 30.0) -> None:
        """Until no worker holds outputs it has not made durable yet."""
        deadline = time.monotonic() + limit
        while any(w.pending.outputs for w in self.workers):
            if time.monotonic() > deadline:
                raise AssertionError("workers still hold unwritten outputs")
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)

    async def wait_clocks(self, target: float, stages: Sequence[tuple[int, str]], limit: float = 120) -> None:
        """Until every listed worker's slowest partition clock passed ``target`` (event time)."""
        deadline = time.monotonic() + limit
        while not all(self.clock(s, layer) >= target for s, layer in stages):
            if time.monotonic() > deadline:
                now = {f"{layer}{s}": self.clock(s, layer) - target for s, layer in stages}
                raise AssertionError(f"workers did not reach event time {target} in {limit}s: {now}; "
                                     f"workers: {self.describe(target)}")
            await asyncio.sleep(0.5)


async def until(condition: Callable[[], bool], limit: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds (AssertionError after ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {limit}s")
        await asyncio.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    stage: int
    layer: str
    args: list[str]
    port: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        f = self.log.open("ab")
        self.popen = subprocess.Popen([sys.executable, "-m", "service.cli", "ingest", *self.args], cwd=ROOT,
                                      env=env, stdout=f, stderr=subprocess.STDOUT)
        f.close()

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self.kills += 1

    def terminate(self, timeout: float = 30.0) -> int:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else 0
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            return -9

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None


@dataclass
class Processes:
    """Workers as separate processes; each stage-3 worker writes its own store directory."""

    bootstrap: str
    topics: Topics
    root: Path
    stages: Sequence[tuple[int, str]] = ALL_STAGES
    options: dict[str, Any] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def store_dir(self, layer: str) -> Path:
        return self.root / f"store-{layer}"

    def start(self) -> None:
        opts = {**TEST_OPTIONS, **self.options}
        for stage, layer in self.stages:
            port = free_port()
            args = ["--stage", str(stage), "--layer", layer, "--bootstrap", self.bootstrap,
                    "--topic-prefix", self.topics.prefix, "--instance", f"p{stage}{layer}",
                    "--metrics-port", str(port), "--partitions", "2", "--log-level", "WARNING",
                    "--idle-seconds", str(opts["idle_seconds"]),
                    "--min-commit-interval", str(opts["min_commit_interval"]),
                    "--max-commit-interval", str(opts["max_commit_interval"])]
            if stage == 3:
                args += ["--data-dir", str(self.store_dir(layer))]
            p = Proc(stage, layer, args, port, self.root / f"worker-{layer}{stage}.log")
            p.start()
            self.procs.append(p)

    def proc(self, stage: int, layer: str) -> Proc:
        return next(p for p in self.procs if p.stage == stage and p.layer == layer)

    def clock(self, stage: int, layer: str) -> float:
        v = self.proc(stage, layer).metric("topology_ingest_clock_seconds")
        return -math.inf if v is None else v

    async def wait_clocks(self, target: float, stages: Sequence[tuple[int, str]], limit: float = 120) -> None:
        deadline = time.monotonic() + limit
        while not all(self.clock(s, layer) >= target for s, layer in stages):
            if time.monotonic() > deadline:
                logs = {p.log.name: p.log.read_text()[-2000:] for p in self.procs if p.log.exists()}
                raise AssertionError(f"workers did not reach event time {target} in {limit}s; logs: {logs}")
            await asyncio.sleep(0.5)

    async def wait_metric(self, name: str, at_least: float, stages: Sequence[tuple[int, str]],
                          limit: float = 90) -> None:
        deadline = time.monotonic() + limit
        while not all((self.proc(s, layer).metric(name) or 0) >= at_least for s, layer in stages):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not reach {at_least} for {list(stages)} in {limit}s")
            await asyncio.sleep(0.3)

    def stop(self) -> list[int]:
        return [p.terminate() for p in self.procs]


async def windows(stores: Stores, layers: Iterable[Layer], start: float, end: float) -> dict[Any, Any]:
    """Every stored minute window in [start, end): (layer, granularity, window, source, target) -> stats."""
    out: dict[Any, Any] = {}
    now = time.time()
    w0 = int(start) - int(start) % 60
    for layer in layers:
        st = stores.layers[layer]
        for g in (Granularity.APP, Granularity.CLUSTER):
            for w in range(w0, int(end) + 60, 60):
                for e in await st.edges(g, TimeRange(w, w + 60), now):
                    out[(layer.value, g.value, w, e.key.source, e.key.target)] = e.stats
    return out


async def app_edges(stores: Stores, layer: Layer, start: float, end: float) -> set[tuple[str, str]]:
    es = await stores.layers[layer].edges(Granularity.APP, TimeRange(start - 60, end + 60), time.time())
    return {(e.key.source, e.key.target) for e in es}


def truth_pairs(truth: dict[str, Any], layer: Layer) -> set[tuple[str, str]]:
    return {(s, t) for s, t in truth["layers"][layer.value]}


def open_layer_store(path: Path) -> Stores:
    return open_stores(path)

"""``topology demo`` and ``topology serve``: one process with the stores, the ingest runtime and the
GraphQL server. The demo also runs the fleet simulator in the background, in wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from service.runtime import Runtime
from topology.pipeline import Pipeline, PipelineConfig
from topology.store.base import Stores
from topology.timewindow import MINUTE, align

log = logging.getLogger("topology.demo")

FLUSH_EVERY = 0.5  # seconds between pipeline flushes (part of the freshness budget)
ROLLUP_EVERY = 60.0


def feed(runtime: Runtime, emission: Any, now: float) -> None:
    """Hand one simulator step's payloads to the runtime, exactly as they would arrive over the wire."""
    runtime.add_leases(emission.leases)
    runtime.pipeline.add_catalog(emission.catalog)
    runtime.pipeline.add_health(emission.health)
    for data in emission.flow_batches:
        runtime.accept_flows(data)
    for data in emission.metrics:
        runtime.accept_metrics(data)
    for data in emission.spans:
        runtime.accept_spans(data, now=now)


async def persist_meta(stores: Stores, emission: Any) -> None:
    if emission.catalog:
        await stores.catalog.upsert_services(list(emission.catalog))
    if emission.health:
        await stores.catalog.record_health(list(emission.health))


def write_truth(path: str | None, sims: list[Any]) -> None:
    """The union of the simulators' ground truth (edges that carried traffic so far), atomically."""
    if not path:
        return
    layers: dict[str, set[tuple[str, str]]] = {}
    for sim in sims:
        for layer, pairs in sim.truth()["layers"].items():
            layers.setdefault(layer, set()).update((a, b) for a, b in pairs)
    unified = set().union(*layers.values()) if layers else set()
    doc = {
        "layers": {k: sorted(map(list, v)) for k, v in layers.items()},
        "unified": sorted(map(list, unified)),
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


async def simulate_span(sim: Any, rt: Runtime, start: float, end: float, step: float) -> float:
    """Feed [start, end) of simulated traffic as fast as possible, yielding between steps."""
    t = start
    while t < end:
        dt = min(step, end - t)
        em = sim.step(t, dt)
        feed(rt, em, t)
        await persist_meta(rt.stores, em)
        t += dt
        await rt.flush(t)
        await asyncio.sleep(0)
    return t


class SimulationDriver:
    """Runs the demo's simulated fleet.

    Start-up is split so the live map answers within seconds: a *live* simulator starts ``warmup``
    seconds in the past, catches up, then follows the wall clock; an independent *history*
    simulator (same fleet and seed, its own pipeline) fills ``[now - backfill, now - warmup)`` in the
    background with one-minute steps. Their windows never overlap in time, so their writes never
    collide. When the store already holds data (a restart), the history fill is skipped.
    """

    def __init__(
        self,
        make_sim: Any,
        runtime: Runtime,
        step: float,
        backfill: float,
        truth: str | None,
        warmup: float = 120.0,
    ) -> None:
        self.make_sim = make_sim
        self.runtime = runtime
        self.step = step
        self.backfill = backfill
        self.warmup = min(warmup, backfill)
        self.truth = truth
        self.ready = asyncio.Event()
        self.sims: list[Any] = []

    async def run(self) -> None:
        rt = self.runtime
        counts = await asyncio.gather(*(s.window_count() for s in rt.stores.layers.values()))
        fresh_store = not any(sum(c.values()) for c in counts if c)  # a restart keeps its own history
        now = rt.clock()
        # Minute-aligned, so the history's last one-minute window ends where the live ones begin.
        live_start = float(align(now - self.warmup, MINUTE))
        sim = self.make_sim(live_start)
        self.sims.append(sim)
        initial = sim.initial_records()
        await persist_meta(rt.stores, initial)
        feed(rt, initial, live_start)
        started = time.monotonic()
        t = await simulate_span(sim, rt, live_start, now, self.step)
        write_truth(self.truth, self.sims)
        log.info(
            "live map ready", extra={"warmup_s": self.warmup, "took_s": round(time.monotonic() - started, 1)}
        )
        self.ready.set()
        history: asyncio.Task[None] | None = None
        if self.backfill > self.warmup and fresh_store:
            history = asyncio.create_task(
                self._history(float(align(now - self.backfill, MINUTE)), live_start)
            )
        last_rollup = time.monotonic()
        try:
            while True:
                target = rt.clock()
                while t + self.step <= target:
                    em = sim.step(t, self.step)
                    feed(rt, em, t)
                    await persist_meta(rt.stores, em)
                    t += self.step
                await rt.flush(target)
                write_truth(self.truth, self.sims)
                if time.monotonic() - last_rollup > ROLLUP_EVERY:
                    await rt.rollup(target)
                    last_rollup = time.monotonic()
                await asyncio.sleep(FLUSH_EVERY)
        finally:
            if history is not None:
                history.cancel()

    async def _history(self, start: float, end: float) -> None:
        # History needs no freshness: coarse stage-1 windows and no provisional writes (bulk settings).
        bulk = PipelineConfig(stage1_window=10, lateness=5.0, provisional=False)
        rt = Runtime(self.runtime.stores, None, Pipeline(bulk), clock=self.runtime.clock)
        sim = self.make_sim(start)
        self.sims.append(sim)
        initial = sim.initial_records()
        feed(rt, initial, start)
        began = time.monotonic()
        t = await simulate_span(sim, rt, start, end, 60.0)
        for extra in (60.0, 120.0, 180.0):  # close the last windows (they end before the live ones begin)
            await rt.flush(t + extra)
        await rt.rollup(end)
        log.info(
            "history filled", extra={"from": start, "to": end, "took_s": round(time.monotonic() - began, 1)}
        )


async def _flusher(runtime: Runtime) -> None:
    last_rollup = time.monotonic()
    while True:
        await asyncio.sleep(FLUSH_EVERY)
        try:
            await runtime.flush()
            if time.monotonic() - last_rollup > ROLLUP_EVERY:
                await runtime.rollup()
                last_rollup = time.monotonic()
        except Exception:  # a store hiccup must not kill ingest; the next flush retries
            log.exception("flush failed")


def _stop_gracefully() -> None:
    """SIGINT and SIGTERM stop the server through uvicorn, which then raises the signal again for the
    previous handler: this one, which lets the shutdown finish (final Kafka checkpoints, stores
    closed) and exit 0. A second signal during that shutdown stops the process at once."""
    if threading.current_thread() is not threading.main_thread():
        return
    seen: list[int] = []

    def handle(sig: int, frame: Any) -> None:
        seen.append(sig)
        if len(seen) > 1:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)


async def _serve(
    args: Any,
    stores: Stores,
    runtime: Runtime,
    background: list[asyncio.Task[Any]],
    banner: str,
    consumers: Any = None,
) -> int:
    from service.app import create_app, freeze_heap
    from service.config import ServiceConfig
    from service.receiver import ingest_routes

    config = ServiceConfig.from_env()
    freeze_heap()
    app = create_app(
        stores,
        config,
        runtime=runtime,
        extra_routes=ingest_routes(runtime),
        consumers=consumers,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=args.host, port=args.port, log_level="warning", lifespan="on", log_config=None
        )
    )
    base = f"http://{args.host}:{args.port}"

    async def announce() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.05)
        print(
            f"{banner}\n  GraphiQL   {base}/graphql\n  metrics    {base}/metrics\n"
            f"  health     {base}/healthz  {base}/readyz\n  ingest     {base}/v1/traces  {base}/v1/metrics  "
            f"{base}/ingest/flows\nPress Ctrl-C to stop.",
            flush=True,
        )

    background.append(asyncio.create_task(announce()))
    _stop_gracefully()
    try:
        await server.serve()
    finally:
        if consumers is not None:
            await consumers.stop()  # final checkpoints while the stores are still open
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await runtime.flush()
        await stores.close()
    return 0


async def run_demo(args: Any) -> int:
    from service.cli import open_stores_from_args
    from topology.sim import Simulator, generate_fleet

    stores = open_stores_from_args(args)
    if asyncio.iscoroutine(stores):
        stores = await stores
    data_dir = Path(args.data_dir) if args.store == "embedded" else None
    runtime = Runtime(stores, data_dir, Pipeline())

    def make_sim(start: float) -> Any:
        return Simulator(generate_fleet(services=args.services, seed=args.seed), seed=args.seed, start=start)

    driver = SimulationDriver(make_sim, runtime, args.step, args.backfill, args.truth)
    task = asyncio.create_task(driver.run())
    banner = (
        f"Service Topology demo: {args.services} simulated services (seed {args.seed}), "
        f"store {args.store}" + (f" in {args.data_dir}" if data_dir else "")
    )
    return await _serve(args, stores, runtime, [task], banner)


async def run_serve(args: Any) -> int:
    from service.cli import open_stores_from_args

    stores = open_stores_from_args(args)
    if asyncio.iscoroutine(stores):
        stores = await stores
    data_dir = Path(args.data_dir) if args.store == "embedded" and args.data_dir else None
    runtime = Runtime(stores, data_dir, Pipeline())
    task = asyncio.create_task(_flusher(runtime))
    banner = f"Service Topology server, store {args.store}"
    if not getattr(args, "kafka", None):
        return await _serve(args, stores, runtime, [task], banner)
    from ingest.topics import Topics
    from service.consumers import Consumers

    consumers = Consumers(stores, args.kafka, Topics(args.topic_prefix))
    consumers.start()
    banner += f", consuming Kafka at {args.kafka}"
    return await _serve(args, stores, runtime, [task], banner, consumers)

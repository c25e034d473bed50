"""``topology demo`` and ``topology serve``: one process with the stores, the ingest runtime and the
GraphQL server. The demo also runs the fleet simulator in the background, in wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import uvicorn

from service.runtime import Runtime
from topology.pipeline import Pipeline
from topology.store.base import Stores

log = logging.getLogger("topology.demo")

FLUSH_EVERY = 1.0  # seconds between pipeline flushes
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


def write_truth(path: str | None, sim: Any) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(sim.truth(), f)
    os.replace(tmp, path)


class SimulationDriver:
    """Runs the simulator: a quick backfill of recent history, then live steps in wall-clock time."""

    def __init__(self, sim: Any, runtime: Runtime, step: float, backfill: float, truth: str | None) -> None:
        self.sim = sim
        self.runtime = runtime
        self.step = step
        self.backfill = backfill
        self.truth = truth
        self.ready = asyncio.Event()

    async def run(self) -> None:
        rt = self.runtime
        now = rt.clock()
        t = now - self.backfill
        initial = self.sim.initial_records()
        await persist_meta(rt.stores, initial)
        feed(rt, initial, t)
        started = time.monotonic()
        while t < now:  # backfill as fast as possible, yielding to the server between steps
            em = self.sim.step(t, self.step)
            feed(rt, em, t)
            await persist_meta(rt.stores, em)
            t += self.step
            await rt.flush(t)
            await asyncio.sleep(0)
        await rt.rollup(t)
        write_truth(self.truth, self.sim)
        log.info(
            "backfill done",
            extra={"simulated_s": self.backfill, "took_s": round(time.monotonic() - started, 1)},
        )
        self.ready.set()
        last_rollup = time.monotonic()
        while True:
            target = rt.clock()
            while t + self.step <= target:
                em = self.sim.step(t, self.step)
                feed(rt, em, t)
                await persist_meta(rt.stores, em)
                t += self.step
            await rt.flush(target)
            write_truth(self.truth, self.sim)
            if time.monotonic() - last_rollup > ROLLUP_EVERY:
                await rt.rollup(target)
                last_rollup = time.monotonic()
            await asyncio.sleep(FLUSH_EVERY)


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


async def _serve(
    args: Any, stores: Stores, runtime: Runtime, background: list[asyncio.Task[Any]], banner: str
) -> int:
    from service.app import create_app
    from service.config import ServiceConfig
    from service.receiver import ingest_routes

    config = ServiceConfig.from_env()
    app = create_app(stores, config, runtime=runtime, extra_routes=ingest_routes(runtime))
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
    try:
        await server.serve()
    finally:
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
    fleet = generate_fleet(services=args.services, seed=args.seed)
    sim = Simulator(fleet, seed=args.seed, start=time.time() - args.backfill)
    driver = SimulationDriver(sim, runtime, args.step, args.backfill, args.truth)
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
    return await _serve(args, stores, runtime, [task], f"Service Topology server, store {args.store}")

"""``topology serve`` and ``topology demo``: one process with the stores, the ingest runtime and the
GraphQL server (uvicorn). The demo adds the simulated fleet (:mod:`service.demo`); ``serve --kafka``
adds the terminal Kafka workers (:mod:`service.consumers`).

Both take typed settings (:mod:`service.settings`), never the command line: the CLI resolves flags and
the environment and calls :func:`run_demo` or :func:`run_serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from ingest.worker import WorkerOptions
from service.config import ServiceConfig
from service.demo import FLUSH_EVERY, ROLLUP_EVERY, SimulationDriver
from service.head import bounded_protocol
from service.runtime import Runtime
from service.security import served_config
from service.settings import DemoSettings, FleetSettings
from service.storethread import StoreThread
from service.tls import uvicorn_tls
from topology.pipeline import Pipeline, PipelineConfig
from topology.settings import KafkaSettings, PairingSettings, StoreSettings
from topology.store.base import Stores

__all__ = ["run_demo", "run_serve"]

log = logging.getLogger("topology.server")
SWITCH_INTERVAL = 0.001  # seconds (CPython's default is 0.005)
GC_THRESHOLDS = (10_000, 20, 200)  # allocations before a young collection; young ones before older ones
#: seconds between flushes of the span pairer in ``serve`` (the other stages: every FLUSH_EVERY); the
#: calls it pairs meanwhile gather per edge: at 2,200 spans/s 4x fewer flushes cost ~20% less CPU
TRACE_FLUSH_EVERY = 2.0
#: seconds a stop (SIGINT, SIGTERM) may take before the process dumps its threads' stacks and exits 1:
#: the fleet's last windows (STOP_PATIENCE), Kafka's final checkpoints and the stores' close take less
SHUTDOWN_LIMIT = 120.0


async def _flusher(runtime: Runtime) -> None:
    """Flush every :data:`FLUSH_EVERY` seconds while the pipeline holds something, roll up every
    :data:`ROLLUP_EVERY`; idle (everything accepted is written), wait for the next input instead."""
    last_rollup = time.monotonic()
    while True:
        await runtime.until_input(max(0.0, ROLLUP_EVERY - (time.monotonic() - last_rollup)))
        await asyncio.sleep(FLUSH_EVERY)
        try:
            await runtime.flush()
            if time.monotonic() - last_rollup > ROLLUP_EVERY:
                await runtime.rollup()
                last_rollup = time.monotonic()
        except Exception:  # a store hiccup must not kill ingest; the next flush retries
            log.exception("flush failed")


class _Server(uvicorn.Server):
    """uvicorn's server, looking at its clock once a second rather than ten times (its ``main_loop``
    wakes up only to renew the ``Date`` header and to see whether it should stop: the bulk of an idle
    server's CPU); a stop signal wakes it at once."""

    TICK = 1.0  # seconds (uvicorn: 0.1)

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    async def main_loop(self) -> None:
        stop = asyncio.Event()
        self._wake = (asyncio.get_running_loop(), stop)
        counter = 0  # on_tick renews the Date header when it is a multiple of 10 (tenths of a second)
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.TICK)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._wake is not None:
            loop, stop = self._wake
            loop.call_soon_threadsafe(stop.set)


def _stop_gracefully() -> None:
    """SIGINT and SIGTERM stop the server through uvicorn, which then raises the signal again for the
    previous handler: this one, which lets the shutdown finish (final Kafka checkpoints, stores
    closed) and exit 0. A second signal during that shutdown stops the process at once, and so does
    a shutdown still running after :data:`SHUTDOWN_LIMIT` seconds, first writing every thread's stack
    to stderr (exit status 1): a stop never hangs, and one that would have says where."""
    if threading.current_thread() is not threading.main_thread():
        return
    seen: list[int] = []

    def handle(sig: int, frame: Any) -> None:
        seen.append(sig)
        if len(seen) == 1:
            faulthandler.dump_traceback_later(SHUTDOWN_LIMIT, exit=True)
        if len(seen) > 1:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)


def _listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything else starts (a port in use is one line)."""
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP;
    # with 0 every answer on a kept-alive connection after the first waited ~40 ms for a delayed ACK
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _sockets(config: ServiceConfig) -> list[socket.socket]:
    """The main port's socket, and the ingest port's when there is one (``--ingest-port``)."""
    socks = [_listen(config.host, config.port)]
    if config.ingest_port is not None:
        try:
            socks.append(_listen(config.host, config.ingest_port))
        except OSError:
            socks[0].close()
            raise
    return socks


async def _serve(
    socks: list[socket.socket],
    config: ServiceConfig,
    stores: Stores,
    runtime: Runtime,
    background: list[asyncio.Task[Any]],
    banner: str,
    consumers: Any = None,
    data_ready: Callable[[], bool] | None = None,
    *,
    owner: tuple[StoreThread, Stores],
    data_detail: Callable[[], dict[str, str]] | None = None,
) -> int:
    """Serve until stopped. ``stores``: as this loop uses them; ``owner``: the thread whose loop owns
    them (GraphQL executes there) and the stores as it uses them."""
    from service.app import create_app, freeze_heap
    from service.receiver import ingest_routes

    # The event loop's thread shares the interpreter with the store thread (GraphQL), the pipeline's
    # and decoding threads: hand the lock over every millisecond instead of every five, so the loop
    # waits less for it at each turn.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Full collections walk every object not frozen (freeze_heap) and stop every thread meanwhile:
    # 0.15-0.4 s each at 1,000 services, every few seconds with the defaults (700, 10, 10), mostly
    # finding nothing. Young generations stay frequent; full ones become rare.
    gc.set_threshold(*GC_THRESHOLDS)

    thread, owned = owner
    freeze_heap()
    app = create_app(
        owned,
        config,
        store_thread=thread,
        runtime=runtime,
        extra_routes=ingest_routes(runtime),
        consumers=consumers,
        data_ready=data_ready,
        data_detail=data_detail,
    )
    server = _Server(
        uvicorn.Config(
            app, host=config.host, port=config.port, log_level="warning", lifespan="on", log_config=None,
            access_log=False,  # at level warning it logs nothing, but formats every request's line first
            ws_max_size=config.max_request_body,  # a subscription message is bounded like a /graphql body
            timeout_keep_alive=math.ceil(config.keep_alive),
            http=bounded_protocol(config.max_head, config.read_timeout,
                                  lambda status: app.state.metrics.refused.labels(
                                      "timeout" if status == 408 else "limit").inc()),
            **uvicorn_tls(config.tls_cert, config.tls_key, config.tls_client_ca),
        )
    )
    scheme = "https" if config.tls_cert else "http"
    base = f"{scheme}://{config.host}:{config.port}"
    ingest = f"{scheme}://{config.host}:{config.ingest_port or config.port}"

    async def announce() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.05)
        print(
            f"{banner}\n  map        {base}/map\n  GraphiQL   {base}/graphql\n  metrics    {base}/metrics\n"
            f"  health     {base}/healthz  {base}/readyz\n"
            f"  ingest     {ingest}/v1/traces  {ingest}/v1/metrics  {ingest}/ingest/flows\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )

    background.append(asyncio.create_task(announce()))
    _stop_gracefully()
    try:
        await server.serve(sockets=socks)
    finally:
        if consumers is not None:
            await consumers.stop()  # final checkpoints while the stores are still open
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await runtime.drain()  # every accepted record written, open windows included
        except Exception:
            log.exception("could not write what was accepted before the shutdown")
        await stores.close()
        thread.stop()
    if not server.started:
        raise RuntimeError("the server did not start (see the log above)")
    return 0


async def _open(store: StoreSettings) -> tuple[tuple[StoreThread, Stores], Stores]:
    """Open the stores on a thread of their own (:mod:`service.storethread`); returns that thread with
    the stores as it uses them, and the stores as this loop uses them."""
    thread = StoreThread()
    try:
        owned = await thread.run(store.open())
    except BaseException:
        thread.stop()
        raise
    return (thread, owned), thread.bind(owned)


def _data_dir(store: StoreSettings) -> Path | None:
    return Path(store.data_dir) if store.backend == "embedded" and store.data_dir else None


def _pipeline(store: StoreSettings, pairing: PairingSettings | None, resume: bool = True) -> Pipeline:
    """The in-process pipeline: pairing sized by ``pairing`` (default: from memory), late data merged
    while its window is within the stores' retention of minute windows and, with ``resume``, into the
    windows the stores may hold from before this start (a restart: a Collector retrying after the
    outage). The demo does not resume: its live simulator starts a little in the past, and on a
    restart simulates those minutes again."""
    pipeline = Pipeline(PipelineConfig(trace_capacity=(pairing or PairingSettings()).capacity(),
                                       late_seconds=float(store.retention().minute)))
    if resume:
        pipeline.resume(time.time())
    return pipeline


async def run_demo(fleet: FleetSettings, demo: DemoSettings, config: ServiceConfig,
                   store: StoreSettings, pairing: PairingSettings | None = None) -> int:
    config = served_config(config)  # one line and no start: no authentication beyond loopback, bad files
    socks = _sockets(config)
    owner, stores = await _open(store)
    # The simulated fleet's pipeline runs in a process of its own (service.demo_fleet), configured as
    # this one; this runtime takes what HTTP ingest brings, flushed as `serve` does.
    pipeline = _pipeline(store, pairing, resume=False)
    runtime = Runtime(stores, _data_dir(store), pipeline)
    driver = SimulationDriver(fleet.services, fleet.seed, runtime, demo.step, demo.backfill, fleet.truth,
                              config=pipeline.config)
    tasks = [asyncio.create_task(driver.run()), asyncio.create_task(_flusher(runtime))]
    banner = (f"Service Topology demo: {fleet.services} simulated services (seed {fleet.seed}), "
              f"store {store.describe()}")
    return await _serve(socks, config, stores, runtime, tasks, banner, data_ready=driver.ready.is_set,
                        owner=owner, data_detail=driver.detail)


async def run_serve(config: ServiceConfig, store: StoreSettings, kafka: KafkaSettings | None,
                    worker: WorkerOptions | None = None, pairing: PairingSettings | None = None) -> int:
    """Serve ``store``; with ``kafka`` also run the terminal Kafka workers (``worker``: their options)."""
    config = served_config(config)  # one line and no start: no authentication beyond loopback, bad files
    socks = _sockets(config)
    owner, stores = await _open(store)
    runtime = Runtime(stores, _data_dir(store), _pipeline(store, pairing), trace_every=TRACE_FLUSH_EVERY)
    task = asyncio.create_task(_flusher(runtime))
    banner = f"Service Topology server, store {store.describe()}"
    if kafka is None:
        return await _serve(socks, config, stores, runtime, [task], banner, owner=owner)
    from ingest.topics import Topics
    from service.consumers import Consumers

    consumers = Consumers(stores, kafka.bootstrap, Topics(kafka.topic_prefix), options=worker)
    consumers.start()
    banner += f", consuming Kafka at {kafka.bootstrap}"
    return await _serve(socks, config, stores, runtime, [task], banner, consumers, owner=owner)

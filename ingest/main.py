"""Entry points of the Kafka workers.

``run_worker(stage, layer, bootstrap, ...)`` runs one stage of one layer until SIGTERM/SIGINT (the
``topology ingest --stage N --layer L`` command calls it). ``python -m ingest.main`` offers the same
with every tuning option, for tests and benchmarks.

Layers and stages::

    network 1   topology.flows + topology.vpcflows -> topology.network.stage1   (pre-aggregation)
    network 2   topology.network.stage1 -> topology.network.stage2              (resolution, joins)
    ipc 1       otlp_metrics -> topology.ipc.stage1                            (split by resource)
    ipc 2       topology.ipc.stage1 -> topology.ipc.stage2                     (deltas, resolution)
    trace 1     otlp_spans -> topology.trace.stage1                            (split by trace id)
    trace 2     topology.trace.stage1 -> topology.trace.stage2                 (span pairing)
    <layer> 3   topology.<layer>.stage2 -> the layer's store                   (windows, health)
    meta (1)    topology.catalog + topology.health (+ addresses checked) -> the catalog store
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from ingest.logic import StageSpec
from ingest.metrics import WorkerMetrics
from ingest.topics import Topics, ensure_topics
from ingest.worker import Worker, WorkerOptions, default_instance
from topology.store.base import Stores

log = logging.getLogger("ingest.main")

LAYERS = ("network", "ipc", "trace", "meta")


def build_spec(stage: int, layer: str, topics: Topics, stores: Stores | None,
               settings: dict[str, Any] | None = None) -> StageSpec:
    """The stage spec of (stage, layer). ``settings`` tune windows: lateness, grace, trace_wait."""
    s = dict(settings or {})
    lateness = float(s.get("lateness", 5.0))
    grace = int(s.get("grace", 120))
    if layer == "meta":
        if stores is None:
            raise ValueError("the meta worker needs stores")
        from ingest.meta import MetaSpec

        return MetaSpec(topics, stores)
    if stage == 3:
        if stores is None:
            raise ValueError("stage 3 needs stores")
        from ingest.final import FinalSpec

        extra = float(s.get("trace_wait", 10.0)) if layer == "trace" else 0.0
        return FinalSpec(layer, topics, stores, grace_seconds=grace, lateness=lateness + extra)
    if layer == "network":
        from ingest.network import NetworkStage1Spec, NetworkStage2Spec

        if stage == 1:
            return NetworkStage1Spec(topics, lateness=lateness)
        return NetworkStage2Spec(topics, grace_seconds=grace, lateness=lateness)
    if layer == "ipc":
        from ingest.ipc import IpcSplitSpec, IpcStageSpec

        if stage == 1:
            return IpcSplitSpec(topics)
        return IpcStageSpec(topics, lateness=lateness)
    if layer == "trace":
        from ingest.trace import SpanPairingSpec, TraceSplitSpec

        if stage == 1:
            return TraceSplitSpec(topics)
        return SpanPairingSpec(topics, wait_seconds=float(s.get("trace_wait", 10.0)),
                               capacity=int(s.get("trace_capacity", 10_000)))
    raise ValueError(f"unknown layer {layer!r} (one of {', '.join(LAYERS)})")


def build_worker(stage: int, layer: str, topics: Topics, stores: Stores | None, options: WorkerOptions,
                 settings: dict[str, Any] | None = None, metrics: WorkerMetrics | None = None) -> Worker:
    spec = build_spec(stage, layer, topics, stores, settings)
    if layer == "meta":
        stage = 1
    return Worker(spec, topics.group(layer, stage), topics.state(layer, stage), topics.dlq, options, metrics)


async def serve(stage: int, layer: str, bootstrap: str, stores: Stores | None, *,
                topics: Topics | None = None,
                options: WorkerOptions | None = None, settings: dict[str, Any] | None = None,
                stop: asyncio.Event | None = None, partitions: int = 4,
                on_ready: Callable[[Worker], None] | None = None,
                metrics: WorkerMetrics | None = None) -> None:
    """Create the topics if needed and run one worker until ``stop`` is set (``metrics``: a registry
    shared by several workers of one process)."""
    topics = topics or Topics()
    options = options or WorkerOptions(bootstrap=bootstrap)
    stop = stop or asyncio.Event()
    await _ensure_topics_retrying(bootstrap, topics, partitions, stop)
    worker = build_worker(stage, layer, topics, stores, options, settings, metrics)
    if on_ready is not None:
        on_ready(worker)
    await worker.run(stop)


async def _ensure_topics_retrying(bootstrap: str, topics: Topics, partitions: int,
                                  stop: asyncio.Event) -> None:
    delay = 0.5
    while True:
        try:
            await ensure_topics(bootstrap, topics, partitions)
            return
        except Exception as e:  # the broker may still be starting
            log.warning("cannot create topics yet", extra={"error": f"{type(e).__name__}: {e}"})
            if stop.is_set():
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def open_stores(store: str = "embedded", data_dir: str | None = None,
                janusgraph_url: str | None = None) -> Any:
    """The stores the terminal workers write (same choices as ``topology serve``)."""
    if store == "janusgraph":
        from topology.store.janusgraph import open_janusgraph_stores
        from topology.timewindow import Retention

        url = janusgraph_url or os.environ.get("JANUSGRAPH_URL", "ws://127.0.0.1:18182/gremlin")
        return open_janusgraph_stores(url, Retention(), require=True)  # awaited by the caller
    if not data_dir:
        raise SystemExit("the embedded store needs --data-dir")
    from topology.store.embedded import open_stores as open_embedded

    return open_embedded(data_dir)


def run_worker(stage: int, layer: str, bootstrap: str, store: str = "embedded", data_dir: str | None = None,
               janusgraph_url: str | None = None, metrics_port: int | None = 0, *,
               topic_prefix: str | None = None, instance: str | None = None, partitions: int = 4,
               settings: dict[str, Any] | None = None, **options: Any) -> int:
    """Run one worker until SIGTERM or SIGINT; returns the process exit code.

    ``metrics_port``: 0 picks a free port (logged), None disables the endpoint. ``topic_prefix``
    (default: env ``TOPOLOGY_TOPIC_PREFIX``) prefixes every topic and group name. ``options`` are
    :class:`WorkerOptions` fields (commit intervals, idle seconds...).
    """
    topics = Topics(topic_prefix if topic_prefix is not None else os.environ.get("TOPOLOGY_TOPIC_PREFIX", ""))
    opts = WorkerOptions(bootstrap=bootstrap, instance=instance or default_instance(),
                         metrics_port=metrics_port, **options)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stores = None
        if stage == 3 or layer == "meta":
            opened = open_stores(store, data_dir, janusgraph_url)
            stores = await opened if inspect.isawaitable(opened) else opened
        try:
            await serve(stage, layer, bootstrap, stores, topics=topics, options=opts, settings=settings,
                        stop=stop, partitions=partitions)
        finally:
            if stores is not None:
                await stores.close()

    asyncio.run(main())
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ingest.main", description="one Kafka stage worker")
    p.add_argument("--stage", type=int, required=True, choices=(1, 2, 3))
    p.add_argument("--layer", required=True, choices=LAYERS)
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    p.add_argument("--store", choices=("embedded", "janusgraph"), default="embedded")
    p.add_argument("--data-dir")
    p.add_argument("--janusgraph-url")
    p.add_argument("--metrics-port", type=int, default=0, help="0: any free port; -1: no endpoint")
    p.add_argument("--topic-prefix")
    p.add_argument("--instance")
    p.add_argument("--partitions", type=int, default=4, help="partitions of topics created by this worker")
    p.add_argument("--min-commit-interval", type=float)
    p.add_argument("--max-commit-interval", type=float)
    p.add_argument("--idle-seconds", type=float)
    p.add_argument("--early-interval", type=float,
                   help="seconds between early outputs of open windows (new edges); 0: only at close")
    p.add_argument("--lateness", type=float)
    p.add_argument("--grace", type=int)
    p.add_argument("--trace-wait", type=float)
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    logging.basicConfig(level=a.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = {k: v for k, v in (("min_commit_interval", a.min_commit_interval),
                                 ("max_commit_interval", a.max_commit_interval),
                                 ("idle_seconds", a.idle_seconds),
                                 ("early_interval", a.early_interval)) if v is not None}
    settings = {k: v for k, v in (("lateness", a.lateness), ("grace", a.grace), ("trace_wait", a.trace_wait))
                if v is not None}
    return run_worker(a.stage, a.layer, a.bootstrap, a.store, a.data_dir, a.janusgraph_url,
                      None if a.metrics_port < 0 else a.metrics_port, topic_prefix=a.topic_prefix,
                      instance=a.instance, partitions=a.partitions, settings=settings, **options)


if __name__ == "__main__":
    sys.exit(main())

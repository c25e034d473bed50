"""Kafka mode of ``topology serve``: the terminal workers inside the server process.

``topology serve --kafka BOOTSTRAP`` consumes what the stage-2 workers of every layer publish
(``topology.<layer>.stage2``) and the catalog and health topics, and writes them into the stores
this server answers from: stage 3 of NETWORK, IPC and TRACE and the meta worker, each a member of
its usual consumer group (:mod:`ingest.main`). Stages 1 and 2 run as their own processes
(``topology ingest --stage 1|2 --layer L``), as many as the load needs.

This is how the embedded store serves a Kafka pipeline (an embedded store belongs to one process);
with the JanusGraph store the terminal workers may instead run as separate ``topology ingest
--stage 3`` processes, and ``serve`` then needs no ``--kafka``. Running both at once is also
correct: they share the consumer groups, so each partition is written by exactly one of them.

The workers' metrics (lag, throughput, dead letters, clocks) are on the server's ``/metrics``.
On shutdown every worker makes a final checkpoint before the stores close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

from ingest.main import serve as serve_worker
from ingest.metrics import WorkerMetrics
from ingest.security import Kafka, servers, with_servers
from ingest.topics import Topics
from ingest.worker import Worker, WorkerOptions
from topology.store.base import Stores

log = logging.getLogger("service.consumers")

#: (stage, layer) of the workers that write the stores.
TERMINAL = ((3, "network"), (3, "ipc"), (3, "trace"), (1, "meta"))


class Consumers:
    """The terminal Kafka workers of one server process (see the module docstring)."""

    def __init__(self, stores: Stores, bootstrap: Kafka, topics: Topics, instance: str | None = None,
                 partitions: int = 4, options: WorkerOptions | None = None) -> None:
        """``options``: the workers' options (their metrics endpoint is always the server's ``/metrics``);
        bare bootstrap servers take the transport security of ``options``."""
        self.stores = stores
        self.bootstrap = bootstrap if options is None else with_servers(options.bootstrap, bootstrap)
        self.topics = topics
        self.partitions = partitions
        self.metrics = WorkerMetrics()
        base = options if options is not None else WorkerOptions(bootstrap=bootstrap)
        self.options = replace(base, bootstrap=self.bootstrap, metrics_port=None,
                               **({"instance": instance} if instance is not None else {}))
        self.workers: list[Worker] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for stage, layer in TERMINAL:
            task = asyncio.create_task(serve_worker(
                stage, layer, self.bootstrap, self.stores, topics=self.topics, options=self.options,
                stop=self._stop, partitions=self.partitions, metrics=self.metrics,
                on_ready=self.workers.append), name=f"kafka-{layer}-{stage}")
            self._tasks.append(task)
        log.info("consuming from Kafka", extra={"bootstrap": servers(self.bootstrap),
                                                "prefix": self.topics.prefix,
                                                "workers": [f"{layer}-{stage}" for stage, layer in TERMINAL]})

    async def stop(self, grace: float = 30.0) -> None:
        """Ask every worker for its final checkpoint, then wait (cancelling what is still running)."""
        self._stop.set()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in [*done, *pending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def status(self) -> dict[str, str]:
        """``layer-stage`` -> ``consuming`` (partitions assigned), ``waiting`` or ``failed: ...``."""
        out: dict[str, str] = {}
        for task, (stage, layer) in zip(self._tasks, TERMINAL, strict=False):
            name = f"{layer}-{stage}"
            if task.done() and not task.cancelled() and task.exception() is not None:
                out[name] = f"failed: {task.exception()}"
        for w in self.workers:
            name = f"{w.spec.layer}-{w.spec.stage}"
            out.setdefault(name, "consuming" if w.ready.is_set() else "waiting")
        return out

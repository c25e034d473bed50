"""Entry points of the Kafka workers.

``topology ingest --stage N --layer L`` runs one stage of one layer until SIGTERM/SIGINT
(:func:`run_worker`); the command line is ``service/cli.py``'s (nothing here imports it). Its
settings are declared here (:class:`IngestSettings`, and :data:`WorkerSettings`: one flag and
variable per :class:`WorkerOptions` field), every flag falling back to its variable
(:mod:`topology.settings`).

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
import contextlib
import dataclasses
import logging
import signal
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ingest.logic import StageSpec
from ingest.metrics import DEFAULT_METRICS_PORT, WorkerMetrics
from ingest.security import Kafka, explain, servers
from ingest.topics import Topics, ensure_topics
from ingest.worker import Worker, WorkerOptions
from topology.servicegraph import ServiceGraph
from topology.settings import (
    ConfigError,
    KafkaSettings,
    PairingSettings,
    StoreSettings,
    add_flags,
    parse_not_negative,
    parse_positive_int,
    parser_for,
    resolve,
    setting,
)
from topology.store.base import Stores

log = logging.getLogger("ingest.main")

LAYERS = ("network", "ipc", "trace", "meta")


def build_spec(stage: int, layer: str, topics: Topics, stores: Stores | None,
               settings: dict[str, Any] | None = None,
               service_graph: ServiceGraph | None = None) -> StageSpec:
    """The stage spec of (stage, layer). ``settings`` tune windows: lateness, grace, trace_wait;
    ``service_graph`` counts what TRACE stage 3 finalises (:mod:`topology.servicegraph`)."""
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
        return FinalSpec(layer, topics, stores, grace_seconds=grace, lateness=lateness + extra,
                         service_graph=service_graph)
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
    metrics = metrics or WorkerMetrics()
    spec = build_spec(stage, layer, topics, stores, settings, metrics.service_graph)
    if layer == "meta":
        stage = 1
    return Worker(spec, topics.group(layer, stage), topics.state(layer, stage), topics.dlq, options, metrics)


async def serve(stage: int, layer: str, kafka: Kafka, stores: Stores | None, *,
                topics: Topics | None = None,
                options: WorkerOptions | None = None, settings: dict[str, Any] | None = None,
                stop: asyncio.Event | None = None, partitions: int = 4,
                on_ready: Callable[[Worker], None] | None = None,
                metrics: WorkerMetrics | None = None) -> None:
    """Create the topics if needed and run one worker until ``stop`` is set (``metrics``: a registry
    shared by several workers of one process)."""
    topics = topics or Topics()
    options = options or WorkerOptions(bootstrap=kafka)
    stop = stop or asyncio.Event()
    await _ensure_topics_retrying(kafka, topics, partitions, stop)
    worker = build_worker(stage, layer, topics, stores, options, settings, metrics)
    if on_ready is not None:
        on_ready(worker)
    await worker.run(stop)


async def _ensure_topics_retrying(kafka: Kafka, topics: Topics, partitions: int,
                                  stop: asyncio.Event) -> None:
    """Create the topics, retrying while the broker is not there; raise :class:`Stopped` (naming the
    last error) when ``stop`` is set first."""
    delay = 0.5
    error = "no answer yet"
    while not stop.is_set():
        attempt = asyncio.ensure_future(ensure_topics(kafka, topics, partitions))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await attempt
            break
        try:
            attempt.result()
            return
        except ConfigError:
            raise
        except Exception as e:  # the broker may still be starting
            error = await explain(kafka, e)
            log.warning("cannot create topics yet", extra={"bootstrap": servers(kafka), "error": error})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 5.0)
    raise Stopped(f"stopped before Kafka at {servers(kafka)} answered ({error})")


# --- the ``topology ingest`` command ----------------------------------------------------------------

def _stage(text: str) -> int:
    if text not in ("1", "2", "3"):
        raise ValueError(f"expected 1, 2 or 3, got {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class IngestSettings:
    stage: int | None = setting(None, "TOPOLOGY_INGEST_STAGE", "the stage to run: 1, 2 or 3",
                                flag="--stage", parse=_stage, metavar="{1,2,3}", shown="none (required)")
    layer: str | None = setting(None, "TOPOLOGY_INGEST_LAYER", "the layer: network, ipc, trace, or meta "
                                "(catalog and health, stage 1 only)", flag="--layer", choices=LAYERS,
                                shown="none (required)")
    partitions: int = setting(4, "TOPOLOGY_PARTITIONS", "partitions of the topics a worker creates",
                              flag="--partitions", parse=parse_positive_int, metavar="N")
    lateness: float = setting(5.0, "TOPOLOGY_LATENESS", "seconds a window waits for late records",
                              flag="--lateness", parse=parse_not_negative, metavar="SECONDS")
    grace: int = setting(120, "TOPOLOGY_GRACE", "seconds an unresolved flow waits for its address or peer",
                         flag="--grace", parse=parse_positive_int, metavar="SECONDS")
    trace_wait: float = setting(10.0, "TOPOLOGY_TRACE_WAIT", "seconds a span waits for its peer span",
                                flag="--trace-wait", parse=parse_not_negative, metavar="SECONDS")

    def __post_init__(self) -> None:
        if self.stage is None:
            raise ConfigError("TOPOLOGY_INGEST_STAGE: which stage? give --stage 1, 2 or 3")
        if self.layer is None:
            raise ConfigError(f"TOPOLOGY_INGEST_LAYER: which layer? give --layer {'|'.join(LAYERS)}")
        if self.layer == "meta" and self.stage != 1:
            raise ConfigError("TOPOLOGY_INGEST_STAGE: the meta layer has one stage: --stage 1 --layer meta")

    @property
    def writes_stores(self) -> bool:
        return self.stage == 3 or self.layer == "meta"

    def tuning(self) -> dict[str, Any]:
        """The window settings of :func:`build_spec`."""
        return {"lateness": self.lateness, "grace": self.grace, "trace_wait": self.trace_wait}


# What each WorkerOptions field means; a field added there becomes a flag and a variable by itself
# (TOPOLOGY_<FIELD>, --<field>), and the README test asks for its row.
WORKER_HELP = {
    "instance": ("name of this worker in Kafka transactional ids (unique per process by default; a stable "
                 "name fences a restarted worker's predecessor at once)", "host name.pid.random"),
    "min_commit_interval": ("seconds outputs wait at most (plus processing) for their commit", None),
    "max_commit_interval": ("seconds between checkpoints of offsets and state, at most", None),
    "tick_interval": ("seconds between event-time clocks sent downstream (when they move)", None),
    "early_interval": ("seconds between early outputs of open windows (new edges); 0: only at close", None),
    "idle_seconds": ("seconds after which a silent stage-1 partition's clock follows the wall clock", None),
    "max_future": ("seconds an event time may be ahead of its record's Kafka timestamp (more: capped)", None),
    "max_records": ("records per consumed batch", None),
    "poll_ms": ("milliseconds a poll waits for records", None),
    "transaction_timeout_ms": ("Kafka transaction timeout in milliseconds", None),
    "restart_backoff": ("seconds before a session restarts after a Kafka error (grows on repeats)", None),
    "shutdown_seconds": ("seconds for the final checkpoint after SIGTERM", None),
    "metrics_port": ("port of the worker's Prometheus metrics (0: any free port, logged; none: no endpoint)",
                     f"{DEFAULT_METRICS_PORT} (ingest), none (serve --kafka)"),
    "metrics_host": ("interface of the worker's Prometheus metrics endpoint", None),
}
_NOT_SETTINGS = frozenset({"bootstrap"})  # KafkaSettings.bootstrap


def _metavar(name: str, kind: Any) -> str:
    for suffix in ("ms", "port", "host"):
        if name.endswith("_" + suffix):
            return suffix.upper()
    return {float: "SECONDS", int: "N"}.get(kind, name.split("_")[-1].upper())


def _worker_settings() -> type:
    """A settings class with one field per configurable :class:`WorkerOptions` field (None: the
    WorkerOptions default)."""
    hints = typing.get_type_hints(WorkerOptions)
    fields: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(WorkerOptions):
        kind = hints[f.name]
        if f.name in _NOT_SETTINGS:
            continue
        try:
            parser_for(kind)
        except TypeError:  # a callable (the wall clock): for tests, not for people
            continue
        meaning, shown = WORKER_HELP.get(f.name, (f"WorkerOptions.{f.name} (ingest/worker.py)", None))
        default = None if f.default is dataclasses.MISSING else f.default
        if default is None and type(None) not in typing.get_args(kind):
            kind = kind | None
        fields.append((f.name, kind, setting(default, f"TOPOLOGY_{f.name.upper()}", meaning,
                                             flag="--" + f.name.replace("_", "-"), shown=shown,
                                             metavar=_metavar(f.name, kind))))
    return dataclasses.make_dataclass("WorkerSettings", fields, frozen=True, slots=True)


WorkerSettings = _worker_settings()


def worker_options(worker: Any, kafka: Kafka, **overrides: Any) -> WorkerOptions:
    """WorkerOptions from a WorkerSettings object (unset fields keep the WorkerOptions defaults)."""
    given = {f.name: getattr(worker, f.name) for f in dataclasses.fields(worker)}
    given = {k: v for k, v in given.items() if v is not None or k == "metrics_port"}
    return WorkerOptions(bootstrap=kafka, **{**given, **overrides})


INGEST_DEFAULTS = {"data_dir": "var/kafka-store"}
WORKER_DEFAULTS = {"metrics_port": DEFAULT_METRICS_PORT}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``topology ingest`` (every one also a variable)."""
    add_flags(p, IngestSettings)
    add_flags(p, PairingSettings)
    add_flags(p, KafkaSettings)
    add_flags(p, StoreSettings, defaults=INGEST_DEFAULTS)
    add_flags(p, WorkerSettings, defaults=WORKER_DEFAULTS)


def run_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``topology ingest``: resolve the settings (flags, then the environment), run the worker."""
    ingest = resolve(IngestSettings, args, env)
    kafka = resolve(KafkaSettings, args, env)
    store = resolve(StoreSettings, args, env, defaults=INGEST_DEFAULTS) if ingest.writes_stores else None
    worker = resolve(WorkerSettings, args, env, defaults=WORKER_DEFAULTS)
    pairing = resolve(PairingSettings, args, env)
    return run_worker(ingest, kafka, worker_options(worker, kafka), store, pairing)


class Stopped(Exception):
    """SIGTERM/SIGINT arrived before the worker reached Kafka."""


def run_worker(ingest: IngestSettings, kafka: KafkaSettings, options: WorkerOptions,
               store: StoreSettings | None, pairing: PairingSettings | None = None) -> int:
    """Run one worker until SIGTERM or SIGINT; returns the process exit code (raises :class:`Stopped`
    when stopped before Kafka answered, StoreError when the stores cannot be opened)."""
    assert ingest.stage is not None and ingest.layer is not None  # IngestSettings checks
    stage, layer = ingest.stage, ingest.layer
    topics = Topics(kafka.topic_prefix)
    # auto: the machine's share for pairing, split over the partitions a worker may hold
    tuning = {**ingest.tuning(),
              "trace_capacity": (pairing or PairingSettings()).capacity(parts=ingest.partitions)}

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stores = await store.open() if store is not None else None
        try:
            await serve(stage, layer, kafka, stores, topics=topics, options=options,
                        settings=tuning, stop=stop, partitions=ingest.partitions)
        finally:
            if stores is not None:
                await stores.close()

    asyncio.run(main())
    return 0


"""The Kafka topics of the ingestion pipeline, their settings, and creating them (aiokafka admin).

Input topics carry the formats real fleets produce; repartition topics connect the stages; state
topics hold each stage's checkpointed windows; ``topology.dlq`` collects rejected records.

    topology.flows        flow batches, wire format v1 (docs/flow-wire-format.md)      -> network stage 1
    topology.vpcflows     AWS VPC Flow Log lines (v2 default format, or a header line)   -> network stage 1
    otlp_metrics          ExportMetricsServiceRequest bytes (OTel Collector, otlp_proto) -> ipc stage 1
    otlp_spans            ExportTraceServiceRequest bytes (keyed by trace id or not)     -> trace stage 1
    topology.catalog      ServiceInfo JSON, keyed by name (compacted)                    -> meta worker
    topology.health       HealthEvent JSON, keyed by service                             -> meta, stage 3
    topology.changes      ChangeEvent JSON (deploys, config changes), keyed by service   -> meta worker
    topology.addresses    AddressLease JSON, keyed by "ip@start" (compacted)             -> stages 1-2, all
    topology.<layer>.stage1 / .stage2   repartition topics (stage N output, stage N+1 input)
    topology.<layer>.stage<N>.state     stage state checkpoints (compacted), one partition per input partition
    topology.dlq          dead letters: original bytes plus source topic, partition, offset, reason

Every name can carry a prefix (tests use a unique prefix per test; deployments usually none).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest.security import Kafka, client_options

if TYPE_CHECKING:  # the admin client is imported where it is used: naming topics needs no Kafka client
    from aiokafka.admin import AIOKafkaAdminClient

LAYERS = ("network", "ipc", "trace")

COMPACTED = {"cleanup.policy": "compact"}
# State checkpoints: compacted, small segments so the cleaner can drop superseded checkpoints soon.
STATE_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "60000",
    "segment.bytes": "16777216",
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": "60000",
    "max.message.bytes": "2097152",
}


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def flows(self) -> str:
        return self.name("topology.flows")

    @property
    def vpcflows(self) -> str:
        return self.name("topology.vpcflows")

    @property
    def otlp_metrics(self) -> str:
        return self.name("otlp_metrics")

    @property
    def otlp_spans(self) -> str:
        return self.name("otlp_spans")

    @property
    def catalog(self) -> str:
        return self.name("topology.catalog")

    @property
    def health(self) -> str:
        return self.name("topology.health")

    @property
    def addresses(self) -> str:
        return self.name("topology.addresses")

    @property
    def changes(self) -> str:
        return self.name("topology.changes")

    @property
    def dlq(self) -> str:
        return self.name("topology.dlq")

    def stage_output(self, layer: str, stage: int) -> str:
        """The repartition topic stage ``stage`` of ``layer`` writes (stage 1 and 2 only)."""
        if stage not in (1, 2):
            raise ValueError(f"stage {stage} has no output topic")
        return self.name(f"topology.{layer}.stage{stage}")

    def state(self, layer: str, stage: int) -> str:
        return self.name(f"topology.{layer}.stage{stage}.state")

    def group(self, layer: str, stage: int) -> str:
        """Consumer group id of one stage of one layer."""
        return self.name(f"topology.{layer}.stage{stage}")

    def inputs(self, layer: str, stage: int) -> tuple[str, ...]:
        """The topics a stage consumes as a consumer group."""
        if layer == "meta":
            return (self.catalog, self.health, self.changes)
        if stage == 1:
            return {"network": (self.flows, self.vpcflows), "ipc": (self.otlp_metrics,),
                    "trace": (self.otlp_spans,)}[layer]
        return (self.stage_output(layer, stage - 1),)

    def all_specs(self, partitions: int = 4) -> dict[str, tuple[int, dict[str, str]]]:
        """Every topic: name -> (partitions, config)."""
        specs: dict[str, tuple[int, dict[str, str]]] = {
            self.flows: (partitions, {}),
            self.vpcflows: (partitions, {}),
            self.otlp_metrics: (partitions, {}),
            self.otlp_spans: (partitions, {}),
            self.catalog: (1, dict(COMPACTED)),
            self.health: (1, {}),
            self.addresses: (1, dict(COMPACTED)),
            self.changes: (1, {}),
            self.dlq: (1, {}),
        }
        for layer in LAYERS:
            for stage in (1, 2):
                specs[self.stage_output(layer, stage)] = (partitions, {})
            for stage in (1, 2, 3):
                specs[self.state(layer, stage)] = (partitions, dict(STATE_CONFIG))
        specs[self.state("meta", 1)] = (1, dict(STATE_CONFIG))
        return specs


async def ensure_topics(kafka: Kafka, topics: Topics, partitions: int = 4,
                        only: Iterable[str] | None = None) -> list[str]:
    """Create the pipeline's topics that do not exist yet; returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    specs = topics.all_specs(partitions)
    if only is not None:
        wanted = set(only)
        specs = {k: v for k, v in specs.items() if k in wanted}
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, p, 1, topic_configs=cfg) for n, (p, cfg) in specs.items() if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was quicker
                await admin.create_topics(missing, timeout_ms=30_000)
            await _wait_for_leaders(admin, [t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], within: float = 30.0) -> None:
    """Return once every partition of ``names`` has a leader: a topic is usable only then, and a
    producer that writes earlier stalls on NOT_LEADER_FOR_PARTITION retries."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        described = await admin.describe_topics(names)
        ready = {t["topic"] for t in described
                 if t.get("error_code", 0) == 0 and t.get("partitions")
                 and all(p.get("leader", -1) >= 0 for p in t["partitions"])}
        if ready >= set(names):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics without a leader after {within:.0f} s: {sorted(set(names) - ready)}")
        await asyncio.sleep(0.1)


async def delete_prefixed(kafka: Kafka, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (tests clean up with this)."""
    if not prefix:
        raise ValueError("refusing to delete every topic: give a non-empty prefix")
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names, timeout_ms=30_000)
        return names
    finally:
        await admin.close()

"""The contract between the generic runner and worker (:mod:`ingest.runner`, :mod:`ingest.worker`)
and one stage of one layer.

A :class:`StageSpec` says what a stage reads and writes; it makes one :class:`PartitionLogic` per
input partition (the pure stage object of that partition, wrapped), which takes plain records
(:class:`ingest.record.Record`). The runner owns clocks, flushes and dead letters; the worker owns
everything about Kafka: consumer group, checkpoints, transactions, metrics.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.record import Partition, Record
from ingest.topics import Topics


class Rejected(Exception):
    """The whole input record is bad: it goes to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Added:
    """What feeding one record did: its event time (stage 1 inputs) and parts of it that were rejected."""

    event_time: float | None = None
    items: int = 0  # records inside it (flow records, spans, points, aggregates), for throughput
    rejects: list[tuple[str, bytes]] = field(default_factory=list)  # (reason, the rejected bytes)


@dataclass(frozen=True, slots=True)
class Emit:
    """One output item for the next stage's topic: routed by ``key``, a ``to_dict``-style dict or a row."""

    key: str
    item: dict[str, Any] | list[Any]


class PartitionLogic(abc.ABC):
    """The stage state of one input partition."""

    @abc.abstractmethod
    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        """Feed one record. ``items`` is the parsed item list for repartition topics (None for
        stage-1 inputs, whose raw ``record.value`` the logic decodes); ``now`` is the partition's
        event-time clock before this record. Raises :class:`Rejected`."""

    @abc.abstractmethod
    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        """Outputs that are due at event time ``now``: :class:`Emit` for Kafka stages, store records
        for terminal stages. ``checkpoint`` is True right before the state is checkpointed."""

    def early(self, now: float) -> list[Any]:
        """Outputs of windows still open at event time ``now`` that are worth sending before they
        close (new edges, provisional windows), like :meth:`flush`'s. What they emit must leave the
        state (or be replaced later), since they are checkpointed together. None by default."""
        return []

    @abc.abstractmethod
    def state(self) -> Any:
        """Picklable state to checkpoint (None: nothing worth keeping)."""

    def counters(self) -> dict[str, int]:
        return {}


class Splitter(PartitionLogic):
    """A stateless stage 1 that re-keys whole input records for the next stage (OTLP requests by
    resource or by trace id, after admission: :mod:`ingest.admission`): outputs leave at the next
    flush, nothing is checkpointed."""

    def __init__(self, counters: dict[str, int]) -> None:
        self.pending: list[Emit] = []
        self.count = counters

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        out, self.pending = self.pending, []
        return out

    def state(self) -> Any:
        return None

    def counters(self) -> dict[str, int]:
        return dict(self.count)


class StageSpec(abc.ABC):
    """One stage of one layer. Its topics follow from (layer, stage) unless a subclass says otherwise."""

    layer: str
    stage: int
    topics: Topics
    terminal: bool = False  # writes to the stores instead of a topic
    repartitioned_input: bool = True  # input records are repartition batches (False for stage 1)

    def inputs(self) -> tuple[str, ...]:
        return self.topics.inputs(self.layer, self.stage)

    def output_topic(self) -> str | None:
        return None if self.terminal else self.topics.stage_output(self.layer, self.stage)

    def upstream_inputs(self) -> tuple[str, ...]:
        """Topics whose partitions are the clock sources of this stage's input (empty for stage 1)."""
        return self.topics.inputs(self.layer, self.stage - 1) if self.stage > 1 else ()

    def global_topics(self) -> tuple[str, ...]:
        """Topics every worker of this stage reads entirely (address leases, health events)."""
        return ()

    def apply_global(self, record: Record) -> str | None:
        """Take one record of a global topic (bad ones raise; the meta worker dead-letters them)."""
        return None

    def shared(self) -> dict[str, Any]:
        """Objects shared by all partitions: not checkpointed, re-attached on restore."""
        return {}

    @abc.abstractmethod
    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        """The logic of ``tp``, from a checkpointed ``state`` (None: start empty)."""

    async def write(self, outputs: Sequence[Any]) -> int:
        """Terminal stages: make ``outputs`` durable in the stores (idempotent); returns items written.
        Raises :class:`topology.store.base.StoreUnavailable` to pause and retry."""
        raise NotImplementedError

    async def close(self) -> None:
        return None

"""The meta worker: catalog entries, health and change events into the catalog store; leases checked.

Records are JSON objects (or lists of them) as ``to_dict`` writes them: :class:`ServiceInfo` on
``topology.catalog``, :class:`HealthEvent` on ``topology.health``, :class:`ChangeEvent` on
``topology.changes``, :class:`AddressLease` on ``topology.addresses``. Leases are used by the
network and IPC workers, which read the topic entirely; this worker only dead-letters the bad ones so
they are seen and counted once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ingest.admission import admitted, produced
from ingest.logic import Added, PartitionLogic, StageSpec
from ingest.record import Partition, Record
from ingest.topics import Topics
from topology.admit import Admission, admit_catalog, admit_changes, admit_health, admit_leases
from topology.catalog import AddressLease, HealthEvent, ServiceInfo
from topology.change import ChangeEvent
from topology.store.base import Stores


class MetaSpec(StageSpec):
    layer = "meta"
    stage = 1
    terminal = True
    repartitioned_input = False

    def __init__(self, topics: Topics, stores: Stores) -> None:
        self.topics = topics
        self.stores = stores
        self.admit: dict[str, Callable[[bytes, float | None], Admission[list[Any]]]] = {
            topics.catalog: admit_catalog,
            topics.health: admit_health,
            topics.addresses: admit_leases,
            topics.changes: admit_changes,
        }

    def inputs(self) -> tuple[str, ...]:
        return (self.topics.catalog, self.topics.health, self.topics.addresses, self.topics.changes)

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        return _Meta(self.admit[tp.topic])

    async def write(self, outputs: Sequence[Any]) -> int:
        services = [o for o in outputs if isinstance(o, ServiceInfo)]
        health = [o for o in outputs if isinstance(o, HealthEvent)]
        changes = [o for o in outputs if isinstance(o, ChangeEvent)]
        if services:
            # the latest entry of each name wins (a compacted topic's semantics)
            await self.stores.catalog.upsert_services(list({s.name: s for s in services}.values()))
        if health:
            await self.stores.catalog.record_health(health)
        if changes:
            await self.stores.catalog.record_changes(changes)
        return len(services) + len(health) + len(changes)


class _Meta(PartitionLogic):
    def __init__(self, admit: Callable[[bytes, float | None], Admission[list[Any]]]) -> None:
        self.admit = admit
        self.pending: list[Any] = []
        self.count = {"records": 0, "leases": 0}

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        if record.value is None:
            return Added()  # a compaction tombstone
        parsed, _ = admitted(self.admit(record.value, produced(record)))
        for p in parsed:
            if isinstance(p, AddressLease):
                self.count["leases"] += 1
            else:
                self.pending.append(p)
        self.count["records"] += len(parsed)
        # The record's Kafka time moves the partition's clock, and a moving clock flushes: catalog and
        # health changes reach the store within a commit interval, not at the next periodic checkpoint.
        return Added(record.timestamp_ms / 1000.0 if record.timestamp_ms > 0 else None, len(parsed))

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        out, self.pending = self.pending, []
        return out

    def state(self) -> Any:
        return None

    def counters(self) -> dict[str, int]:
        return dict(self.count)

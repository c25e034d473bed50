"""NETWORK layer workers: stage 1 (flow batches and VPC flow logs -> aggregates) and stage 2
(address resolution, intermediary joins -> edge partials). Thin shells around
:mod:`topology.stages.network_stage1` and :mod:`topology.stages.network_stage2`.

Stage 1 keeps its open 10 s windows in its checkpoints (so a replay regroups records exactly as
the first run did). Early flushes (the worker's ``early_interval``) send what makes a new edge
visible before its window closes: stage 1 the aggregates of keys new in their open window (they
leave the checkpointed state in the same transaction), stage 2 the direct edges new in their open
window as additive partials. Stage 1's outputs are routed by :meth:`NetworkStage2.route_key` (the
intermediary, or the app the traffic goes into), so everything one join needs meets in one stage-2
partition; both stages therefore read the address leases (``topology.addresses``) entirely.
Aggregates cross the repartition topic as rows (:func:`~topology.stages.network_stage1.from_row`:
their fields in order), cheaper to write and read than objects; stage 2 reads both.
"""

from __future__ import annotations

import math
from typing import Any

from ingest.admission import admitted, produced
from ingest.logic import Added, Emit, PartitionLogic, Rejected, StageSpec
from ingest.record import Partition, Record
from ingest.topics import Topics
from topology.address import AddressBook
from topology.admit import SCHEMA, admit_flows, admit_leases, admit_vpcflows, reason
from topology.model import EdgePartial
from topology.stages.network_stage1 import FlowAggregate, FlowAggregates, NetworkStage1, as_row, from_row
from topology.stages.network_stage2 import NetworkStage2
from topology.stages.vpc import VpcStage


def edge_route(p: EdgePartial) -> str:
    """Repartition key of stage 2 -> stage 3: the edge (all partials of one edge meet in one worker)."""
    k = p.key
    return f"{k.layer.value}|{k.granularity.value}|{k.source}|{k.target}"


def apply_lease(book: AddressBook, record: Record) -> None:
    """Add one ``topology.addresses`` record (a lease JSON object, or a list of them) to ``book``;
    raises Rejected for what admission rejects (the meta worker dead-letters those)."""
    if record.value is None:
        return  # a compaction tombstone
    leases, _ = admitted(admit_leases(record.value, produced(record)))
    for lease in leases:
        book.add(lease)


class LeaseReader:
    """For stage specs whose partitions resolve addresses: every worker reads ``topology.addresses``
    entirely into one address book, shared by its partitions (not checkpointed)."""

    topics: Topics
    addresses: AddressBook

    def global_topics(self) -> tuple[str, ...]:
        return (self.topics.addresses,)

    def apply_global(self, record: Record) -> str | None:
        apply_lease(self.addresses, record)
        return None

    def shared(self) -> dict[str, Any]:
        return {"addresses": self.addresses}


class NetworkStage1Spec(LeaseReader, StageSpec):
    layer = "network"
    stage = 1
    repartitioned_input = False

    def __init__(self, topics: Topics, window_seconds: int = 10, lateness: float = 5.0) -> None:
        self.topics = topics
        self.window_seconds = window_seconds
        self.lateness = lateness
        self.addresses = AddressBook()
        self.router = NetworkStage2(self.addresses)

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        return _Stage1(self, state if isinstance(state, NetworkStage1) else None)


class _Stage1(PartitionLogic):
    def __init__(self, spec: NetworkStage1Spec, stage: NetworkStage1 | None) -> None:
        self.spec = spec
        self.stage = stage or NetworkStage1(spec.window_seconds)
        self.direct: list[FlowAggregate] = []  # VPC flow-log aggregates (already stage-1 output)
        self.vpc = VpcStage()

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        if record.topic == self.spec.topics.vpcflows:
            lines, out = admitted(admit_vpcflows(record.value or b"", produced(record)))
            self.direct.extend(self.vpc.aggregate(lines, self.spec.window_seconds))
            return out
        batch, out = admitted(admit_flows(record.value or b"", produced(record)))
        self.stage.add(batch)
        return out

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        if not math.isfinite(now):
            return self._emits(FlowAggregates())
        return self._emits(self.stage.flush(now - self.spec.lateness))

    def early(self, now: float) -> list[Any]:
        """Aggregates of keys new in their open window (the rest of the window follows at close)."""
        return self._emits(self.stage.flush(now - self.spec.lateness, early=True))

    def _emits(self, aggs: FlowAggregates) -> list[Any]:
        """Aggregates as rows (:func:`from_row` reads them back in stage 2), routed to stage 2."""
        rows = aggs.rows
        if self.direct:
            rows.extend(as_row(a) for a in self.direct)
            self.direct.clear()
        route = self.spec.router.route_row
        return [Emit(route(r), list(r)) for r in rows]

    def state(self) -> Any:
        """The open 10 s windows (their reduced rows; the address-text cache is not written), checkpointed
        incrementally (:data:`ingest.state.SECTIONED`)."""
        return self.stage

    def counters(self) -> dict[str, int]:
        return {**self.stage.counters, **{f"vpc_{k}": v for k, v in self.vpc.counters.items()}}


class NetworkStage2Spec(LeaseReader, StageSpec):
    layer = "network"
    stage = 2

    def __init__(self, topics: Topics, window_seconds: int = 60, grace_seconds: int = 120,
                 lateness: float = 5.0) -> None:
        self.topics = topics
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self.lateness = lateness
        self.addresses = AddressBook()

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        stage = state if isinstance(state, NetworkStage2) else NetworkStage2(
            self.addresses, self.window_seconds, self.grace_seconds)
        return _Stage2(stage, self.lateness)


class _Stage2(PartitionLogic):
    def __init__(self, stage: NetworkStage2, lateness: float) -> None:
        self.stage = stage
        self.lateness = lateness

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        try:  # rows from stage 1; objects (to_dict) from older workers and other producers
            rows = [from_row(d) if type(d) is list else as_row(FlowAggregate.from_dict(d))
                    for d in items or ()]
        except (ValueError, TypeError, KeyError) as e:
            raise Rejected(reason(SCHEMA, f"bad flow aggregate: {e}")) from None
        self.stage.add(FlowAggregates(rows))
        return Added(None, len(rows))

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        return self._emits(self.stage.flush(now - self.lateness))

    def early(self, now: float) -> list[Any]:
        """Direct edges new in their open window, as additive partials: the rest of the window (and
        joins) follows at the close, so a busy partition does not send every edge it touched each time."""
        return self._emits(self.stage.flush(now - self.lateness, early=True, new_only=True))

    def _emits(self, partials: list[EdgePartial]) -> list[Any]:
        # the leases met next to unattributed traffic ride along to stage 3, which stores them
        leases = [Emit(f"peer|{x.ip}", {"peer_lease": x.to_dict()}) for x in self.stage.take_peer_leases()]
        return [Emit(edge_route(p), p.to_dict()) for p in partials] + leases

    def state(self) -> Any:
        return self.stage

    def counters(self) -> dict[str, int]:
        return dict(self.stage.counters)

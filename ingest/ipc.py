"""IPC layer workers: stage 1 splits ``otlp_metrics`` requests by resource (so every point of a series
reaches one worker), stage 2 runs :class:`IpcStage1` (cumulative -> delta, 60 s windows) and
:class:`IpcStage2` (peer resolution) of :mod:`topology.stages.ipc` and emits edge partials.
"""

from __future__ import annotations

from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition

from ingest import otlp_items, timecheck
from ingest.logic import Added, Emit, PartitionLogic, Rejected, StageSpec
from ingest.network import apply_lease, edge_route
from ingest.splitter import split_metrics
from ingest.topics import Topics
from topology.address import AddressBook
from topology.stages.ipc import IpcStage1, IpcStage2
from topology.wire.otlp import OtlpDecodeError, decode_metrics


class IpcSplitSpec(StageSpec):
    layer = "ipc"
    stage = 1
    repartitioned_input = False

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def inputs(self) -> tuple[str, ...]:
        return self.topics.inputs("ipc", 1)

    def output_topic(self) -> str:
        return self.topics.stage_output("ipc", 1)

    def new_partition(self, tp: TopicPartition, state: Any) -> PartitionLogic:
        return _Split()


class _Split(PartitionLogic):
    def __init__(self) -> None:
        self.pending: list[Emit] = []
        self.count = {"requests": 0, "points": 0, "resources": 0}

    def add(self, record: ConsumerRecord[bytes, bytes], items: list[Any] | None, now: float) -> Added:
        if not record.value:
            raise Rejected("empty otlp_metrics record")
        try:
            req = decode_metrics(record.value)
        except OtlpDecodeError as e:
            raise Rejected(str(e)) from None
        split = split_metrics(req, timecheck.reference(record.timestamp))
        rejects = []
        if split.rejected is not None:
            if not split.by_resource:
                raise Rejected(split.reason or "absurd timestamp")
            rejects.append((split.reason or "absurd timestamp", split.rejected.SerializeToString()))
        if len(split.by_resource) == 1 and not rejects and len(req.resource_metrics) == 1:
            self.pending.append(Emit(split.by_resource[0][0], otlp_items.item(record.value)))
        else:
            self.pending.extend(Emit(k, otlp_items.item(r.SerializeToString())) for k, r in split.by_resource)
        self.count["requests"] += 1
        self.count["points"] += split.points
        self.count["resources"] += len(split.by_resource)
        return Added(split.max_time, split.points, rejects)

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        out, self.pending = self.pending, []
        return out

    def state(self) -> Any:
        return None

    def counters(self) -> dict[str, int]:
        return dict(self.count)


class IpcStageSpec(StageSpec):
    layer = "ipc"
    stage = 2

    def __init__(self, topics: Topics, window_seconds: int = 60, lateness: float = 5.0) -> None:
        self.topics = topics
        self.window_seconds = window_seconds
        self.lateness = lateness
        self.addresses = AddressBook()

    def inputs(self) -> tuple[str, ...]:
        return self.topics.inputs("ipc", 2)

    def output_topic(self) -> str:
        return self.topics.stage_output("ipc", 2)

    def upstream_inputs(self) -> tuple[str, ...]:
        return self.topics.inputs("ipc", 1)

    def global_topics(self) -> tuple[str, ...]:
        return (self.topics.addresses,)

    def apply_global(self, record: ConsumerRecord[bytes, bytes]) -> str | None:
        apply_lease(self.addresses, record)
        return None

    def shared(self) -> dict[str, Any]:
        return {"addresses": self.addresses}

    def new_partition(self, tp: TopicPartition, state: Any) -> PartitionLogic:
        if isinstance(state, tuple) and len(state) == 2:
            s1, s2 = state
        else:
            s1, s2 = IpcStage1(self.window_seconds), IpcStage2(self.addresses)
        return _Ipc(s1, s2, self.lateness)


class _Ipc(PartitionLogic):
    def __init__(self, s1: IpcStage1, s2: IpcStage2, lateness: float) -> None:
        self.s1 = s1
        self.s2 = s2
        self.lateness = lateness

    def add(self, record: ConsumerRecord[bytes, bytes], items: list[Any] | None, now: float) -> Added:
        datas = []
        try:
            for d in items or ():
                datas.append(otlp_items.payload(d))
        except ValueError as e:
            raise Rejected(str(e)) from None
        n = 0
        for data in datas:
            try:
                self.s1.add_serialized(data)
            except OtlpDecodeError as e:
                raise Rejected(str(e)) from None
            n += 1
        return Added(None, n)

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        obs = self.s1.flush(now - self.lateness)
        if obs:
            self.s2.add(obs)
        return [Emit(edge_route(p), p.to_dict()) for p in self.s2.flush()]

    def state(self) -> Any:
        return (self.s1, self.s2)

    def counters(self) -> dict[str, int]:
        return {**self.s1.counters, **{f"stage2_{k}": v for k, v in self.s2.counters.items()}}


"""IPC layer workers: stage 1 splits ``otlp_metrics`` requests by resource (so every point of a series
reaches one worker), stage 2 runs :class:`IpcStage1` (cumulative -> delta, 60 s windows) and
:class:`IpcStage2` (peer resolution) of :mod:`topology.stages.ipc` and emits edge partials.
"""

from __future__ import annotations

from typing import Any

from ingest import otlp_items
from ingest.admission import admitted, produced
from ingest.logic import Added, Emit, PartitionLogic, Rejected, Splitter, StageSpec
from ingest.network import LeaseReader, edge_route
from ingest.record import Partition, Record
from ingest.reorder import ReorderBuffer
from ingest.splitter import split_metrics
from ingest.topics import Topics
from topology.address import AddressBook
from topology.admit import DECODE, admit_metrics, reason
from topology.stages.ipc import IpcStage1, IpcStage2
from topology.wire.metric_columns import NATIVE, metric_columns
from topology.wire.otlp import PROTOBUF, OtlpDecodeError, metrics_view


class IpcSplitSpec(StageSpec):
    layer = "ipc"
    stage = 1
    repartitioned_input = False

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        return _Split()


class _Split(Splitter):
    def __init__(self) -> None:
        super().__init__({"requests": 0, "points": 0, "resources": 0})

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        req, out = admitted(admit_metrics(record.value or b"", PROTOBUF, produced(record)))
        by_resource = split_metrics(req)
        if len(by_resource) == 1 and not out.rejects:
            self.pending.append(Emit(by_resource[0][0], otlp_items.item(record.value or b"")))
        else:
            self.pending.extend(Emit(k, otlp_items.item(r.SerializeToString())) for k, r in by_resource)
        self.count["requests"] += 1
        self.count["points"] += out.items
        self.count["resources"] += len(by_resource)
        return out


class IpcStageSpec(LeaseReader, StageSpec):
    layer = "ipc"
    stage = 2

    def __init__(self, topics: Topics, window_seconds: int = 60, lateness: float = 5.0) -> None:
        self.topics = topics
        self.window_seconds = window_seconds
        self.lateness = lateness
        self.addresses = AddressBook()

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        if isinstance(state, tuple) and len(state) == 3 and isinstance(state[0], IpcStage1) \
                and isinstance(state[1], IpcStage2) and isinstance(state[2], ReorderBuffer):
            return _Ipc(state[0], state[1], self.lateness, state[2])
        return _Ipc(IpcStage1(self.window_seconds), IpcStage2(self.addresses), self.lateness)


class _Ipc(PartitionLogic):
    """Stage 2 of one partition. Requests are taken in event-time order (:mod:`ingest.reorder`): the
    points of one series may come from different upstream partitions (unkeyed ``otlp_metrics``), and
    cumulative-to-delta conversion needs them in time order."""

    def __init__(self, s1: IpcStage1, s2: IpcStage2, lateness: float,
                 buffer: ReorderBuffer | None = None) -> None:
        self.s1 = s1
        self.s2 = s2
        self.lateness = lateness
        self.buffer = buffer or ReorderBuffer()

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        try:
            n = self.buffer.push_payloads((otlp_items.payload(d) for d in items or ()), _times)
        except (ValueError, OtlpDecodeError) as e:
            raise Rejected(reason(DECODE, f"bad repartitioned metrics: {e}")) from None
        self._release(now)
        return Added(None, n)

    def _release(self, now: float) -> None:
        for _, data in self.buffer.release(now):
            self.s1.add_serialized(data)

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        self._release(now)
        obs = self.s1.flush(now - self.lateness)
        if obs:
            self.s2.add(obs)
        return [Emit(edge_route(p), p.to_dict()) for p in self.s2.flush()]

    def state(self) -> Any:
        return (self.s1, self.s2, self.buffer)

    def counters(self) -> dict[str, int]:
        return {**self.s1.counters, **{f"stage2_{k}": v for k, v in self.s2.counters.items()},
                "reorder_buffer": len(self.buffer)}


def _times(data: bytes) -> list[int]:
    """Every point's time, in request order (the native columns when built: no Python object per point)."""
    if NATIVE:
        return metric_columns(data).points["time"].tolist()  # type: ignore[no-any-return]
    view = metrics_view(data)
    return [dp.time_unix_nano for rm in view.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics for dp in _points(m)]


def _points(m: Any) -> Any:
    for kind in ("gauge", "sum", "histogram", "exponential_histogram", "summary"):
        if m.HasField(kind):
            return getattr(m, kind).data_points
    return ()

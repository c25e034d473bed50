"""TRACE layer workers: stage 1 re-keys ``otlp_spans`` by trace id (messages the Collector already
keyed by trace id pass through), stage 2 pairs spans with :class:`topology.stages.trace.SpanPairer`
and emits edge partials plus trace summaries (written to the catalog store by stage 3).
"""

from __future__ import annotations

import math
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest import otlp_items, timecheck
from ingest.logic import Added, Emit, PartitionLogic, Rejected, Splitter, StageSpec
from ingest.network import edge_route
from ingest.record import Partition, Record
from ingest.reorder import ReorderBuffer
from ingest.splitter import key_trace_id, split_traces
from ingest.topics import Topics
from topology.stages.trace import SpanPairer
from topology.wire.otlp import OtlpDecodeError, decode_traces


class TraceSplitSpec(StageSpec):
    layer = "trace"
    stage = 1
    repartitioned_input = False

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        return _Split()


class _Split(Splitter):
    def __init__(self) -> None:
        super().__init__({"requests": 0, "spans": 0, "passed_through": 0, "split": 0})

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        req = self.decoded(record, decode_traces, "otlp_spans", OtlpDecodeError)
        split = split_traces(req, timecheck.reference(record.timestamp_ms))
        rejects = self.rejects(split.rejected, split.reason, len(split.by_trace))
        keyed = key_trace_id(record.key)
        self.count["requests"] += 1
        self.count["spans"] += split.spans
        if keyed is not None and not rejects and list(split.by_trace) == [keyed]:
            self.pending.append(Emit(keyed, otlp_items.item(record.value)))  # as the Collector keyed it
            self.count["passed_through"] += 1
        else:
            self.pending.extend(Emit(tid, otlp_items.item(r.SerializeToString()))
                                for tid, r in split.by_trace.items())
            self.count["split"] += 1
        return Added(split.max_end, split.spans, rejects)


class SpanPairingSpec(StageSpec):
    layer = "trace"
    stage = 2

    def __init__(self, topics: Topics, wait_seconds: float = 10.0, capacity: int = 10_000) -> None:
        self.topics = topics
        self.wait_seconds = wait_seconds
        self.capacity = capacity

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        if isinstance(state, tuple) and len(state) == 3 and isinstance(state[0], SpanPairer):
            return _Pairing(*state)
        return _Pairing(SpanPairer(self.wait_seconds, self.capacity))


class _Pairing(PartitionLogic):
    """Span pairing of one partition, in event time.

    The pairer waits ``wait_seconds`` after a span's arrival for its other side and expires spans in
    arrival order. A partition receives spans from several upstream partitions whose clocks differ,
    so requests are first put back into event-time order: each waits in a small buffer until the
    partition's clock (the slowest upstream clock) reaches its time, and then arrives at that time.
    Two sides of a call that are less than the wait apart in event time therefore always meet,
    whatever the interleaving of the upstream partitions.
    """

    def __init__(self, pairer: SpanPairer, buffer: ReorderBuffer | None = None,
                 last: float = -math.inf) -> None:
        self.pairer = pairer
        self.buffer = buffer or ReorderBuffer()
        self.last = last  # the latest arrival handed to the pairer

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        try:
            n = self.buffer.push_payloads((otlp_items.payload(d) for d in items or ()), _ends)
        except Exception as e:  # protobuf's DecodeError, or a bad item
            raise Rejected(f"bad repartitioned spans: {e}") from None
        self._release(now)
        return Added(None, n)

    def _release(self, now: float) -> None:
        for t, data in self.buffer.release(now):
            self.last = max(self.last, t)
            self.pairer.add(ExportTraceServiceRequest.FromString(data), self.last)

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        if not math.isfinite(now):
            return []
        self._release(now)
        out: list[Any] = [Emit(edge_route(p), p.to_dict()) for p in self.pairer.flush(now)]
        summaries = self.pairer.take_trace_summaries()
        out.extend(Emit(s.trace_id, {"trace_summary": s.to_dict()}) for s in summaries)
        return out

    def state(self) -> Any:
        return (self.pairer, self.buffer, self.last)

    def counters(self) -> dict[str, int]:
        return {**self.pairer.counters, "reorder_buffer": len(self.buffer)}


def _ends(data: bytes) -> list[int]:
    req = ExportTraceServiceRequest.FromString(data)
    return [sp.end_time_unix_nano for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]

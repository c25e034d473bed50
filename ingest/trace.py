"""TRACE layer workers: stage 1 re-keys ``otlp_spans`` by trace id (messages the Collector already
keyed by trace id pass through), stage 2 pairs spans with :class:`topology.stages.trace.SpanPairer`
and emits edge partials plus trace summaries (written to the catalog store by stage 3).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ingest import otlp_items
from ingest.admission import admitted, produced
from ingest.logic import Added, Emit, PartitionLogic, Rejected, Splitter, StageSpec
from ingest.network import edge_route
from ingest.record import Partition, Record
from ingest.reorder import ReorderBuffer
from ingest.splitter import by_trace_id, key_trace_id
from ingest.topics import Topics
from topology.admit import DECODE, admit_spans, reason
from topology.stages.trace import NativeSpanPairer, PythonSpanPairer, SpanPairer
from topology.wire import spans
from topology.wire.otlp import PROTOBUF, OtlpDecodeError, spans_view, split_spans

PAIRERS = (NativeSpanPairer, PythonSpanPairer)


class TraceSplitSpec(StageSpec):
    layer = "trace"
    stage = 1
    repartitioned_input = False

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        return _Split()


class _Split(Splitter):
    """Admission (:func:`topology.admit.admit_spans`, which decodes the request once, in the compact
    schema), then one request per trace id; a request of one trace id passes through as it came."""

    def __init__(self) -> None:
        super().__init__({"requests": 0, "spans": 0, "passed_through": 0, "split": 0})

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        view, out = admitted(admit_spans(record.value or b"", PROTOBUF, produced(record)))
        self.count["requests"] += 1
        self.count["spans"] += out.items
        traces = trace_times(view)
        if len(traces) == 1:
            [(tid, (latest, n))] = traces.items()
            data = view.SerializeToString() if out.rejects or record.value is None else record.value
            self.pending.append(Emit(tid, otlp_items.item(data, latest, n)))
            self.count["passed_through" if tid == key_trace_id(record.key) else "split"] += 1
        elif traces:
            if spans.is_batch(view):  # a native Batch (what admission keeps): cut natively
                cut = by_trace_id(view.SerializeToString())
            else:
                cut = {tid: req.SerializeToString() for tid, req in split_spans(view, _trace_id).items()}
            self.pending.extend(Emit(tid, otlp_items.item(cut[tid], *traces[tid])) for tid in traces)
            self.count["split"] += 1
        return out


class SpanPairingSpec(StageSpec):
    layer = "trace"
    stage = 2

    def __init__(self, topics: Topics, wait_seconds: float = 10.0, capacity: int = 10_000) -> None:
        self.topics = topics
        self.wait_seconds = wait_seconds
        self.capacity = capacity

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        # a checkpoint of either pairer is taken as it is (one written before the native pairer keeps
        # pairing in Python: nothing waiting is lost to the upgrade)
        if isinstance(state, tuple) and len(state) == 3 and isinstance(state[0], PAIRERS) \
                and isinstance(state[1], ReorderBuffer) and isinstance(state[2], float):
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
        """Items carry their latest time (stage 1 writes it), so a request is parsed once, when the
        pairer takes it; items without it (written by an older stage 1) are parsed to find it."""
        timed: list[tuple[float, bytes]] = []
        n = 0
        try:
            for d in items or ():
                data = otlp_items.payload(d)
                known = otlp_items.timing(d)
                ends = [known[0]] if known is not None else _ends(data)
                n += known[1] if known is not None else len(ends)
                timed.append((max(ends, default=0) / 1e9, data))
        except (ValueError, OtlpDecodeError) as e:
            raise Rejected(reason(DECODE, f"bad repartitioned spans: {e}")) from None
        for t, data in timed:
            self.buffer.push(t, data)
        self._release(now)
        return Added(None, n)

    def _release(self, now: float) -> None:
        for t, data in self.buffer.release(now):
            self.last = max(self.last, t)
            try:
                self.pairer.add_serialized(data, self.last)
            except OtlpDecodeError:
                continue  # counted by the pairer (bad_requests)

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
    view = spans_view(data)
    return [sp.end_time_unix_nano for rs in view.resource_spans for ss in rs.scope_spans for sp in ss.spans]


def _trace_id(span: Any) -> str:
    return bytes(span.trace_id).hex()


def trace_times(view: Any) -> dict[str, tuple[int, int]]:
    """Hex trace id -> (latest end in ns, spans) of a request (compact schema or native Batch), in the
    order the trace ids first appear."""
    if spans.is_batch(view):
        return _batch_trace_times(view)
    out: dict[str, tuple[int, int]] = {}
    for rs in view.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                tid = bytes(span.trace_id).hex()
                end = span.end_time_unix_nano
                seen = out.get(tid)
                out[tid] = (end, 1) if seen is None else (max(seen[0], end), seen[1] + 1)
    return out


def _batch_trace_times(batch: Any) -> dict[str, tuple[int, int]]:
    """:func:`trace_times` of a Batch from its columns: work per trace, not per span."""
    if not batch.spans:
        return {}
    cols = spans.columns(batch)
    ids, first, inverse, counts = np.unique(cols["trace_id"], return_index=True, return_inverse=True,
                                            return_counts=True)
    latest = np.zeros(len(ids), dtype=np.uint64)
    np.maximum.at(latest, inverse.ravel(), cols["end"])
    order = np.argsort(first, kind="stable")
    return {bytes(ids[i]).hex(): (int(latest[i]), int(counts[i])) for i in order.tolist()}

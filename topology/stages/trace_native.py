"""The TRACE stage's pairer on the native extension: a request in, decoded once into a
:class:`~topology.wire._spans.Batch` (:mod:`topology.wire.spans`); pairing, capacity, expiry,
virtual peers and trace summaries run in Rust (``topology/wire/native/spans/src/pairer.rs``) with the
semantics of :mod:`topology.stages.trace` (the Python :class:`~topology.stages.trace.PythonSpanPairer`
is the reference its tests compare it with). Python works per request (one call) and per edge and
trace summary at a flush (one :class:`~topology.model.EdgePartial` or
:class:`~topology.catalog.TraceSummary` each), never per span.

Virtual peers named by anything but a well-formed string, integer or boolean attribute (doubles,
arrays, bytes, undecodable attributes) are named by the Python rule,
:func:`topology.stages.trace.virtual_peer`, which the extension calls for those spans.
"""

from __future__ import annotations

import itertools
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from topology.catalog import TraceSummary
from topology.model import EdgeKey, EdgePartial, Granularity, Layer, Side
from topology.sketch import SCALE, LatencySketch
from topology.stats import MAX_EXEMPLARS, EdgeStats
from topology.wire import spans
from topology.wire.otlp import OtlpDecodeError

_GRANULARITY = (Granularity.APP, Granularity.CLUSTER)
#: Edge keys made by flushes, reused by the next ones (immutable; at most _KEYS_KEPT, then made anew)
_KEYS: dict[tuple[int, str, str], EdgeKey] = {}
_KEYS_KEPT = 100_000


def _namer(attributes: list[bytes]) -> tuple[str, int] | None:
    """The Python naming rule for the spans the extension leaves to it: (name, shape code) or None."""
    from topology.stages import trace  # (which imports this module)

    got = trace.virtual_peer(attributes)
    return None if got is None else (got[0], trace.SHAPES.index(got[1]))


def load_core(data: bytes) -> Any:
    """A native pairer's state from :meth:`NativeSpanPairer.dump_core` bytes (ValueError if malformed)."""
    assert spans.native is not None
    if not isinstance(data, bytes):
        raise TypeError(f"pairer state must be bytes, not {type(data).__name__}")
    return spans.native.Pairer.load(data, _namer)


class NativeSpanPairer:
    """Spans in (``add``), edge partials (``flush``) and trace summaries (``take_trace_summaries``) out;
    the interface of :class:`topology.stages.trace.PythonSpanPairer`."""

    def __init__(self, wait_seconds: float = 10.0, max_pending: int = 10_000,
                 window_seconds: int = 60, max_traces: int = 100_000,
                 max_trace_spans: int = 256) -> None:
        if (wait_seconds < 0 or max_pending <= 0 or window_seconds <= 0 or max_traces <= 0
                or max_trace_spans < 0):
            raise ValueError("wait_seconds must be >= 0; max_pending, window_seconds, max_traces > 0; "
                             "max_trace_spans >= 0")
        assert spans.native is not None, "the native spans module is not built"
        self.wait_seconds = float(wait_seconds)
        self.max_pending = max_pending
        self.window_seconds = window_seconds
        self.max_traces = max_traces
        self.max_trace_spans = max_trace_spans
        self._core = spans.native.Pairer(self.wait_seconds, max_pending, window_seconds, max_traces,
                                         max_trace_spans, MAX_EXEMPLARS, _namer)

    @property
    def counters(self) -> dict[str, int]:
        """``spans``, ``paired``, ``expired``, ``dropped``... (a copy: see the module doc of the stage)."""
        return dict(self._core.counters())

    @property
    def pending(self) -> int:
        """Spans waiting for their other side."""
        return int(self._core.pending)

    @property
    def oldest_arrival(self) -> float | None:
        """When the span that has waited longest arrived (None: none waits)."""
        got: float | None = self._core.oldest_arrival
        return got

    # -- input -----------------------------------------------------------------------------------
    def add(self, request: ExportTraceServiceRequest, now: float) -> None:
        """Add the spans of one export request that arrived at ``now`` (epoch seconds)."""
        self.add_serialized(request.SerializeToString(), now)

    def add_serialized(self, data: bytes, now: float) -> None:
        """Add a serialized ``ExportTraceServiceRequest``; raises OtlpDecodeError (counted) if malformed.
        Spans with ids of the wrong length are skipped and counted (``invalid``)."""
        try:
            batch = spans.decode_unchecked(data)
        except OtlpDecodeError:
            self._core.count_bad_request()
            raise
        self._core.add(batch, now)

    def add_view(self, view: Any, now: float) -> None:
        """Add a request as admission keeps it: a Batch (taken as it is) or a compact-schema view."""
        if spans.is_batch(view):
            self._core.add(view, now)
        else:
            self._core.add(spans.decode_unchecked(view.SerializeToString()), now)

    # -- output ----------------------------------------------------------------------------------------
    def flush(self, now: float, close: float | None = None, refresh: bool = False) -> list[EdgePartial]:
        """Expire what waited longer than the wait and return the edge partials observed so far
        (Side.PAIR, summable: a window may appear in several flushes); with ``close``, calls of open
        windows are held unless new in their window or ``refresh`` ("Holding" in
        :mod:`topology.stages.trace`)."""
        from topology.stages.trace import SHAPES as shapes  # (which imports this module)

        ws = self.window_seconds
        out: list[EdgePartial] = []
        edges = self._core.flush(now, close, refresh)
        keys = _KEYS
        if len(keys) > _KEYS_KEPT:
            keys.clear()
        for (window, gran, source, target, code, s_app, t_app), stats in edges:
            requests, errors, zero, latency_sum, first, last, exemplars, (lo, dense) = stats
            shape = shapes[code]
            # what LatencySketch.from_counts gives for span durations (at SCALE, within its range)
            latency = LatencySketch(SCALE, lo, dense, zero) if dense else LatencySketch.from_counts({}, zero)
            # positional: first, last seen, protocol, ports, connections, bytes sent, received,
            # intermediaries, requests, errors, latency, its sum, endpoints, exemplars, connection type
            es = EdgeStats(first, last, None, (), 0, 0, 0, (), requests, errors, latency, latency_sum, (),
                           tuple(exemplars), shape[2])
            key = keys.get((gran, source, target))
            if key is None:
                key = keys[(gran, source, target)] = EdgeKey(Layer.TRACE, _GRANULARITY[gran], source, target)
            out.append(EdgePartial(key, window, ws, Side.PAIR, es, shape[0], shape[1], s_app, t_app))
        return out

    def holds_closing(self, close: float) -> bool:
        """Whether calls of windows ending at or before ``close`` are held (a flush hands them out)."""
        return bool(self._core.holds_closing(close))

    def take_trace_summaries(self) -> list[TraceSummary]:
        """Summaries of the traces that went quiet (no span for the wait) up to the last flush."""
        # (trace id, root service, root name, start, duration, spans, error, services, packed spans)
        return list(itertools.starmap(TraceSummary, self._core.take_summaries()))

    def dump_core(self) -> bytes:
        """The whole pairing state as bytes (checkpoints: :func:`load_core` reads them back)."""
        data: bytes = self._core.dump()
        return data

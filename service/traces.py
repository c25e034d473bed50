"""``Query.trace``: one trace on the map, from the store of recent traces.

The catalog store keeps recent traces with their spans (bounded: ``TOPOLOGY_TRACE_STORE_SIZE`` traces,
``TOPOLOGY_TRACE_RETENTION`` behind the newest; the TRACE stage keeps at most
:data:`topology.stages.trace.MAX_TRACE_SPANS` spans per trace). The trace's nodes and calls are
derived from its spans by :func:`topology.tracemap.trace_map`, with the rules the TRACE layer draws
its edges by. ``TraceSummary.trace`` resolves the same object.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime

import strawberry

from service.context import context_of
from service.errors import BadUserInput
from topology import catalog as core_catalog
from topology.model import NodeKind
from topology.tracemap import trace_map

__all__ = ["SpanKind", "Trace", "TraceEdge", "TraceNode", "TraceSpan", "check_trace_id", "load_trace"]

_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


@strawberry.enum(description="What a span is in its call (OTLP's span kind).")
class SpanKind(enum.Enum):
    UNSPECIFIED = "UNSPECIFIED"
    INTERNAL = "INTERNAL"
    SERVER = "SERVER"
    CLIENT = "CLIENT"
    PRODUCER = "PRODUCER"
    CONSUMER = "CONSUMER"


@strawberry.type(description="A node the trace went through: a service, or a virtual node (the `user` "
                 "calling the root, a database or peer a client span called).")
class TraceNode:
    name: str
    kind: NodeKind


@strawberry.type(description="The calls of the trace from `source` to `target`, paired from its spans as "
                 "the TRACE layer pairs them.")
class TraceEdge:
    source: str
    target: str
    calls: int
    errors: int = strawberry.field(description="Calls where the client or the server span failed.")
    duration_ms: float = strawberry.field(description="The calls' total duration in milliseconds (the "
                                          "server spans'; the client span's for a virtual node).")


@strawberry.type(description="One span of the trace.")
class TraceSpan:
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: SpanKind
    start: datetime
    duration_ms: float
    error: bool
    peer: str | None = strawberry.field(description="The virtual node a CLIENT/PRODUCER span called when "
                                        "no server span answered it.")


@strawberry.type(description="One recent trace on the map: the nodes it went through, the calls between "
                 "them and its spans. The spans are those the TRACE stage kept (`truncated` when the trace "
                 "had more).")
class Trace:
    trace_id: str
    root_service: str
    root_name: str
    start: datetime
    duration_ms: float
    error: bool
    span_count: int = strawberry.field(description="Spans the trace had, kept or not.")
    truncated: bool = strawberry.field(description="Some spans were not kept: the calls are those among "
                                       "the spans kept.")
    nodes: list[TraceNode]
    edges: list[TraceEdge]
    spans: list[TraceSpan]

    @classmethod
    def from_core(cls, t: core_catalog.TraceSummary) -> Trace:
        m = trace_map(t.kept_spans)
        return cls(
            trace_id=t.trace_id,
            root_service=t.root_service,
            root_name=t.root_name,
            start=_time(t.start),
            duration_ms=_ms(t.duration),
            error=t.error,
            span_count=t.spans,
            truncated=t.truncated,
            nodes=[TraceNode(name=n.name, kind=n.kind) for n in m.nodes],
            edges=[TraceEdge(source=c.source, target=c.target, calls=c.calls, errors=c.errors,
                             duration_ms=_ms(c.duration)) for c in m.calls],
            spans=[
                TraceSpan(span_id=s.span_id, parent_span_id=s.parent_span_id, service=s.service, name=s.name,
                          kind=SpanKind(s.kind) if s.kind in SpanKind.__members__ else SpanKind.UNSPECIFIED,
                          start=_time(s.start), duration_ms=_ms(s.duration), error=s.error, peer=s.peer)
                for s in sorted(t.kept_spans, key=lambda s: (s.start, s.span_id))
            ],
        )


def check_trace_id(value: str) -> str:
    """``value`` in lowercase if it is a trace id (32 hex digits); BadUserInput otherwise."""
    if not _TRACE_ID.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise BadUserInput(f"traceId must be 32 hexadecimal digits (a W3C trace id), got {shown!r}",
                           argument="traceId")
    return value.lower()


async def load_trace(info: strawberry.Info, trace_id: str) -> Trace | None:
    """The trace from the store of recent traces, or None when it is not (or no longer) kept."""
    found = await context_of(info).stores.catalog.trace(check_trace_id(trace_id))
    return None if found is None else Trace.from_core(found)

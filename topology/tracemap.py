"""One trace on the map: the services a kept trace touched and the calls between them.

The calls are derived from the trace's kept spans (:attr:`topology.catalog.TraceSummary.kept_spans`)
with the rules the TRACE stage pairs spans by (:mod:`topology.stages.trace`), so a trace's calls are
edges the TRACE layer drew:

* a SERVER or CONSUMER span whose parent is a kept CLIENT or PRODUCER span is a call from the
  parent's service to its own (an error when either side failed; its duration is the server span's);
* a SERVER span without such a parent is a call from ``user`` (the stage waits for the client, then
  does the same); a CONSUMER span without its producer is no call;
* a CLIENT or PRODUCER span nobody answered is a call to the virtual node the stage named from its
  attributes (``peer``; its duration is the client span's), or no call when it named none.

A truncated trace (the stage keeps a bounded number of spans per trace) gives the calls among the
spans kept: a server span whose client was not kept counts as a call from ``user``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from topology.catalog import TraceSpan
from topology.model import NodeKind
from topology.stages.trace import USER

__all__ = ["TraceCall", "TraceMap", "TraceNode", "trace_map"]

_ANSWERS = {"SERVER": ("CLIENT", "PRODUCER"), "CONSUMER": ("CLIENT", "PRODUCER")}


@dataclass(frozen=True, slots=True)
class TraceNode:
    name: str
    kind: NodeKind


@dataclass(frozen=True, slots=True)
class TraceCall:
    """The calls of one trace from ``source`` to ``target``: how many, how many failed, their total
    duration (seconds)."""

    source: str
    target: str
    calls: int
    errors: int
    duration: float


@dataclass(frozen=True, slots=True)
class TraceMap:
    nodes: tuple[TraceNode, ...]  # sorted by name
    calls: tuple[TraceCall, ...]  # sorted by (source, target)


def trace_map(spans: Sequence[TraceSpan]) -> TraceMap:
    """The nodes and calls of a trace with these spans (the rules in the module docstring)."""
    by_id = {s.span_id: s for s in spans}
    kinds: dict[str, NodeKind] = {s.service: NodeKind.SERVICE for s in spans}
    acc: dict[tuple[str, str], list[float]] = {}  # (source, target) -> [calls, errors, duration]
    answered: set[str] = set()

    def call(source: str, target: str, error: bool, duration: float) -> None:
        a = acc.setdefault((source, target), [0, 0, 0.0])
        a[0] += 1
        a[1] += error
        a[2] += duration

    for s in spans:
        clients = _ANSWERS.get(s.kind)
        if clients is None:
            continue
        parent = by_id.get(s.parent_span_id) if s.parent_span_id else None
        if parent is not None and parent.kind in clients:
            answered.add(parent.span_id)
            call(parent.service, s.service, parent.error or s.error, s.duration)
        elif s.kind == "SERVER":
            kinds.setdefault(USER, NodeKind.USER)
            call(USER, s.service, s.error, s.duration)
    for s in spans:
        if s.kind in ("CLIENT", "PRODUCER") and s.span_id not in answered and s.peer:
            kinds.setdefault(s.peer, NodeKind(s.peer_kind or NodeKind.UNINSTRUMENTED))
            call(s.service, s.peer, s.error, s.duration)
    return TraceMap(
        nodes=tuple(TraceNode(n, k) for n, k in sorted(kinds.items())),
        calls=tuple(TraceCall(src, dst, int(a[0]), int(a[1]), a[2]) for (src, dst), a in sorted(acc.items())),
    )

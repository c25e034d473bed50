"""topology.tracemap: a trace's calls, by hand and against what the TRACE stage drew from the same spans."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.topology.stages.golden_otlp import cases
from topology.catalog import TraceSpan, TraceSummary
from topology.model import NodeKind
from topology.tracemap import TraceCall, TraceNode, trace_map

GOLDEN = Path(__file__).parent / "stages" / "golden_otlp"


def sp(sid: int, parent: int | None, service: str, kind: str, *, error: bool = False, duration: float = 0.01,
       peer: str | None = None, peer_kind: str | None = None) -> TraceSpan:
    return TraceSpan(f"{sid:016x}", None if parent is None else f"{parent:016x}", service, f"op{sid}", kind,
                     1000.0 + sid, duration, error, peer, peer_kind)


def test_calls_of_a_hand_built_trace() -> None:
    spans = [
        sp(1, None, "web", "SERVER", duration=0.5),
        sp(2, 1, "web", "CLIENT"),
        sp(3, 2, "api", "SERVER", error=True, duration=0.2),
        sp(4, 1, "web", "CLIENT"),
        sp(5, 4, "api", "SERVER", duration=0.1),
        sp(6, 3, "api", "CLIENT", duration=0.03, peer="orders-db", peer_kind="DATABASE"),
        sp(7, 3, "api", "INTERNAL"),
        sp(8, 3, "api", "PRODUCER"),
        sp(9, 8, "mailer", "CONSUMER", duration=0.05),
        sp(10, 8, "audit", "CONSUMER", duration=0.07),
        sp(11, 7, "ghost", "SERVER", duration=0.3),  # its parent is no client: from user, as the stage does
        sp(12, 99, "lost", "CONSUMER"),  # no producer: no call
        sp(13, 3, "api", "CLIENT"),  # unanswered and unnamed: no call
    ]
    m = trace_map(spans)
    assert m.calls == (
        TraceCall("api", "audit", 1, 0, 0.07),
        TraceCall("api", "mailer", 1, 0, 0.05),
        TraceCall("api", "orders-db", 1, 0, 0.03),
        TraceCall("user", "ghost", 1, 0, 0.3),
        TraceCall("user", "web", 1, 0, 0.5),
        TraceCall("web", "api", 2, 1, pytest.approx(0.3)),  # type: ignore[arg-type]
    )
    assert m.nodes == (
        TraceNode("api", NodeKind.SERVICE), TraceNode("audit", NodeKind.SERVICE),
        TraceNode("ghost", NodeKind.SERVICE), TraceNode("lost", NodeKind.SERVICE),
        TraceNode("mailer", NodeKind.SERVICE), TraceNode("orders-db", NodeKind.DATABASE),
        TraceNode("user", NodeKind.USER), TraceNode("web", NodeKind.SERVICE),
    )


def test_no_spans_no_calls() -> None:
    assert trace_map([]).calls == () and trace_map([]).nodes == ()


@pytest.mark.parametrize("name", sorted(n for n in cases.TRACE_CASES if n != "trace_capacity"))
def test_the_calls_of_every_trace_add_up_to_the_stage_edges(name: str) -> None:
    """Golden cases: the APP edges the stage drew are the calls of the traces it summarised, once every
    trace went quiet (capacity drops spans, so that case is left out)."""
    doc = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    last = max(step["flush"] for step in doc["steps"] if "flush" in step)
    doc["steps"].append({"flush": last + 3600})
    out = cases.run_trace(doc)
    edges: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    calls: Counter[tuple[str, str]] = Counter()
    call_errors: Counter[tuple[str, str]] = Counter()
    for flush in out["flushes"]:
        for e in flush["edges"]:
            if e["granularity"] == "APP":
                edges[e["source"], e["target"]] += e["stats"]["requests"]
                errors[e["source"], e["target"]] += e["stats"].get("errors", 0)
        for t in flush["traces"]:
            for c in trace_map(TraceSummary.from_dict(t).kept_spans).calls:
                calls[c.source, c.target] += c.calls
                call_errors[c.source, c.target] += c.errors
    assert edges and calls == edges
    assert +call_errors == +errors

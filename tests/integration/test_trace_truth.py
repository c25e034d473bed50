"""``Query.trace`` against the simulator: for traces the simulator emitted, the calls the API shows are
the calls derived here, independently, from the spans as they were emitted (OTLP protobuf decoded with
the reference classes): a SERVER/CONSUMER span under a CLIENT/PRODUCER span is a call between their
services, a root SERVER span a call from ``user``, an unanswered client span a call to the peer its
attributes name (the simulator's own :func:`topology.sim.spans.virtual_peer`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from service.demo import feed, persist_meta
from service.runtime import Runtime
from tests.service.conftest import Client, client_for
from topology.pipeline import Pipeline
from topology.sim import SimConfig, Simulator, generate_fleet
from topology.sim.spans import virtual_peer
from topology.store.embedded import open_stores

T0 = 1_800_000_000.0
STEP = 10.0
STEPS = 6
_SERVER, _CLIENT, _PRODUCER, _CONSUMER = 2, 3, 4, 5

QUERY = """query($id: String!) { trace(traceId: $id) {
  traceId spanCount truncated nodes { name kind } edges { source target calls errors durationMs }
  spans { spanId parentSpanId service name kind start durationMs error } } }"""

Span = dict[str, Any]


def emitted_spans(payloads: list[bytes]) -> dict[str, list[Span]]:
    """Trace id (hex) -> its spans as emitted, each with its service and attributes."""
    traces: dict[str, list[Span]] = defaultdict(list)
    for data in payloads:
        for rs in ExportTraceServiceRequest.FromString(data).resource_spans:
            service = next(kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = [(a["key"], next(iter(a["value"].values()), ""))
                             for a in MessageToDict(s).get("attributes", [])]
                    traces[s.trace_id.hex()].append({
                        "id": s.span_id.hex(), "parent": s.parent_span_id.hex(), "service": service,
                        "kind": s.kind, "error": s.status.code == 2, "attrs": attrs,
                        "ms": (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6,
                    })
    return traces


def expected_calls(spans: list[Span]) -> dict[tuple[str, str], list[float]]:
    by_id = {s["id"]: s for s in spans}
    calls: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    answered = set()
    for s in spans:
        parent = by_id.get(s["parent"])
        if s["kind"] in (_SERVER, _CONSUMER) and parent and parent["kind"] in (_CLIENT, _PRODUCER):
            answered.add(parent["id"])
            c = calls[parent["service"], s["service"]]
            c[0] += 1
            c[1] += parent["error"] or s["error"]
            c[2] += s["ms"]
        elif s["kind"] == _SERVER and not parent:
            c = calls["user", s["service"]]
            c[0] += 1
            c[1] += s["error"]
            c[2] += s["ms"]
    for s in spans:
        if s["kind"] in (_CLIENT, _PRODUCER) and s["id"] not in answered:
            peer = virtual_peer(s["attrs"])
            if peer:
                c = calls[s["service"], peer]
                c[0] += 1
                c[1] += s["error"]
                c[2] += s["ms"]
    return dict(calls)


async def test_query_trace_shows_the_calls_of_the_emitted_spans(tmp_path: Path) -> None:
    stores = open_stores(tmp_path)
    now = [T0]
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: now[0])
    sim = Simulator(generate_fleet(services=60, seed=11), seed=11, start=T0,
                    config=SimConfig(churn_per_hour=0.0, incidents_per_app_day=0.0))
    payloads: list[bytes] = []
    try:
        initial = sim.initial_records()
        await persist_meta(stores, initial)
        feed(runtime, initial, T0)
        payloads += initial.spans
        t = T0
        for _ in range(STEPS):
            em = sim.step(t, STEP)
            payloads += em.spans
            now[0] = t + STEP
            feed(runtime, em, t)
            await persist_meta(stores, em)
            t += STEP
            await runtime.flush(t)
        for extra in (30, 60, 120):  # every trace goes quiet and is written
            now[0] = t + extra
            await runtime.flush(t + extra)
        traces = emitted_spans(payloads)
        # the deepest traces (most services), and a few others
        order = sorted(traces, key=lambda tid: (-len({s["service"] for s in traces[tid]}), tid))
        chosen = order[:40] + order[40::max(1, len(order) // 20)]
        assert len({s["service"] for s in traces[order[0]]}) >= 3, "the run must make multi-hop traces"
        async with client_for(stores) as http:
            client = Client(http)
            for tid in chosen:
                got = (await client.data(QUERY, {"id": tid.upper()}))["trace"]
                want = expected_calls(traces[tid])
                assert got is not None, tid
                assert got["traceId"] == tid and got["spanCount"] == len(traces[tid]) and not got["truncated"]
                edges = {(e["source"], e["target"]): [e["calls"], e["errors"], e["durationMs"]]
                         for e in got["edges"]}
                assert edges.keys() == want.keys(), tid
                for k, (n, errors, ms) in want.items():
                    assert edges[k][:2] == [n, errors], (tid, k)
                    assert abs(edges[k][2] - ms) < 0.002 * n, (tid, k)
                assert {s["spanId"] for s in got["spans"]} == {s["id"] for s in traces[tid]}
                names = {n["name"] for n in got["nodes"]}
                assert names == {x for k in want for x in k} | {s["service"] for s in traces[tid]}
            # a trace the store never saw, and an id that is no trace id
            assert (await client.data(QUERY, {"id": "0" * 31 + "1"}))["trace"] is None
            bad = await client.query(QUERY, {"id": "not-a-trace"})
            assert bad["data"]["trace"] is None
            assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            assert "32 hexadecimal digits" in bad["errors"][0]["message"]
    finally:
        await stores.close()

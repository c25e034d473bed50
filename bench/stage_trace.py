"""Benchmark of the TRACE layer on one core: OTLP protobuf decode + span pairing.

    .venv/bin/python -m bench.stage_trace [--spans 5000000] [--runs 3] [--rate 50000]

Generates ``--spans`` spans up front as serialized ``ExportTraceServiceRequest`` batches, the way the
OTel Collector's kafka exporter writes them (about 500 spans per message, spans of many services, one
ResourceSpans per service). Traces have a realistic shape: an entry service called by ``user``, fan-out
1-3, depth up to 4, database calls (virtual nodes) and messaging (producer -> consumers); server spans
are exported before the client spans that wait for them, with 0-2 s of batching delay. Spans arrive at
``--rate`` spans per second of event time; the pairer flushes every second of event time.

Timed: ``SpanPairer.add_serialized`` (decode + pairing) + ``flush`` + ``take_trace_summaries`` over
the whole input, per run (a fresh pairer each run): the stage's pairer (native where the extension is
built), and with ``--compare`` the Python pairer too, in alternating runs (before/after in one session).
Also timed separately, for the breakdown: protobuf parsing alone, ``decode_traces`` (parsing + id
validation) alone, and the native decode alone.
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import os
import random
import statistics
import time
from collections import defaultdict
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from bench.machine import header
from topology.stages.trace import PythonSpanPairer, SpanPairer
from topology.wire import spans
from topology.wire.otlp import decode_traces, spans_view

T0 = 1_700_000_000.0
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5
PB = "application/x-protobuf"


@functools.lru_cache(maxsize=100_000)
def kv(k: str, v: str | int) -> KeyValue:
    return KeyValue(key=k, value=AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v))


class Workload:
    def __init__(self, services: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.names = [f"svc-{i:04d}" for i in range(services)]
        self.entries = self.names[: max(1, services // 20)]
        self.databases = [f"db-{i:03d}" for i in range(max(1, services // 10))]
        self.resources = {
            n: Resource(
                attributes=[
                    kv("service.name", n),
                    kv("k8s.deployment.name", f"{n}-prod-v001"),
                    kv("service.instance.id", f"{n}-0"),
                    kv("telemetry.sdk.language", "java"),
                ]
            )
            for n in self.names
        }
        # each service calls a few others (heavy-tailed popularity) and maybe a database
        self.callees = {n: self.rng.sample(self.names, self.rng.randint(1, 4)) for n in self.names}
        self.db_of = {n: self.rng.choice(self.databases) for n in self.names}
        self.next_trace = 1

    def trace(self, start: float) -> list[tuple[float, str, Span]]:
        """One trace: (emission time, service, span) for each span."""
        rng = self.rng
        tid = (self.next_trace * 0x9E3779B97F4A7C15 % (1 << 128) | 1).to_bytes(16, "big")
        self.next_trace += 1
        out: list[tuple[float, str, Span]] = []
        sid = [0]

        def new_id() -> bytes:
            sid[0] += 1
            return sid[0].to_bytes(8, "big")

        def serve(service: str, parent: bytes | None, t: float, dur: float, depth: int) -> None:
            my = new_id()
            status = Status(code=2) if rng.random() < 0.01 else None
            route = f"/api/v1/r{rng.randint(0, 9)}"
            out.append(
                (
                    t + dur + rng.random() * 2,
                    service,
                    Span(
                        trace_id=tid,
                        span_id=my,
                        parent_span_id=parent or b"",
                        name=f"GET {route}",
                        kind=SERVER,
                        start_time_unix_nano=int(t * 1e9),
                        end_time_unix_nano=int((t + dur) * 1e9),
                        status=status,
                        attributes=[
                            kv("http.request.method", "GET"),
                            kv("http.route", route),
                            kv("http.response.status_code", 500 if status else 200),
                            kv("url.scheme", "http"),
                        ],
                    ),
                )
            )
            if depth >= 4:
                return
            ct = t + dur * 0.05
            for _ in range(rng.choice((0, 1, 1, 2, 3)) if depth else rng.randint(1, 3)):
                cdur = dur * rng.uniform(0.1, 0.4)
                roll = rng.random()
                cid = new_id()
                if roll < 0.2:  # database call: never paired
                    out.append(
                        (
                            ct + cdur + rng.random() * 2,
                            service,
                            Span(
                                trace_id=tid,
                                span_id=cid,
                                parent_span_id=my,
                                name="SELECT",
                                kind=CLIENT,
                                start_time_unix_nano=int(ct * 1e9),
                                end_time_unix_nano=int((ct + cdur) * 1e9),
                                attributes=[
                                    kv("db.system.name", "postgresql"),
                                    kv("db.namespace", self.db_of[service]),
                                    kv("db.operation.name", "SELECT"),
                                    kv("server.address", "pg.internal"),
                                ],
                            ),
                        )
                    )
                elif roll < 0.25:  # messaging: producer here, a consumer elsewhere
                    callee = rng.choice(self.callees[service])
                    out.append(
                        (
                            ct + 0.001 + rng.random() * 2,
                            service,
                            Span(
                                trace_id=tid,
                                span_id=cid,
                                parent_span_id=my,
                                name="publish",
                                kind=PRODUCER,
                                start_time_unix_nano=int(ct * 1e9),
                                end_time_unix_nano=int((ct + 0.001) * 1e9),
                                attributes=[
                                    kv("messaging.system", "kafka"),
                                    kv("messaging.destination.name", "events"),
                                ],
                            ),
                        )
                    )
                    serve_consumer(callee, cid, ct + 0.01, cdur)
                else:
                    callee = rng.choice(self.callees[service])
                    out.append(
                        (
                            ct + cdur + 0.5 + rng.random() * 2,
                            service,
                            Span(
                                trace_id=tid,
                                span_id=cid,
                                parent_span_id=my,
                                name="GET",
                                kind=CLIENT,
                                start_time_unix_nano=int(ct * 1e9),
                                end_time_unix_nano=int((ct + cdur) * 1e9),
                                attributes=[
                                    kv("http.request.method", "GET"),
                                    kv("server.address", callee),
                                    kv("server.port", 8080),
                                    kv("http.response.status_code", 200),
                                ],
                            ),
                        )
                    )
                    serve(callee, cid, ct + cdur * 0.02, cdur * 0.95, depth + 1)
                ct += cdur

        def serve_consumer(service: str, parent: bytes, t: float, dur: float) -> None:
            out.append(
                (
                    t + dur + rng.random() * 2,
                    service,
                    Span(
                        trace_id=tid,
                        span_id=new_id(),
                        parent_span_id=parent,
                        name="process",
                        kind=CONSUMER,
                        start_time_unix_nano=int(t * 1e9),
                        end_time_unix_nano=int((t + dur) * 1e9),
                        attributes=[
                            kv("messaging.system", "kafka"),
                            kv("messaging.destination.name", "events"),
                        ],
                    ),
                )
            )

        serve(rng.choice(self.entries), None, start, rng.uniform(0.02, 0.5), 0)
        return out


def generate(n_spans: int, rate: float, batch: int, seed: int) -> tuple[list[tuple[float, bytes]], int]:
    """Serialized export requests with their arrival time, ordered by arrival, and the number of spans."""
    wl = Workload(services=1_000, seed=seed)
    out: list[tuple[float, bytes]] = []
    produced = 0
    t = T0
    slice_traces = 2_000
    while produced < n_spans:
        spans: list[tuple[float, str, Span]] = []
        for _ in range(slice_traces):
            spans.extend(wl.trace(t))
            t += 17.0 / rate  # ~17 spans per trace
        spans.sort(key=lambda x: x[0])
        for i in range(0, len(spans), batch):
            chunk = spans[i : i + batch]
            by_service: dict[str, list[Span]] = defaultdict(list)
            for _, svc, sp in chunk:
                by_service[svc].append(sp)
            req = ExportTraceServiceRequest(
                resource_spans=[
                    ResourceSpans(resource=wl.resources[svc], scope_spans=[ScopeSpans(spans=sps)])
                    for svc, sps in by_service.items()
                ]
            )
            out.append((chunk[-1][0], req.SerializeToString()))
        produced += len(spans)
    out.sort(key=lambda x: x[0])
    return out, produced


def run_once(
    batches: list[tuple[float, bytes]], max_pending: int, impl: type = SpanPairer
) -> tuple[float, float, Any, int, int]:
    """One pass over the input with a fresh pairer: (wall seconds, CPU seconds, pairer, edges, summaries)."""
    pairer = impl(wait_seconds=10.0, max_pending=max_pending)
    edges = summaries = 0
    next_flush = batches[0][0] + 1.0
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    for now, data in batches:
        pairer.add_serialized(data, now)
        if now >= next_flush:
            edges += len(pairer.flush(now))
            summaries += len(pairer.take_trace_summaries())
            next_flush = now + 1.0
    end = batches[-1][0] + 60.0
    edges += len(pairer.flush(end))
    summaries += len(pairer.take_trace_summaries())
    return time.perf_counter() - w0, time.process_time() - c0, pairer, edges, summaries


def calibration() -> float:
    """ns per iteration of a fixed pure-Python loop: how fast this interpreter runs right now."""
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        x = 0
        for i in range(1_000_000):
            x += i
        best = min(best, time.perf_counter() - t)
    return best / 1_000_000 * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--spans", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=50_000.0, help="spans per second of event time")
    ap.add_argument("--batch", type=int, default=500, help="spans per export request")
    ap.add_argument("--max-pending", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--compare", action="store_true", help="also run the Python pairer, alternating")
    args = ap.parse_args()
    print(header("TRACE layer: decode + span pairing, one core"))
    print(
        f"load average at start: {os.getloadavg()[0]:.2f}; interpreter calibration: "
        f"{calibration():.1f} ns per "
        f"`x += i` loop iteration (an idle modern core: ~15-20)"
    )
    t = time.perf_counter()
    batches, total = generate(args.spans, args.rate, args.batch, args.seed)
    size = sum(len(d) for _, d in batches)
    print(
        f"input: {total:,} spans in {len(batches):,} requests ({size / 2**20:.0f} MiB, "
        f"{size / total:.0f} B/span), "
        f"{total / (batches[-1][0] - batches[0][0]):,.0f} spans/s over "
        f"{batches[-1][0] - batches[0][0]:.0f} s of event time; "
        f"generated in {time.perf_counter() - t:.0f} s"
    )

    # breakdown: protobuf parsing alone (full and compact schema), and decode_traces (parse + validation)
    for name, fn in (
        ("parse, full schema (upb)", lambda d: ExportTraceServiceRequest.FromString(d)),
        ("parse, compact schema", spans_view),
        ("decode_traces (full + validation)", lambda d: decode_traces(d, PB)),
        *((("native decode (prost, validated)", spans.decode),) if spans.available() else ()),
    ):
        c0 = time.process_time()
        for _, d in batches:
            fn(d)
        secs = time.process_time() - c0
        print(f"{name:<36} {total / secs:>12,.0f} spans/s CPU  ({secs / total * 1e9:,.0f} ns/span)")

    impls: list[tuple[str, type]] = [(SpanPairer.__name__, SpanPairer)]
    if args.compare and SpanPairer is not PythonSpanPairer:
        impls.append((PythonSpanPairer.__name__, PythonSpanPairer))
    rates: dict[str, list[float]] = {name: [] for name, _ in impls}
    cpu_rates: dict[str, list[float]] = {name: [] for name, _ in impls}
    c: dict[str, int] = {}
    for i in range(args.runs):
        for name, impl in impls:
            wall, cpu, pairer, edges, summaries = run_once(batches, args.max_pending, impl)
            rates[name].append(total / wall)
            cpu_rates[name].append(total / cpu)
            c = pairer.counters
            print(
                f"run {i + 1} {name}: decode+pair {total / wall:>10,.0f} spans/s wall, "
                f"{total / cpu:>10,.0f} spans/s CPU "
                f"({wall:.1f} s wall, {cpu:.1f} s CPU, {cpu / total * 1e9:,.0f} ns/span)  edge partials out "
                f"{edges:,}, trace summaries {summaries:,}, load {os.getloadavg()[0]:.2f}"
            )
            print(f"  counters: {dict(c)}")
    for name, _ in impls:
        r, cr = rates[name], cpu_rates[name]
        print(
            f"RESULT {name} decode+pairing (add_serialized + flush every 1 s of event time): median "
            f"{statistics.median(r):,.0f} spans/s wall (min {min(r):,.0f}, max {max(r):,.0f}), median "
            f"{statistics.median(cr):,.0f} spans/s CPU time, over {len(r)} runs (target >= 200,000)"
        )
    if len(impls) == 2:
        a, b = (statistics.median(cpu_rates[n]) for n, _ in impls)
        print(f"RESULT ratio {impls[0][0]} / {impls[1][0]} (CPU, medians): {a / b:.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark of the IPC layer on one core: OTLP metrics decode + stage 1 (deltas, windows) + stage 2 (edges).

    .venv/bin/python -m bench.stage_ipc [--points 5000000] [--runs 3] [--services 2000] [--server-gc]

Generates ``--points`` data points up front as serialized ``ExportMetricsServiceRequest`` batches: every
service exports all its client series every 10 s of event time, in one of four dialects (deterministic per
service): OTel ``rpc.client.call.duration`` cumulative histograms (s), OTel ``http.client.request.duration``
delta histograms (s), Spectator ``ipc.client.call`` cumulative histograms, and Spectator timers as
count/totalTime/max statistic points (cumulative). Series: 1-4 callees x 1-3 endpoints x success/failure,
5-8 attributes each, 15 explicit bounds. Spectator services also report ``ipc.server.call`` series.

Timed: ``IpcStage1.add_serialized`` for every batch, ``IpcStage1.flush`` + ``IpcStage2.process`` at every
minute of event time (a fresh pair of stages each run). ``IpcStage1`` adds each request's points in the
native core (topology/wire/native/metrics, ``IpcCore``) when it is built, else point by point in Python;
the first line says which. For the breakdown, also timed: decoding alone (upb full and compact schema, the
native decoder into columns, which shares the core's prost messages), and the HTTP route's path
``decode_metrics`` + ``IpcStage1.add(request)`` on the first fifth of the input. ``--server-gc``: the
server's garbage collector thresholds (``service.server.GC_THRESHOLDS``) instead of CPython's defaults.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import time
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from bench.machine import header
from topology.stages.ipc import IpcStage1, IpcStage2
from topology.wire import metric_columns
from topology.wire.otlp import decode_metrics, metrics_view

T0 = 1_700_000_000
INTERVAL = 10
S_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0]
PB = "application/x-protobuf"


def kv(k: str, v: str | int) -> KeyValue:
    return KeyValue(key=k, value=AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v))


class Service:
    """One service's export request, built once; each interval rewrites its values in place."""

    def __init__(self, i: int, names: list[str], rng: random.Random) -> None:
        self.name = names[i]
        self.dialect = i % 4
        self.rng = rng
        self.req = ExportMetricsServiceRequest()
        rm: ResourceMetrics = self.req.resource_metrics.add()
        rm.resource.CopyFrom(
            Resource(
                attributes=[
                    kv("service.name", self.name),
                    kv("service.instance.id", f"{i}-0"),
                    kv("telemetry.sdk.language", "java"),
                ]
            )
        )
        sm: ScopeMetrics = rm.scope_metrics.add()
        callees = rng.sample(names, rng.randint(1, 4))
        series = [(c, e, ok) for c in callees for e in range(rng.randint(1, 3)) for ok in (True, False)]
        self.hist_points: list[tuple[Any, list[int], int]] = []  # point, cumulative buckets, cumulative
        self.stat_points: list[tuple[Any, Any, Any, list[float]]] = []  # count, total, max, [n, total]
        if self.dialect == 3:
            count, total, mx = (sm.metrics.add(name="ipc.client.call", unit=u) for u in ("", "s", "s"))
            count.sum.aggregation_temporality = total.sum.aggregation_temporality = 2
            count.sum.is_monotonic = total.sum.is_monotonic = True
            for c, e, ok in series:
                tags = [
                    kv("ipc.server.app", c),
                    kv("ipc.endpoint", f"/e{e}"),
                    kv("ipc.protocol", "http"),
                    kv("ipc.result", "success" if ok else "failure"),
                    kv("ipc.status", "success" if ok else "unexpected_error"),
                    kv("ipc.attempt", "initial"),
                ]
                pts = []
                for stat, m in (("count", count.sum), ("totalTime", total.sum), ("max", mx.gauge)):
                    p = m.data_points.add(start_time_unix_nano=T0 * 10**9)
                    p.attributes.extend([*tags, kv("statistic", stat)])
                    pts.append(p)
                self.stat_points.append((pts[0], pts[1], pts[2], [0.0, 0.0]))
            return
        name, temporality = {
            0: ("rpc.client.call.duration", 2),
            1: ("http.client.request.duration", 1),
            2: ("ipc.client.call", 2),
        }[self.dialect]
        m: Metric = sm.metrics.add(name=name, unit="s")
        m.histogram.aggregation_temporality = temporality  # type: ignore[assignment]
        server = sm.metrics.add(name="ipc.server.call", unit="s") if self.dialect == 2 else None
        if server is not None:
            server.histogram.aggregation_temporality = 2  # type: ignore[assignment]
        for c, e, ok in series:
            if self.dialect == 0:
                attrs = [
                    kv("rpc.system.name", "grpc"),
                    kv("rpc.service", f"{c}.Api"),
                    kv("rpc.method", f"M{e}"),
                    kv("server.address", f"{c}.prod.svc.cluster.local"),
                    kv("server.port", 8443),
                    kv("rpc.grpc.status_code", 0 if ok else 14),
                ]
            elif self.dialect == 1:
                attrs = [
                    kv("http.request.method", "GET"),
                    kv("http.route", f"/v1/r{e}"),
                    kv("server.address", f"{c}.prod.svc.cluster.local"),
                    kv("server.port", 8080),
                    kv("http.response.status_code", 200 if ok else 503),
                    kv("url.scheme", "http"),
                ]
            else:
                attrs = [
                    kv("ipc.server.app", c),
                    kv("ipc.endpoint", f"/e{e}"),
                    kv("ipc.protocol", "grpc"),
                    kv("ipc.result", "success" if ok else "failure"),
                    kv("ipc.status", "success" if ok else "timeout"),
                    kv("ipc.attempt", "initial"),
                ]
            p = m.histogram.data_points.add(start_time_unix_nano=T0 * 10**9, explicit_bounds=S_BOUNDS)
            p.attributes.extend(attrs)
            self.hist_points.append((p, [0] * (len(S_BOUNDS) + 1), temporality))
            if server is not None and ok:
                p = server.histogram.data_points.add(
                    start_time_unix_nano=T0 * 10**9, explicit_bounds=S_BOUNDS
                )
                p.attributes.extend(
                    [
                        kv("ipc.client.app", c),
                        kv("ipc.endpoint", f"/e{e}"),
                        kv("ipc.result", "success"),
                        kv("ipc.status", "success"),
                    ]
                )
                self.hist_points.append((p, [0] * (len(S_BOUNDS) + 1), 2))

    @property
    def points(self) -> int:
        return len(self.hist_points) + 3 * len(self.stat_points)

    def export(self, t: int, deltas: list[list[int]]) -> bytes:
        rng = self.rng
        t_ns = t * 10**9
        for p, cum, temporality in self.hist_points:
            d = deltas[rng.randrange(len(deltas))]
            if temporality == 2:
                for j, x in enumerate(d):
                    cum[j] += x
                counts = cum
            else:
                counts = d
            p.time_unix_nano = t_ns
            del p.bucket_counts[:]
            p.bucket_counts.extend(counts)
            p.count = sum(counts)
            p.sum = 0.02 * p.count
        for count, total, mx, acc in self.stat_points:
            n = rng.randint(0, 40)
            acc[0] += n
            acc[1] += n * rng.uniform(0.002, 0.2)
            count.time_unix_nano = total.time_unix_nano = mx.time_unix_nano = t_ns
            count.as_double, total.as_double, mx.as_double = acc[0], acc[1], 0.3
        return self.req.SerializeToString()


def generate(n_points: int, services: int, seed: int) -> tuple[list[tuple[int, bytes]], int]:
    rng = random.Random(seed)
    names = [f"svc-{i:05d}" for i in range(services)]
    fleet = [Service(i, names, rng) for i in range(services)]
    per_interval = sum(s.points for s in fleet)
    deltas = []
    for _ in range(64):
        d = [0] * (len(S_BOUNDS) + 1)
        for _ in range(rng.randint(0, 30)):
            d[min(len(d) - 1, int(rng.expovariate(0.6)))] += 1
        deltas.append(d)
    out: list[tuple[int, bytes]] = []
    produced = 0
    t = T0
    while produced < n_points:
        t += INTERVAL
        for s in fleet:
            out.append((t, s.export(t, deltas)))
        produced += per_interval
    return out, produced


def run_once(batches: list[tuple[int, bytes]]) -> tuple[float, float, float, IpcStage1, IpcStage2, int]:
    """(wall s, CPU s, CPU s of flush + stage 2 alone, stages, partials) of one pass over ``batches``."""
    s1, s2 = IpcStage1(window_seconds=60), IpcStage2()
    partials = 0
    flush_cpu = 0.0
    next_flush = (batches[0][0] // 60 + 1) * 60
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    for t, data in batches:
        if t >= next_flush:
            f0 = time.process_time()
            partials += len(s2.process(s1.flush(next_flush)))
            flush_cpu += time.process_time() - f0
            next_flush += 60
        s1.add_serialized(data)
    f0 = time.process_time()
    partials += len(s2.process(s1.flush(math.inf)))
    flush_cpu += time.process_time() - f0
    return time.perf_counter() - w0, time.process_time() - c0, flush_cpu, s1, s2, partials


def calibration() -> float:
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
    ap.add_argument("--points", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--services", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--server-gc", action="store_true", help="the server's gc thresholds, not the defaults")
    args = ap.parse_args()
    if args.server_gc:
        from service.server import GC_THRESHOLDS

        gc.set_threshold(*GC_THRESHOLDS)
    print(header("IPC layer: decode + stage 1 + stage 2, one core"))
    print(
        f"load average at start: {os.getloadavg()[0]:.2f}; interpreter calibration: {calibration():.1f} ns "
        f"per `x += i` loop iteration (an idle modern core: ~15-20); gc thresholds {gc.get_threshold()}"
    )
    t = time.perf_counter()
    batches, total = generate(args.points, args.services, args.seed)
    size = sum(len(d) for _, d in batches)
    print(
        f"input: {total:,} points in {len(batches):,} requests ({size / 2**20:.0f} MiB, {size / total:.0f} "
        f"B/point), {args.services:,} services, {(batches[-1][0] - batches[0][0]) / 60:.0f} min "
        f"of event time; "
        f"generated in {time.perf_counter() - t:.0f} s"
    )

    decoders = [("parse, full schema (upb)", ExportMetricsServiceRequest.FromString),
                ("parse, compact schema (upb)", metrics_view)]
    if metric_columns.NATIVE:
        decoders.append(("native decoder into columns", metric_columns.raw_columns))
    kind = "native core (IpcCore)" if metric_columns.NATIVE else "point by point (no native module)"
    print(f"stage 1: {kind}")
    for name, fn in decoders:
        c0 = time.process_time()
        for _, d in batches:
            fn(d)
        secs = time.process_time() - c0
        print(f"{name:<40} {total / secs:>12,.0f} points/s CPU  ({secs / total * 1e9:,.0f} ns/point)")
    part = batches[: len(batches) // 5]
    s1 = IpcStage1()
    c0 = time.process_time()
    for _, d in part:
        s1.add(decode_metrics(d, PB))
    secs = time.process_time() - c0
    print(
        f"{'decode_metrics + add(request), 1/5':<40} {s1.counters['points'] / secs:>12,.0f} points/s CPU  "
        f"({secs / s1.counters['points'] * 1e9:,.0f} ns/point)"
    )

    rates, cpu_rates = [], []
    for i in range(args.runs):
        wall, cpu, flush_cpu, s1, s2, partials = run_once(batches)
        rates.append(total / wall)
        cpu_rates.append(total / cpu)
        print(
            f"run {i + 1}: {total / wall:>10,.0f} points/s wall, {total / cpu:>10,.0f} points/s "
            f"CPU ({wall:.1f} s "
            f"wall, {cpu:.1f} s CPU, {cpu / total * 1e9:,.0f} ns/point; flush + stage 2 {flush_cpu:.1f} s "
            f"= {flush_cpu / cpu:.0%})  edge partials {partials:,}, load {os.getloadavg()[0]:.2f}"
        )
    print(f"stage 1 counters (last run): {s1.counters}")
    print(f"stage 2 counters (last run): {s2.counters}")
    print(
        f"RESULT add_serialized + flush + stage 2: median {statistics.median(rates):,.0f} points/s wall (min "
        f"{min(rates):,.0f}, max {max(rates):,.0f}), median {statistics.median(cpu_rates):,.0f} points/s CPU "
        f"time, over {len(rates)} runs (target >= 500,000)"
    )


if __name__ == "__main__":
    main()

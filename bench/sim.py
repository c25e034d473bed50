"""Fleet simulator: generation time, CPU per step, volume per step, and (optionally) pipeline accuracy.

    .venv/bin/python -m bench.sim [--services 1000] [--steps 30] [--dt 10] [--seed 42] [--accuracy]

Printed: ``generate_fleet`` and ``Simulator`` set-up time; CPU seconds per ``step`` (p50, p95, max)
and what one step emits (flow batches and records, OTLP metric points and spans, bytes). With
``--accuracy``, every step is also fed through the embedded pipeline (``topology.pipeline``, decoding
the real wire bytes) and its APP-level edges are compared with the simulator's ground truth: precision
and recall per layer and unified, per-window agreement, and edges attributed to an address's
*previous* owner (target: zero).
"""

from __future__ import annotations

import argparse
import time

from bench.machine import header, percentiles
from topology.catalog import AddressKind
from topology.model import ALL_LAYERS, Granularity, Layer
from topology.sim import SimConfig, Simulator, generate_fleet

START = 1_700_000_040.0  # a multiple of 60


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dt", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--churn", type=float, default=0.05, help="share of addresses reassigned per hour")
    ap.add_argument(
        "--accuracy", action="store_true", help="feed the embedded pipeline and compare with truth"
    )
    args = ap.parse_args()
    print(header("fleet simulator"))

    t = time.perf_counter()
    fleet = generate_fleet(args.services, args.seed)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    sim = Simulator(fleet, seed=args.seed, start=START, config=SimConfig(churn_per_hour=args.churn))
    init_s = time.perf_counter() - t
    print(
        f"services={args.services} edges={len(fleet.edges)} instances={fleet.instance_count()} "
        f"hosts={len(fleet.hosts)} sinks={len(fleet.sinks)} intermediaries={len(fleet.intermediaries)}"
    )
    print(f"generate_fleet: {gen_s:.2f} s   Simulator(): {init_s:.2f} s")

    feeder = _Feeder(sim) if args.accuracy else None
    cpu_ms: list[float] = []
    volume = {
        "flow_batches": 0,
        "flow_bytes": 0,
        "metric_requests": 0,
        "metric_bytes": 0,
        "span_requests": 0,
        "span_bytes": 0,
    }
    now = START
    for _ in range(args.steps):
        c = time.process_time()
        em = sim.step(now, args.dt)
        cpu_ms.append((time.process_time() - c) * 1000)
        volume["flow_batches"] += len(em.flow_batches)
        volume["flow_bytes"] += sum(map(len, em.flow_batches))
        volume["metric_requests"] += len(em.metrics)
        volume["metric_bytes"] += sum(map(len, em.metrics))
        volume["span_requests"] += len(em.spans)
        volume["span_bytes"] += sum(map(len, em.spans))
        now += args.dt
        if feeder is not None:
            feeder.feed(em, now)
    p = percentiles(cpu_ms)
    print(
        f"step ({args.dt:g} s simulated), CPU ms: p50 {p['p50']:.0f}  p95 {p['p95']:.0f}  max {p['max']:.0f}"
    )
    stats = sim.stats()
    n = args.steps
    print(
        "per step: "
        + "  ".join(f"{k} {v / n:,.0f}" for k, v in volume.items())
        + f"  flow_records {stats['flow_records'] / n:,.0f}  metric_points {stats['metric_points'] / n:,.0f}"
        + f"  spans {stats['spans'] / n:,.0f}"
    )
    print(
        f"run: redeploys {stats['redeploys']}  addresses reused {stats['addresses_reused']}  "
        f"edge changes {stats['edge_changes']}"
    )
    if feeder is not None:
        feeder.report(now)


class _Feeder:
    """Feeds emissions through the embedded pipeline, exactly as the wire would deliver them."""

    def __init__(self, sim: Simulator) -> None:
        from topology.pipeline import Pipeline

        self.sim = sim
        self.pipeline = Pipeline()
        init = sim.initial_records()
        self.pipeline.add_leases(init.leases)
        self.pipeline.add_catalog(init.catalog)
        self.pipeline.add_health(init.health)
        self.pairs: dict[Layer, set[tuple[str, str]]] = {layer: set() for layer in ALL_LAYERS}
        self.windows: dict[Layer, set[tuple[str, str, int]]] = {layer: set() for layer in ALL_LAYERS}

    def feed(self, em: object, now: float) -> None:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        from topology.sim import Emission
        from topology.wire.flow import decode

        assert isinstance(em, Emission)
        p = self.pipeline
        p.add_leases(em.leases)
        p.add_catalog(em.catalog)
        p.add_health(em.health)
        for b in em.flow_batches:
            p.add_flows(decode(b))
        for b in em.metrics:
            p.add_metrics(ExportMetricsServiceRequest.FromString(b))
        for b in em.spans:
            p.add_spans(ExportTraceServiceRequest.FromString(b), now=now)
        self._collect(now)

    def _collect(self, now: float) -> None:
        for layer, ws in self.pipeline.flush(now).windows.items():
            for w in ws:
                if w.key.granularity is Granularity.APP:
                    self.pairs[layer].add((w.key.source, w.key.target))
                    self.windows[layer].add((w.key.source, w.key.target, w.window_start))

    def report(self, now: float) -> None:
        self._collect(now + 3600)
        truth = self.sim.truth()
        book = self.sim.world.truth
        all_truth: set[tuple[str, str]] = set()
        all_got: set[tuple[str, str]] = set()
        print("accuracy (APP level)     truth     found  precision  recall  windows(truth/found/agree)")
        for layer in ALL_LAYERS:
            tr = {(a, b) for a, b in truth["layers"][layer.value]}
            got = self.pairs[layer]
            all_truth |= tr
            all_got |= got
            tw = {(a, b, w) for a, b in book.pairs(layer) for w in book.windows(layer, (a, b))}
            found = self.windows[layer]
            print(
                f"  {layer.value:8s}            {len(tr):7d}   {len(got):7d}   {_ratio(tr & got, got):8.4f}"
                f"  {_ratio(tr & got, tr):6.4f}  {len(tw)}/{len(found)}/{len(tw & found)}"
            )
        print(
            f"  unified             {len(all_truth):7d}   {len(all_got):7d}   "
            f"{_ratio(all_truth & all_got, all_got):8.4f}  {_ratio(all_truth & all_got, all_truth):6.4f}"
        )
        # An extra NETWORK edge whose target once held an address the source talked to, but no longer
        # did at the time, is a misattribution to a previous owner.
        previous = {
            le.owner
            for le in self.sim.lease_history()
            if le.end is not None and le.kind is AddressKind.WORKLOAD
        }
        extra = self.pairs[Layer.NETWORK] - {(a, b) for a, b in truth["layers"]["NETWORK"]}
        print(
            f"  NETWORK edges to a previous owner of an address: {sum(1 for _, b in extra if b in previous)}"
        )


def _ratio(part: set[tuple[str, str]], whole: set[tuple[str, str]]) -> float:
    return len(part) / len(whole) if whole else 1.0


if __name__ == "__main__":
    main()

"""Storage and CPU cost of one edge-window's stats, by latency shape and call rate (in process).

    .venv/bin/python -m bench.stats_size [--edges 200] [--minutes 60] [--accuracy]

For each call rate (calls per edge-minute) builds ``edges x minutes`` IPC windows whose latencies are
drawn from a log-normal (median 12 ms, sigma 0.7, as the simulator's IPC calls) and reports, per
window: the bytes of the embedded store's stats column (``StatsCodec``, compact format), of the
JanusGraph stats property (JSON), the CPU time to encode and decode one, and per edge the CPU time to
merge its minutes into one (a roll-up of stored windows, ``merge_fields``; a query's ``merge_all``).

``--accuracy`` prints instead the relative error of p50/p90/p99 against ``numpy.quantile`` for the
shapes of :mod:`topology.sim.latency` (20,000 observations each).

It runs against the latency sketch and, from a checkout of an older commit, against the power-of-two
histogram it replaced (the windows are built from the same samples), so before and after come from
the same script on the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import topology.stats
from bench.machine import header
from topology.sim.latency import LATENCY_SHAPES, latency_samples
from topology.stats import EdgeStats
from topology.store.embedded_codec import StatsCodec, merge_all, merge_fields
from topology.store.janusgraph_layer import encode_stats

if hasattr(topology.stats, "latency_histogram"):  # an older checkout: power-of-two buckets
    latency_of: Callable[[list[float]], Any] = topology.stats.latency_histogram
    LAYOUT = "power-of-two histogram (22 buckets)"
else:
    from topology.sketch import LatencySketch

    latency_of = LatencySketch.of
    LAYOUT = "sketch (exponential, scale 5)"


def windows(rate: int, edges: int, minutes: int, seed: int = 1) -> list[list[EdgeStats]]:
    rng = np.random.default_rng(seed)
    out = []
    for e in range(edges):
        median = 0.012 * float(np.exp(rng.normal(0.0, 0.5)))  # edges differ
        per_edge = []
        for m in range(minutes):
            start = 1_700_000_000 + m * 60
            xs = rng.lognormal(np.log(median), 0.7, rate).tolist()
            per_edge.append(EdgeStats(float(start), float(start + 59), "http", requests=rate,
                                      errors=rate // 100, latency=latency_of(xs), latency_sum=float(sum(xs)),
                                      endpoints=(f"GET /v1/{e}",)))
        out.append(per_edge)
    return out


def cpu_us(fn: Callable[[], Any], count: int) -> float:
    t = time.process_time()
    fn()
    return (time.process_time() - t) / count * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, default=200)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--rates", type=int, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument("--accuracy", action="store_true", help="quantile errors against numpy instead")
    args = ap.parse_args()
    if args.accuracy:
        print(header(f"quantile accuracy: {LAYOUT}"))
        for shape in LATENCY_SHAPES:
            xs = latency_samples(shape, 20_000)
            s = EdgeStats(latency=latency_of(xs.tolist()))
            errors = []
            for q in (0.5, 0.9, 0.99):
                want, got = float(np.quantile(xs, q)), s.latency_quantile(q)
                errors.append(f"p{round(q * 100)} {100 * ((got or 0.0) - want) / want:+6.2f}%")
            print(f"{shape:12s} " + "  ".join(errors))
        return
    print(header(f"stats size: {LAYOUT}"))
    print(f"# {args.edges} IPC edges x {args.minutes} minute windows per call rate")
    print(f"{'calls/min':>9} {'embedded B':>10} {'JSON B':>7} {'encode us':>9} {'decode us':>9} "
          f"{'roll-up us/edge':>15} {'merge_all us/edge':>17}")
    for rate in args.rates:
        print(row(rate, windows(rate, args.edges, args.minutes)))


def row(rate: int, ws: list[list[EdgeStats]]) -> str:
    flat = [w for per in ws for w in per]
    codec = StatsCodec()
    base = 1_700_000_000
    blobs = [codec.encode(w, base) for w in flat]
    assert all(codec.decode(b, base) == w for b, w in zip(blobs, flat, strict=True))
    size = statistics.fmean(len(b) for b in blobs)
    json_size = statistics.fmean(len(encode_stats(w)) for w in flat)
    enc = cpu_us(lambda: [codec.encode(w, base) for w in flat], len(flat))
    dec = cpu_us(lambda: [codec.decode_fields(b, base) for b in blobs], len(flat))
    fields = [[codec.decode_fields(codec.encode(w, base), base) for w in per] for per in ws]
    roll = cpu_us(lambda: [merge_fields(f) for f in fields], len(fields))
    mall = cpu_us(lambda: [merge_all(per) for per in ws], len(ws))
    return f"{rate:>9} {size:>10.1f} {json_size:>7.1f} {enc:>9.2f} {dec:>9.2f} {roll:>15.1f} {mall:>17.1f}"

if __name__ == "__main__":
    main()

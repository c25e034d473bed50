"""The embedded catalog's cost of persisting trace summaries (``record_traces``), in process.

    .venv/bin/python -m bench.trace_summaries [--services 1000] [--minutes 10] [--every 2] [--spread 240]
                                              [--repo DIR ...] [--rounds 3] [--batches FILE]

The summaries are the ones the OTLP/HTTP path writes: the simulator's spans (``topology simulate --out``,
``--minutes`` of a ``--services`` fleet) go through this checkout's TRACE pairer, its arrival spread
evenly over ``--spread`` seconds and flushed every ``--every`` seconds (the server's trace flush), and
each flush's summaries are one ``record_traces`` call, as ``persist`` makes it. Made once, then for each
round and each ``--repo`` (a checkout whose catalog store is measured, e.g. a ``git worktree`` of an
older commit for "before"; interleaved round by round) a fresh process writes every batch into a fresh
embedded catalog with the default retention and prints CPU per summary (process time: both threads,
the event loop and SQLite's writer) and the wall time. ``--batches FILE`` keeps the batches: read from
it if it exists (the other options that make them are then ignored), else written to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.machine import header
from topology.catalog import TraceSummary

HERE = Path(__file__).resolve().parent.parent

# Run in the measured checkout: reads the batches (JSON of TraceSummary.to_dict, never pickle) and
# prints "cpu wall summaries".
_MEASURE = """
import asyncio, json, pathlib, sys, tempfile, time
from topology.catalog import TraceSummary
from topology.store.embedded_catalog import EmbeddedCatalogStore
batches = [[TraceSummary.from_dict(d) for d in b] for b in json.loads(pathlib.Path(sys.argv[1]).read_bytes())]
async def main():
    with tempfile.TemporaryDirectory() as d:
        cat = EmbeddedCatalogStore(pathlib.Path(d) / "catalog.db")
        c0, t0 = time.process_time(), time.perf_counter()
        for b in batches:
            await cat.record_traces(b)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        await cat.close()
    print(cpu, wall, sum(map(len, batches)))
asyncio.run(main())
"""


def make_batches(services: int, minutes: float, every: float, spread: float) -> list[list[TraceSummary]]:
    from topology.stages.trace import SpanPairer

    sim = Path(tempfile.mkdtemp(prefix="trace-summaries-sim-"))
    try:
        subprocess.run(
            [sys.executable, "-m", "service.cli", "simulate", "--out", str(sim), "--services", str(services),
             "--minutes", str(minutes), "--start", "1700000000"],
            cwd=HERE, env={**os.environ, "LOG_LEVEL": "ERROR"}, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files = sorted((sim / "otlp_spans").iterdir())
        pairer = SpanPairer()
        batches: list[list[TraceSummary]] = []
        t0, due = 1_700_000_000.0, 1_700_000_000.0 + every
        for i, f in enumerate(files):
            now = t0 + spread * i / len(files)
            while now >= due:
                pairer.flush(due)
                batches.append(list(pairer.take_trace_summaries()))
                due += every
            pairer.add_serialized(f.read_bytes(), now)
        end = due + pairer.wait_seconds + 2 * every
        while due <= end:
            pairer.flush(due)
            batches.append(list(pairer.take_trace_summaries()))
            due += every
        return [b for b in batches if b]
    finally:
        shutil.rmtree(sim, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--every", type=float, default=2.0, help="seconds between trace flushes")
    p.add_argument("--spread", type=float, default=240.0, help="seconds the spans' arrival is spread over")
    p.add_argument("--repo", nargs="+", default=[str(HERE)], help="checkouts whose catalog is measured")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=Path, help="read the batches from this file if it exists, else write "
                   "them to it (JSON, as the measured process reads them)")
    args = p.parse_args(argv)
    print(header("trace summaries: embedded catalog write cost"))
    if args.batches is not None and args.batches.exists():
        batches = [[TraceSummary.from_dict(d) for d in b] for b in json.loads(args.batches.read_bytes())]
    else:
        batches = make_batches(args.services, args.minutes, args.every, args.spread)
        if args.batches is not None:
            args.batches.write_bytes(json.dumps([[s.to_dict() for s in b] for b in batches]).encode())
    n = sum(map(len, batches))
    rows = sum(len({s.root_service, *s.services}) for b in batches for s in b)
    print(f"# {n} summaries in {len(batches)} flushes (median {statistics.median(map(len, batches)):.0f}), "
          f"{rows / n:.2f} services each; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(json.dumps([[s.to_dict() for s in b] for b in batches]).encode())
    results: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            for repo in args.repo:
                out = subprocess.run([sys.executable, "-c", _MEASURE, f.name], cwd=repo, check=True,
                                     env={**os.environ, "PYTHONPATH": repo}, capture_output=True, text=True)
                cpu, wall, count = out.stdout.split()
                per = float(cpu) / int(count) * 1e6
                results.setdefault(repo, []).append(per)
                print(f"{Path(repo).name:>14s}  {per:7.1f} µs CPU per summary  cpu {float(cpu):.2f} s  "
                      f"wall {float(wall):.2f} s", flush=True)
    finally:
        os.unlink(f.name)
    print("# medians")
    for repo, pers in results.items():
        print(f"{Path(repo).name:>14s}  {statistics.median(pers):7.1f} µs CPU per summary")
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

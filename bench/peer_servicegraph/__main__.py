"""Our server beside the OpenTelemetry Collector's servicegraph connector on the same spans (issue 12).

    .venv/bin/python -m bench.peer_servicegraph [--services 1000] [--minutes 60] [--runs 3]
        [--modes fast paced] [--paced-rate 2200] [--paced-seconds 600] [--idle-seconds 60]
        [--systems ours collector collector-default] [--ours DIR ...] [--json FILE]

1. Builds the Collector of ``builder.yaml`` (otlp receiver, contrib servicegraph connector v0.147.0, file
   exporter) once from Go modules with the Collector Builder, into docker/otelcol/build.sh's cache.
2. Simulates ``--minutes`` of a ``--services`` fleet (``topology simulate``'s simulator, seed 42) and keeps
   its OTLP span requests, serialised, and the simulator's TRACE truth; before each run the span times are
   moved so the simulated hour starts at that minute (every system of a round gets spans of its own
   minute, none minutes behind the clock because it ran later).
3. Per mode, ``--runs`` rounds; each round runs every system on a fresh process (ours in a new data
   directory): POSTs the requests to ``/v1/traces`` over ``--senders`` keep-alive connections, ``fast``
   (as fast as it answers) or ``paced`` (``--paced-rate`` spans/s for at most ``--paced-seconds``: the
   longest prefix of whole simulated minutes that fits). A 429/503 is sent again after its Retry-After.
   Then it waits until the process is quiet (its work done; the Collector also for the connector's next
   metrics flush), stops it with SIGTERM and reads the edges it found: ours from its store, the
   Collector's from ``traces_service_graph_request_total{client,server}`` in the file exporter's output.

Printed per system: spans per CPU-second of the receiving process (utime + stime from just before the
first post until it exited, children included), CPU seconds, wall time of the posting and until quiet,
peak RSS (VmHWM before the stop), spans accepted / rejected / refused, 429/503 retries, spans the
system says it dropped, edges found with recall and precision against the truth, requests counted;
medians over the runs, and the ratio ours / Collector. ``--idle-seconds``: CPU of each process, started
and left alone, over that long.

Systems: ``ours`` (``topology serve --embedded``), ``collector`` (the connector's peer attributes set to
the ones our trace layer reads: aligned.yaml), ``collector-default`` (its defaults: older semantic
conventions only). ``--ours DIR...``: the checkouts whose server is run (default this one), e.g. ``git
worktree``s of a commit before and after a change, each a system of its own (``ours@<commit>``) in the
same rounds. The Go build is not part of ``make test`` or CI.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import header
from bench.peer_servicegraph.edges import Pair, counts_agree, score
from bench.peer_servicegraph.run import REPO, Collector, Ours, Proc, post
from bench.peer_servicegraph.workload import Workload, generate

HERE = Path(__file__).resolve().parent
BUILDER_VERSION = "v0.147.0"
SYSTEMS = ("ours", "collector", "collector-default")


def build_collector() -> Path:
    """The Collector binary (built now if the cache has none; progress on stderr)."""
    argv = ["bash", str(REPO / "docker/otelcol/build.sh"), str(HERE / "builder.yaml"), BUILDER_VERSION,
            "--skip-get-modules"]
    r = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    if r.returncode:
        raise SystemExit("the Collector build failed (its output above)")
    return Path(r.stdout.strip().splitlines()[-1])


Factory = Callable[[Path], Ours | Collector]


def checkout(repo: Path) -> str:
    """``ours@<commit>`` (``+dirty`` with uncommitted changes to tracked files) of a checkout."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True, check=True).stdout
    dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    return f"ours@{git('rev-parse', '--short', 'HEAD').strip()}{'+dirty' if dirty else ''}"


def systems(names: list[str], repos: list[Path], binary: Path,
            profile: Path | None = None) -> dict[str, Factory]:
    """Each system's label and how to make it in a work directory."""
    out: dict[str, Factory] = {}
    for name in names:
        if name == "ours":
            for repo in repos:
                label = "ours" if repos == [REPO] else checkout(repo)
                out[label] = functools.partial(Ours, repo=repo, profile=profile)
        else:
            out[name] = functools.partial(Collector, binary, aligned=name == "collector")
    return out


def idle(system: str, make: Factory, seconds: float, keep: bool) -> float:
    """CPU seconds per minute of a freshly started process left alone for ``seconds``."""
    work = Path(tempfile.mkdtemp(prefix=f"psg-idle-{system[:20]}-"))
    s = make(work)
    proc = s.start()
    try:
        time.sleep(10)  # start-up settles
        a = proc.cpu()
        time.sleep(seconds)
        return (proc.cpu() - a) * 60 / seconds
    finally:
        proc.kill()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def one_run(system: str, make: Factory, w: Workload, bodies: int, rate: float | None, senders: int,
            keep: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"psg-{system[:20]}-"))
    s = make(work)
    proc: Proc = s.start()
    try:
        proc.settle(seconds=2, patience=60)  # start-up done
        cpu0 = proc.cpu()
        t0 = time.monotonic()
        posted = asyncio.run(post(s.url, w.bodies[:bodies], w.spans[:bodies], senders, rate))
        settled = proc.settle()
        said = s.before_stop(settled)
        hwm = proc.peak_rss_mib()
        cpu_life = proc.stop()
    finally:
        proc.kill()
    start = w.start + w.shift
    minutes = w.minute_of[bodies] if bodies < len(w.bodies) else w.minutes
    found = s.edges(start, start + minutes * 60)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    sc = score(found, w.truth_for(bodies))
    cpu = cpu_life - cpu0
    return {
        "system": system, "spans": posted.spans, "cpu_s": cpu,
        "spans_per_cpu_s": posted.accepted / cpu if cpu > 0 else 0.0,
        "post_wall_s": posted.wall, "done_wall_s": settled - t0, "peak_rss_mib": hwm,
        "accepted": posted.accepted, "rejected": posted.rejected, "refused": posted.refused,
        "retries": posted.retries, "statuses": dict(posted.statuses), "dropped": said.get("dropped", 0.0),
        "said": said, "edges": sc.found, "truth": sc.truth, "recall": sc.recall, "precision": sc.precision,
        "requests": sum(found.values()), "found": found,
    }


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def line(r: dict[str, Any]) -> str:
    """One run's (or the medians') figures, on three lines."""
    return (f"{r['spans_per_cpu_s'] / 1000:7.1f} k spans/CPU-s  {r['cpu_s']:6.1f} CPU-s"
            f"  wall: posting {r['post_wall_s']:6.1f} s, until quiet {r['done_wall_s']:6.1f} s"
            f"  peak RSS {r['peak_rss_mib']:6.0f} MiB\n{'':8s}spans accepted {r['accepted']:,.0f}"
            f"  rejected {r['rejected']:,.0f}  refused {r['refused']:,.0f}  retried {r['retries']:,.0f}"
            f"  dropped (the system's count) {r['dropped']:,.0f}\n{'':8s}edges {r['edges']:,.0f}"
            f" (truth {r['truth']:,.0f})  recall {r['recall']:.3f}  precision {r['precision']:.3f}"
            f"  requests counted {r['requests']:,.0f}")


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("spans_per_cpu_s", "cpu_s", "post_wall_s", "done_wall_s", "peak_rss_mib", "accepted", "rejected",
            "refused", "retries", "dropped", "edges", "truth", "recall", "precision", "requests")
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--minutes", type=int, default=60, help="simulated minutes of spans")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--runs", type=int, default=3, help="rounds per mode (medians are printed)")
    p.add_argument("--modes", nargs="+", default=["fast", "paced"], choices=["fast", "paced"])
    p.add_argument("--paced-rate", type=float, default=2200.0, help="spans per second in the paced mode")
    p.add_argument("--paced-seconds", type=float, default=600.0,
                   help="longest paced posting (whole simulated minutes that fit at --paced-rate)")
    p.add_argument("--senders", type=int, default=4, help="keep-alive connections posting at once")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--ours", nargs="+", type=Path, default=[REPO],
                   help="checkouts whose server is run (default: this one)")
    p.add_argument("--idle-seconds", type=float, default=60.0,
                   help="idle CPU measured over this long (0: not)")
    p.add_argument("--json", help="write every run's figures (not the edge lists) to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directories (stores, logs, metrics)")
    p.add_argument("--profile", type=Path,
                   help="write a py-spy profile (collapsed stacks) of each of our servers' runs here")
    args = p.parse_args(argv)

    print(header("OTLP/HTTP spans: topology serve --embedded vs the OpenTelemetry Collector's servicegraph"))
    sys.stdout.flush()
    binary = build_collector()
    run = systems(args.systems, [r.resolve() for r in args.ours], binary, args.profile)
    print(f"# Collector: {binary} (servicegraph connector {BUILDER_VERSION}); {args.senders} keep-alive "
          f"connections; medians of {args.runs}; {load()}")
    t = time.monotonic()
    w = generate(args.services, args.minutes, args.seed)
    print(f"# workload: {args.services} services, {args.minutes} simulated minutes, {w.total_spans:,} spans "
          f"in {len(w.bodies):,} requests ({sum(map(len, w.bodies)) / 2**20:.0f} MiB), "
          f"{len(w.truth[w.minutes]):,} TRACE truth edges (made in {time.monotonic() - t:.0f} s)")
    sys.stdout.flush()
    report: dict[str, Any] = {"args": vars(args), "idle_cpu_s_per_min": {}, "runs": []}

    if args.idle_seconds > 0:
        for system, make in run.items():
            report["idle_cpu_s_per_min"][system] = v = idle(system, make, args.idle_seconds, args.keep)
            print(f"idle  {system:22s} {v:.3f} CPU-s per minute (over {args.idle_seconds:g} s)")
            sys.stdout.flush()

    for mode in args.modes:
        rate = args.paced_rate if mode == "paced" else None
        n = w.prefix(int(args.paced_rate * args.paced_seconds) if rate else None)
        print(f"\n## {mode}: {sum(w.spans[:n]):,} spans in {n:,} requests"
              + (f" at {rate:g} spans/s" if rate else ", as fast as each system answers"))
        rows: dict[str, list[dict[str, Any]]] = {s: [] for s in run}
        for i in range(args.runs):
            for system, make in run.items():
                # each run's spans start at its own minute: a system run later in the round would
                # otherwise get spans minutes behind the clock (our server's late-data road)
                w.restamp(time.time())
                r = one_run(system, make, w, n, rate, args.senders, args.keep)
                rows[system].append(r)
                figures = {k: v for k, v in r.items() if k != "found"}
                report["runs"].append({"mode": mode, "run": i + 1, **figures})
                print(f"{mode} {i + 1} {system}\n{'':8s}{line(r)}")
                sys.stdout.flush()
        med = {s: median_of(rs) for s, rs in rows.items()}
        print(f"-- {mode}, medians of {args.runs} ({load()}):")
        for s, m in med.items():
            print(f"   {s}\n{'':8s}{line(m)}")
        for ours in (s for s in med if s.startswith("ours")):
            for other in ("collector", "collector-default"):
                if other in med and med[other]["spans_per_cpu_s"]:
                    ratio = med[ours]["spans_per_cpu_s"] / med[other]["spans_per_cpu_s"]
                    print(f"   ratio {ours} / {other}: {ratio:.2f}x spans per CPU-second")
            if "collector" in rows:
                a: dict[Pair, int] = rows[ours][-1]["found"]
                b: dict[Pair, int] = rows["collector"][-1]["found"]
                both, same = counts_agree(a, b)
                print(f"   edges {ours} and collector both found: {both:,}, same request count on {same:,};"
                      f" only {ours} {len(a.keys() - b.keys()):,}, only collector "
                      f"{len(b.keys() - a.keys()):,}")
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Disk and memory of the embedded store holding 7 simulated days at 10,000 services.

    .venv/bin/python -m bench.storage_week [--services 10000] [--days 7] [--fraction 0.1]
        [--model sim|synthetic] [--capture FILE] [--rss] [--keep --data-dir DIR]

Target (performance.md): storage for 10,000 services and 7 simulated days <= 2 GB on disk, server RSS
<= 1.5 GB. Writing 7 days of minute windows through the whole pipeline would take days of CPU here, so
the store is filled with what it holds after 7 days, through its own write path and roll-up:

1. **Edge model.** ``--model sim`` (default): the fleet simulator (``generate_fleet(services)``, the
   reference workload) runs through the embedded pipeline (real wire bytes, stages 1-3) for
   ``--warm-minutes`` plus ``--cycle-minutes`` simulated minutes; every APP and CLUSTER edge window it
   emits (the last version of each, as the store keeps it) is that edge's minute ``k`` of a cycle.
   Minute ``m`` of the week repeats minute ``m mod cycle`` of its edge (times shifted; an edge without
   traffic in a captured minute has no window then). The capture is slow (~10 CPU s per simulated
   10 s at 10,000 services) and is kept in ``--capture`` for the next run. ``--model synthetic``: the
   heavy-tailed graph of ``bench/store_embedded.py``, every edge busy every minute (a worst case:
   IPC latency from 1,000 raw calls, not from 13-15 explicit buckets as the simulator's apps export).
   Every window written is varied (``_vary``: counters and latency counts scaled by a factor in
   [0.85, 1.15], times moved, other trace ids), so the minutes of an hour and the hours of a day
   are not the cycle's few records again and again (which packs would compress unlike real traffic).
2. **History.** For every hour older than the last ``--minute-hours`` (7: the 6 h minute retention and
   one more hour), each layer gets one upsert of HOUR windows that hold what the roll-up would
   build from that hour's minutes (``merge_all`` of the 60 minute windows; the cycle divides the hour,
   so every hour of an edge holds the same counts before it is varied). Day windows are built by
   the store's roll-up.
3. **Recent minutes.** The last ``--minute-hours`` are written minute by minute (one upsert per layer
   per minute, as stage 3 does), with ``rollup(now)`` every ``--rollup-every`` minutes (the server:
   every minute), which builds hour and day windows and deletes minute windows past their retention.
4. **Measured**: every file of the data directory while open (WAL included) and after ``close`` (the
   store's own checkpoint), the per-table and per-index bytes from SQLite's ``dbstat`` (payload,
   unused space in pages, free pages), stored bytes per window by layer and granularity, and the
   packs (finished hours' minutes, finished days' hours: rows, windows held, bytes per window).
   The week ends at a day boundary, right after the roll-up: every finished hour and day is packed,
   the fewest windows loose. The free pages are then what the loose windows held before that roll-up:
   the last hour's minutes, and the last day's hours written in step 2 (a server's roll-up puts each
   hour into its day's pack as it builds it, so those are loose only here). ``--days 6 --end-minutes
   1439`` ends it at 23:59 instead: the day's 23 hours and the hour's 59 minutes are still loose (the
   most a store holds loose).
   ``--fraction f`` writes a deterministic sample ``f`` of every layer's edges (both granularities):
   the directory is measured, and the whole store projected as measured / ``f`` (everything stored
   is per edge). ``--rss``: a separate server process (the GraphQL app over these stores, as
   ``bench/query_http.py`` runs it, clock pinned to the end of the week) answers Q1 for
   ``--queries`` services; its peak RSS (VmHWM) is read from ``/proc``. Meaningful with
   ``--fraction 1`` (the whole edge set, the hot ring of 20 minutes of each).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pathlib
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence

from bench.machine import header
from topology.model import ALL_LAYERS, EdgeKey, EdgeWindow, Granularity, Layer, NodeInfo
from topology.stats import EdgeStats
from topology.store.embedded import layer_file, open_stores
from topology.store.embedded_codec import merge_all
from topology.timewindow import DAY, HOUR, MINUTE

T0 = 1_700_006_400 - 1_700_006_400 % DAY  # a day boundary
SIM_START = 1_700_000_040.0  # the simulator's start (bench/sim.py), a minute boundary
MiB = 2**20

#: One edge's cycle: (window template, minute stats by position in the cycle, None where no window).
Cycle = tuple[EdgeWindow, list[EdgeStats | None]]


def _shift(s: EdgeStats, dt: float) -> EdgeStats:
    return dataclasses.replace(
        s,
        first_seen=s.first_seen + dt if s.first_seen else 0.0,
        last_seen=s.last_seen + dt if s.last_seen else 0.0,
    )


def _other_traces(s: EdgeStats, i: int) -> EdgeStats:
    """``s`` with its exemplars replaced by other trace ids (the ``i``-th repetition of a minute is
    other traffic: an hour keeps the 5 smallest of all its minutes' ids, as many as there are)."""
    if not s.exemplars or not i:
        return s
    mix = (i * 0x9E3779B97F4A7C15) << 64
    return dataclasses.replace(s, exemplars=tuple(sorted(
        f"{(int(x, 16) ^ mix) & (2**128 - 1):0{len(x)}x}" if len(x) == 32 else x for x in s.exemplars)))


_MIX = 0x9E3779B97F4A7C15


def _moved(rel: float, x: int) -> float:
    """A time ``rel`` seconds after its window's start moved by a little (``x``: random bits) in its own
    precision: whole milliseconds stay whole milliseconds, span ticks (2**-22 s) stay ticks."""
    if not rel:
        return rel
    ms = round(rel * 1000)
    if ms / 1000 == rel:
        return max(0, ms + (x & 0x1FF) - 0x100) / 1000
    ticks = rel * 4194304.0
    if ticks == int(ticks):
        return max(0, int(ticks) + (x & 0xFFFFF) - 0x80000) / 4194304.0
    return rel


def _vary(s: EdgeStats, seed: int) -> EdgeStats:
    """``s`` as other traffic of the same edge would give it (``seed``: which): counters, latency
    counts and sum scaled by a factor in [0.85, 1.15], times moved by up to ~0.25 s, other trace ids.
    The week's minutes repeat a short cycle; without this a pack of an hour's minutes (or a day's
    hours) would hold the same few records over and over, which compresses unlike real traffic."""
    x = (seed * _MIX + 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    f = 0.85 + 0.3 * ((x >> 40) & 0xFFFF) / 0xFFFF

    def scaled(v: int) -> int:
        return max(1, round(v * f)) if v else 0

    lat = s.latency
    if lat.total:
        lat = dataclasses.replace(lat, counts=tuple(scaled(c) for c in lat.counts), zero=scaled(lat.zero))
    return _other_traces(dataclasses.replace(
        s,
        first_seen=_moved(s.first_seen, x),
        last_seen=_moved(s.last_seen, x >> 20),
        connections=scaled(s.connections),
        bytes_sent=scaled(s.bytes_sent),
        bytes_received=scaled(s.bytes_received),
        requests=scaled(s.requests),
        errors=round(s.errors * f),
        latency=lat,
        latency_sum=s.latency_sum * f,
    ), seed & 0xFFFFFFFF | 1)


# -- edge models ---------------------------------------------------------------------------------------
def capture_sim(services: int, minutes: int, seed: int) -> list[EdgeWindow]:
    """Every window the simulator's traffic gives through the embedded pipeline in ``minutes``."""
    from bench.sim import _Feeder
    from topology.sim import SimConfig, Simulator, generate_fleet

    class Keeper(_Feeder):  # bench/sim.py's feeder (the wire bytes decoded), keeping every window
        out: list[EdgeWindow] = []

        def _collect(self, now: float) -> None:
            for ws in self.pipeline.flush(now).windows.values():
                self.out.extend(ws)

    sim = Simulator(generate_fleet(services, seed), seed=seed, start=SIM_START, config=SimConfig())
    feeder = Keeper(sim)
    now = SIM_START
    for step in range(minutes * 6):
        em = sim.step(now, 10.0)
        now += 10.0
        feeder.feed(em, now)
        if step % 6 == 5:
            print(f"#   captured minute {step // 6 + 1} of {minutes}", flush=True)
    feeder._collect(now + HOUR)
    return feeder.out


def sim_cycles(windows: Sequence[EdgeWindow], warm: int, cycle: int) -> list[Cycle]:
    """Per edge, its minutes ``warm .. warm + cycle`` of the capture (the last version of each window)."""
    last: dict[tuple[EdgeKey, int], EdgeWindow] = {}
    for w in windows:
        if w.window_seconds == MINUTE:
            last[(w.key, w.window_start)] = w
    first = min(t for _, t in last) + warm * MINUTE
    by_edge: dict[EdgeKey, Cycle] = {}
    for (key, t), w in last.items():
        k = (t - first) // MINUTE
        if 0 <= k < cycle:
            c = by_edge.get(key)
            if c is None:
                c = by_edge[key] = (w, [None] * cycle)
            c[1][k] = _shift(w.stats, -t)  # times relative to the window start
    return [by_edge[k] for k in sorted(by_edge, key=lambda k: (k.layer.value, k.granularity.value, k.source,
                                                                 k.target))]


def synthetic_cycles(services: int, seed: int, cycle: int) -> list[Cycle]:
    """The synthetic fleet of ``bench/store_embedded.py``: its minutes ``0 .. cycle``."""
    from bench.store_embedded import T0 as F0
    from bench.store_embedded import Fleet

    fleet = Fleet(services, seed)
    by_edge: dict[EdgeKey, Cycle] = {}
    for m in range(cycle):
        for layer in ALL_LAYERS:
            for w in fleet.windows(layer, m):
                c = by_edge.get(w.key)
                if c is None:
                    c = by_edge[w.key] = (w, [None] * cycle)
                c[1][m] = _shift(w.stats, -(F0 + m * MINUTE))
    return list(by_edge.values())


def sample(cycles: list[Cycle], fraction: float, seed: int) -> list[Cycle]:
    if fraction >= 1:
        return cycles
    rnd = random.Random(seed)
    return [c for c in cycles if rnd.random() < fraction]


# -- writing the week ------------------------------------------------------------------------------
class Week:
    def __init__(self, cycles: list[Cycle]) -> None:
        self.cycles = cycles
        self.n = len(cycles[0][1]) if cycles else 1
        if 60 % self.n:
            raise SystemExit(f"the cycle ({self.n} minutes) must divide the hour")
        self._hour: list[EdgeStats | None] | None = None

    @property
    def hour(self) -> list[EdgeStats | None]:
        """Per edge, the roll-up of one hour: the cycle 60 / n times (other trace ids each time)."""
        if self._hour is None:
            self._hour = []
            for _, minutes in self.cycles:
                parts = [_other_traces(_shift(s, (k + i * self.n) * MINUTE), i) for i in range(60 // self.n)
                         for k, s in enumerate(minutes) if s is not None]
                self._hour.append(merge_all(parts) if parts else None)
        return self._hour

    @staticmethod
    def _window(tpl: EdgeWindow, start: int, seconds: int, s: EdgeStats) -> EdgeWindow:
        return EdgeWindow(tpl.key, start, seconds, _shift(s, start), tpl.source_kind, tpl.target_kind,
                          tpl.source_app, tpl.target_app)

    def hour_windows(self, start: int) -> dict[Layer, list[EdgeWindow]]:
        out: dict[Layer, list[EdgeWindow]] = defaultdict(list)
        for e, ((tpl, _), s) in enumerate(zip(self.cycles, self.hour, strict=True)):
            if s is not None:
                out[tpl.key.layer].append(self._window(tpl, start, HOUR, _vary(s, e << 32 | start // HOUR)))
        return out

    def minute_windows(self, start: int) -> dict[Layer, list[EdgeWindow]]:
        k = (start // MINUTE) % self.n
        out: dict[Layer, list[EdgeWindow]] = defaultdict(list)
        for e, (tpl, minutes) in enumerate(self.cycles):
            s = minutes[k]
            if s is not None:
                s = _vary(s, e << 32 | start // MINUTE)
                out[tpl.key.layer].append(self._window(tpl, start, MINUTE, s))
        return out


def nodes_of(cycles: list[Cycle]) -> list[NodeInfo]:
    nodes: dict[tuple[str, Granularity], NodeInfo] = {}
    for tpl, _ in cycles:
        for name, kind in ((tpl.key.source, tpl.source_kind), (tpl.key.target, tpl.target_kind)):
            g = tpl.key.granularity
            old = nodes.get((name, g))
            seen = frozenset({tpl.key.layer}) | (old.layers if old else frozenset())
            nodes[(name, g)] = NodeInfo(name, kind, g, None, seen, T0, T0 + 60)
    return list(nodes.values())


async def write_week(
    root: pathlib.Path, week: Week, days: int, minute_hours: float, rollup_every: int, end_minutes: int = 0
) -> float:
    now = T0 + max(days * DAY, round(minute_hours * 60) * MINUTE) + end_minutes * MINUTE
    stores = open_stores(root)
    await stores.catalog.register_nodes(nodes_of(week.cycles))
    first_minute = now - round(minute_hours * 60) * MINUTE
    if end_minutes:
        first_minute -= first_minute % HOUR
    cpu = time.process_time()
    for h in range(T0, first_minute, HOUR):
        for layer, ws in week.hour_windows(h).items():
            await stores.layers[layer].upsert_windows(ws)
        if (h - T0) % DAY == DAY - HOUR:
            used = time.process_time() - cpu
            print(f"#   hour windows through day {(h - T0) // DAY + 1} ({used:.0f} s CPU)",
                  flush=True)
            for layer in ALL_LAYERS:  # day windows, as the server's roll-up builds them
                await stores.layers[layer].rollup(h + HOUR)
    for i, t in enumerate(range(first_minute, now, MINUTE)):
        for layer, ws in week.minute_windows(t).items():
            await stores.layers[layer].upsert_windows(ws)
        if (i + 1) % rollup_every == 0:
            for layer in ALL_LAYERS:
                await stores.layers[layer].rollup(t + MINUTE)
        if i % 60 == 59:
            used = time.process_time() - cpu
            print(f"#   minute windows: {(i + 1) // 60} h of {minute_hours} ({used:.0f} s CPU)",
                  flush=True)
    for layer in ALL_LAYERS:
        await stores.layers[layer].rollup(now)
    print(f"# written in {time.process_time() - cpu:.0f} s CPU")
    open_files = files(root)
    print(f"disk while open (WAL included): {sum(open_files.values()) / MiB:,.1f} MiB  "
          + "  ".join(f"{k} {v / MiB:,.1f}" for k, v in sorted(open_files.items())))
    await stores.close()
    return float(now)


def files(root: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in root.iterdir() if p.is_file()}


# -- measuring -------------------------------------------------------------------------------------
def breakdown(root: pathlib.Path, scale: float) -> None:
    """Bytes per table and index (dbstat), per stored window by granularity, free pages."""
    total = 0
    for layer in [*ALL_LAYERS, None]:
        name = layer_file(layer) if layer else "catalog.db"
        conn = sqlite3.connect(root / name)
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0] * page
        size = (root / name).stat().st_size
        total += size
        print(f"{name}: {size / MiB:,.1f} MiB (page {page} B, free pages {free / MiB:,.1f} MiB)")
        for tbl, pages, payload, unused, cells in conn.execute(
            "SELECT name, COUNT(*), SUM(payload), SUM(unused), SUM(ncell) FROM dbstat GROUP BY name "
            "ORDER BY COUNT(*) DESC"
        ):
            if pages * page < MiB / 10:
                continue
            print(f"    {tbl:32s} {pages * page / MiB:9,.1f} MiB  payload {payload / MiB:8,.1f}  "
                  f"unused {unused / MiB:7,.1f}  cells {cells:,}")
        if layer is not None:
            rows = conn.execute(
                "SELECT wsec, COUNT(*), SUM(LENGTH(stats)) FROM windows GROUP BY wsec ORDER BY wsec"
            ).fetchall()
            pages = conn.execute("SELECT COUNT(*) FROM dbstat WHERE name='windows'").fetchone()[0]
            n_all = sum(r[1] for r in rows) or 1
            for wsec, n, stats in rows:
                print(f"    windows of {wsec:5d} s: {n:>11,} (projected {n * scale:,.0f}), stats "
                      f"{stats / n:6.1f} B each, table bytes per window {pages * page / n_all:6.1f} B")
            if _has(conn, "packs"):
                for wsec, n, slots, data in _packs(conn):
                    print(f"    packs of {wsec:5d} s windows: {n:>9,} rows holding {slots:,} windows "
                          f"(projected {slots * scale:,.0f}), data {data / max(1, slots):6.1f} B per window, "
                          f"{data / max(1, n):6.0f} B per pack")
        conn.close()
    print(f"databases: {total / MiB:,.1f} MiB measured")


def _packs(conn: sqlite3.Connection) -> list[tuple[int, int, int, int]]:
    """Per packed window length: packs, windows in them, data bytes."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for wsec, slots, size in conn.execute("SELECT wsec, slots, LENGTH(data) FROM packs"):
        o = out[wsec]
        o[0] += 1
        o[1] += bin(slots).count("1")
        o[2] += size
    return [(w, *v) for w, v in sorted(out.items())]


def rss_of(root: pathlib.Path, now: float, queries: int, seed: int) -> None:
    """Start the GraphQL server over ``root`` in its own process, ask Q1, print its peak RSS."""
    import httpx

    from bench.query_http import Q1, free_port

    port = free_port()
    code = ("import sys; from bench.query_http import serve; "
            f"serve({str(root)!r}, {port}, {now!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        conn = sqlite3.connect(root / "catalog.db")
        names = [r[0] for r in conn.execute("SELECT name FROM nodes WHERE granularity='APP'")] \
            if _has(conn, "nodes") else []
        conn.close()
        if not names:
            conn = sqlite3.connect(root / layer_file(Layer.NETWORK))
            names = sorted({r[0] for r in conn.execute("SELECT source FROM edges WHERE granularity='APP'")})
            conn.close()
        picks = random.Random(seed).choices(names, k=queries)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=120) as client:
            t = time.perf_counter()
            for _ in range(3000):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            print(f"server ready in {time.perf_counter() - t:.1f} s; {status(proc.pid)}")
            for name in picks:
                r = client.post("/graphql", json={"query": Q1, "variables": {"name": name}})
                if r.status_code != 200 or r.json().get("errors"):
                    raise RuntimeError(f"Q1 failed: {r.status_code} {r.text[:300]}")
        print(f"after {queries} Q1: {status(proc.pid)}")
    finally:
        proc.terminate()
        proc.wait(60)


def _has(conn: sqlite3.Connection, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone() is not None


def status(pid: int) -> str:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        got = dict(line.split(":", 1) for line in f if line.startswith(("VmHWM", "VmRSS")))
    return "  ".join(f"{k} {int(v.split()[0]) / 1024:,.0f} MiB" for k, v in got.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--days", type=int, default=7, help="days of history (0: only the minute windows)")
    p.add_argument("--fraction", type=float, default=0.1, help="share of the edges written (projected / f)")
    p.add_argument("--model", choices=("sim", "synthetic"), default="sim")
    p.add_argument("--capture", help="file keeping the simulator's windows (read if there, else written)")
    p.add_argument("--warm-minutes", type=int, default=2, help="simulated minutes before the cycle")
    p.add_argument("--cycle-minutes", type=int, default=10, help="minutes of the cycle (divides 60)")
    p.add_argument("--minute-hours", type=float, default=7,
                   help="hours written as minute windows (0.5 with --days 0 fills the hot ring: for --rss)")
    p.add_argument("--end-minutes", type=int, default=0,
                   help="end this many minutes after the day boundary (--days 6 --end-minutes 1439: a week "
                        "ending at 23:59, the day's hours and the hour's minutes not packed yet)")
    p.add_argument("--rollup-every", type=int, default=1, help="minutes between roll-ups (the server: 1)")
    p.add_argument("--rss", action="store_true", help="measure a server process over the store")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", help="store directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the store directory")
    args = p.parse_args(argv)
    print(header("storage for a simulated week (bench/storage_week.py)"))
    print(f"# load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    c = time.process_time()
    if args.model == "sim":
        cap = pathlib.Path(args.capture) if args.capture else None
        if cap is not None and cap.exists():
            # JSON of EdgeWindow.to_dict (the Kafka stages' form), never pickle: a file is input
            captured: list[EdgeWindow] = [EdgeWindow.from_dict(d) for d in json.loads(cap.read_bytes())]
        else:
            captured = capture_sim(args.services, args.warm_minutes + args.cycle_minutes + 1, args.seed)
            if cap is not None:
                cap.write_text(json.dumps([w.to_dict() for w in captured]))
        cycles = sim_cycles(captured, args.warm_minutes, args.cycle_minutes)
    else:
        cycles = synthetic_cycles(args.services, args.seed, args.cycle_minutes)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    per_min: dict[str, int] = defaultdict(int)
    for tpl, minutes in cycles:
        counts[(tpl.key.layer.value, tpl.key.granularity.value)] += 1
        per_min[tpl.key.layer.value] += sum(s is not None for s in minutes)
    used = time.process_time() - c
    print(f"# edge model ({args.model}, {args.services} services, built in {used:.0f} s CPU): "
          + ", ".join(f"{la} {g} {n:,}" for (la, g), n in sorted(counts.items()))
          + "; minute windows per minute: "
          + ", ".join(f"{la} {n / len(cycles[0][1]):,.0f}" for la, n in sorted(per_min.items())))
    chosen = sample(cycles, args.fraction, args.seed)
    scale = len(cycles) / max(1, len(chosen))
    print(f"# writing {len(chosen):,} of {len(cycles):,} edges (x{scale:.2f} projects the whole store)")
    week = Week(chosen)
    root = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix="storage-week-"))
    shutil.rmtree(root, ignore_errors=True)
    now = asyncio.run(
        write_week(root, week, args.days, args.minute_hours, args.rollup_every, args.end_minutes))
    closed = files(root)
    size = sum(closed.values())
    print(f"disk after close: {size / MiB:,.1f} MiB measured, projected {size * scale / 2**30:,.2f} GiB "
          f"({size * scale / 1e9:,.2f} GB) for all {len(cycles):,} edges; "
          + "  ".join(f"{k} {v / MiB:,.1f}" for k, v in sorted(closed.items())))
    breakdown(root, scale)
    if args.rss:
        rss_of(root, now, args.queries, args.seed)
    print(f"# load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.keep:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

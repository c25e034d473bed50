"""Long ranges on the embedded store: ``edges()`` over 1 day and 30 days while minutes keep coming.

    .venv/bin/python -m bench.long_window [--edges 1000] [--minutes 150] [--rounds 10]

Writes ``--minutes`` minutes of history for ``--edges`` IPC edges (rolled up every 30 minutes, as the
server does every minute), rolls up at the clock (13:25 on some day: the current hour's 25 minutes
and today's hours are not in any hour or day window), then per round writes the live minute of every
edge and times ``edges()`` right after it (a query after each ingest flush) and once more (repeated):
over the last day, over the last 30 days, then both in turn. Prints the medians and checks that
every request is counted once.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import tempfile
import time

from bench.machine import header
from topology.model import EdgeKey, EdgeWindow, Granularity, Layer
from topology.sketch import LatencySketch
from topology.stats import EdgeStats
from topology.store.embedded import open_stores
from topology.timewindow import DAY, HOUR, MINUTE, TimeRange

T0 = 1_700_006_400  # a UTC midnight
NOW = T0 + 40 * DAY + 13 * HOUR + 25 * MINUTE


def _window(i: int, start: int, requests: int) -> EdgeWindow:
    return EdgeWindow(EdgeKey(Layer.IPC, Granularity.APP, f"s{i % 50}", f"t{i}"), start, MINUTE,
                      EdgeStats(first_seen=start, last_seen=start + 59, requests=requests, errors=1,
                                latency=LatencySketch.of([0.01, 0.02])))


async def run(edges: int, minutes: int, rounds: int) -> None:
    stores = open_stores(pathlib.Path(tempfile.mkdtemp()) / "store")
    ipc = stores.layers[Layer.IPC]
    first = NOW - minutes * MINUTE
    for m in range(minutes):
        await ipc.upsert_windows([_window(i, first + m * MINUTE, 10) for i in range(edges)])
        if m % 30 == 29:
            await ipc.rollup(first + (m + 1) * MINUTE)
    await ipc.rollup(NOW)
    total = edges * minutes * 10
    times: dict[str, list[float]] = {}
    live = NOW
    for ranges in ((("1 day", DAY),), (("30 days", 30 * DAY),), (("1 day", DAY), ("30 days", 30 * DAY))):
        for _ in range(rounds):
            await ipc.upsert_windows([_window(i, live, 1) for i in range(edges)])
            total += edges
            for label, length in ranges:
                rng = TimeRange(live + 30 - length, live + 30)
                for when in ("after a live minute", "repeated"):
                    t = time.perf_counter()
                    got = await ipc.edges(Granularity.APP, rng, live + 30)
                    what = f"{label}{' (alternating)' if len(ranges) > 1 else ''}, {when}"
                    times.setdefault(what, []).append((time.perf_counter() - t) * 1e3)
                    counted = sum(e.stats.requests for e in got)
                    assert counted == total, (label, counted, total)
            live += MINUTE
    await stores.close()
    print(header(f"edges() over long ranges: {edges} edges, {minutes} minutes of history, {rounds} rounds"))
    for what, ms in times.items():
        print(f"{what:46} median {statistics.median(ms):7.1f} ms   max {max(ms):7.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edges", type=int, default=1000)
    p.add_argument("--minutes", type=int, default=150)
    p.add_argument("--rounds", type=int, default=10)
    a = p.parse_args()
    asyncio.run(run(a.edges, a.minutes, a.rounds))


if __name__ == "__main__":
    main()

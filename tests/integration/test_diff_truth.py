"""``diff`` of the whole graph against the simulator's truth: edges replaced between two windows.

The simulator runs two spans of 3 minutes 20 minutes apart (it allows gaps), with edges replaced at a
high rate, through the real pipeline into the embedded store. Whatever the truth says carried traffic
in the later window and not in the earlier one must be ``added`` (at APP level, all layers merged),
and the other way round ``removed``; the change events of the ends of those edges come with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.demo import feed, persist_meta
from service.runtime import Runtime
from topology.diff import diff
from topology.pipeline import Pipeline
from topology.sim import SimConfig, Simulator, generate_fleet
from topology.store.embedded import open_stores

pytestmark = [pytest.mark.slow]

T0 = 1_800_000_000.0
STEP = 10.0
SPANS = ((T0, T0 + 180), (T0 + 1200, T0 + 1380))
DRAIN = 300.0


async def test_whole_graph_diff_matches_the_truth(tmp_path: Path) -> None:
    stores = open_stores(tmp_path)
    now = [T0]
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: now[0])
    sim = Simulator(generate_fleet(services=200, seed=5), seed=5, start=T0,
                    config=SimConfig(churn_per_hour=0.0, edge_change_per_hour=2.0, incidents_per_app_day=0.0))
    try:
        initial = sim.initial_records()
        await persist_meta(stores, initial)
        feed(runtime, initial, T0)
        for start, end in SPANS:
            t = start
            while t < end:
                em = sim.step(t, STEP)
                now[0] = t + STEP
                feed(runtime, em, t)
                await persist_meta(stores, em)
                t += STEP
                await runtime.flush(t)
            for extra in range(0, int(DRAIN) + 1, 30):  # close every window of the span
                now[0] = t + extra
                await runtime.flush(t + extra)
        (b0, b1), (a0, a1) = SPANS
        before = sim.truth(b0, b1)["unified"]
        after = sim.truth(a0, a1)["unified"]
        want_added = {tuple(p) for p in after} - {tuple(p) for p in before}
        want_removed = {tuple(p) for p in before} - {tuple(p) for p in after}
        assert want_added and want_removed, "the run must replace edges"
        got = await diff(stores.layers, stores.catalog, None, depth=1, before_end=b1, after_end=a1,
                         window=b1 - b0, now=a1 + DRAIN, first=100_000)
        assert {d.key for d in got.added} == want_added
        assert {d.key for d in got.removed} == want_removed
        assert not got.has_next and got.failures == ()
        ends = {n for d in (*got.added, *got.removed) for n in d.key}
        assert {c.service for c in got.changes} <= ends
    finally:
        await stores.close()

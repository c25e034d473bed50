"""bench/storage_week's method on a small synthetic fleet: the store it fills holds what a store holds
after the same days of minute windows (minutes of the retention, every hour, every finished day)."""

from __future__ import annotations

import pathlib

from bench.storage_week import Week, synthetic_cycles, write_week
from topology.model import ALL_LAYERS
from topology.store.embedded import open_stores
from topology.timewindow import DAY, HOUR, MINUTE, Retention


async def test_the_store_holds_a_steady_state_of_its_retention(tmp_path: pathlib.Path) -> None:
    cycles = synthetic_cycles(30, seed=3, cycle=4)
    week = Week(cycles)
    now = await write_week(tmp_path, week, days=2, minute_hours=7, rollup_every=60)
    assert now % DAY == 0
    busy = {layer: sum(1 for tpl, _ in cycles if tpl.key.layer is layer) for layer in ALL_LAYERS}
    per_minute = {layer: 0 for layer in ALL_LAYERS}
    for tpl, minutes in cycles:
        per_minute[tpl.key.layer] += sum(s is not None for s in minutes)
    stores = open_stores(tmp_path)
    try:
        for layer in ALL_LAYERS:
            counts = await stores.layers[layer].window_count()
            minutes_kept = Retention().minute // MINUTE
            # every minute of the retention (per cycle of 4: the windows of its minutes)
            assert counts[MINUTE] == per_minute[layer] * minutes_kept // 4
            assert counts[HOUR] == busy[layer] * 48  # hours written and hours rolled up
            assert counts[DAY] == busy[layer] * 2  # both days rolled up from their hours
    finally:
        await stores.close()


def test_an_hour_holds_its_minutes_with_other_trace_ids() -> None:
    cycles = synthetic_cycles(30, seed=3, cycle=4)
    week = Week(cycles)
    for (_, minutes), hour in zip(cycles, week.hour, strict=True):
        present = [s for s in minutes if s is not None]
        assert hour is not None
        assert hour.requests == 15 * sum(s.requests for s in present)
        if any(s.exemplars for s in present):
            assert len(hour.exemplars) == 5  # the 5 smallest of 15 repetitions' distinct ids

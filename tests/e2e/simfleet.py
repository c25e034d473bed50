"""A simulated fleet in an embedded store, for the widget's fleet view against a real server.

The simulator's payloads go through the real pipeline in this process (``service.demo.feed``, as the
demo and ``tests/integration/test_readme.py`` do: no HTTP or Kafka hop, which would only add time),
for the last ``minutes`` before now, so ``topology serve --embedded`` over the store answers them in its
live window (15 minutes by default). Churn, incidents and config changes are off: the fleet drawn is the
fleet generated. ``python -m tests.e2e.simfleet DIR --services N`` fills DIR from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

STEP = 60.0  # simulated seconds per step (the simulator allows any step; minute windows either way)


async def fill(data_dir: Path, services: int, minutes: float = 2.0, seed: int = 42,
               end: float | None = None) -> float:
    """Simulate ``services`` for ``minutes`` ending at ``end`` (default: now) into ``data_dir``;
    the wall seconds it took."""
    from service.demo import feed, persist_meta
    from service.runtime import Runtime
    from topology.pipeline import Pipeline
    from topology.sim import SimConfig, Simulator, generate_fleet
    from topology.store.embedded import open_stores

    t0 = time.monotonic()
    end = time.time() if end is None else end
    start = end - minutes * 60.0
    stores = open_stores(data_dir)
    try:
        runtime = Runtime(stores, data_dir, Pipeline(), clock=lambda: end)
        quiet = SimConfig(churn_per_hour=0.0, edge_change_per_hour=0.0, incidents_per_app_day=0.0,
                          config_changes_per_app_day=0.0)
        sim = Simulator(generate_fleet(services=services, seed=seed), seed=seed, start=start, config=quiet)
        initial = sim.initial_records()
        await persist_meta(stores, initial)
        feed(runtime, initial, start)
        t = start
        while t < end - 1e-9:
            em = sim.step(t, STEP)
            feed(runtime, em, t)
            await persist_meta(stores, em)
            t += STEP
            await runtime.flush(t)
        for extra in (30.0, 90.0):  # past the pipeline's lateness: every window closed and written
            await runtime.flush(end + extra)
    finally:
        await stores.close()
    return time.monotonic() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    took = asyncio.run(fill(a.data_dir, a.services, a.minutes, a.seed))
    print(f"{a.services} services, {a.minutes:g} simulated minutes into {a.data_dir} in {took:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

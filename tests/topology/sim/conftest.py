"""A small simulated run shared by the simulator tests (module-scoped: generated once per module)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from topology.sim import Emission, SimConfig, Simulator, generate_fleet

START = 1_700_000_000.0
STEP = 10.0
# Much more churn than the default, so a short run reassigns and reuses addresses and changes edges.
BUSY = SimConfig(churn_per_hour=3.0, edge_change_per_hour=1.0, incidents_per_app_day=40.0, trace_ratio=0.05)


@dataclass
class Run:
    sim: Simulator
    initial: Emission
    steps: list[Emission]

    def all(self, field: str) -> list[bytes]:
        return [p for em in self.steps for p in getattr(em, field)]


def simulate(services: int = 60, seed: int = 7, steps: int = 40, config: SimConfig = BUSY) -> Run:
    sim = Simulator(generate_fleet(services, seed), seed=seed, start=START, config=config)
    initial = sim.initial_records()
    ems = [sim.step(START + i * STEP, STEP) for i in range(steps)]
    return Run(sim, initial, ems)


@pytest.fixture(scope="package")
def run() -> Run:
    return simulate()

"""Health incidents: apps turn DEGRADED or UNHEALTHY now and then and recover; failures follow."""

from __future__ import annotations

import math
import random

from topology.catalog import HealthEvent, HealthState
from topology.sim.sampling import poisson
from topology.sim.world import World

#: Extra failure ratio of requests *into* an app while it is in this state.
ERROR_BOOST = {HealthState.DEGRADED: 0.05, HealthState.UNHEALTHY: 0.30}
REASONS = {
    HealthState.DEGRADED: (
        "p99 latency above SLO",
        "error rate above 1%",
        "one zone impaired",
        "elevated retries from callers",
    ),
    HealthState.UNHEALTHY: (
        "error rate above 20%",
        "pods crash-looping",
        "dependency timeouts",
        "connection pool exhausted",
    ),
}


class Incidents:
    def __init__(self, world: World, rng: random.Random, per_app_day: float) -> None:
        self.world = world
        self.rng = rng
        self.per_app_day = per_app_day
        self.active: dict[str, tuple[float, HealthState]] = {}  # app -> (recovers at, state)
        self._apps = sorted(world.fleet.apps)

    def initial(self, at: float) -> list[HealthEvent]:
        return [HealthEvent(a, HealthState.HEALTHY, at, None) for a in self._apps]

    def step(self, t0: float, dt: float) -> list[HealthEvent]:
        """Events at ``t0``: recoveries due by then, and new incidents."""
        out: list[HealthEvent] = []
        for app, (until, _state) in list(self.active.items()):
            if until <= t0:
                del self.active[app]
                self.world.boost.pop(app, None)
                out.append(HealthEvent(app, HealthState.HEALTHY, t0, "recovered"))
        r = self.rng
        for _ in range(poisson(r, len(self._apps) * self.per_app_day * dt / 86400.0)):
            app = self._apps[r.randrange(len(self._apps))]
            if app in self.active:
                continue
            state = HealthState.UNHEALTHY if r.random() < 0.4 else HealthState.DEGRADED
            duration = min(3600.0, max(60.0, r.lognormvariate(math.log(300.0), 0.8)))
            self.active[app] = (t0 + duration, state)
            self.world.boost[app] = ERROR_BOOST[state]
            out.append(HealthEvent(app, state, t0, r.choice(REASONS[state])))
        return out

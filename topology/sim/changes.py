"""Change events of the simulated fleet: every redeploy is reported as it happens, and configuration
changes and feature flags are flipped now and then, as a real fleet's CI/CD and config systems report
them (topic ``topology.changes``)."""

from __future__ import annotations

import random

from topology.change import ChangeEvent, ChangeKind
from topology.sim.churn import Redeploy
from topology.sim.sampling import poisson
from topology.sim.world import World

CONFIG_CHANGES = (
    "connection pool size 20 -> 40",
    "request timeout 2s -> 1s",
    "retry budget 3 -> 5",
    "cache TTL 60s -> 300s",
    "log level INFO -> DEBUG",
)
FLAGS = ("new-pricing", "checkout-v2", "async-writes", "batch-reads", "edge-cache")


def redeploy_event(r: Redeploy) -> ChangeEvent:
    """A new version is a DEPLOY; a replaced instance (a pod moved) is INFRA."""
    if r.version is not None:
        version = f"v{r.version:03d}"
        return ChangeEvent(r.app, ChangeKind.DEPLOY, r.at, f"deployed {r.new} (replacing {r.old})", version,
                           "ci", f"https://ci.example/{r.app}/{version}")
    return ChangeEvent(r.app, ChangeKind.INFRA, r.at, f"instance {r.old} replaced by {r.new}", None,
                       "scheduler")


class ConfigChanges:
    """Configuration changes and feature flags, ``per_app_day`` per app per simulated day."""

    def __init__(self, world: World, rng: random.Random, per_app_day: float) -> None:
        self.world = world
        self.rng = rng
        self.per_app_day = per_app_day
        self._apps = sorted(world.fleet.apps)

    def step(self, t0: float, dt: float) -> list[ChangeEvent]:
        r = self.rng
        out: list[ChangeEvent] = []
        for _ in range(poisson(r, len(self._apps) * self.per_app_day * dt / 86400.0)):
            app = self._apps[r.randrange(len(self._apps))]
            team = self.world.fleet.apps[app].team
            if r.random() < 0.6:
                text = CONFIG_CHANGES[r.randrange(len(CONFIG_CHANGES))]
                out.append(ChangeEvent(app, ChangeKind.CONFIG, t0, text, None, f"{team}-oncall"))
            else:
                flag = FLAGS[r.randrange(len(FLAGS))]
                state = "on" if r.random() < 0.5 else "off"
                out.append(ChangeEvent(app, ChangeKind.FEATURE_FLAG, t0, f"flag {flag} {state}", None,
                                       f"{team}-oncall"))
        return out

"""Incidents with a known root cause, and their symptoms along real call paths.

A :class:`Fault` starts at ``root`` and spreads to its callers, as failures do in real fleets:

==================  =====================================================================================
kind                at the root
==================  =====================================================================================
BAD_DEPLOY          a DEPLOY change event at the start, then errors (or, one time in three, latency)
                    on the calls into the deployed app
FAILING_DATABASE    errors on the calls into a database (a virtual node: no agent, no health event)
FAILING_CACHE       errors and some latency on the calls into a cache (redis, memcached)
SLOW_DEPENDENCY     latency (x8) on the calls into an app or a database
CRASH_LOOP          errors on the calls into an app whose pods restart; the app turns UNHEALTHY
==================  =====================================================================================

Symptoms propagate to callers up to :data:`MAX_HOPS` hops: a caller of a failing service fails a
share of its own requests (the root's extra error ratio x :data:`ERROR_CARRY` per hop) and is
slower (the root's extra latency x :data:`LATENCY_CARRY` per hop). A share of the symptomatic
callers turns DEGRADED (a health event), as alerting on symptoms does; the root's own health event
fires too when it is an app. Everything ends at ``end`` (HEALTHY events for what turned bad).

The effects live in :class:`~topology.sim.world.World` (``fault_boost``, ``fault_latency``): the
emitters read them through ``World.error_rate`` and ``World.latency``, so every layer sees them.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any

from topology.catalog import AddressKind, HealthEvent, HealthState
from topology.change import ChangeEvent, ChangeKind
from topology.sim.fleet import CallKind
from topology.sim.sampling import poisson
from topology.sim.world import World

MAX_HOPS = 4
ERROR_CARRY = 0.6  # share of the extra error ratio a caller passes on, per hop
LATENCY_CARRY = 0.6  # share of the extra latency a caller passes on, per hop
DEGRADED_SHARE = (0.7, 0.4, 0.2, 0.1)  # share of symptomatic callers alerting, by hop
CACHE_SYSTEMS = frozenset({"redis", "memcached"})


class FaultKind(enum.StrEnum):
    BAD_DEPLOY = "BAD_DEPLOY"
    FAILING_DATABASE = "FAILING_DATABASE"
    FAILING_CACHE = "FAILING_CACHE"
    SLOW_DEPENDENCY = "SLOW_DEPENDENCY"
    CRASH_LOOP = "CRASH_LOOP"


@dataclass(frozen=True, slots=True)
class Fault:
    root: str
    kind: FaultKind
    start: float
    end: float
    symptomatic: tuple[str, ...]  # callers that show symptoms, nearest first (then by name)
    hops: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  # caller -> hops

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "kind": self.kind.value, "start": self.start, "end": self.end,
                "symptomatic": list(self.symptomatic)}


@dataclass(slots=True)
class _Effect:
    boost: dict[str, float]  # node -> extra error ratio of calls into it
    latency: dict[str, float]  # node -> latency factor of calls into it
    degraded: list[str]  # nodes that turned DEGRADED or UNHEALTHY (HEALTHY again at the end)


class Faults:
    """Faults injected at chosen times (``inject``) or at random (``per_hour``)."""

    def __init__(self, world: World, rng: random.Random, per_hour: float = 0.0) -> None:
        self.world = world
        self.rng = rng
        self.per_hour = per_hour
        self.history: list[Fault] = []
        self._pending: list[tuple[float, str, FaultKind, float]] = []  # (start, root, kind, duration)
        self._active: list[tuple[Fault, _Effect]] = []

    # -- choosing roots ------------------------------------------------------------------------------
    def callers(self) -> dict[str, set[str]]:
        """node -> apps that call it now (RPC and database calls)."""
        out: dict[str, set[str]] = {}
        for e in self.world.active_edges():
            if e.kind in (CallKind.RPC, CallKind.DATABASE):
                out.setdefault(e.dst, set()).add(e.src)
        return out

    def candidates(self, kind: FaultKind, min_depth: int = 2) -> list[str]:
        """Roots a fault of ``kind`` can start at with callers at least ``min_depth`` hops above."""
        callers = self.callers()
        sinks = self.world.fleet.sinks
        apps = self.world.fleet.apps

        def deep(node: str) -> bool:
            frontier, seen = {node}, {node}
            for _ in range(min_depth):
                frontier = {c for n in frontier for c in callers.get(n, ()) if c not in seen}
                seen |= frontier
                if not frontier:
                    return False
            return True

        stores = {n: s.system in CACHE_SYSTEMS for n, s in sinks.items() if s.kind is AddressKind.DATABASE}
        if kind is FaultKind.FAILING_DATABASE:
            pool = [n for n, cache in stores.items() if not cache]
        elif kind is FaultKind.FAILING_CACHE:
            pool = [n for n, cache in stores.items() if cache]
        elif kind is FaultKind.SLOW_DEPENDENCY:
            pool = [n for n, a in apps.items() if not a.gateway and not a.broker]
            pool += list(stores)
        else:
            pool = [n for n, a in apps.items() if not a.gateway and not a.broker]
        return sorted(n for n in pool if deep(n))

    # -- scheduling ------------------------------------------------------------------------------------
    def inject(self, root: str, kind: FaultKind, start: float, duration: float) -> None:
        """A fault of ``kind`` at ``root`` from ``start`` for ``duration`` seconds (applied by ``step``)."""
        if duration <= 0:
            raise ValueError("a fault needs a positive duration")
        self._pending.append((start, root, kind, duration))
        self._pending.sort(key=lambda p: (p[0], p[1]))

    def step(self, t0: float, t1: float) -> tuple[list[ChangeEvent], list[HealthEvent]]:
        """End the faults due by ``t0``, start those due before ``t1``; their change and health events."""
        changes: list[ChangeEvent] = []
        health: list[HealthEvent] = []
        for fault, effect in list(self._active):
            if fault.end <= t0:
                self._active.remove((fault, effect))
                health += [HealthEvent(n, HealthState.HEALTHY, fault.end, "recovered")
                           for n in effect.degraded]
        r = self.rng
        if self.per_hour > 0:
            for _ in range(poisson(r, self.per_hour * (t1 - t0) / 3600.0)):
                kind = r.choice(list(FaultKind))
                pool = self.candidates(kind)
                if pool:
                    self.inject(r.choice(pool), kind, t0, r.uniform(300.0, 1800.0))
        while self._pending and self._pending[0][0] < t1:
            start, root, kind, duration = self._pending.pop(0)
            c, h = self._start(root, kind, max(start, t0), duration)
            changes += c
            health += h
        self._apply()
        return changes, health

    # -- effects -------------------------------------------------------------------------------------------
    def _start(self, root: str, kind: FaultKind, start: float, duration: float) -> tuple[
        list[ChangeEvent], list[HealthEvent]
    ]:
        r = self.rng
        err, lat = {
            FaultKind.BAD_DEPLOY: (0.35, 1.0) if r.random() < 2 / 3 else (0.0, 6.0),
            FaultKind.FAILING_DATABASE: (0.5, 1.0),
            FaultKind.FAILING_CACHE: (0.4, 2.0),
            FaultKind.SLOW_DEPENDENCY: (0.0, 8.0),
            FaultKind.CRASH_LOOP: (0.45, 1.0),
        }[kind]
        callers = self.callers()
        hops: dict[str, int] = {}
        frontier = [root]
        for hop in range(1, MAX_HOPS + 1):
            nxt = sorted({c for n in frontier for c in callers.get(n, ()) if c != root and c not in hops})
            for c in nxt:
                hops[c] = hop
            frontier = nxt
        effect = _Effect({root: err} if err else {}, {root: lat} if lat > 1 else {}, [])
        for c, hop in hops.items():
            if err:
                effect.boost[c] = err * ERROR_CARRY ** hop
            if lat > 1:
                effect.latency[c] = 1.0 + (lat - 1.0) * LATENCY_CARRY ** hop
        changes: list[ChangeEvent] = []
        health: list[HealthEvent] = []
        is_app = root in self.world.fleet.apps
        if kind is FaultKind.BAD_DEPLOY:
            version = f"v{r.randrange(100, 999)}"
            changes.append(ChangeEvent(root, ChangeKind.DEPLOY, start, f"deployed {root}-{version}", version,
                                       "ci", f"https://ci.example/{root}/{version}"))
        if is_app:
            bad = kind is FaultKind.CRASH_LOOP or err >= 0.3
            state = HealthState.UNHEALTHY if bad else HealthState.DEGRADED
            why = "pods crash-looping" if kind is FaultKind.CRASH_LOOP else (
                "error rate above 20%" if err else "p99 latency above SLO")
            health.append(HealthEvent(root, state, start, why))
            effect.degraded.append(root)
        for c in sorted(hops, key=lambda n: (hops[n], n)):
            if r.random() < DEGRADED_SHARE[min(hops[c], len(DEGRADED_SHARE)) - 1]:
                why = "error rate above 1%" if err else "p99 latency above SLO"
                health.append(HealthEvent(c, HealthState.DEGRADED, start + 30.0 * hops[c], why))
                effect.degraded.append(c)
        symptomatic = tuple(sorted(hops, key=lambda n: (hops[n], n)))
        fault = Fault(root, kind, start, start + duration, symptomatic, hops)
        self.history.append(fault)
        self._active.append((fault, effect))
        return changes, health

    def _apply(self) -> None:
        boost: dict[str, float] = {}
        latency: dict[str, float] = {}
        for _, effect in self._active:
            for n, b in effect.boost.items():
                boost[n] = max(boost.get(n, 0.0), b)
            for n, f in effect.latency.items():
                latency[n] = max(latency.get(n, 1.0), f)
        self.world.fault_boost = boost
        self.world.fault_latency = latency

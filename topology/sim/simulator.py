"""The deterministic fleet simulator: a fleet in, the real wire formats and the ground truth out.

    fleet = generate_fleet(services=1000, seed=42)
    sim = Simulator(fleet, seed=42, start=t)
    first = sim.initial_records()           # catalog, leases, health before any traffic
    em = sim.step(t, 10.0)                   # traffic of [t, t + 10)
    em = sim.step(t + 10.0, 10.0)            # ... and so on, forward in time
    sim.truth()                              # {"layers": {...}, "unified": [...]}

Pure: no I/O, no clock, no global random state. The same fleet, seed, start and sequence of
``step`` calls give byte-identical emissions and truth. Apply an emission's leases (and catalog)
before its flow batches: a redeploy at the start of a step leases addresses its flows already use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from topology.catalog import AddressKind, AddressLease, HealthEvent, HealthState, ServiceInfo
from topology.change import ChangeEvent
from topology.sim.changes import ConfigChanges, redeploy_event
from topology.sim.churn import Churn, EdgeChange, Redeploy
from topology.sim.faults import Fault, FaultKind, Faults
from topology.sim.fleet import Fleet
from topology.sim.flows import FlowEmitter
from topology.sim.incidents import Incidents
from topology.sim.metrics import IpcEmitter
from topology.sim.spans import TraceEmitter
from topology.sim.world import World

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class SimConfig:
    churn_per_hour: float = 0.05  # share of workload addresses reassigned per simulated hour
    edge_change_per_hour: float = 0.02  # share of active edges replaced per simulated hour
    incidents_per_app_day: float = 0.25  # health incidents per app per simulated day
    trace_ratio: float = 0.01  # share of requests traced
    reuse_after: float = 0.0  # seconds a freed address waits before it is leased again
    config_changes_per_app_day: float = 0.2  # configuration changes and flag flips per app per day
    faults_per_hour: float = 0.0  # incidents with a known root cause, at random (see faults.py)

    def __post_init__(self) -> None:
        for name in ("churn_per_hour", "edge_change_per_hour", "incidents_per_app_day", "reuse_after",
                     "config_changes_per_app_day", "faults_per_hour"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.trace_ratio <= 1:
            raise ValueError("trace_ratio must be within [0, 1]")


@dataclass(frozen=True, slots=True)
class Emission:
    """What the fleet emitted during [start, end): payloads in their wire formats, and records."""

    start: float
    end: float
    flow_batches: tuple[bytes, ...] = ()  # topology.wire.flow batches, one per host agent
    metrics: tuple[bytes, ...] = ()  # serialized ExportMetricsServiceRequest
    spans: tuple[bytes, ...] = ()  # serialized ExportTraceServiceRequest
    catalog: tuple[ServiceInfo, ...] = ()
    health: tuple[HealthEvent, ...] = ()
    leases: tuple[AddressLease, ...] = ()  # new leases and ended ones (same ip and start, end set)
    changes: tuple[EdgeChange, ...] = field(default=())  # edges that stopped / started at ``start``
    change_events: tuple[ChangeEvent, ...] = ()  # deploys, instance moves, config changes reported

    @property
    def flows(self) -> tuple[bytes, ...]:
        return self.flow_batches


class Simulator:
    def __init__(
        self, fleet: Fleet, seed: int = 42, start: float = 1_700_000_000.0, config: SimConfig | None = None
    ) -> None:
        self.config = cfg = config or SimConfig()
        self.seed = seed
        self.start = float(start)
        self.world = w = World(fleet, self.start, cfg.reuse_after)
        base = random.Random(f"topology-sim:{seed}")
        self._initial = self._lease_initial(base)
        self.incidents = Incidents(w, random.Random(base.getrandbits(64)), cfg.incidents_per_app_day)
        self.churn = Churn(
            w, random.Random(base.getrandbits(64)), cfg.churn_per_hour, cfg.edge_change_per_hour
        )
        self.flows = FlowEmitter(w, np.random.default_rng(base.getrandbits(64)))
        self.ipc = IpcEmitter(w, np.random.default_rng(base.getrandbits(64)))
        self.traces = TraceEmitter(
            w,
            random.Random(base.getrandbits(64)),
            np.random.default_rng(base.getrandbits(64)),
            cfg.trace_ratio,
        )
        # made last: the random streams above stay what they were before change events existed
        self.config_changes = ConfigChanges(w, random.Random(base.getrandbits(64)),
                                            cfg.config_changes_per_app_day)
        self.faults = Faults(w, random.Random(base.getrandbits(64)), cfg.faults_per_hour)
        self._end = self.start
        self.steps = 0

    # -- set-up ------------------------------------------------------------------------------------
    def _lease_initial(self, rng: random.Random) -> Emission:
        w = self.world
        t = self.start
        leases: list[AddressLease] = []
        for inter in w.fleet.intermediaries.values():
            leases.append(w.leases.open(inter.ip, inter.name, inter.kind, t - 90 * 86400))
        for sink in w.fleet.sinks.values():
            for ip in sink.ips:
                leases.append(w.leases.open(ip, sink.name, sink.kind, t - 90 * 86400))
        for app in w.fleet.apps.values():
            for c in app.clusters:
                since = float(round(t - rng.uniform(3600.0, 14 * 86400.0)))
                w.cluster_start[c.name] = since
                for inst in c.instances:
                    leases.append(w.leases.open(inst.ip, app.name, AddressKind.WORKLOAD, since, c.name))
        catalog = tuple(w.fleet.service_info(a) for a in w.fleet.apps.values())
        health = tuple(HealthEvent(a, HealthState.HEALTHY, t, None) for a in sorted(w.fleet.apps))
        return Emission(t, t, catalog=catalog, health=health, leases=tuple(leases))

    def initial_records(self) -> Emission:
        """Catalog, address leases and health (all HEALTHY) as of ``start``, before any traffic."""
        return self._initial

    # -- simulation --------------------------------------------------------------------------------
    @property
    def fleet(self) -> Fleet:
        """The fleet as it is now (after redeploys and edge changes): the simulator's own copy."""
        return self.world.fleet

    @property
    def now(self) -> float:
        """End of the last simulated interval."""
        return self._end

    def step(self, now: float, dt: float = 10.0) -> Emission:
        """Simulate [now, now + dt) and return what the fleet emitted. Steps must move forward in
        time (gaps are allowed: nothing happens in them); the first may start at ``start``."""
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        if now < self._end - _EPS:
            raise ValueError(
                f"step at {now} overlaps the previous one (ended at {self._end}); time only moves forward"
            )
        t0 = max(now, self._end)
        t1 = now + dt
        if t1 <= t0:
            raise ValueError("step interval is empty")
        health = self.incidents.step(t0, t1 - t0)
        fault_changes, fault_health = self.faults.step(t0, t1)
        health += fault_health
        deployed = len(self.churn.redeploys)
        leases, catalog = self.churn.redeploy(t0, t1 - t0)
        events = [redeploy_event(r) for r in self.churn.redeploys[deployed:]]
        events += self.config_changes.step(t0, t1 - t0)
        events += fault_changes
        changes = self.churn.evolve(t0, t1 - t0)
        flows = self.flows.step(t0, t1)
        metrics = self.ipc.step(t0, t1)
        spans = self.traces.step(t0, t1)
        self.world.replacements.clear()  # every emitter has applied them
        self._end = t1
        self.steps += 1
        return Emission(
            t0,
            t1,
            tuple(flows),
            tuple(metrics),
            tuple(spans),
            tuple(catalog),
            tuple(health),
            tuple(leases),
            tuple(changes),
            tuple(events),
        )

    def inject(self, root: str, kind: FaultKind, start: float, duration: float) -> None:
        """An incident of ``kind`` rooted at ``root`` (an app or a database) from ``start`` (applied by the
        step that covers it) for ``duration`` seconds; see :mod:`topology.sim.faults`."""
        self.faults.inject(root, kind, start, duration)

    @property
    def incidents_so_far(self) -> list[Fault]:
        """The incidents started so far (injected or random), in order."""
        return list(self.faults.history)

    # -- ground truth ------------------------------------------------------------------------------
    def truth(self, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        """App-level edges each layer should observe for everything emitted so far (or for the
        one-minute windows overlapping [since, until)), in the ground-truth JSON shape, and the
        incidents started so far (``{"root", "kind", "start", "end", "symptomatic"}``)."""
        return {**self.world.truth.as_dict(since, until),
                "incidents": [f.to_dict() for f in self.faults.history]}

    def ownership_at(self, ip: str, t: float) -> AddressLease | None:
        """The lease that held ``ip`` at ``t``, from the simulator's own records."""
        return self.world.leases.ownership_at(ip, t)

    def lease_history(self) -> list[AddressLease]:
        return self.world.leases.history()

    @property
    def redeploys(self) -> list[Redeploy]:
        return self.churn.redeploys

    @property
    def edge_changes(self) -> list[EdgeChange]:
        return self.churn.edge_changes

    def stats(self) -> dict[str, int]:
        return {
            "steps": self.steps,
            "flow_records": self.flows.records_emitted,
            "metric_points": self.ipc.points_emitted,
            "spans": self.traces.spans_emitted,
            "traces": self.traces.traces_emitted,
            "redeploys": len(self.churn.redeploys),
            "edge_changes": len(self.churn.edge_changes),
            "addresses_reused": self.world.leases.reused,
        }

"""Churn: redeploys (new cluster versions, replaced instances) reassign addresses, and edges evolve.

Each redeploy leases new addresses *before* ending the old leases and returning the old addresses to
the pool, so the freed addresses go to later redeploys of other apps: an address soon belongs to
someone else, and flows must be attributed with the owner at their start time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from topology.catalog import AddressKind, AddressLease, ServiceInfo
from topology.sim.fleet import App, CallKind, Cluster, Instance, Naming
from topology.sim.generator import make_edge, make_instance
from topology.sim.sampling import poisson
from topology.sim.world import World


@dataclass(frozen=True, slots=True)
class EdgeChange:
    at: float
    retired: tuple[str, str]
    added: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Redeploy:
    at: float
    app: str
    old: str  # cluster (or instance pod name) replaced
    new: str
    addresses: int
    version: int | None = None  # the new cluster's version; None when one instance was replaced


class Churn:
    def __init__(
        self, world: World, rng: random.Random, churn_per_hour: float, edge_change_per_hour: float
    ) -> None:
        self.world = world
        self.rng = rng
        self.churn_per_hour = churn_per_hour
        self.edge_change_per_hour = edge_change_per_hour
        self._apps = sorted(world.fleet.apps)
        self.redeploys: list[Redeploy] = []
        self.edge_changes: list[EdgeChange] = []
        self._fronted = {i.backend: i.name for i in world.fleet.intermediaries.values() if i.backend}
        self._nats = sorted(
            n for n, i in world.fleet.intermediaries.items() if i.kind is AddressKind.NAT_GATEWAY
        )

    # -- redeploys -----------------------------------------------------------------------------------
    def redeploy(self, t0: float, dt: float) -> tuple[list[AddressLease], list[ServiceInfo]]:
        """Redeploys at ``t0`` worth ~churn_per_hour of all workload addresses per hour."""
        r = self.rng
        n_addr = self.world.fleet.instance_count()
        budget = poisson(r, n_addr * self.churn_per_hour * dt / 3600.0)
        leases: list[AddressLease] = []
        catalog: dict[str, ServiceInfo] = {}
        while budget > 0:
            app = self.world.fleet.apps[self._apps[r.randrange(len(self._apps))]]
            ci = r.randrange(len(app.clusters))
            if r.random() < 0.6:
                budget -= self._replace_instance(app, ci, t0, leases)
            else:
                budget -= self._new_version(app, ci, t0, leases)
                catalog[app.name] = self.world.fleet.service_info(app)
                self.world.changed()
        return leases, list(catalog.values())

    def _spawn(self, c: Cluster, t0: float, leases: list[AddressLease]) -> Instance:
        w = self.world
        ip = w.leases.allocate(t0)
        inst = make_instance(self.rng, c, ip, len(w.fleet.hosts))
        leases.append(w.leases.open(ip, c.app, AddressKind.WORKLOAD, t0, c.name))
        return inst

    def _retire(self, inst: Instance, t0: float, leases: list[AddressLease]) -> None:
        leases.append(self.world.leases.close(inst.ip, t0))
        self.world.leases.release(inst.ip, t0)

    def _replace_instance(self, app: App, ci: int, t0: float, leases: list[AddressLease]) -> int:
        c = app.clusters[ci]
        k = self.rng.randrange(len(c.instances))
        old = c.instances[k]
        c.instances[k] = self._spawn(c, t0, leases)
        self._retire(old, t0, leases)
        self.world.replaced(app.name, old, c.instances[k])
        self.redeploys.append(Redeploy(t0, app.name, old.name, c.instances[k].name, 1))
        return 1

    def _new_version(self, app: App, ci: int, t0: float, leases: list[AddressLease]) -> int:
        r = self.rng
        old = app.clusters[ci]
        version = max(c.version for c in app.clusters if c.stack == old.stack) + 1
        new = Cluster(f"{app.name}-{old.stack}-v{version % 1000:03d}", app.name, old.stack, version % 1000)
        count = max(1, len(old.instances) + r.choice((-1, 0, 0, 0, 1)))
        for _ in range(count):
            new.instances.append(self._spawn(new, t0, leases))
        for inst in old.instances:
            self._retire(inst, t0, leases)
        app.clusters[ci] = new
        self.world.cluster_start[new.name] = t0
        self.redeploys.append(Redeploy(t0, app.name, old.name, new.name, count, new.version))
        return count

    # -- edges ---------------------------------------------------------------------------------------
    def evolve(self, t0: float, dt: float) -> list[EdgeChange]:
        """Edges stop carrying traffic now and then; their caller starts calling something new."""
        w = self.world
        r = self.rng
        active = w.active_edges()
        n = poisson(r, len(active) * self.edge_change_per_hour * dt / 3600.0)
        if n == 0:
            return []
        apps = w.fleet.apps
        callers: dict[str, int] = {}
        for e in active:
            if e.kind is CallKind.RPC:
                callers[e.dst] = callers.get(e.dst, 0) + 1
        candidates = [
            e
            for e in active
            if e.kind is CallKind.RPC
            and not e.back
            and not apps[e.src].gateway
            and callers.get(e.dst, 0) >= 2
        ]
        targets = [a for a in apps.values() if not a.gateway and not a.broker and a.level >= 2]
        called: dict[str, set[str]] = {}
        for e in active:
            called.setdefault(e.src, set()).add(e.dst)
        out: list[EdgeChange] = []
        for _ in range(n):
            if not candidates:
                break
            old = candidates.pop(r.randrange(len(candidates)))
            src = apps[old.src]
            src_called = called.setdefault(src.name, set())
            pool = [
                a for a in targets if a.level > src.level and a.name != src.name and a.name not in src_called
            ]
            same = [a for a in pool if a.domain == src.domain]
            pick = same if same and r.random() < 0.7 else pool
            if not pick:
                continue
            dst = pick[r.randrange(len(pick))]
            e = make_edge(
                r,
                len(w.fleet.edges),
                apps,
                w.fleet.sinks,
                src.name,
                dst.name,
                CallKind.RPC,
                calls=old.calls,
                active_from=t0,
            )
            e.rate = old.rate
            front = self._fronted.get(dst.name)
            if front is not None and r.random() < 0.7:
                e.via = front
                if e.naming is Naming.IP:
                    e.naming = Naming.DNS
            elif self._nats and r.random() < 0.06:
                e.nat = self._nats[r.randrange(len(self._nats))]
            old.active_until = t0
            w.fleet.edges.append(e)
            src_called.add(e.dst)
            w.changed()
            change = EdgeChange(t0, (old.src, old.dst), (e.src, e.dst))
            out.append(change)
            self.edge_changes.append(change)
        return out

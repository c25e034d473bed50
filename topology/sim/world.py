"""The simulator's live state, shared by the emitters: the fleet as it is now, leases, health, truth."""

from __future__ import annotations

from topology.sim.fleet import App, CallKind, Edge, Fleet, Instance
from topology.sim.leases import LeaseBook
from topology.sim.truth import TruthBook


class World:
    """Mutable simulation state. ``version`` changes whenever instances, clusters or edges change;
    ``shape_version`` only when edges or the set (and sizes) of clusters change, not when an instance
    is replaced in place (``replacements`` lists those of the current step, in order; the simulator clears it
    after each step). Emitters cache tables built from them."""

    def __init__(self, fleet: Fleet, start: float, reuse_after: float = 0.0) -> None:
        self.fleet = fleet.copy()
        self.start = start
        self.leases = LeaseBook(self.fleet.next_ip, reuse_after)
        self.truth = TruthBook()
        self.boost: dict[str, float] = {}  # extra failure ratio of requests into an app (incidents)
        self.fault_boost: dict[str, float] = {}  # the same, from faults and their symptoms (faults.py)
        self.fault_latency: dict[str, float] = {}  # latency factor of calls into a node (faults.py)
        self.cluster_start: dict[str, float] = {}  # when each cluster's processes started
        self.version = 0
        self.shape_version = 0
        self.replacements: list[tuple[str, Instance, Instance]] = []  # (app, old, new): replaced in place
        self._cache_version = -1
        self._active: list[Edge] = []
        self._out: dict[str, list[Edge]] = {}
        self._consumers: dict[str, list[Edge]] = {}
        self._callers: dict[str, list[Edge]] = {}

    def changed(self, shape: bool = True) -> None:
        self.version += 1
        if shape:
            self.shape_version += 1

    def replaced(self, app: str, old: Instance, new: Instance) -> None:
        self.replacements.append((app, old, new))
        self.changed(shape=False)

    def _refresh(self) -> None:
        if self._cache_version == self.version:
            return
        self._active = [e for e in self.fleet.edges if e.active_until is None]
        self._out = {}
        self._consumers = {}
        self._callers = {}
        for e in self._active:
            if e.kind is CallKind.CONSUME:
                self._consumers.setdefault(e.dst, []).append(e)
            else:
                self._out.setdefault(e.src, []).append(e)
            if e.kind is CallKind.RPC:
                self._callers.setdefault(e.dst, []).append(e)
        self._cache_version = self.version

    # -- views ---------------------------------------------------------------------------------------
    def active_edges(self) -> list[Edge]:
        """Edges carrying traffic now, in a stable order (by id)."""
        self._refresh()
        return self._active

    def out_edges(self, app: str) -> list[Edge]:
        """Calls ``app`` makes (everything but CONSUME)."""
        self._refresh()
        return self._out.get(app, [])

    def consumers(self, broker: str) -> list[Edge]:
        self._refresh()
        return self._consumers.get(broker, [])

    def callers(self, app: str) -> list[Edge]:
        self._refresh()
        return self._callers.get(app, [])

    def app(self, name: str) -> App:
        return self.fleet.apps[name]

    def instances(self, app: str) -> list[Instance]:
        return [i for c in self.fleet.apps[app].clusters for i in c.instances]

    def error_rate(self, e: Edge) -> float:
        return min(0.95, e.error_rate + self.boost.get(e.dst, 0.0) + self.fault_boost.get(e.dst, 0.0))

    def latency(self, e: Edge) -> float:
        """Median seconds of a call on ``e`` now (slower while a fault holds its target)."""
        return e.latency * self.fault_latency.get(e.dst, 1.0)

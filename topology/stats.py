"""Mergeable per-edge statistics, shared by all three layers.

One record type for every layer keeps storage, roll-ups and merging in one place; each layer fills
the fields it can observe and leaves the others at their zero value:

* NETWORK: ``protocol``, ``ports``, ``connections``, ``bytes_sent``/``bytes_received``, ``intermediaries``
* IPC: ``protocol``, ``endpoints``, ``requests``, ``errors``, ``latency``
* TRACE: ``requests`` (calls), ``errors``, ``latency``, ``exemplars`` (trace ids), ``connection_type``

``merge`` is associative and commutative (sets are unions, bounded by keeping the smallest values so
the result does not depend on merge order), which makes roll-ups and replays deterministic.
``merge_max`` combines two observations of the same traffic from different sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from topology.sketch import EMPTY, LatencySketch

MAX_PORTS = 16
MAX_INTERMEDIARIES = 16
MAX_ENDPOINTS = 64
MAX_EXEMPLARS = 5


def _bounded_union(a: tuple[Any, ...], b: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    if not b:
        return a
    if not a:
        return b
    return tuple(sorted(set(a) | set(b))[:limit])


def _max_sketch(a: LatencySketch, b: LatencySketch) -> LatencySketch:
    # The side with more observations is the better picture of the same traffic.
    return a if a.total >= b.total else b


@dataclass(frozen=True, slots=True)
class EdgeStats:
    first_seen: float = 0.0  # epoch seconds
    last_seen: float = 0.0
    protocol: str | None = None
    ports: tuple[int, ...] = ()  # server ports, sorted, at most MAX_PORTS
    connections: int = 0
    bytes_sent: int = 0  # source -> target
    bytes_received: int = 0  # target -> source
    intermediaries: tuple[str, ...] = ()  # load balancers, NAT gateways, proxies collapsed into this edge
    requests: int = 0
    errors: int = 0
    latency: LatencySketch = EMPTY  # seconds; the empty sketch (false) = not measured
    latency_sum: float = 0.0  # seconds, over all requests counted in ``latency``
    endpoints: tuple[str, ...] = ()  # sorted, at most MAX_ENDPOINTS
    exemplars: tuple[str, ...] = ()  # trace ids (hex), sorted, at most MAX_EXEMPLARS
    connection_type: str | None = None  # TRACE: None | "database" | "messaging_system" | "virtual_node"
    health: str = "UNKNOWN"  # edge health at stage 3: HEALTHY | DEGRADED | UNHEALTHY | UNKNOWN

    # -- combining -------------------------------------------------------------------------------
    def merge(self, other: EdgeStats) -> EdgeStats:
        """Add two disjoint pieces of traffic (two windows, or two reports from the same side)."""
        return EdgeStats(
            first_seen=_min_seen(self.first_seen, other.first_seen),
            last_seen=max(self.last_seen, other.last_seen),
            protocol=self.protocol or other.protocol,
            ports=_bounded_union(self.ports, other.ports, MAX_PORTS),
            connections=self.connections + other.connections,
            bytes_sent=self.bytes_sent + other.bytes_sent,
            bytes_received=self.bytes_received + other.bytes_received,
            intermediaries=_bounded_union(self.intermediaries, other.intermediaries, MAX_INTERMEDIARIES),
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            latency=self.latency.merge(other.latency),
            latency_sum=self.latency_sum + other.latency_sum,
            endpoints=_bounded_union(self.endpoints, other.endpoints, MAX_ENDPOINTS),
            exemplars=_bounded_union(self.exemplars, other.exemplars, MAX_EXEMPLARS),
            connection_type=self.connection_type or other.connection_type,
            health=_worse_health(self.health, other.health),
        )

    def merge_max(self, other: EdgeStats) -> EdgeStats:
        """Combine two views of the *same* traffic (client side and server side)."""
        self_lat = self.latency.total >= other.latency.total
        return EdgeStats(
            first_seen=_min_seen(self.first_seen, other.first_seen),
            last_seen=max(self.last_seen, other.last_seen),
            protocol=self.protocol or other.protocol,
            ports=_bounded_union(self.ports, other.ports, MAX_PORTS),
            connections=max(self.connections, other.connections),
            bytes_sent=max(self.bytes_sent, other.bytes_sent),
            bytes_received=max(self.bytes_received, other.bytes_received),
            intermediaries=_bounded_union(self.intermediaries, other.intermediaries, MAX_INTERMEDIARIES),
            requests=max(self.requests, other.requests),
            errors=max(self.errors, other.errors),
            latency=_max_sketch(self.latency, other.latency),
            latency_sum=self.latency_sum if self_lat else other.latency_sum,
            endpoints=_bounded_union(self.endpoints, other.endpoints, MAX_ENDPOINTS),
            exemplars=_bounded_union(self.exemplars, other.exemplars, MAX_EXEMPLARS),
            connection_type=self.connection_type or other.connection_type,
            health=_worse_health(self.health, other.health),
        )

    # -- derived figures -------------------------------------------------------------------------
    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def latency_quantile(self, q: float) -> float | None:
        """Estimated latency quantile in seconds (see :mod:`topology.sketch`), None if unmeasured."""
        return self.latency.quantile(q)

    # -- wire ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-able dict: zero/empty fields are left out."""
        d: dict[str, Any] = {}
        for name in _FIELDS:
            v = getattr(self, name)
            if v != _DEFAULTS[name]:
                d[name] = v.to_json() if name == "latency" else list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EdgeStats:
        kw: dict[str, Any] = {}
        for name, v in d.items():
            if name not in _DEFAULTS:
                continue
            kw[name] = tuple(v) if isinstance(_DEFAULTS[name], tuple) and name != "latency" else v
        if "latency" in kw:
            kw["latency"] = latency_from_json(kw["latency"])
        return cls(**kw)


#: Buckets of the power-of-two histogram stored before latency sketches (read, never written).
OLD_LATENCY_BUCKETS = 22


def latency_from_json(v: Any) -> LatencySketch:
    """A stored latency: the sketch's JSON object (:meth:`LatencySketch.to_json`), or the list of the
    old 22-bucket power-of-two histogram, converted (:meth:`LatencySketch.from_power_of_two`)."""
    if isinstance(v, dict):
        return LatencySketch.from_json(v)
    if isinstance(v, list | tuple):
        if not v:
            return EMPTY
        if len(v) == OLD_LATENCY_BUCKETS and all(type(x) is int and x >= 0 for x in v):
            return LatencySketch.from_power_of_two(v)
    raise ValueError(f"a stored latency is a sketch or a {OLD_LATENCY_BUCKETS}-bucket list, got {v!r:.80}")


_HEALTH_ORDER = {"UNKNOWN": 0, "HEALTHY": 1, "DEGRADED": 2, "UNHEALTHY": 3}


def _worse_health(a: str, b: str) -> str:
    return a if _HEALTH_ORDER.get(a, 0) >= _HEALTH_ORDER.get(b, 0) else b


def _min_seen(a: float, b: float) -> float:
    if not a:
        return b
    if not b:
        return a
    return min(a, b)


_FIELDS = tuple(EdgeStats.__dataclass_fields__)
_DEFAULTS: dict[str, Any] = {name: getattr(EdgeStats(), name) for name in _FIELDS}

"""The topology model: layers, nodes, edges and the records that cross stage boundaries.

Pure data, no I/O. Every record is a frozen dataclass with ``to_dict``/``from_dict`` so the same
shapes travel over in-process queues, Kafka repartition topics and HTTP, and land in either store.

Vocabulary (used everywhere in this project):

* an edge ``source -> target`` means *source calls target*;
* **upstream** of a service = its callees (dependencies), reached by following edges forward;
* **downstream** of a service = its callers (dependents), reached by following edges backwards;
* blast radius = transitive downstream.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from topology.stats import EdgeStats


class Layer(enum.StrEnum):
    """One physically separate graph, built from one kind of signal."""

    NETWORK = "NETWORK"  # eBPF flow records and cloud flow logs
    IPC = "IPC"  # RPC/HTTP client and server metrics
    TRACE = "TRACE"  # distributed traces (paired spans)


ALL_LAYERS: tuple[Layer, ...] = (Layer.NETWORK, Layer.IPC, Layer.TRACE)


class Granularity(enum.StrEnum):
    """APP = an application (``playback-api``); CLUSTER = a deployment of it (``playback-api-prod-v042``)."""

    APP = "APP"
    CLUSTER = "CLUSTER"


class NodeKind(enum.StrEnum):
    """What a node is. Everything but SERVICE is a *virtual* node: seen only from its peers."""

    SERVICE = "SERVICE"  # a workload we attribute traffic to
    DATABASE = "DATABASE"  # a stateful sink (database, cache) seen only from its clients
    MESSAGING = "MESSAGING"  # a broker or queue seen only from its clients
    EXTERNAL = "EXTERNAL"  # a host outside the fleet
    UNINSTRUMENTED = "UNINSTRUMENTED"  # a peer named by its callers (peer.service) but not reporting
    USER = "USER"  # the outside world calling a root span
    UNKNOWN = "UNKNOWN"  # an address nobody owned at the time

    @property
    def virtual(self) -> bool:
        return self is not NodeKind.SERVICE


class Direction(enum.StrEnum):
    UPSTREAM = "UPSTREAM"  # follow edges forward: what this service calls
    DOWNSTREAM = "DOWNSTREAM"  # follow edges backwards: what calls this service


class Side(enum.StrEnum):
    """Who observed a partial edge. Stage 3 sums within a side and takes the maximum across sides,
    so a connection reported by both of its ends is not counted twice."""

    CLIENT = "CLIENT"
    SERVER = "SERVER"
    PAIR = "PAIR"  # both ends in one observation (a paired client/server span)


@dataclass(frozen=True, slots=True)
class EdgeKey:
    """Identity of an edge inside one layer's graph."""

    layer: Layer
    granularity: Granularity
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class EdgePartial:
    """Stage 2 output (stage 3 input): part of one edge's traffic in one window, from one observer.

    ``window_start`` is aligned to ``window_seconds`` (epoch seconds). Partials of the same edge,
    window and side are summed; across sides the maximum wins (see :class:`Side`).
    """

    key: EdgeKey
    window_start: int
    window_seconds: int
    side: Side
    stats: EdgeStats
    source_kind: NodeKind = NodeKind.SERVICE
    target_kind: NodeKind = NodeKind.SERVICE
    source_app: str | None = None  # for CLUSTER-granularity nodes: the app they belong to
    target_app: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**_window_dict(self), "side": self.side.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EdgePartial:
        return cls(side=Side(d["side"]), **_window_fields(d))


@dataclass(frozen=True, slots=True)
class EdgeWindow:
    """Stage 3 output and the unit of storage: one edge's complete traffic in one window.

    Upserting an EdgeWindow *replaces* any stored window with the same
    (key, window_start, window_seconds): applying the same window twice changes nothing.
    """

    key: EdgeKey
    window_start: int
    window_seconds: int
    stats: EdgeStats
    source_kind: NodeKind = NodeKind.SERVICE
    target_kind: NodeKind = NodeKind.SERVICE
    source_app: str | None = None
    target_app: str | None = None

    @property
    def window_end(self) -> int:
        return self.window_start + self.window_seconds

    def to_dict(self) -> dict[str, Any]:
        return _window_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EdgeWindow:
        return cls(**_window_fields(d))


def _window_dict(w: EdgePartial | EdgeWindow) -> dict[str, Any]:
    """The fields EdgePartial and EdgeWindow share, as a JSON-able dict."""
    return {
        "layer": w.key.layer.value,
        "granularity": w.key.granularity.value,
        "source": w.key.source,
        "target": w.key.target,
        "window_start": w.window_start,
        "window_seconds": w.window_seconds,
        "stats": w.stats.to_dict(),
        "source_kind": w.source_kind.value,
        "target_kind": w.target_kind.value,
        "source_app": w.source_app,
        "target_app": w.target_app,
    }


def _window_fields(d: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of the shared fields, parsed and validated from such a dict."""
    return {
        "key": EdgeKey(Layer(d["layer"]), Granularity(d["granularity"]), str(d["source"]), str(d["target"])),
        "window_start": int(d["window_start"]),
        "window_seconds": int(d["window_seconds"]),
        "stats": EdgeStats.from_dict(d["stats"]),
        "source_kind": NodeKind(d.get("source_kind", "SERVICE")),
        "target_kind": NodeKind(d.get("target_kind", "SERVICE")),
        "source_app": d.get("source_app"),
        "target_app": d.get("target_app"),
    }


@dataclass(frozen=True, slots=True)
class EdgeSummary:
    """A store's answer for one edge over a time range: the windows in range merged into one."""

    key: EdgeKey
    stats: EdgeStats
    source_kind: NodeKind = NodeKind.SERVICE
    target_kind: NodeKind = NodeKind.SERVICE


@dataclass(frozen=True, slots=True)
class Reached:
    """One node found by a traversal: how far from the roots, and through which node."""

    name: str
    depth: int
    via: str  # the node it was reached from (a root at depth 1)
    kind: NodeKind = NodeKind.SERVICE


@dataclass(frozen=True, slots=True)
class TraversalResult:
    reached: tuple[Reached, ...]  # breadth-first order, each node once at its smallest depth
    edges: tuple[EdgeSummary, ...]  # every edge walked (within the depth limit)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the stores know of a node seen in traffic (catalog data lives in :mod:`topology.catalog`)."""

    name: str
    kind: NodeKind
    granularity: Granularity
    app: str | None = None  # the app a CLUSTER node belongs to
    layers: frozenset[Layer] = field(default_factory=frozenset)
    first_seen: float = 0.0
    last_seen: float = 0.0

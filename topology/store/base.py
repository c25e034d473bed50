"""The store interface. Implementations: ``embedded`` (SQLite files on local disk) and ``janusgraph``.

A deployment has one :class:`LayerStore` per layer (physically separate: its own file, or its own
JanusGraph graph and keyspace) and one :class:`CatalogStore`. All methods are ``async``: the
JanusGraph store does network I/O; the embedded store answers from memory and writes through.

Contract (checked by ``tests/store/contract.py`` against every implementation):

* ``upsert_windows`` is idempotent: a window replaces the stored window with the same
  (key, window_start, window_seconds); applying the same windows twice changes nothing.
* ``merge_windows`` *adds* each window to the stored window with the same key
  (:meth:`EdgeStats.merge`; stored as given if there is none): stage 3's late parts of windows it has
  forgotten (:meth:`topology.stages.final.FinalStage.take_late`), so the earlier part stays. It reads,
  merges and writes with ``upsert_windows``: a store's own write retries stay idempotent, but the call
  itself is not (the same late part merged twice is counted twice), and merges of one window must not
  run concurrently (one stage-3 writer per edge: the in-process runtime's flushes, a Kafka partition).
* ``rollup(now)`` builds HOUR windows from the MINUTE windows of every hour that ended before
  ``now``, DAY windows from HOUR windows of every finished day, and deletes windows older than the
  retention of their granularity. Running it twice changes nothing.
* Queries take a :class:`TimeRange` and read the windows :func:`topology.timewindow.read_plan`
  names: at most the granularity whose retention covers ``range.start``, whole rolled-up periods
  at it, and finer windows (down to minutes) for what no complete roll-up holds yet (the current
  hour and day, periods with late minutes) and for a partial head or tail whose finer windows are
  kept; each instant once. An edge is present if any of those windows is stored.
* ``neighbors`` expands one hop for a set of nodes, ``traverse`` walks many hops inside one layer.
  ``call_metrics`` answers what ``neighbors`` answers, each edge's stats reduced to
  :class:`~topology.metric.CallMetrics` (a backend may answer it without merging whole stats).
  ``adjacency`` (optional: None when not offered) answers every present edge at once as integer
  arrays, for walks that need no edge stats (a blast radius).
  Tier/domain filters are not the store's concern: callers filter results, traversal passes through.
* Errors: :class:`StoreUnavailable` when the backend cannot be reached (callers report the layer as
  UNAVAILABLE and keep answering from the other layers); ``ValueError`` for bad arguments.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import inspect
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from topology.adjacency import Adjacency
from topology.catalog import AddressLease, HealthEvent, HealthStatus, ServiceInfo, TraceSummary
from topology.change import ChangeEvent
from topology.metric import CallMetrics
from topology.model import (
    Direction,
    EdgeKey,
    EdgeSummary,
    EdgeWindow,
    Granularity,
    Layer,
    NodeInfo,
    TraversalResult,
)
from topology.stats import EdgeStats
from topology.timewindow import Retention, TimeRange


class StoreError(Exception):
    """Base of the store errors."""


class StoreUnavailable(StoreError):
    """The backend of a store cannot be reached now; the call may succeed later."""

    def __init__(self, layer: Layer | None, message: str) -> None:
        super().__init__(message)
        self.layer = layer


@dataclass(frozen=True, slots=True)
class RollupReport:
    built: int  # coarser windows written
    deleted: int  # windows removed by retention


class LayerStore(abc.ABC):
    """One layer's graph of time-windowed edges."""

    layer: Layer
    retention: Retention
    #: Whether every call is a request to a server: a unified walk then asks each layer for its whole
    #: walk (:meth:`expand`, one request a round) instead of one :meth:`neighbors` call per level.
    remote: bool = False

    @property
    def version(self) -> int | None:
        """A number that changes once a write has changed what this store may answer (read it before
        and after answering: unchanged, the answer is of one state); None when the store cannot
        tell, and then nothing it answers is kept (the GraphQL response cache)."""
        return None

    @abc.abstractmethod
    async def upsert_windows(self, windows: Sequence[EdgeWindow]) -> None:
        """Store complete edge windows (all of this store's layer), replacing equal keys."""

    async def merge_windows(self, windows: Sequence[EdgeWindow]) -> None:
        """Add ``windows`` to the stored windows with the same keys (see the module docstring)."""
        parts: dict[tuple[EdgeKey, int, int], EdgeWindow] = {}
        for w in windows:
            k = (w.key, w.window_seconds, w.window_start)
            prev = parts.get(k)
            parts[k] = w if prev is None else dataclasses.replace(w, stats=prev.stats.merge(w.stats))
        if not parts:
            return
        stored = await self.stored_stats(list(parts))
        await self.upsert_windows([
            w if k not in stored else dataclasses.replace(w, stats=stored[k].merge(w.stats))
            for k, w in parts.items()])

    @abc.abstractmethod
    async def stored_stats(
        self, keys: Sequence[tuple[EdgeKey, int, int]]
    ) -> dict[tuple[EdgeKey, int, int], EdgeStats]:
        """The stats of the stored windows with these (key, window_seconds, window_start); keys without
        a stored window are left out."""

    @abc.abstractmethod
    async def rollup(self, now: float) -> RollupReport:
        """Build coarser windows and apply retention (see module docstring)."""

    @abc.abstractmethod
    async def neighbors(
        self,
        names: Iterable[str],
        direction: Direction,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        with_stats: bool = True,
    ) -> list[EdgeSummary]:
        """Edges one hop away from ``names`` (outgoing for UPSTREAM, incoming for DOWNSTREAM),
        with their windows inside ``time`` merged. ``now`` picks the granularity (retention).
        ``with_stats=False``: the same edges and kinds, but their stats may be left empty (cheaper)."""

    async def call_metrics(
        self,
        names: Iterable[str],
        direction: Direction,
        granularity: Granularity,
        time: TimeRange,
        now: float,
    ) -> list[tuple[EdgeKey, CallMetrics]]:
        """The edges :meth:`neighbors` answers, in its order, each with the :class:`CallMetrics` of
        its merged stats. This default derives them from ``neighbors``; a backend that can compute
        them more cheaply overrides it with the same answers."""
        return [(s.key, CallMetrics.of(s.stats))
                for s in await self.neighbors(names, direction, granularity, time, now)]

    async def adjacency(self, granularity: Granularity, time: TimeRange, now: float) -> Adjacency | None:
        """Every edge :meth:`edges` answers for ``time`` and ``now`` (the same windows read), as integer
        adjacency, when this backend keeps its graph in memory; None when it does not (this default):
        callers then walk with :meth:`neighbors`. Answered from memory, and kept for the next calls
        while writes leave the set of present edges as it is."""
        return None

    @abc.abstractmethod
    async def traverse(
        self,
        roots: Iterable[str],
        direction: Direction,
        depth: int,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        with_stats: bool = True,
    ) -> TraversalResult:
        """Breadth-first walk of up to ``depth`` hops inside this layer (``with_stats``: as in
        :meth:`neighbors`)."""

    async def expand(
        self,
        starts: Mapping[str, int],
        done: Collection[str],
        direction: Direction,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        with_stats: bool = True,
    ) -> list[EdgeSummary]:
        """A walk continued from nodes met at different depths: every edge (as :meth:`neighbors`
        answers it) out of each start ``s`` (``starts[s] > 0``, not in ``done``) and out of each node
        reachable from it in fewer than ``starts[s]`` hops through nodes that are neither starts nor in
        ``done`` (the caller has their edges). A remote store answers in one request; this default
        runs one :meth:`traverse` per number of hops, which also returns edges the walk would not
        reach (through ``done`` nodes and other starts); the caller has or ignores them."""
        by_hops: dict[int, list[str]] = {}
        for name, hops in starts.items():
            if hops < 0:
                raise ValueError(f"hops must be >= 0, got {hops} for {name!r}")
            if hops and name not in done:
                by_hops.setdefault(hops, []).append(name)
        walks = await asyncio.gather(*(
            self.traverse(names, direction, hops, granularity, time, now, with_stats=with_stats)
            for hops, names in sorted(by_hops.items())
        ))
        found = {(e.key.source, e.key.target): e for walk in walks for e in walk.edges}
        return [found[k] for k in sorted(found)]

    async def edge_stats(
        self, keys: Iterable[tuple[str, str]], granularity: Granularity, time: TimeRange, now: float
    ) -> list[EdgeSummary]:
        """These (source, target) edges as :meth:`neighbors` answers them (stats of their windows in
        ``time`` merged), those present in ``time``, ordered by key: the stats of the edges a walk
        without stats found, read for the few someone reads (a remote store: in one request)."""
        wanted = set(keys)
        if not wanted:
            return []
        found = await self.neighbors({s for s, _ in wanted}, Direction.UPSTREAM, granularity, time, now)
        return sorted((e for e in found if (e.key.source, e.key.target) in wanted),
                      key=lambda e: (e.key.source, e.key.target))

    @abc.abstractmethod
    async def edges(
        self,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        limit: int | None = None,
        after: tuple[str, str] | None = None,
    ) -> list[EdgeSummary]:
        """All edges present in ``time``, ordered by (source, target), strictly after ``after``."""

    @abc.abstractmethod
    async def nodes(self, names: Iterable[str]) -> dict[str, NodeInfo]:
        """Nodes of this layer by name (either granularity); unknown names are left out."""

    @abc.abstractmethod
    async def window_count(self) -> dict[int, int]:
        """Stored windows per granularity (seconds -> count): for tests, metrics and benchmarks."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` if the backend cannot answer."""

    @abc.abstractmethod
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServiceFilter:
    tiers: frozenset[int] | None = None
    domains: frozenset[str] | None = None
    owner_team: str | None = None
    layers: frozenset[Layer] | None = None  # seen in any of these layers
    name_prefix: str | None = None


class CatalogStore(abc.ABC):
    """Owners, tiers, domains, health, change events, the node registry and recent traces."""

    @property
    def version(self) -> int | None:
        """A number that changes once a write has changed what this store may answer (read it before
        and after answering: unchanged, the answer is of one state); None when the store cannot
        tell, and then nothing it answers is kept (the GraphQL response cache)."""
        return None

    @abc.abstractmethod
    async def upsert_services(self, infos: Sequence[ServiceInfo]) -> None: ...

    @abc.abstractmethod
    async def services(self, names: Iterable[str]) -> dict[str, ServiceInfo]:
        """Catalog entries by name, in one look-up; unknown names are left out."""

    @abc.abstractmethod
    async def register_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        """Record nodes seen in traffic (merging layers and first/last seen)."""

    @abc.abstractmethod
    async def known_nodes(self, names: Iterable[str]) -> dict[str, NodeInfo]: ...

    @abc.abstractmethod
    async def list_names(
        self, flt: ServiceFilter, granularity: Granularity, limit: int, after: str | None
    ) -> list[str]:
        """APP (or CLUSTER) node names matching ``flt``, sorted, strictly after ``after``."""

    @abc.abstractmethod
    async def record_health(self, events: Sequence[HealthEvent]) -> None:
        """Idempotent: the same event twice is stored once."""

    @abc.abstractmethod
    async def health(self, names: Iterable[str], at: float) -> dict[str, HealthStatus]:
        """Each name's latest health event at or before ``at`` (missing names: no event)."""

    @abc.abstractmethod
    async def record_changes(self, events: Sequence[ChangeEvent]) -> None:
        """Idempotent: the same event twice (the whole record, :attr:`ChangeEvent.key`) is stored once."""

    @abc.abstractmethod
    async def changes(
        self, names: Iterable[str], start: float, end: float, limit: int
    ) -> list[ChangeEvent]:
        """Change events of ``names`` with ``start <= at <= end``, newest first (equal times: by
        service, then key), at most ``limit``."""

    @abc.abstractmethod
    async def record_peer_leases(self, leases: Sequence[AddressLease]) -> None:
        """Keep leases met next to unattributed NETWORK traffic (``ip`` as the traffic named the
        address), one per (ip, owner, start): a later record of the same lease replaces it."""

    @abc.abstractmethod
    async def peer_leases(self, ips: Iterable[str]) -> dict[str, list[AddressLease]]:
        """The kept leases of each address, oldest start first (addresses without any left out)."""

    @abc.abstractmethod
    async def record_traces(self, summaries: Sequence[TraceSummary]) -> None:
        """Keep each summary (one with the same id is replaced) twice: among the recent traces of each of
        its services (without its spans; a bounded number per service) and in the store of recent traces
        (with its kept spans), which holds at most ``Retention.traces`` traces, drops traces that started
        more than ``Retention.trace_seconds`` before the newest one, and beyond its size the oldest (by
        start, then id)."""

    @abc.abstractmethod
    async def recent_traces(self, name: str, limit: int) -> list[TraceSummary]:
        """Newest first, without their spans."""

    @abc.abstractmethod
    async def trace(self, trace_id: str) -> TraceSummary | None:
        """The trace with this id (lowercase hex) and its kept spans, if the store of recent traces
        still holds it."""

    @abc.abstractmethod
    async def close(self) -> None: ...


@dataclass
class Stores:
    """What a process works with: three separate layer stores and the catalog."""

    layers: Mapping[Layer, LayerStore]
    catalog: CatalogStore
    on_close: Callable[[], None] | None = None  # releases what the opener holds (a directory lock)

    async def close(self) -> None:
        try:
            for s in self.layers.values():
                await s.close()
            await self.catalog.close()
        finally:
            if self.on_close is not None:
                release, self.on_close = self.on_close, None
                release()


class StoreProxy:
    """Delegates to a store, each coroutine method wrapped by :meth:`_wrap` (a store running on
    another loop, a timed store); other attributes are the store's own. Subclasses set their own
    attributes before any store attribute is read."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def _wrap(self, name: str, method: Callable[..., Coroutine[Any, Any, Any]]
              ) -> Callable[..., Coroutine[Any, Any, Any]]:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        """Called once per method name: the wrapper is then kept as an attribute of this object."""
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        call = self._wrap(name, attr)
        setattr(self, name, call)
        return call

"""Unified queries over several layers: multi-hop traversal, the flat graph and the blast radius.

The layers are separate graphs (one :class:`~topology.store.base.LayerStore` each). A unified query
asks every requested layer *concurrently* and merges the answers, so a path may combine edges seen by
different layers. Each merged edge keeps which layers saw it and each layer's
:class:`~topology.stats.EdgeStats` side by side (they are never added together: the layers observe
the same traffic in different ways).

A layer whose store raises (:class:`~topology.store.base.StoreUnavailable` or anything else) does not
spoil the answer: the other layers still answer and the result lists the failed layers, each with a
message fit for the person who asked. Edges a layer gave before it failed are kept.

Traversal is level-synchronous breadth-first: at each level every requested layer expands the whole
frontier in one ``neighbors`` call, the calls run together, and the union of their edges gives the
next frontier. Each node is reported once, at its smallest depth, with ``via`` = the node it was
reached from (the smallest name when several frontier nodes reach it at the same depth). Over remote
stores (JanusGraph: a request per call) each layer walks the whole depth in one request instead, and
only the nodes a layer could not reach on its own (through another layer's edges) are walked in it
again; the answer is the same (:func:`_traverse_whole`, on :meth:`~topology.store.base.LayerStore.expand`).

A blast radius needs names only (counts by tier, teams): when every layer asked keeps its present
edges in memory (:meth:`~topology.store.base.LayerStore.adjacency`), it walks their union as integer
arrays (:mod:`topology.adjacency`) - the same levels, depths and ``via`` as the level-by-level walk -
and reads the edges of the reached nodes from the layers only when someone reads them
(:meth:`UnifiedTraversal.fetch_edges`, e.g. for one page of the affected services).

This module is pure apart from calling the store interface: no clock, no network, no disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from topology.adjacency import Adjacency, union
from topology.adjacency import walk as walk_levels
from topology.catalog import Owner, ServiceInfo
from topology.model import ALL_LAYERS, Direction, EdgeSummary, Granularity, Layer, NodeKind
from topology.stats import EdgeStats
from topology.store.base import CatalogStore, LayerStore, StoreUnavailable
from topology.timewindow import TimeRange

__all__ = [
    "BlastRadius",
    "Dependency",
    "FlatGraph",
    "LayerFailure",
    "MergedEdge",
    "TeamNotice",
    "UnifiedTraversal",
    "blast_radius",
    "flat_graph",
    "matches_filter",
    "merge_kinds",
    "traverse",
]

_T = TypeVar("_T")

#: How many edges one layer is asked for per round when the flat graph is filtered.
_FILTERED_BATCH = 512
#: The flat graph gives up scanning (and reports a next page) after this many merged edges.
_MAX_SCANNED_EDGES = 1_000_000


@dataclass(frozen=True, slots=True)
class LayerFailure:
    """A layer that could not answer. ``message`` is safe to show to the person who asked;
    ``cause`` is the exception (for logs), ``expected`` is False for anything but StoreUnavailable."""

    layer: Layer
    message: str
    expected: bool = True
    cause: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class MergedEdge:
    """One edge (``source`` calls ``target``) as seen by one or more layers."""

    source: str
    target: str
    per_layer: tuple[tuple[Layer, EdgeStats], ...]  # in ALL_LAYERS order, each layer at most once
    source_kind: NodeKind = NodeKind.SERVICE
    target_kind: NodeKind = NodeKind.SERVICE

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer, _ in self.per_layer)

    def stats(self, layer: Layer) -> EdgeStats | None:
        for lay, st in self.per_layer:
            if lay is layer:
                return st
        return None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.target)


_Found = dict[tuple[str, str], dict[Layer, EdgeSummary]]
_ByLayer = dict[Layer, dict[tuple[str, str], EdgeSummary]]


def _gather(by_layer: _ByLayer, key: tuple[str, str]) -> dict[Layer, EdgeSummary]:
    return {layer: m[key] for layer, m in by_layer.items() if key in m}


class _Walked:
    """Every edge a traversal walked: each layer's answers kept as they came (one append per answer,
    nothing per edge) and indexed by (source, target) on first use. A blast radius that reads only
    names never pays for the index."""

    __slots__ = ("_answers", "_index")

    #: Whether every walked edge is here (False: only those fetched for the nodes asked about).
    complete = True

    def __init__(self) -> None:
        # (layer, the frontier asked about, upstream, the answer), in the order they came
        self._answers: list[tuple[Layer, set[str], bool, Sequence[EdgeSummary]]] = []
        self._index: _ByLayer | None = None

    async def fetch(self, deps: Iterable[Dependency]) -> None:
        """Make the edges of ``deps`` readable (they are: a level walk keeps what it walked)."""

    def add(self, layer: Layer, frontier: set[str], upstream: bool, answer: Sequence[EdgeSummary]) -> None:
        self._answers.append((layer, frontier, upstream, answer))
        self._index = None

    def by_layer(self) -> _ByLayer:
        """Each layer's edges (first answer wins) with an end in the frontier they were asked for."""
        index = self._index
        if index is None:
            index = {}
            for layer, frontier, upstream, answer in self._answers:
                mine = index.setdefault(layer, {})
                for summary in answer:
                    ek = summary.key
                    if (ek.source if upstream else ek.target) not in frontier:
                        continue  # not an edge of this frontier: ignored by the walk as well
                    k = (ek.source, ek.target)
                    if k not in mine:
                        mine[k] = summary
            self._index = index
        return index


class _StatsLater(_Walked):
    """Every edge a walk without stats walked (names, layers, kinds), with the stats of the edges of
    the nodes asked about read by :meth:`fetch` (one :meth:`LayerStore.edge_stats` call per layer)."""

    __slots__ = ("_ask", "_read")

    def __init__(self, layer_stores: Mapping[Layer, LayerStore], granularity: Granularity, time: TimeRange,
                 now: float) -> None:
        super().__init__()
        self._ask = (layer_stores, granularity, time, now)
        self._read: set[tuple[str, str]] = set()  # edges whose stats are here

    async def fetch(self, deps: Iterable[Dependency]) -> None:
        layer_stores, granularity, time, now = self._ask
        deps = list(deps)
        index = self.by_layer()
        wanted = {layer: sorted({d.key for d in deps if d.key in found} - self._read)
                  for layer, found in index.items()}
        asks = [(layer, keys) for layer, keys in wanted.items() if keys]
        if not asks:
            return
        answers = await asyncio.gather(*(
            layer_stores[layer].edge_stats(keys, granularity, time, now) for layer, keys in asks
        ))
        for (layer, _), answer in zip(asks, answers, strict=True):
            found = index[layer]
            for summary in answer:
                k = (summary.key.source, summary.key.target)
                if k in found:
                    found[k] = summary
        self._read.update(k for _, keys in asks for k in keys)
        for d in deps:
            d.forget_edge()


class _Fetched(_Walked):
    """The edges of a walk over kept adjacency: nothing until :meth:`fetch` reads, from each layer, the
    edges between the nodes asked about and their ``via`` (one ``neighbors`` call per layer)."""

    __slots__ = ("_ask", "_fetched")

    complete = False

    def __init__(
        self, layer_stores: Mapping[Layer, LayerStore], layers: Sequence[Layer], upstream: bool,
        granularity: Granularity, time: TimeRange, now: float, with_stats: bool,
    ) -> None:
        super().__init__()
        self._ask = (layer_stores, layers, upstream, granularity, time, now, with_stats)
        self._fetched: set[str] = set()  # the ``via`` nodes whose edges are here

    async def fetch(self, deps: Iterable[Dependency]) -> None:
        layer_stores, layers, upstream, granularity, time, now, with_stats = self._ask
        near = sorted({d.via for d in deps} - self._fetched)
        if not near:
            return
        direction = Direction.UPSTREAM if upstream else Direction.DOWNSTREAM
        answers = await asyncio.gather(*(
            layer_stores[layer].neighbors(near, direction, granularity, time, now, with_stats=with_stats)
            for layer in layers
        ))
        frontier = set(near)
        for layer, answer in zip(layers, answers, strict=True):
            self.add(layer, frontier, upstream, answer)
        self._fetched.update(near)


class Dependency:
    """A node reached by a traversal, with the merged edge it was reached through (merged on first
    use: a blast radius counts names and never reads most of them)."""

    __slots__ = ("_edge", "_key", "_upstream", "_walked", "depth", "name", "via")

    def __init__(
        self, name: str, depth: int, via: str, key: tuple[str, str], upstream: bool, walked: _Walked
    ) -> None:
        self.name = name
        self.depth = depth
        self.via = via
        self._key = key
        self._upstream = upstream
        self._walked = walked
        self._edge: MergedEdge | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(source, target) of :attr:`edge`."""
        return self._key

    def forget_edge(self) -> None:
        """Merge :attr:`edge` again on next use (its layers' stats were read since)."""
        self._edge = None

    @property
    def edge(self) -> MergedEdge:
        """via -> name for UPSTREAM, name -> via for DOWNSTREAM."""
        edge = self._edge
        if edge is None:
            k = self._key
            found = [(layer, m[k]) for layer, m in self._walked.by_layer().items() if k in m]
            if not found:
                raise RuntimeError(f"the edge {k} was not read: await UnifiedTraversal.fetch_edges first")
            if len(found) == 1:
                ((layer, only),) = found
                edge = MergedEdge(k[0], k[1], ((layer, only.stats),), only.source_kind, only.target_kind)
            else:
                edge = _merge_edge(k[0], k[1], dict(found))
            self._edge = edge
        return edge

    @property
    def kind(self) -> NodeKind:
        edge = self.edge
        return edge.target_kind if self._upstream else edge.source_kind

    def _fields(self) -> tuple[str, int, str, MergedEdge]:
        return (self.name, self.depth, self.via, self.edge)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dependency):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((self.name, self.depth, self.via))

    def __repr__(self) -> str:
        return f"Dependency(name={self.name!r}, depth={self.depth}, via={self.via!r}, kind={self.kind})"


@dataclass(frozen=True)
class UnifiedTraversal:
    roots: tuple[str, ...]
    direction: Direction
    layers: tuple[Layer, ...]  # the layers asked for
    reached: tuple[Dependency, ...]  # ordered by (depth, name); roots are not listed
    failures: tuple[LayerFailure, ...]
    walks: _Walked = field(default_factory=_Walked, repr=False, compare=False)

    @property
    def walked(self) -> _ByLayer:
        """Every edge walked, by layer (in the order the layers were asked in)."""
        if not self.walks.complete:
            raise RuntimeError("a walk over kept adjacency keeps no edges: read Dependency.edge instead")
        return self.walks.by_layer()

    async def fetch_edges(self, deps: Iterable[Dependency]) -> None:
        """Read the edges of these reached nodes, if the walk did not keep them (before reading
        ``edge`` or ``kind`` of any of them)."""
        await self.walks.fetch(deps)

    @cached_property
    def edges(self) -> tuple[MergedEdge, ...]:
        """Every edge walked, merged, ordered by (source, target) (built on first use)."""
        known = {d.edge.key: d.edge for d in self.reached}
        keys = sorted({k for m in self.walked.values() for k in m})
        return tuple(known.get(k) or _merge_edge(k[0], k[1], _gather(self.walked, k)) for k in keys)

    @property
    def answered(self) -> tuple[Layer, ...]:
        failed = {f.layer for f in self.failures}
        return tuple(layer for layer in self.layers if layer not in failed)


@dataclass(frozen=True, slots=True)
class FlatGraph:
    """One page of the merged edge list, ordered by (source, target)."""

    nodes: tuple[tuple[str, NodeKind], ...]  # endpoints of the page's edges, sorted by name
    edges: tuple[MergedEdge, ...]
    has_next: bool
    end_cursor: tuple[str, str] | None  # the last edge's key: pass it as ``after`` for the next page
    failures: tuple[LayerFailure, ...]


@dataclass(frozen=True, slots=True)
class TeamNotice:
    """A team to notify, with the affected services it owns (sorted)."""

    owner: Owner
    services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BlastRadius:
    root: str
    traversal: UnifiedTraversal
    affected: tuple[Dependency, ...]  # reached services that pass the filter, by (depth, name)
    by_tier: tuple[tuple[int | None, int], ...]  # (tier, count), tiers ascending, unknown (None) last
    teams: tuple[TeamNotice, ...]  # sorted by team name
    unowned: tuple[str, ...]  # affected services with no owner in the catalog
    infos: Mapping[str, ServiceInfo]  # catalog entries of every reached node


# -- helpers ---------------------------------------------------------------------------------------
def _ordered_layers(layers: Iterable[Layer] | None) -> tuple[Layer, ...]:
    asked = set(ALL_LAYERS if layers is None else layers)
    return tuple(layer for layer in ALL_LAYERS if layer in asked)


_KIND_RANK = {kind: i for i, kind in enumerate(NodeKind)}


def merge_kinds(kinds: Iterable[NodeKind]) -> NodeKind:
    """What layers that disagree about a node make of it: a workload anywhere is a workload
    (an instrumented service can look like a virtual peer to a layer that sees only its callers);
    otherwise the first specific kind wins and UNKNOWN only when nothing better is known."""
    best: NodeKind | None = None
    for kind in kinds:
        if kind is NodeKind.SERVICE:
            return kind
        if best is None or best is NodeKind.UNKNOWN or (
            kind is not NodeKind.UNKNOWN and _KIND_RANK[kind] < _KIND_RANK[best]
        ):
            best = kind
    return best if best is not None else NodeKind.UNKNOWN


def _merge_edge(source: str, target: str, found: Mapping[Layer, EdgeSummary]) -> MergedEdge:
    if len(found) == 1:
        ((layer, only),) = found.items()
        return MergedEdge(source, target, ((layer, only.stats),), only.source_kind, only.target_kind)
    per_layer = tuple((layer, found[layer].stats) for layer in ALL_LAYERS if layer in found)
    summaries = [found[layer] for layer, _ in per_layer]
    first = summaries[0]
    source_kind, target_kind = first.source_kind, first.target_kind
    # Layers mostly agree on both kinds: merge only when they do not.
    if any(s.source_kind is not source_kind for s in summaries):
        source_kind = merge_kinds([s.source_kind for s in summaries])
    if any(s.target_kind is not target_kind for s in summaries):
        target_kind = merge_kinds([s.target_kind for s in summaries])
    return MergedEdge(source, target, per_layer, source_kind, target_kind)


def _failure(layer: Layer, exc: Exception) -> LayerFailure:
    if isinstance(exc, StoreUnavailable):
        return LayerFailure(layer, f"the {layer.value} layer is unavailable: {exc}", True, exc)
    return LayerFailure(
        layer, f"the {layer.value} layer failed to answer ({type(exc).__name__})", False, exc
    )


async def _guard(layer: Layer, call: Awaitable[_T]) -> _T | LayerFailure:
    try:
        return await call
    except Exception as exc:  # one layer's failure must not fail the others
        return _failure(layer, exc)


def _start(
    layer_stores: Mapping[Layer, LayerStore], layers: Iterable[Layer] | None
) -> tuple[tuple[Layer, ...], list[Layer], list[LayerFailure]]:
    asked = _ordered_layers(layers)
    active = [layer for layer in asked if layer in layer_stores]
    failures = [
        LayerFailure(layer, f"no store is configured for the {layer.value} layer")
        for layer in asked
        if layer not in layer_stores
    ]
    return asked, active, failures


def matches_filter(
    info: ServiceInfo | None, tiers: frozenset[int] | None, domains: frozenset[str] | None
) -> bool:
    """Whether a node passes a tier/domain filter (a node without a catalog entry passes only when
    neither is set)."""
    if tiers is not None and (info is None or info.tier not in tiers):
        return False
    return not (domains is not None and (info is None or info.domain not in domains))


# -- traversal -------------------------------------------------------------------------------------
async def traverse(
    layer_stores: Mapping[Layer, LayerStore],
    roots: Iterable[str],
    direction: Direction,
    depth: int,
    *,
    layers: Iterable[Layer] | None = None,
    granularity: Granularity = Granularity.APP,
    time: TimeRange,
    now: float,
    with_stats: bool = True,
    kept: bool = False,
    whole: bool | None = None,
    stats_on_fetch: bool = False,
) -> UnifiedTraversal:
    """Walk up to ``depth`` hops from ``roots`` over the union of ``layers`` (all when None).
    ``with_stats=False``: the caller reads no edge stats (they may be empty; the walk is the same).
    ``kept``: walk the layers' kept adjacency when every one keeps one (the same answer, without a
    store call per level); the edges of reached nodes are then read only by
    :meth:`UnifiedTraversal.fetch_edges` (await it before reading ``edge`` or ``kind``).
    ``whole``: ask each layer for its whole walk (:func:`_traverse_whole`; the same answer in fewer
    requests); None: when every layer asked is :attr:`~topology.store.base.LayerStore.remote`.
    ``stats_on_fetch`` (with stats): a caller that reads the edges of a few reached nodes only (a
    page) lets a whole walk read no stats; the stats of those edges are read by
    :meth:`UnifiedTraversal.fetch_edges` (await it before reading their ``edge``). Other walks keep
    their stats and ``fetch_edges`` has nothing to do."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    root_names = tuple(sorted(set(roots)))
    if kept:
        found = await _traverse_kept(layer_stores, root_names, direction, depth, layers=layers,
                                     granularity=granularity, time=time, now=now, with_stats=with_stats)
        if found is not None:
            return found
    asked, active, failures = _start(layer_stores, layers)
    if whole is None:
        whole = bool(active) and all(layer_stores[layer].remote for layer in active)
    if whole:
        later = with_stats and stats_on_fetch
        return await _traverse_whole(
            layer_stores, root_names, direction, depth, asked, active, failures, granularity=granularity,
            time=time, now=now, with_stats=with_stats and not later,
            walks=_StatsLater(layer_stores, granularity, time, now) if later else _Walked())
    seen: set[str] = set(root_names)
    frontier: list[str] = list(root_names)
    walks = _Walked()
    reached: list[Dependency] = []
    upstream = direction is Direction.UPSTREAM

    for level in range(1, depth + 1):
        if not frontier or not active:
            break
        calling = list(active)
        answers = await asyncio.gather(
            *(
                _guard(
                    layer,
                    layer_stores[layer].neighbors(frontier, direction, granularity, time, now)
                    if with_stats
                    else layer_stores[layer].neighbors(
                        frontier, direction, granularity, time, now, with_stats=False
                    ),
                )
                for layer in calling
            )
        )
        frontier_set = set(frontier)
        best: dict[str, str] = {}  # far node -> the smallest frontier node it is reached from
        for layer, answer in zip(calling, answers, strict=True):
            if isinstance(answer, LayerFailure):
                failures.append(answer)
                active.remove(layer)
                continue
            walks.add(layer, frontier_set, upstream, answer)
            # the hot loop of every query: keep it flat (one copy per direction), nothing per edge
            # but the names (the walked edges are indexed only if someone reads them)
            if upstream:
                for summary in answer:
                    ek = summary.key
                    far = ek.target
                    if far in seen:
                        continue
                    near = ek.source
                    if near not in frontier_set:
                        continue  # not an edge of this frontier: ignore rather than trust it
                    prev = best.get(far)
                    if prev is None or near < prev:
                        best[far] = near
            else:
                for summary in answer:
                    ek = summary.key
                    far = ek.source
                    if far in seen:
                        continue
                    near = ek.target
                    if near not in frontier_set:
                        continue
                    prev = best.get(far)
                    if prev is None or near < prev:
                        best[far] = near
        frontier = sorted(best)
        for name in frontier:
            via = best[name]
            k = (via, name) if upstream else (name, via)
            reached.append(Dependency(name, level, via, k, upstream, walks))
        seen.update(frontier)

    return UnifiedTraversal(
        roots=root_names,
        direction=direction,
        layers=asked,
        reached=tuple(reached),
        failures=tuple(failures),
        walks=walks,
    )


def _union_levels(
    found: Iterable[Mapping[tuple[str, str], EdgeSummary]], roots: Sequence[str], upstream: bool, depth: int
) -> tuple[list[tuple[str, int, str]], dict[str, int]]:
    """The level walk over the union of ``found`` (each layer's edges by (source, target)): the nodes
    reached as (name, depth, via), by (depth, name), and the depth of every node (roots: 0)."""
    adj: dict[str, set[str]] = {}
    for edges in found:
        for source, target in edges:
            near, far = (source, target) if upstream else (target, source)
            adj.setdefault(near, set()).add(far)
    depth_of = dict.fromkeys(roots, 0)
    frontier = list(roots)
    reached: list[tuple[str, int, str]] = []
    for level in range(1, depth + 1):
        best: dict[str, str] = {}  # far node -> the smallest frontier node it is reached from
        for near in frontier:
            for far in adj.get(near, ()):
                if far not in depth_of:
                    prev = best.get(far)
                    if prev is None or near < prev:
                        best[far] = near
        frontier = sorted(best)
        if not frontier:
            break
        for name in frontier:
            depth_of[name] = level
            reached.append((name, level, best[name]))
    return reached, depth_of


def _expanded(
    edges: Iterable[tuple[str, str]], starts: Mapping[str, int], done: Collection[str], upstream: bool
) -> set[str]:
    """The nodes whose edges :meth:`LayerStore.expand` answered with ``edges`` (as it defines them)."""
    adj: dict[str, list[str]] = {}
    for source, target in edges:
        near, far = (source, target) if upstream else (target, source)
        adj.setdefault(near, []).append(far)
    left = {name: hops for name, hops in starts.items() if hops > 0 and name not in done}
    waiting: dict[int, list[str]] = {}
    for name, hops in left.items():
        waiting.setdefault(hops, []).append(name)
    for hops in range(max(left.values(), default=0), 1, -1):  # most hops left first
        for near in waiting.get(hops, ()):
            if left[near] != hops:
                continue  # met again with more hops left
            for far in adj.get(near, ()):
                if far not in done and far not in starts and left.get(far, 0) < hops - 1:
                    left[far] = hops - 1
                    waiting.setdefault(hops - 1, []).append(far)
    return set(left)


async def _traverse_whole(
    layer_stores: Mapping[Layer, LayerStore],
    root_names: tuple[str, ...],
    direction: Direction,
    depth: int,
    asked: tuple[Layer, ...],
    active: list[Layer],
    failures: list[LayerFailure],
    *,
    granularity: Granularity,
    time: TimeRange,
    now: float,
    with_stats: bool,
    walks: _Walked,
) -> UnifiedTraversal:
    """:func:`traverse` with each layer walking the whole depth in one call
    (:meth:`LayerStore.expand`, one request to a remote store): the layers walk concurrently and the
    union of their edges is walked level by level here. A node the union reaches less than ``depth``
    from the roots that a layer did not expand (it was reached through another layer's edge) is
    expanded in that layer in the next round, with the depth left to it, never expanding a node
    twice. When every such node has been expanded in every layer, the union holds every edge the level
    walk reads, so depths and ``via`` are the level walk's; that takes at most ``depth`` rounds (each
    settles the next level at least), usually one or two. The edges kept are those the level walk
    keeps: each layer's edges out of the nodes less than ``depth`` away."""
    upstream = direction is Direction.UPSTREAM
    expanded: dict[Layer, set[str]] = {layer: set() for layer in active}
    found: dict[Layer, dict[tuple[str, str], EdgeSummary]] = {layer: {} for layer in active}
    answered: set[Layer] = set()
    asks: dict[Layer, dict[str, int]] = (
        {layer: dict.fromkeys(root_names, depth) for layer in active} if depth and root_names else {}
    )
    reached: list[tuple[str, int, str]] = []
    depth_of: dict[str, int] = dict.fromkeys(root_names, 0)
    while asks:
        calls = list(asks.items())
        answers = await asyncio.gather(*(
            _guard(layer, layer_stores[layer].expand(starts, frozenset(expanded[layer]), direction,
                                                     granularity, time, now, with_stats=with_stats))
            for layer, starts in calls
        ))
        for (layer, starts), answer in zip(calls, answers, strict=True):
            if isinstance(answer, LayerFailure):  # its edges of earlier rounds are kept
                failures.append(answer)
                active.remove(layer)
                continue
            answered.add(layer)
            mine = found[layer]
            for summary in answer:
                ek = summary.key
                mine.setdefault((ek.source, ek.target), summary)
            expanded[layer] |= _expanded(mine, starts, expanded[layer], upstream)
        reached, depth_of = _union_levels(found.values(), root_names, upstream, depth)
        asks = {}
        for layer in active:
            mine_done = expanded[layer]
            todo = {name: depth - d for name, d in depth_of.items() if d < depth and name not in mine_done}
            if todo:
                asks[layer] = todo
    inner = {name for name, d in depth_of.items() if d < depth}
    for layer, mine in found.items():
        if layer in answered:
            walks.add(layer, inner, upstream,
                      [e for k, e in mine.items() if (k[0] if upstream else k[1]) in inner])
    deps = [
        Dependency(name, d, via, (via, name) if upstream else (name, via), upstream, walks)
        for name, d, via in reached
    ]
    return UnifiedTraversal(roots=root_names, direction=direction, layers=asked, reached=tuple(deps),
                            failures=tuple(failures), walks=walks)


async def _kept_adjacency(
    layer_stores: Mapping[Layer, LayerStore], active: Sequence[Layer], granularity: Granularity,
    time: TimeRange, now: float,
) -> Adjacency | None:
    """The union of the active layers' kept adjacency, or None unless every one of them keeps one
    (a layer that fails here is left to the level walk, which reports it)."""
    answers = await asyncio.gather(*(
        _guard(layer, layer_stores[layer].adjacency(granularity, time, now)) for layer in active
    ))
    parts = [a for a in answers if isinstance(a, Adjacency)]
    return union(parts) if parts and len(parts) == len(answers) else None


async def _traverse_kept(
    layer_stores: Mapping[Layer, LayerStore],
    root_names: tuple[str, ...],
    direction: Direction,
    depth: int,
    *,
    layers: Iterable[Layer] | None,
    granularity: Granularity,
    time: TimeRange,
    now: float,
    with_stats: bool,
) -> UnifiedTraversal | None:
    """:func:`traverse` over the layers' kept adjacency (None when a layer keeps none); the walked
    edges are read later, for the nodes someone asks about (:meth:`UnifiedTraversal.fetch_edges`)."""
    asked, active, failures = _start(layer_stores, layers)
    if not active:
        return None
    adjacency = await _kept_adjacency(layer_stores, active, granularity, time, now)
    if adjacency is None:
        return None
    upstream = direction is Direction.UPSTREAM
    walks = _Fetched(layer_stores, active, upstream, granularity, time, now, with_stats)
    reached: list[Dependency] = []
    for level in walk_levels(adjacency, root_names, upstream, depth):
        d = level.depth
        for name, via in zip(level.names, level.via, strict=True):
            k = (via, name) if upstream else (name, via)
            reached.append(Dependency(name, d, via, k, upstream, walks))
    return UnifiedTraversal(
        roots=root_names, direction=direction, layers=asked, reached=tuple(reached),
        failures=tuple(failures), walks=walks,
    )


# -- flat graph ------------------------------------------------------------------------------------
NodeSelector = Callable[[Sequence[str]], Awaitable[set[str]]]
"""Given node names, return the subset that passes a filter (one batched look-up)."""


async def flat_graph(
    layer_stores: Mapping[Layer, LayerStore],
    *,
    layers: Iterable[Layer] | None = None,
    granularity: Granularity = Granularity.APP,
    time: TimeRange,
    now: float,
    first: int,
    after: tuple[str, str] | None = None,
    select: NodeSelector | None = None,
) -> FlatGraph:
    """Edges of ``layers`` merged, ordered by (source, target), at most ``first`` after ``after``.

    With ``select``, only edges whose two ends both pass it are kept (the induced subgraph);
    the layers are then read in rounds until the page is full or they run out.
    """
    if first < 0:
        raise ValueError(f"first must be >= 0, got {first}")
    _, active, failures = _start(layer_stores, layers)
    batch = first + 1 if select is None else max(first + 1, _FILTERED_BATCH)
    page: list[MergedEdge] = []
    cursor = after
    scanned = 0
    exhausted = False
    while len(page) <= first and active and not exhausted:
        calling = list(active)
        answers = await asyncio.gather(
            *(
                _guard(layer, layer_stores[layer].edges(granularity, time, now, batch, cursor))
                for layer in calling
            )
        )
        found: _Found = {}
        horizon: tuple[str, str] | None = None  # keys up to here are complete in every layer
        for layer, answer in zip(calling, answers, strict=True):
            if isinstance(answer, LayerFailure):
                failures.append(answer)
                active.remove(layer)
                continue
            for summary in answer:
                k = (summary.key.source, summary.key.target)
                if cursor is None or k > cursor:
                    found.setdefault(k, {}).setdefault(layer, summary)
            if len(answer) >= batch:
                last = max((s.key.source, s.key.target) for s in answer)
                horizon = last if horizon is None else min(horizon, last)
        exhausted = horizon is None
        keys = sorted(k for k in found if horizon is None or k <= horizon)
        edges = [_merge_edge(k[0], k[1], found[k]) for k in keys]
        scanned += len(edges)
        if select is not None and edges:
            names = sorted({n for e in edges for n in e.key})
            passing = await select(names)
            edges = [e for e in edges if e.source in passing and e.target in passing]
        page.extend(edges)
        if horizon is not None:
            cursor = horizon
        if scanned >= _MAX_SCANNED_EDGES:
            break

    has_next = len(page) > first or (not exhausted and bool(active))
    page = page[:first]
    kinds: dict[str, list[NodeKind]] = {}
    for e in page:
        kinds.setdefault(e.source, []).append(e.source_kind)
        kinds.setdefault(e.target, []).append(e.target_kind)
    return FlatGraph(
        nodes=tuple((name, merge_kinds(kinds[name])) for name in sorted(kinds)),
        edges=tuple(page),
        has_next=has_next,
        end_cursor=page[-1].key if page else after,
        failures=tuple(failures),
    )


# -- blast radius ----------------------------------------------------------------------------------
def _team_notices(affected: Sequence[str], infos: Mapping[str, ServiceInfo]) -> tuple[
    tuple[TeamNotice, ...], tuple[str, ...]
]:
    teams: dict[str, tuple[Owner, list[str]]] = {}
    unowned: list[str] = []
    for name in sorted(affected):
        info = infos.get(name)
        if info is None or info.owner is None:
            unowned.append(name)
            continue
        o = info.owner
        if o.team not in teams:
            teams[o.team] = (o, [name])
            continue
        known, names = teams[o.team]
        names.append(name)
        # Contacts may be missing on some entries of a team: keep the first one given for each.
        email, chat, oncall = known.email or o.email, known.chat or o.chat, known.oncall or o.oncall
        if email is not known.email or chat is not known.chat or oncall is not known.oncall:
            teams[o.team] = (Owner(o.team, email, chat, oncall), names)
    notices = tuple(TeamNotice(owner, tuple(names)) for _, (owner, names) in sorted(teams.items()))
    return notices, tuple(unowned)


def _tier_counts(affected: Sequence[str], infos: Mapping[str, ServiceInfo]) -> tuple[
    tuple[int | None, int], ...
]:
    counts: dict[int | None, int] = {}
    for name in affected:
        info = infos.get(name)
        tier = None if info is None else info.tier
        counts[tier] = counts.get(tier, 0) + 1
    known = sorted((t, n) for t, n in counts.items() if t is not None)
    return (*known, *(((None, counts[None]),) if None in counts else ()))


async def blast_radius(
    layer_stores: Mapping[Layer, LayerStore],
    catalog: CatalogStore,
    root: str,
    depth: int,
    *,
    layers: Iterable[Layer] | None = None,
    granularity: Granularity = Granularity.APP,
    time: TimeRange,
    now: float,
    tiers: frozenset[int] | None = None,
    domains: frozenset[str] | None = None,
    with_stats: bool = True,
    kept: bool = True,
) -> BlastRadius:
    """Everything that (transitively) calls ``root``: the services to worry about and the teams to
    tell. Tier/domain filters choose which services are counted; the walk passes through the rest.
    Catalog entries are looked up by node name (one batched call), so use APP granularity for teams.
    ``with_stats=False`` when the caller reads no edge stats (the counts and teams never do).
    ``kept`` (as in :func:`traverse`; then await ``traversal.fetch_edges(deps)`` before reading the
    edges of ``deps``); False: level by level.
    """
    walk = await traverse(
        layer_stores, [root], Direction.DOWNSTREAM, depth,
        layers=layers, granularity=granularity, time=time, now=now, with_stats=with_stats, kept=kept,
    )
    infos = await catalog.services([d.name for d in walk.reached]) if walk.reached else {}
    affected = walk.reached if tiers is None and domains is None else tuple(
        d for d in walk.reached if matches_filter(infos.get(d.name), tiers, domains))
    names = [d.name for d in affected]
    teams, unowned = _team_notices(names, infos)
    return BlastRadius(
        root=root,
        traversal=walk,
        affected=affected,
        by_tier=_tier_counts(names, infos),
        teams=teams,
        unowned=unowned,
        infos=infos,
    )

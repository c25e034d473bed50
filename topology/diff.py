"""What changed: the edges of a call path (or of the whole graph) in two windows, compared.

``diff`` compares the window ending at ``before_end`` (``from``) with the window of the same length
ending at ``after_end`` (``to``). Scoped to a service, it walks ``depth`` hops from it
(UPSTREAM, DOWNSTREAM or BOTH) at *both* times and compares every edge either walk met; an edge one
walk met and the other did not is looked up directly in the other window (one batched
``neighbors`` call per layer), so a path that merely moved is not reported as added or removed.
Without a service, the merged edge lists of both windows are compared page by page (keyset over
(source, target), like ``topology``).

Per edge and per layer: *added* when no asked layer saw it before and some layer sees it after;
*removed* the other way round; *changed* when it is in both and, in some layer that saw it both
times, a metric moved (:class:`topology.metric.Thresholds`). Each result lists the layers that
saw what it reports. The change events of the services involved (the root and everything either
walk reached, or the ends of the differing edges) between ``before_end - window`` and
``after_end`` come with the answer, newest first.

Pure apart from the store interface.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from topology.change import ChangeEvent
from topology.metric import EdgeMetric, Thresholds, metric_value
from topology.model import ALL_LAYERS, Direction, Granularity, Layer, NodeKind
from topology.query import LayerFailure, MergedEdge, flat_graph, merge_kinds, traverse
from topology.stats import EdgeStats
from topology.store.base import CatalogStore, LayerStore
from topology.timewindow import TimeRange

__all__ = ["DiffDirection", "EdgeDiff", "MetricChange", "TopologyDiff", "diff"]

#: Change events returned with a diff, at most.
MAX_CHANGES = 200
#: Whole-graph diff: merged edges read per round from each window.
_BATCH = 2000
#: Whole-graph diff: stop scanning (and report a next page) after this many edges.
_MAX_SCANNED = 500_000

_Key = tuple[str, str]


class DiffDirection(enum.StrEnum):
    UPSTREAM = "UPSTREAM"
    DOWNSTREAM = "DOWNSTREAM"
    BOTH = "BOTH"


@dataclass(frozen=True, slots=True)
class MetricChange:
    layer: Layer
    metric: EdgeMetric
    before: float | None
    after: float | None


@dataclass(frozen=True, slots=True)
class EdgeDiff:
    source: str
    target: str
    source_kind: NodeKind
    target_kind: NodeKind
    layers: tuple[Layer, ...]  # the layers that saw what this entry reports
    before: MergedEdge | None
    after: MergedEdge | None
    metrics: tuple[MetricChange, ...] = ()  # for changed edges: the metrics that moved

    @property
    def key(self) -> _Key:
        return (self.source, self.target)


@dataclass(frozen=True, slots=True)
class TopologyDiff:
    before: TimeRange
    after: TimeRange
    added: tuple[EdgeDiff, ...]
    removed: tuple[EdgeDiff, ...]
    changed: tuple[EdgeDiff, ...]
    services: tuple[str, ...]  # the services involved, sorted
    changes: tuple[ChangeEvent, ...]  # their change events, newest first
    failures: tuple[LayerFailure, ...]
    has_next: bool = False
    end_cursor: _Key | None = None


def _index(edges: Iterable[MergedEdge]) -> dict[_Key, MergedEdge]:
    return {e.key: e for e in edges}


def compare(
    key: _Key, before: MergedEdge | None, after: MergedEdge | None, seconds: float, thresholds: Thresholds
) -> tuple[str, EdgeDiff] | None:
    """Classify one edge: ("added" | "removed" | "changed", its entry), or None when nothing moved."""
    kinds = [e for e in (after, before) if e is not None]
    source_kind = merge_kinds(e.source_kind for e in kinds)
    target_kind = merge_kinds(e.target_kind for e in kinds)
    if before is None and after is not None:
        return "added", EdgeDiff(*key, source_kind, target_kind, after.layers, None, after)
    if after is None and before is not None:
        return "removed", EdgeDiff(*key, source_kind, target_kind, before.layers, before, None)
    if before is None or after is None:
        return None
    moved: list[MetricChange] = []
    for layer in ALL_LAYERS:
        b, a = before.stats(layer), after.stats(layer)
        if b is None or a is None:
            continue
        for metric in EdgeMetric:
            if thresholds.moved(metric, b, a, seconds):
                moved.append(MetricChange(layer, metric, metric_value(b, metric, seconds),
                                          metric_value(a, metric, seconds)))
    if not moved:
        return None
    layers = tuple(dict.fromkeys(m.layer for m in moved))
    return "changed", EdgeDiff(*key, source_kind, target_kind, layers, before, after, tuple(moved))


async def _edges_from(
    layer_stores: Mapping[Layer, LayerStore], layers: tuple[Layer, ...], keys: Iterable[_Key],
    granularity: Granularity, time: TimeRange, now: float,
) -> dict[_Key, MergedEdge]:
    """The edges ``keys`` as they were in ``time`` (those present), per layer merged."""
    wanted = set(keys)
    if not wanted:
        return {}
    sources = sorted({k[0] for k in wanted})
    asked = [layer for layer in layers if layer in layer_stores]
    answers = await asyncio.gather(
        *(layer_stores[layer].neighbors(sources, Direction.UPSTREAM, granularity, time, now)
          for layer in asked),
        return_exceptions=True,
    )
    found: dict[_Key, dict[Layer, EdgeStats]] = {}
    kinds: dict[_Key, tuple[NodeKind, NodeKind]] = {}
    for layer, answer in zip(asked, answers, strict=True):
        if isinstance(answer, BaseException):
            continue  # the walk already reported this layer when it failed there
        for s in answer:
            k = (s.key.source, s.key.target)
            if k in wanted:
                found.setdefault(k, {})[layer] = s.stats
                kinds.setdefault(k, (s.source_kind, s.target_kind))
    return {
        k: MergedEdge(k[0], k[1], tuple((lay, per[lay]) for lay in ALL_LAYERS if lay in per), *kinds[k])
        for k, per in found.items()
    }


async def _walk_edges(
    layer_stores: Mapping[Layer, LayerStore], root: str, depth: int, direction: DiffDirection,
    layers: tuple[Layer, ...], granularity: Granularity, time: TimeRange, now: float,
) -> tuple[dict[_Key, MergedEdge], set[str], list[LayerFailure]]:
    directions = (
        [Direction.UPSTREAM, Direction.DOWNSTREAM] if direction is DiffDirection.BOTH
        else [Direction(direction.value)]
    )
    walks = await asyncio.gather(*(
        traverse(layer_stores, [root], d, depth, layers=layers, granularity=granularity, time=time, now=now)
        for d in directions
    ))
    edges: dict[_Key, MergedEdge] = {}
    names: set[str] = {root}
    failures: list[LayerFailure] = []
    for w in walks:
        edges.update(_index(w.edges))
        names.update(d.name for d in w.reached)
        failures.extend(f for f in w.failures if f not in failures)
    return edges, names, failures


async def diff(
    layer_stores: Mapping[Layer, LayerStore],
    catalog: CatalogStore,
    name: str | None,
    *,
    depth: int,
    direction: DiffDirection = DiffDirection.BOTH,
    layers: Iterable[Layer] | None = None,
    granularity: Granularity = Granularity.APP,
    before_end: float,
    after_end: float,
    window: float,
    now: float,
    thresholds: Thresholds | None = None,
    first: int = 100,
    after: _Key | None = None,
) -> TopologyDiff:
    """Compare ``[before_end - window, before_end)`` with ``[after_end - window, after_end)``."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    th = thresholds or Thresholds()
    asked = tuple(layer for layer in ALL_LAYERS if layers is None or layer in set(layers))
    t_before, t_after = TimeRange.ending_at(before_end, window), TimeRange.ending_at(after_end, window)
    found: dict[str, list[EdgeDiff]] = {"added": [], "removed": [], "changed": []}
    has_next, cursor = False, after
    if name is not None:
        (e_before, n_before, f_before), (e_after, n_after, f_after) = await asyncio.gather(
            _walk_edges(layer_stores, name, depth, direction, asked, granularity, t_before, now),
            _walk_edges(layer_stores, name, depth, direction, asked, granularity, t_after, now),
        )
        failures = f_before + [f for f in f_after if f not in f_before]
        e_before.update(await _edges_from(layer_stores, asked, set(e_after) - set(e_before), granularity,
                                          t_before, now))
        e_after.update(await _edges_from(layer_stores, asked, set(e_before) - set(e_after), granularity,
                                         t_after, now))
        for k in sorted(set(e_before) | set(e_after)):
            got = compare(k, e_before.get(k), e_after.get(k), window, th)
            if got is not None:
                found[got[0]].append(got[1])
        services = n_before | n_after
    else:
        failures, scanned = [], 0
        while first > 0:
            pb, pa = await asyncio.gather(
                flat_graph(layer_stores, layers=asked, granularity=granularity, time=t_before, now=now,
                           first=_BATCH, after=cursor),
                flat_graph(layer_stores, layers=asked, granularity=granularity, time=t_after, now=now,
                           first=_BATCH, after=cursor),
            )
            for f in (*pb.failures, *pa.failures):
                if f not in failures:
                    failures.append(f)
            horizons = [p.edges[-1].key for p in (pb, pa) if p.has_next and p.edges]
            horizon = min(horizons) if horizons else None
            eb, ea = _index(pb.edges), _index(pa.edges)
            keys = sorted(k for k in set(eb) | set(ea) if horizon is None or k <= horizon)
            full = False
            for i, k in enumerate(keys):
                got = compare(k, eb.get(k), ea.get(k), window, th)
                if got is not None:
                    found[got[0]].append(got[1])
                cursor = k
                if sum(map(len, found.values())) >= first:
                    full = True
                    has_next = i + 1 < len(keys) or horizon is not None
                    break
            scanned += len(keys)
            if full or horizon is None:
                break
            if scanned >= _MAX_SCANNED:
                has_next = True
                break
        services = {n for entries in found.values() for d in entries for n in d.key}
    changes = await catalog.changes(sorted(services), before_end - window, after_end, MAX_CHANGES) \
        if services else []
    return TopologyDiff(
        before=t_before, after=t_after,
        added=tuple(found["added"]), removed=tuple(found["removed"]), changed=tuple(found["changed"]),
        services=tuple(sorted(services)), changes=tuple(changes), failures=tuple(failures),
        has_next=has_next, end_cursor=cursor,
    )

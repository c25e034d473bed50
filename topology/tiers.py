"""Tier chains: a critical service must not depend on a less critical one, anywhere down the chain.

For every service of tier <= ``tier`` (0 = most critical), walk its dependencies (transitively
upstream, ``depth`` hops, every requested layer merged) and report each dependency whose tier is
*less critical* than the service's own (a larger number) or unknown (no catalog entry or no tier),
with the shortest path to it and, for each edge of the path, the layers that saw it. Virtual nodes
(databases, brokers, external hosts) have no tier of their own and are not reported; a chain passes
through them. Results are ordered by (service, dependency) and paged by that key.

Pure apart from the store interface.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from topology.model import Direction, Granularity, Layer
from topology.query import LayerFailure, traverse
from topology.store.base import CatalogStore, LayerStore, ServiceFilter
from topology.timewindow import TimeRange

__all__ = ["TierViolation", "TierViolations", "tier_violations"]

#: Services listed from the catalog per round while a page fills.
_BATCH = 64


@dataclass(frozen=True, slots=True)
class TierViolation:
    service: str
    service_tier: int
    dependency: str
    dependency_tier: int | None  # None: unknown
    path: tuple[str, ...]  # service ... dependency, the shortest (ties: smallest names)
    path_layers: tuple[tuple[Layer, ...], ...]  # per edge of the path: the layers that saw it

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.dependency)


@dataclass(frozen=True, slots=True)
class TierViolations:
    violations: tuple[TierViolation, ...]
    has_next: bool
    end_cursor: tuple[str, str] | None
    failures: tuple[LayerFailure, ...]


async def tier_violations(
    layer_stores: Mapping[Layer, LayerStore],
    catalog: CatalogStore,
    *,
    tier: int,
    depth: int,
    time: TimeRange,
    now: float,
    layers: Iterable[Layer] | None = None,
    first: int = 100,
    after: tuple[str, str] | None = None,
) -> TierViolations:
    """One page of violations (see the module docstring), strictly after ``after``."""
    if tier < 0:
        raise ValueError(f"tier must be >= 0, got {tier}")
    asked = None if layers is None else tuple(layers)
    flt = ServiceFilter(tiers=frozenset(range(tier + 1)))
    out: list[TierViolation] = []
    failures: list[LayerFailure] = []

    async def collect(name: str) -> None:
        found, failed = await _violations_of(layer_stores, catalog, name, depth, asked, time, now)
        failures.extend(f for f in failed if f not in failures)
        out.extend(v for v in found if after is None or v.key > after)

    if after is not None:
        info = (await catalog.services([after[0]])).get(after[0])
        if info is not None and info.tier is not None and info.tier <= tier:
            await collect(after[0])  # the rest of the service the last page stopped in
    cursor = None if after is None else after[0]
    while len(out) <= first:
        names = await catalog.list_names(flt, Granularity.APP, _BATCH, cursor)
        for name in names:
            await collect(name)
            cursor = name
            if len(out) > first:
                break
        if len(names) < _BATCH:
            break
    page = out[:first]
    return TierViolations(tuple(page), len(out) > first, page[-1].key if page else after, tuple(failures))


async def _violations_of(
    layer_stores: Mapping[Layer, LayerStore], catalog: CatalogStore, name: str, depth: int,
    layers: tuple[Layer, ...] | None, time: TimeRange, now: float,
) -> tuple[list[TierViolation], tuple[LayerFailure, ...]]:
    walk = await traverse(layer_stores, [name], Direction.UPSTREAM, depth, layers=layers, time=time, now=now,
                          with_stats=False)
    reached = {d.name: d for d in walk.reached}
    infos = await catalog.services([name, *reached])
    own = infos.get(name)
    if own is None or own.tier is None:
        return [], walk.failures
    out: list[TierViolation] = []
    for dep in sorted(reached):
        info = infos.get(dep)
        if info is None and reached[dep].kind.virtual:
            continue  # a database or another virtual node: no tier of its own
        dep_tier = None if info is None else info.tier
        if dep_tier is not None and dep_tier <= own.tier:
            continue
        path = [dep]
        while path[-1] != name:
            path.append(reached[path[-1]].via)
        path.reverse()
        layers_of = tuple(reached[n].edge.layers for n in path[1:])
        out.append(TierViolation(name, own.tier, dep, dep_tier, tuple(path), layers_of))
    return out, walk.failures

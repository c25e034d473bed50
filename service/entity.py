"""The ``Service`` federation entity and the types that lead back to it (dependencies, connections,
blast radius, the flat graph).

A ``Service`` object is only a name (plus hints): each field looks its data up through the
request's DataLoaders, so a list of a thousand services costs one catalog call, not a thousand.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import quote

import strawberry

from service.arguments import (
    check_depth,
    check_first,
    check_layers,
    decode_cursor,
    encode_cursor,
    time_bounds,
    time_range,
    to_set,
)
from service.config import LINK_KINDS
from service.context import RequestContext, context_of
from service.selection import selects
from service.types import (
    ChangeEvent,
    Duration,
    HealthStatus,
    LayerFailure,
    Links,
    Owner,
    PageInfo,
    TopologyEdge,
    TraceSummary,
    epoch_to_datetime,
)
from topology import query
from topology.catalog import HealthState
from topology.model import ALL_LAYERS, Direction, Granularity, Layer, NodeKind

__all__ = [
    "BlastRadius",
    "Dependency",
    "DependencyConnection",
    "Service",
    "ServiceConnection",
    "TopologyGraph",
    "dependency_connection",
    "failed_layers",
    "page_slice",
]

_T = TypeVar("_T")

#: How far back ``Service.changes`` looks when ``from`` is not given (seconds).
CHANGES_SPAN = 86_400.0


# -- paging ----------------------------------------------------------------------------------------
def page_slice(
    items: Sequence[_T], key: Callable[[_T], Any], first: int, after: Any | None
) -> tuple[Sequence[_T], bool, bool]:
    """Items (sorted by ``key``) strictly after ``after``, at most ``first``; has next/previous."""
    start = 0 if after is None else bisect.bisect_right([key(i) for i in items], after)
    page = items[start:start + first]
    return page, start + first < len(items), start > 0


def failed_layers(failures: Sequence[query.LayerFailure]) -> list[LayerFailure]:
    return [LayerFailure(layer=f.layer, message=f.message) for f in failures]


# -- the entity ------------------------------------------------------------------------------------
@strawberry.federation.type(
    keys=["name"],
    description="A service (an app, a cluster of it, or a virtual node such as a database) in the topology.",
)
class Service:
    name: str
    kind_hint: strawberry.Private[NodeKind | None] = None
    at: strawberry.Private[float | None] = None  # the instant the query asked about (health)

    @classmethod
    async def resolve_reference(cls, info: strawberry.Info, name: str) -> Service | None:
        ctx = context_of(info)
        return cls(name=name) if await ctx.loaders.known.load(name) else None

    @strawberry.field(description="0 = most critical; null when the catalog does not say.")
    async def tier(self, info: strawberry.Info) -> int | None:
        entry = await context_of(info).service_info(self.name)
        return None if entry is None else entry.tier

    @strawberry.field(description="Business domain, e.g. payments.")
    async def domain(self, info: strawberry.Info) -> str | None:
        entry = await context_of(info).service_info(self.name)
        return None if entry is None else entry.domain

    @strawberry.field(description="SERVICE for a workload; any other kind is a virtual node.")
    async def kind(self, info: strawberry.Info) -> NodeKind:
        return await self._kind(context_of(info))

    @strawberry.field(description="True for virtual nodes (seen only from their peers).")
    async def virtual(self, info: strawberry.Info) -> bool:
        return (await self._kind(context_of(info))).virtual

    async def _kind(self, ctx: RequestContext) -> NodeKind:
        node = await ctx.loaders.nodes.load(self.name)
        if node is not None:
            return node.kind
        return self.kind_hint or NodeKind.SERVICE

    @strawberry.field(description="APP or CLUSTER.")
    async def granularity(self, info: strawberry.Info) -> Granularity:
        node = await context_of(info).loaders.nodes.load(self.name)
        return Granularity.APP if node is None else node.granularity

    @strawberry.field(description="For a CLUSTER node: the app it belongs to.")
    async def app(self, info: strawberry.Info) -> str | None:
        node = await context_of(info).loaders.nodes.load(self.name)
        return None if node is None else node.app

    @strawberry.field
    async def owner(self, info: strawberry.Info) -> Owner | None:
        entry = await context_of(info).service_info(self.name)
        return None if entry is None or entry.owner is None else Owner.from_core(entry.owner)

    @strawberry.field(description="Latest health event at `at` (default: the time the query asked about).")
    async def health_status(self, info: strawberry.Info, at: datetime | None = None) -> HealthStatus:
        ctx = context_of(info)
        when = ctx.now if self.at is None else self.at
        if at is not None:
            _, when = time_range(at, None, ctx.now, ctx.config)
        status = await ctx.loaders.health.load((self.name, when))
        if status is None:
            return HealthStatus(status=HealthState.UNKNOWN, reason=None, since=None)
        return HealthStatus(status=status.status, reason=status.reason, since=epoch_to_datetime(status.since))

    @strawberry.field(description="The layers this node was seen in.")
    async def layers(self, info: strawberry.Info) -> list[Layer]:
        node = await context_of(info).loaders.nodes.load(self.name)
        if node is None:
            return []
        return [layer for layer in ALL_LAYERS if layer in node.layers]

    @strawberry.field(description="Deployments of this app known to the catalog.")
    async def clusters(self, info: strawberry.Info) -> list[str]:
        entry = await context_of(info).loaders.catalog.load(self.name)
        return [] if entry is None else list(entry.clusters)

    @strawberry.field(description="Links to this service's logs, traces and metrics.")
    async def links(self, info: strawberry.Info) -> Links:
        ctx = context_of(info)
        entry = await ctx.service_info(self.name)
        overrides = {} if entry is None else entry.links
        rendered: dict[str, str | None] = {}
        for kind in LINK_KINDS:
            template = overrides.get(kind) or ctx.config.link_template(kind)
            rendered[kind] = None if template is None else template.replace(
                "{service}", quote(self.name, safe="")
            )
        return Links(**rendered)

    @strawberry.field(description="Recent traces this service took part in, newest first.")
    async def traces(self, info: strawberry.Info, first: int = 10) -> list[TraceSummary]:
        ctx = context_of(info)
        n = check_first(first, ctx.config)
        found = await ctx.stores.catalog.recent_traces(self.name, n) if n else []
        return [TraceSummary.from_core(t) for t in found]

    @strawberry.field(description="Change events of this service (deploys, configuration changes, ...) "
                      "between `from` (default: a day before `to`) and `to` (default: the time the query "
                      "asked about), newest first.")
    async def changes(
        self,
        info: strawberry.Info,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        first: int | None = None,
    ) -> list[ChangeEvent]:
        ctx = context_of(info)
        n = check_first(first, ctx.config)
        lo, hi = time_bounds(from_, to, ctx.now if self.at is None else self.at, CHANGES_SPAN, ctx.config)
        found = await ctx.stores.catalog.changes([self.name], lo, hi, n) if n else []
        return [ChangeEvent.from_core(e) for e in found]

    @strawberry.field(description="What this service calls, transitively, up to `depth` hops. "
                      "`tier`/`domain` choose the services returned; the walk passes through the rest.")
    async def upstream(
        self,
        info: strawberry.Info,
        depth: int = 1,
        tier: list[int] | None = None,
        domain: list[str] | None = None,
        layers: list[Layer] | None = None,
        at: datetime | None = None,
        window: Duration | None = None,
        granularity: Granularity = Granularity.APP,
        first: int | None = None,
        after: str | None = None,
    ) -> DependencyConnection:
        return await self._walk(info, Direction.UPSTREAM, depth, tier, domain, layers, at, window,
                                granularity, first, after)

    @strawberry.field(description="What calls this service, transitively, up to `depth` hops. "
                      "`tier`/`domain` choose the services returned; the walk passes through the rest.")
    async def downstream(
        self,
        info: strawberry.Info,
        depth: int = 1,
        tier: list[int] | None = None,
        domain: list[str] | None = None,
        layers: list[Layer] | None = None,
        at: datetime | None = None,
        window: Duration | None = None,
        granularity: Granularity = Granularity.APP,
        first: int | None = None,
        after: str | None = None,
    ) -> DependencyConnection:
        return await self._walk(info, Direction.DOWNSTREAM, depth, tier, domain, layers, at, window,
                                granularity, first, after)

    async def _walk(
        self,
        info: strawberry.Info,
        direction: Direction,
        depth: int,
        tier: list[int] | None,
        domain: list[str] | None,
        layers: list[Layer] | None,
        at: datetime | None,
        window: float | None,
        granularity: Granularity,
        first: int | None,
        after: str | None,
    ) -> DependencyConnection:
        ctx = context_of(info)
        cfg = ctx.config
        depth = check_depth(depth, cfg)
        n = check_first(first, cfg)
        asked = check_layers(layers)
        tiers = to_set(tier, "tier")
        domains = to_set(domain, "domain")
        rng, at_s = time_range(at, window, ctx.now, cfg)
        after_key = None if after is None else decode_cursor(after, "dep", (int, str))
        roots = await _roots(ctx, self.name, granularity)
        walk = await query.traverse(
            ctx.stores.layers, roots, direction, depth,
            layers=asked, granularity=granularity, time=rng, now=ctx.now,
            with_stats=(with_stats := selects(info, "perLayer")), stats_on_fetch=True,
        )
        ctx.report(info, walk.failures)
        deps: Sequence[query.Dependency] = walk.reached
        if tiers is not None or domains is not None:
            deps = await filter_dependencies(ctx, deps, tiers, domains)
        if with_stats:  # a remote store's walk read none: the page's are read now
            page, _, _ = page_slice(deps, _DEP_ORDER, n, after_key)
            await walk.fetch_edges(page)
        return dependency_connection(deps, n, after_key, rng.seconds, at_s, walk, info)


async def _roots(ctx: RequestContext, name: str, granularity: Granularity) -> list[str]:
    if granularity is Granularity.APP:
        return [name]
    node = await ctx.loaders.nodes.load(name)
    if node is not None and node.granularity is Granularity.CLUSTER:
        return [name]
    entry = await ctx.loaders.catalog.load(name)
    return list(entry.clusters) if entry is not None and entry.clusters else [name]


async def filter_dependencies(
    ctx: RequestContext,
    deps: Sequence[query.Dependency],
    tiers: frozenset[int] | None,
    domains: frozenset[str] | None,
) -> list[query.Dependency]:
    infos = await asyncio.gather(*(ctx.service_info(d.name) for d in deps))
    return [d for d, i in zip(deps, infos, strict=True) if query.matches_filter(i, tiers, domains)]


# -- dependencies ----------------------------------------------------------------------------------
@strawberry.type(description="A service reached by a traversal.")
class Dependency:
    depth: int = strawberry.field(description="Hops from the service asked about (1 = direct).")
    via: str = strawberry.field(description="The service it was reached through (the root at depth 1).")
    service: Service
    # built with the page (a plain field: far cheaper to execute than a resolver, ~100 per page)
    edge: TopologyEdge = strawberry.field(description="The edge between `via` and this service.")


@strawberry.type
class DependencyEdge:
    cursor: str
    node: Dependency


@strawberry.type(description="A page of dependencies, ordered by (depth, name).")
class DependencyConnection:
    edges: list[DependencyEdge]
    page_info: PageInfo
    total_count: int = strawberry.field(description="Dependencies matching the filters, on all pages.")
    layers: list[Layer] = strawberry.field(description="The layers that answered.")
    failed_layers: list[LayerFailure] = strawberry.field(description="The layers that did not.")


def _DEP_ORDER(d: query.Dependency) -> tuple[int, str]:
    return (d.depth, d.name)


def dependency_connection(
    deps: Sequence[query.Dependency],
    first: int,
    after: tuple[str | int, ...] | None,
    range_seconds: float,
    at: float,
    walk: query.UnifiedTraversal,
    info: strawberry.Info | None = None,
) -> DependencyConnection:
    """A page of ``deps``. With ``info`` (the field being resolved), what nobody selected below it is
    not built: the edges' cursors, and the merged edges (with the kinds they carry) when neither
    ``edge`` nor a service's ``kind``/``virtual`` is asked for (those fields are then never read)."""
    page, has_next, has_prev = page_slice(deps, _DEP_ORDER, first, after)
    cursors = info is None or selects(info, "cursor")
    merged = info is None or selects(info, "edge") or selects(info, "kind") or selects(info, "virtual")
    unread = cast(TopologyEdge, None)
    edges = [
        DependencyEdge(
            cursor=encode_cursor("dep", d.depth, d.name) if cursors else "",
            node=Dependency(
                depth=d.depth,
                via=d.via,
                service=Service(name=d.name, kind_hint=d.kind if merged else None, at=at),
                edge=TopologyEdge.from_merged(d.edge, range_seconds) if merged else unread,
            ),
        )
        for d in page
    ]
    return DependencyConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_prev,
            start_cursor=encode_cursor("dep", page[0].depth, page[0].name) if page else None,
            end_cursor=encode_cursor("dep", page[-1].depth, page[-1].name) if page else None,
        ),
        total_count=len(deps),
        layers=list(walk.answered),
        failed_layers=failed_layers(walk.failures),
    )


@strawberry.type
class ServiceEdge:
    cursor: str
    node: Service


@strawberry.type(description="A page of services, ordered by name.")
class ServiceConnection:
    edges: list[ServiceEdge]
    page_info: PageInfo


# -- blast radius ----------------------------------------------------------------------------------
@strawberry.type(description="How many affected services have a tier (null: the catalog gives none).")
class TierCount:
    tier: int | None
    count: int


@strawberry.type(description="A team owning affected services, with how to reach it.")
class TeamToNotify:
    team: str
    email: str | None
    chat: str | None
    oncall: str | None
    services: list[str]


@strawberry.type(description="Everything that transitively calls a service, and who to tell.")
class BlastRadius:
    service: Service
    depth: int
    total: int = strawberry.field(description="Affected services (matching the filters).")
    counts_by_tier: list[TierCount]
    teams: list[TeamToNotify] = strawberry.field(description="Teams to notify, by name.")
    unowned: list[str] = strawberry.field(description="Affected services without an owner in the catalog.")
    layers: list[Layer]
    failed_layers: list[LayerFailure]
    result: strawberry.Private[query.BlastRadius]
    range_seconds: strawberry.Private[float]
    at: strawberry.Private[float]

    @strawberry.field(description="The affected services, ordered by (depth, name).")
    async def services(self, info: strawberry.Info, first: int | None = None,
                       after: str | None = None) -> DependencyConnection:
        ctx = context_of(info)
        n = check_first(first, ctx.config)
        after_key = None if after is None else decode_cursor(after, "dep", (int, str))
        page, _, _ = page_slice(self.result.affected, _DEP_ORDER, n, after_key)
        await self.result.traversal.fetch_edges(page)  # the walk may have read names only
        return dependency_connection(self.result.affected, n, after_key, self.range_seconds, self.at,
                                     self.result.traversal, info)

    @classmethod
    def build(cls, r: query.BlastRadius, depth: int, range_seconds: float, at: float) -> BlastRadius:
        return cls(
            service=Service(name=r.root, at=at),
            depth=depth,
            total=len(r.affected),
            counts_by_tier=[TierCount(tier=t, count=c) for t, c in r.by_tier],
            teams=[
                TeamToNotify(team=t.owner.team, email=t.owner.email, chat=t.owner.chat,
                             oncall=t.owner.oncall, services=list(t.services))
                for t in r.teams
            ],
            unowned=list(r.unowned),
            layers=list(r.traversal.answered),
            failed_layers=failed_layers(r.traversal.failures),
            result=r,
            range_seconds=range_seconds,
            at=at,
        )


# -- flat graph ------------------------------------------------------------------------------------
@strawberry.type(description="A flat, bounded page of the merged graph, for drawing.")
class TopologyGraph:
    nodes: list[Service] = strawberry.field(description="The ends of this page's edges, by name.")
    edges: list[TopologyEdge] = strawberry.field(description="Ordered by (source, target).")
    truncated: bool = strawberry.field(description="True when more edges follow (see pageInfo).")
    page_info: PageInfo
    layers: list[Layer]
    failed_layers: list[LayerFailure]

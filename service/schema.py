"""The GraphQL schema: ``Query`` and the federated ``Schema`` around it.

``schema`` (module level) is built with the default configuration; its SDL is what
``schema.graphql`` at the repository root holds. Regenerate that file with::

    python -m service.schema > schema.graphql
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from service.answers import Outcomes
from service.arguments import (
    check_depth,
    check_first,
    check_layers,
    decode_cursor,
    encode_cursor,
    time_range,
    to_set,
)
from service.bounds import DocumentChecks, InputBounds, within_budget
from service.config import ServiceConfig
from service.context import context_of
from service.documents import DocumentCache, ParsedDocuments
from service.entity import (
    BlastRadius,
    Service,
    ServiceConnection,
    ServiceEdge,
    TopologyGraph,
    failed_layers,
)
from service.errors import ApiError, BadUserInput, ErrorCodes
from service.execution import PlainExecution
from service.feed import TopologyChange
from service.feed import topology_changes as feed_changes
from service.incident import RootCauseReport, TierViolationPage, TopologyDiff, UnknownPeerPage
from service.known import require_known
from service.selection import selects
from service.traces import Trace, load_trace
from service.types import SCALAR_MAP, Duration, PageInfo, TopologyEdge
from topology import diff as core_diff
from topology import peers as core_peers
from topology import query
from topology import rootcause as core_rc
from topology import tiers as core_tiers
from topology.diff import DiffDirection
from topology.model import Granularity, Layer
from topology.store.base import ServiceFilter as CoreServiceFilter

__all__ = ["Query", "ServiceFilter", "Subscription", "build_schema", "schema"]

FEDERATION_VERSION = "2.9"  # the newest version Hive/Guild composition accepts (see graphql.md)
DIFF_DEPTH = 3  # hops compared by diff when the query does not say
ROOT_CAUSE_DEPTH = 6  # hops rootCause looks upstream when the query does not say
ROOT_CAUSE_WINDOW = 600.0  # seconds of the window rootCause examines when the query does not say
ROOT_CAUSE_FIRST = 5  # candidates rootCause lists when the query does not say
DOCUMENT_CACHE = 256  # validated documents kept (bounded: clients send any text)


@strawberry.input(description="Which services to list. Every field narrows the list; leave out for all.")
class ServiceFilter:
    tier: list[int] | None = None
    domain: list[str] | None = None
    owner_team: str | None = None
    layers: list[Layer] | None = strawberry.field(default=None, description="Seen in any of these layers.")
    name_prefix: str | None = None


@strawberry.type
class Query:
    @strawberry.field(description="A service by name (an app, a cluster or a virtual node); null if unknown "
                      "(with a NOT_FOUND error whose `extensions.suggestions` lists the closest names).")
    async def service(self, info: strawberry.Info, name: str) -> Service | None:
        await require_known(context_of(info), name)
        return Service(name=name)

    @strawberry.field(description="One recent trace on the map: the nodes it went through, the calls between "
                      "them and its spans, from the store of recent traces (`TOPOLOGY_TRACE_STORE_SIZE` "
                      "traces, `TOPOLOGY_TRACE_RETENTION` behind the newest). `traceId`: 32 hex digits "
                      "(BAD_USER_INPUT otherwise). Null when the trace is not kept.")
    async def trace(self, info: strawberry.Info, trace_id: str) -> Trace | None:
        return await load_trace(info, trace_id)

    @strawberry.field(description="Services known to the catalog or seen in traffic, ordered by name.")
    async def services(
        self,
        info: strawberry.Info,
        filter: ServiceFilter | None = None,
        granularity: Granularity = Granularity.APP,
        first: int | None = None,
        after: str | None = None,
    ) -> ServiceConnection:
        ctx = context_of(info)
        n = check_first(first, ctx.config)
        f = filter or ServiceFilter()
        flt = CoreServiceFilter(
            tiers=to_set(f.tier, "tier"),
            domains=to_set(f.domain, "domain"),
            owner_team=f.owner_team,
            layers=None if f.layers is None else frozenset(check_layers(f.layers) or ()),
            name_prefix=f.name_prefix,
        )
        after_name = None if after is None else str(decode_cursor(after, "svc", (str,))[0])
        names = await ctx.stores.catalog.list_names(flt, granularity, n + 1, after_name) if n else []
        page = names[:n]
        edges = [ServiceEdge(cursor=encode_cursor("svc", name), node=Service(name=name)) for name in page]
        return ServiceConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=len(names) > n,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )

    @strawberry.field(description="Everything that transitively calls `name` (up to `depth` hops, default "
                      "the maximum), counted by tier, with the owning teams to notify. Null if the service "
                      "is unknown (with NOT_FOUND and `extensions.suggestions`).")
    async def blast_radius(
        self,
        info: strawberry.Info,
        name: str,
        depth: int | None = None,
        layers: list[Layer] | None = None,
        tier: list[int] | None = None,
        domain: list[str] | None = None,
        at: datetime | None = None,
        window: Duration | None = None,
    ) -> BlastRadius | None:
        ctx = context_of(info)
        cfg = ctx.config
        d = check_depth(cfg.max_depth if depth is None else depth, cfg)
        asked = check_layers(layers)
        tiers = to_set(tier, "tier")
        domains = to_set(domain, "domain")
        rng, at_s = time_range(at, window, ctx.now, cfg)
        await require_known(ctx, name)
        result = await query.blast_radius(
            ctx.stores.layers, ctx.stores.catalog, name, d,
            layers=asked, time=rng, now=ctx.now,
            tiers=tiers, domains=domains, with_stats=selects(info, "perLayer"),
        )
        if selects(info, "services"):  # the catalog answers are already here: keep them for that page
            for dep in result.traversal.reached:
                ctx.loaders.catalog.prime(dep.name, result.infos.get(dep.name))
        ctx.report(info, result.traversal.failures)
        return BlastRadius.build(result, d, rng.seconds, at_s)

    @strawberry.field(description="A flat page of the merged graph (edges by source, target) for drawing. "
                      "`tier`/`domain` keep the edges whose two ends match.")
    async def topology(
        self,
        info: strawberry.Info,
        layers: list[Layer] | None = None,
        tier: list[int] | None = None,
        domain: list[str] | None = None,
        at: datetime | None = None,
        window: Duration | None = None,
        granularity: Granularity = Granularity.APP,
        first: int | None = None,
        after: str | None = None,
    ) -> TopologyGraph:
        ctx = context_of(info)
        cfg = ctx.config
        n = check_first(first, cfg)
        asked = check_layers(layers)
        tiers = to_set(tier, "tier")
        domains = to_set(domain, "domain")
        rng, at_s = time_range(at, window, ctx.now, cfg)
        after_key: tuple[str, str] | None = None
        if after is not None:
            src, dst = decode_cursor(after, "edge", (str, str))
            after_key = (str(src), str(dst))

        select: Callable[[Sequence[str]], Any] | None = None
        if tiers is not None or domains is not None:

            async def select(names: Sequence[str]) -> set[str]:
                infos = await asyncio.gather(*(ctx.service_info(x) for x in names))
                return {
                    x for x, i in zip(names, infos, strict=True)
                    if query.matches_filter(i, tiers, domains)
                }

        graph = await query.flat_graph(
            ctx.stores.layers, layers=asked, granularity=granularity, time=rng, now=ctx.now,
            first=n, after=after_key, select=select,
        )
        ctx.report(info, graph.failures)
        end = encode_cursor("edge", *graph.edges[-1].key) if graph.edges else None
        start = encode_cursor("edge", *graph.edges[0].key) if graph.edges else None
        answered = [x for x in (asked or list(Layer)) if x not in {f.layer for f in graph.failures}]
        return TopologyGraph(
            nodes=[Service(name=name, kind_hint=kind, at=at_s) for name, kind in graph.nodes],
            edges=[TopologyEdge.from_merged(e, rng.seconds) for e in graph.edges],
            truncated=graph.has_next,
            page_info=PageInfo(has_next_page=graph.has_next, has_previous_page=after is not None,
                               start_cursor=start, end_cursor=end),
            layers=answered,
            failed_layers=failed_layers(graph.failures),
        )


    @strawberry.field(description="What changed on the call path of `name` (within `depth` hops, default "
                      "3, in `direction`), or in the whole graph (paged by edge) when `name` is null: the "
                      "window ending at `from` against the window of the same length ending at `to` (default "
                      "now). Null (with NOT_FOUND) when `name` is unknown.")
    async def diff(
        self,
        info: strawberry.Info,
        name: str | None = None,
        depth: int | None = None,
        direction: DiffDirection = DiffDirection.BOTH,
        layers: list[Layer] | None = None,
        *,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime | None = None,
        window: Duration | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> TopologyDiff | None:
        ctx = context_of(info)
        cfg = ctx.config
        d = check_depth(DIFF_DEPTH if depth is None else depth, cfg)
        n = check_first(first, cfg)
        asked = check_layers(layers)
        before, at_before = time_range(from_, window, ctx.now, cfg)
        _, at_after = time_range(to, window, ctx.now, cfg)
        if at_before > at_after:
            raise BadUserInput("from must not be after to", "from")
        after_key: tuple[str, str] | None = None
        if after is not None:
            src, dst = decode_cursor(after, "diff", (str, str))
            after_key = (str(src), str(dst))
        if name is not None:
            await require_known(ctx, name)
        result = await core_diff.diff(
            ctx.stores.layers, ctx.stores.catalog, name, depth=d, direction=direction, layers=asked,
            before_end=at_before, after_end=at_after, window=before.seconds, now=ctx.now,
            first=n, after=after_key,
        )
        ctx.report(info, result.failures)
        key = result.end_cursor
        cursor = None if key is None or name is not None else encode_cursor("diff", *key)
        return TopologyDiff.build(result, name, list(asked or Layer), cursor, after is not None)


    @strawberry.field(description="Where the source of `name`'s symptoms is: the services it depends on "
                      "(within `depth` hops, default 6) ranked by how well they explain what it suffers in "
                      "the `window` (default 10m) ending at `at` (default now), against the four windows "
                      "before. "
                      "Null (with NOT_FOUND) when `name` is unknown.")
    async def root_cause(
        self,
        info: strawberry.Info,
        name: str,
        at: datetime | None = None,
        window: Duration | None = None,
        depth: int | None = None,
        layers: list[Layer] | None = None,
        first: int | None = None,
    ) -> RootCauseReport | None:
        ctx = context_of(info)
        cfg = ctx.config
        d = check_depth(ROOT_CAUSE_DEPTH if depth is None else depth, cfg)
        n = check_first(ROOT_CAUSE_FIRST if first is None else first, cfg)
        asked = check_layers(layers)
        rng, at_s = time_range(at, ROOT_CAUSE_WINDOW if window is None else window, ctx.now, cfg)
        await require_known(ctx, name)
        report = await core_rc.root_cause(
            ctx.stores.layers, ctx.stores.catalog, name, at=at_s, window=rng.seconds, depth=d, now=ctx.now,
            layers=asked, first=n,
        )
        ctx.report(info, report.failures)
        return RootCauseReport.build(report, list(asked or Layer))


    @strawberry.field(description="For every service of tier <= `tier` (0 = most critical), the services "
                      "it depends on (transitively, `depth` hops, default the maximum) whose tier is less "
                      "critical than its own or unknown, each with the shortest path and the layers of its "
                      "edges.")
    async def tier_violations(
        self,
        info: strawberry.Info,
        tier: int = 0,
        depth: int | None = None,
        layers: list[Layer] | None = None,
        at: datetime | None = None,
        window: Duration | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> TierViolationPage:
        ctx = context_of(info)
        cfg = ctx.config
        if tier < 0:
            raise BadUserInput(f"tier must be >= 0, got {tier}", "tier")
        d = check_depth(cfg.max_depth if depth is None else depth, cfg)
        n = check_first(first, cfg)
        asked = check_layers(layers)
        rng, at_s = time_range(at, window, ctx.now, cfg)
        after_key: tuple[str, str] | None = None
        if after is not None:
            svc, dep = decode_cursor(after, "tier", (str, str))
            after_key = (str(svc), str(dep))
        page = await core_tiers.tier_violations(
            ctx.stores.layers, ctx.stores.catalog, tier=tier, depth=d, time=rng, now=ctx.now, layers=asked,
            first=n, after=after_key,
        )
        ctx.report(info, page.failures)
        cursor = None if page.end_cursor is None else encode_cursor("tier", *page.end_cursor)
        return TierViolationPage.build(page, at_s, list(asked or Layer), cursor, after is not None)


    @strawberry.field(description="The remote addresses (and ports) the NETWORK layer could not attribute to "
                      "any owner in the `window` ending at `at`, with the local workloads that talked to "
                      "them, ordered by address, and the nearest leases of each address that did not cover "
                      "its traffic (`leaseBefore`, `leaseAfter`).")
    async def unknown_peers(
        self,
        info: strawberry.Info,
        at: datetime | None = None,
        window: Duration | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> UnknownPeerPage:
        ctx = context_of(info)
        n = check_first(first, ctx.config)
        rng, at_s = time_range(at, window, ctx.now, ctx.config)
        after_name = None if after is None else str(decode_cursor(after, "peer", (str,))[0])
        page = await core_peers.unknown_peers(ctx.stores.layers, time=rng, now=ctx.now, first=n,
                                              after=after_name, catalog=ctx.stores.catalog)
        ctx.report(info, page.failures)
        cursor = None if page.end_cursor is None else encode_cursor("peer", page.end_cursor)
        return UnknownPeerPage.build(page, at_s, cursor, after is not None)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="What changes in the neighbourhood of `service` (`depth` hops, "
                             "default 2, both ways; the whole graph without `service`) as new traffic is "
                             "written: edges added and removed, health changes. Nothing is sent while "
                             "nothing changes. Bounded per connection and per server (LIMIT_EXCEEDED).")
    async def topology_changes(
        self,
        info: strawberry.Info,
        service: str | None = None,
        depth: int | None = None,
        layers: list[Layer] | None = None,
    ) -> AsyncGenerator[TopologyChange, None]:
        try:
            async for change in feed_changes(info, service, depth, layers):
                yield change
        except ApiError as e:  # a subscription's errors do not pass ErrorCodes: the code is set here
            raise GraphQLError(str(e), extensions={**e.extensions, "code": e.code}) from e


class _Schema(strawberry.federation.Schema):
    budget = ServiceConfig().operation_timeout

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Every operation within its time budget (:func:`service.bounds.within_budget`)."""
        context = kwargs.get("context_value", args[2] if len(args) > 2 else None)
        return await within_budget(lambda: super(_Schema, self).execute(*args, **kwargs), self.budget,
                                   getattr(context, "on_error", None))

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Logging and counting happen in :class:`service.errors.ErrorCodes` (with the final codes)."""


def build_schema(
    config: ServiceConfig | None = None, extra_extensions: Sequence[Callable[[], SchemaExtension]] = ()
) -> strawberry.federation.Schema:
    """The schema with the configured limits; ``extra_extensions`` (e.g. tracing, metrics) wrap the
    limits and the error policy, so they see each operation's final errors."""
    cfg = config or ServiceConfig()
    # The limiters' rule classes are made once, so a document validated once is valid from the cache
    # (the cache is keyed by the document and the rule classes).
    rules = [
        *QueryDepthLimiter(max_depth=cfg.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=cfg.max_aliases).validation_rules,
    ]
    documents = DocumentCache(DOCUMENT_CACHE)
    checks = DocumentChecks(DOCUMENT_CACHE)  # the input bounds' walk, once per kept document
    extensions: list[Callable[[], SchemaExtension]] = [
        Outcomes,  # outermost: sees each operation's final errors (what service.answers may keep)
        *extra_extensions,  # operation hooks nest: the first listed exits last
        lambda: MaxTokensLimiter(max_token_count=cfg.max_tokens),
        lambda: AddValidationRules(rules),
        # Not Strawberry's ParserCache: its parse errors escape the operation hooks (no extensions.code).
        # ParsedDocuments keeps only documents that parsed; documents compare by structure, so the
        # validation cache hits as well.
        lambda: ParsedDocuments(documents),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE),
        lambda: InputBounds(max_list=cfg.max_list, max_string=cfg.max_string, max_entities=cfg.max_entities,
                            checks=checks),
        ErrorCodes,
    ]
    built = _Schema(
        query=Query,
        subscription=Subscription,
        types=[Service],
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=True, scalar_map=SCALAR_MAP),
        federation_version=FEDERATION_VERSION,  # type: ignore[arg-type]
        execution_context_class=PlainExecution,  # plain objects completed in one pass
    )
    built.budget = cfg.operation_timeout
    return built


schema = build_schema()


def main() -> int:
    sys.stdout.write(schema.as_str() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

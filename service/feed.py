"""Live updates: ``Subscription.topologyChanges`` over graphql-transport-ws, fed as stage 3 writes.

The server's ingest runtime calls :meth:`ChangeFeed.notify` after every flush that wrote windows
(``Runtime.flushed``). Each subscription keeps a snapshot of its neighbourhood (``service``, ``depth``
hops both ways, ``layers``; the whole graph without ``service``, up to :data:`MAX_WHOLE_EDGES` edges)
and its services' health; on a notification (at most once per :data:`MIN_INTERVAL`, and every
:data:`POLL_INTERVAL` anyway, so edges leaving the live window and writes the runtime does not see, such
as ``serve --kafka``'s workers, are noticed) it reads the neighbourhood again and pushes what changed:
edges added (or seen by other layers than before), edges removed, and the services at the ends of
added edges or whose health changed. Nothing is pushed when nothing changed.

Bounds: ``TOPOLOGY_MAX_SUBSCRIPTIONS`` on the server and ``TOPOLOGY_MAX_CONNECTION_SUBSCRIPTIONS`` on
one WebSocket; beyond them a subscription ends at once with ``extensions.code`` ``LIMIT_EXCEEDED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import strawberry

from service.arguments import check_depth, check_layers, time_range
from service.context import RequestContext, context_of
from service.entity import Service
from service.errors import ApiError
from service.known import require_known
from service.loaders import Loaders
from service.types import TopologyEdge
from topology import query
from topology.model import Direction, Granularity, Layer
from topology.query import MergedEdge

__all__ = ["ChangeFeed", "LimitExceeded", "TopologyChange", "topology_changes"]

log = logging.getLogger("service.feed")

MIN_INTERVAL = 1.0  # seconds between two reads of one subscription's neighbourhood, at least
POLL_INTERVAL = 10.0  # seconds: read again without a notification (window expiry, other writers)
MAX_WHOLE_EDGES = 20_000  # the whole-graph subscription follows at most this many edges
DEFAULT_DEPTH = 2


class LimitExceeded(ApiError):
    code = "LIMIT_EXCEEDED"

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message, limit=limit)


@strawberry.type(description="Two ends of an edge that is no longer seen.")
class EdgeRef:
    source: str
    target: str


@strawberry.type(description="What changed in a subscribed neighbourhood since the last message.")
class TopologyChange:
    at: datetime = strawberry.field(description="When the change was read.")
    edges_added: list[TopologyEdge] = strawberry.field(
        description="Edges new to the neighbourhood, or now seen by other layers than before.")
    edges_removed: list[EdgeRef] = strawberry.field(description="Edges no longer seen in the live window.")
    nodes: list[Service] = strawberry.field(
        description="The ends of the added edges and the services whose health changed.")


class ChangeFeed:
    """Wakes the subscriptions when stage 3 wrote; counts them against the server's bounds."""

    def __init__(self, clock: Callable[[], float], max_total: int, max_per_connection: int) -> None:
        self.clock = clock
        self.max_total = max_total
        self.max_per_connection = max_per_connection
        self.version = 0
        self._event = asyncio.Event()
        self.active = 0
        self._per_connection: dict[int, int] = {}

    def notify(self, *_: Any) -> None:
        """Something was written (call from the server's event loop)."""
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seen: int, at_most: float) -> None:
        """Until a notification after version ``seen``, or ``at_most`` seconds."""
        if self.version != seen:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), at_most)

    @contextlib.contextmanager
    def slot(self, connection: int) -> Iterator[None]:
        if self.active >= self.max_total:
            raise LimitExceeded(f"the server serves at most {self.max_total} subscriptions", self.max_total)
        mine = self._per_connection.get(connection, 0)
        if mine >= self.max_per_connection:
            raise LimitExceeded(f"one connection may hold at most {self.max_per_connection} subscriptions",
                                self.max_per_connection)
        self.active += 1
        self._per_connection[connection] = mine + 1
        try:
            yield
        finally:
            self.active -= 1
            left = self._per_connection[connection] - 1
            if left:
                self._per_connection[connection] = left
            else:
                del self._per_connection[connection]


@dataclass
class _Snapshot:
    edges: dict[tuple[str, str], MergedEdge]
    health: dict[str, str]


async def _read(ctx: RequestContext, service: str | None, depth: int, layers: Sequence[Layer] | None,
                now: float) -> _Snapshot:
    rng, _ = time_range(None, None, now, ctx.config)
    edges: dict[tuple[str, str], MergedEdge] = {}
    if service is not None:
        walks = await asyncio.gather(*(
            query.traverse(ctx.stores.layers, [service], direction, depth, layers=layers,
                           granularity=Granularity.APP, time=rng, now=now)
            for direction in (Direction.UPSTREAM, Direction.DOWNSTREAM)))
        for walk in walks:
            for dep in walk.reached:
                e = dep.edge
                edges[(e.source, e.target)] = e
    else:
        after: tuple[str, str] | None = None
        while len(edges) < MAX_WHOLE_EDGES:
            page = await query.flat_graph(ctx.stores.layers, layers=layers, time=rng, now=now,
                                          first=ctx.config.max_page, after=after)
            edges.update(((e.source, e.target), e) for e in page.edges)
            if not page.has_next:
                break
            after = page.end_cursor
    names = {service} if service else set()
    for src, dst in edges:
        names.update((src, dst))
    health = await ctx.stores.catalog.health(names, now)
    return _Snapshot(edges, {n: h.status.value for n, h in health.items()})


def _diff(old: _Snapshot, new: _Snapshot) -> tuple[list[MergedEdge], list[tuple[str, str]], set[str]]:
    added = [e for k, e in new.edges.items() if k not in old.edges or old.edges[k].layers != e.layers]
    removed = [k for k in old.edges if k not in new.edges]
    touched = {n for e in added for n in (e.source, e.target)}
    touched |= {n for n in new.health.keys() | old.health.keys() if new.health.get(n) != old.health.get(n)}
    return added, removed, touched


async def topology_changes(info: strawberry.Info, service: str | None, depth: int | None,
                           layers: list[Layer] | None) -> AsyncIterator[TopologyChange]:
    ctx = context_of(info)
    feed: ChangeFeed | None = ctx.feed
    if feed is None:
        raise ApiError("this server does not serve live updates")
    d = check_depth(DEFAULT_DEPTH if depth is None else depth, ctx.config)
    asked = check_layers(layers)
    if service is not None:
        await require_known(ctx, service)
    with feed.slot(id(ctx.request)):
        seen = feed.version
        snapshot = await _read(ctx, service, d, asked, feed.clock())
        last = time.monotonic()
        while True:
            await feed.wait(seen, POLL_INTERVAL)
            await asyncio.sleep(max(0.0, MIN_INTERVAL - (time.monotonic() - last)))
            seen = feed.version
            last = time.monotonic()
            now = feed.clock()
            fresh = await _read(ctx, service, d, asked, now)
            added, removed, touched = _diff(snapshot, fresh)
            snapshot = fresh
            if not (added or removed or touched):
                continue
            # The services are resolved with this payload's loaders and time, not the connection's.
            ctx.loaders = Loaders(ctx.stores.catalog, ctx.stores.layers)
            ctx.now = now
            rng_seconds = time_range(None, None, now, ctx.config)[0].seconds
            yield TopologyChange(
                at=datetime.fromtimestamp(now, UTC),
                edges_added=[TopologyEdge.from_merged(e, rng_seconds) for e in added],
                edges_removed=[EdgeRef(source=s, target=t) for s, t in removed],
                nodes=[Service(name=n) for n in sorted(touched)],
            )

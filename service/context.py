"""What every resolver gets in ``info.context``: the stores, the configuration, this request's
loaders and clock reading, and where to report layers that did not answer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import strawberry

from service.config import ServiceConfig
from service.errors import LayerOutage
from service.loaders import Loaders
from topology.catalog import ServiceInfo
from topology.query import LayerFailure
from topology.store.base import Stores

__all__ = ["RequestContext", "context_of"]

log = logging.getLogger("service.context")


@dataclass
class RequestContext:
    stores: Stores
    config: ServiceConfig
    loaders: Loaders
    now: float  # read once per request: every resolver of one query sees the same instant
    request: Any = None
    response: Any = None
    outages: list[LayerOutage] = field(default_factory=list)
    on_error: Callable[[str], None] | None = None
    metrics: Any = None  # service.observability.Metrics, when the app keeps metrics
    connection_params: dict[str, Any] | None = None  # a WebSocket's connection_init payload
    feed: Any = None  # service.feed.ChangeFeed: what wakes Subscription.topologyChanges
    executed: list[tuple[str | None, bool]] = field(default_factory=list)  # (operation, keepable)

    def report(self, info: strawberry.Info, failures: Iterable[LayerFailure]) -> None:
        """Record layers that failed while resolving the field at ``info.path``."""
        path = tuple(info.path.as_list())
        for f in failures:
            self.outages.append(LayerOutage(f.layer, f.message, path))
            if f.expected:
                log.warning("layer unavailable", extra={"layer": f.layer.value, "error": f.message})
            else:
                cause = f.cause
                log.error("layer store failed", extra={"layer": f.layer.value},
                          exc_info=None if cause is None else (type(cause), cause, cause.__traceback__))

    async def service_info(self, name: str) -> ServiceInfo | None:
        """The catalog entry of ``name``, or of the app a CLUSTER node belongs to."""
        info = await self.loaders.catalog.load(name)
        if info is not None:
            return info
        node = await self.loaders.nodes.load(name)
        if node is not None and node.app and node.app != name:
            return await self.loaders.catalog.load(node.app)
        return None


def context_of(info: strawberry.Info) -> RequestContext:
    ctx = info.context
    if not isinstance(ctx, RequestContext):
        raise TypeError("the GraphQL context is not a RequestContext (use service.app.create_app)")
    return ctx

"""Names the API must know: an unknown service name answers null plus the closest known names.

``require_known`` raises :class:`~service.errors.NotFound` (code ``NOT_FOUND``) when the catalog and
the node registry know neither ``name``; the field answers null and the error's
``extensions.suggestions`` lists up to five close names (:func:`topology.suggest.closest`).
"""

from __future__ import annotations

from service.context import RequestContext
from service.errors import NotFound
from topology.model import Granularity
from topology.store.base import ServiceFilter
from topology.suggest import closest

__all__ = ["require_known"]

#: Names read to look for suggestions (a miss only: known names cost one loader call).
MAX_CANDIDATES = 200_000


async def require_known(ctx: RequestContext, name: str, argument: str = "name") -> None:
    if await ctx.loaders.known.load(name):
        return
    candidates: list[str] = []
    for granularity in (Granularity.APP, Granularity.CLUSTER):
        candidates += await ctx.stores.catalog.list_names(ServiceFilter(), granularity, MAX_CANDIDATES, None)
    found = closest(name, dict.fromkeys(candidates))
    hint = f"; did you mean {', '.join(repr(s) for s in found)}?" if found else ""
    raise NotFound(f"no service is named {name[:200]!r}{hint}", argument, found)

"""Writing stage-3 output to the stores: one way, for the in-process runtime and the Kafka stage-3 worker.

The output of stage 3 is edge windows of each layer, the nodes they mention and trace summaries.
Every write is idempotent (a window replaces the stored window with the same key, nodes merge, a
trace summary replaces the one with its id), so writing the same output again after a retry or a
replay changes nothing; except late parts (``late``: windows stage 3 had already forgotten), which
are *added* to the stored windows (:meth:`LayerStore.merge_windows`) after the windows are
written. Layers are written concurrently (they are separate stores); the catalog is written after
them, so a node is registered once its windows are stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from topology.catalog import AddressLease, TraceSummary
from topology.model import EdgeWindow, Granularity, Layer, NodeInfo, NodeKind
from topology.store.base import Stores


async def persist(stores: Stores, windows: Mapping[Layer, Sequence[EdgeWindow]],
                  traces: Sequence[TraceSummary] = (), nodes: Sequence[NodeInfo] | None = None,
                  peer_leases: Sequence[AddressLease] = (),
                  late: Mapping[Layer, Sequence[EdgeWindow]] | None = None) -> int:
    """Write ``windows`` (by layer), their nodes (``nodes_of(windows)`` unless given), ``traces`` and
    the leases next to unattributed traffic (``peer_leases``); returns the windows and traces written.
    A store's error (e.g. ``StoreUnavailable``) is raised after every layer's write has finished, so a
    retry starts from a quiet store."""
    results = await asyncio.gather(
        *(stores.layers[layer].upsert_windows(ws) for layer, ws in windows.items() if ws),
        return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    late = late or {}
    results = await asyncio.gather(
        *(stores.layers[layer].merge_windows(ws) for layer, ws in late.items() if ws), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    nodes = nodes_of(joined(windows, late) if late else windows) if nodes is None else nodes
    if nodes:
        await stores.catalog.register_nodes(nodes)
    if traces:
        await stores.catalog.record_traces(traces)
    if peer_leases:
        await stores.catalog.record_peer_leases(peer_leases)
    return sum(len(ws) for ws in windows.values()) + sum(len(ws) for ws in late.values()) + len(traces)


def joined(a: Mapping[Layer, Sequence[EdgeWindow]],
            b: Mapping[Layer, Sequence[EdgeWindow]]) -> dict[Layer, list[EdgeWindow]]:
    """The windows of both, by layer."""
    return {layer: [*a.get(layer, ()), *b.get(layer, ())] for layer in a.keys() | b.keys()}


def by_layer(windows: Iterable[EdgeWindow]) -> dict[Layer, list[EdgeWindow]]:
    out: dict[Layer, list[EdgeWindow]] = {}
    for w in windows:
        out.setdefault(w.key.layer, []).append(w)
    return out


def nodes_of(windows: Mapping[Layer, Sequence[EdgeWindow]]) -> list[NodeInfo]:
    """The nodes that these windows mention, one NodeInfo per (name, granularity), merged: a node seen
    as a real service stays one (else the newest window's kind), the first app named, every layer,
    the earliest first and the latest last seen."""
    seen: dict[tuple[str, Granularity], list[Any]] = {}  # [kind, app, layers, first, last]
    service = NodeKind.SERVICE
    for layer, ws in windows.items():
        for w in ws:
            stats, key = w.stats, w.key
            first = stats.first_seen or float(w.window_start)
            last = stats.last_seen or float(w.window_end)
            g = key.granularity
            for name, kind, app in ((key.source, w.source_kind, w.source_app),
                                    (key.target, w.target_kind, w.target_app)):
                cur = seen.get((name, g))
                if cur is None:
                    seen[(name, g)] = [kind, app, {layer}, first, last]
                    continue
                if cur[0] is not service:
                    cur[0] = kind
                if not cur[1]:
                    cur[1] = app
                cur[2].add(layer)
                cur[3] = min(cur[3], first) if cur[3] else first
                cur[4] = max(cur[4], last)
    return [NodeInfo(name, kind, g, app, frozenset(layers), first, last)
            for (name, g), (kind, app, layers, first, last) in seen.items()]

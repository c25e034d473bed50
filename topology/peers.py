"""Who is Unknown: the remote addresses the NETWORK layer could not attribute to any owner.

NETWORK stage 2 names a remote address that no lease covered ``ip:<address>`` (a node of kind
UNKNOWN) and never guesses an owner. This query lists those nodes over a time range: each address
with the ports it was reached on, the local workloads that talked to it (in either direction), the
connections and bytes, and when it was first and last seen. Addresses are ordered by name and paged
by it.

With the catalog store, each address also comes with the *nearest leases that did not cover it*
(kept by NETWORK stage 2 next to the unattributed traffic, ``CatalogStore.peer_leases``):
``lease_before``, the lease of the address that ended last at or before the address was first seen
in the range (its previous owner), and ``lease_after``, the one that started first at or after it
was last seen (its next owner). They are hints for the engineer; the traffic stays unattributed.

Pure apart from the store interface: one keyset scan of the NETWORK layer's edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from topology.catalog import AddressLease
from topology.model import Granularity, Layer, NodeKind
from topology.query import LayerFailure
from topology.stats import EdgeStats
from topology.store.base import CatalogStore, LayerStore, StoreUnavailable
from topology.timewindow import TimeRange

__all__ = ["PeerContact", "UnknownPeer", "UnknownPeers", "nearest_leases", "unknown_peers"]

PREFIX = "ip:"
_BATCH = 5000


@dataclass(frozen=True, slots=True)
class PeerContact:
    """A local workload that talked to the address, and how much."""

    workload: str
    outbound: bool  # True: the workload called the address; False: the address called the workload
    connections: int
    bytes: int
    first_seen: float
    last_seen: float


@dataclass(slots=True)
class UnknownPeer:
    name: str  # ip:<address>
    ports: set[int] = field(default_factory=set)
    contacts: list[PeerContact] = field(default_factory=list)
    lease_before: AddressLease | None = None  # ended at or before first_seen (see the module docstring)
    lease_after: AddressLease | None = None  # started at or after last_seen

    @property
    def address(self) -> str:
        return self.name[len(PREFIX):] if self.name.startswith(PREFIX) else self.name

    @property
    def connections(self) -> int:
        return sum(c.connections for c in self.contacts)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.contacts)

    @property
    def first_seen(self) -> float:
        return min((c.first_seen for c in self.contacts if c.first_seen), default=0.0)

    @property
    def last_seen(self) -> float:
        return max((c.last_seen for c in self.contacts), default=0.0)


@dataclass(frozen=True, slots=True)
class UnknownPeers:
    peers: tuple[UnknownPeer, ...]
    has_next: bool
    end_cursor: str | None
    failures: tuple[LayerFailure, ...]


def nearest_leases(leases: Iterable[AddressLease], first_seen: float,
                   last_seen: float) -> tuple[AddressLease | None, AddressLease | None]:
    """Of ``leases`` (one address's), the one that ended last at or before ``first_seen`` and the one
    that started first at or after ``last_seen``."""
    before = [x for x in leases if x.end is not None and x.end <= first_seen]
    after = [x for x in leases if x.start >= last_seen]
    return (max(before, key=lambda x: (x.end or 0.0, x.start)) if before else None,
            min(after, key=lambda x: (x.start, x.owner)) if after else None)


def _contact(workload: str, outbound: bool, s: EdgeStats) -> PeerContact:
    return PeerContact(workload, outbound, s.connections, s.bytes_sent + s.bytes_received, s.first_seen,
                       s.last_seen)


async def unknown_peers(
    layer_stores: Mapping[Layer, LayerStore], *, time: TimeRange, now: float, first: int = 100,
    after: str | None = None, catalog: CatalogStore | None = None,
) -> UnknownPeers:
    """The unattributed addresses seen in ``time``, by name, strictly after ``after`` (with the
    nearest leases that did not cover them when ``catalog`` is given)."""
    if first < 0:
        raise ValueError(f"first must be >= 0, got {first}")
    store = layer_stores.get(Layer.NETWORK)
    if store is None:
        missing = LayerFailure(Layer.NETWORK, "no store is configured for the NETWORK layer")
        return UnknownPeers((), False, after, (missing,))
    found: dict[str, UnknownPeer] = {}
    cursor: tuple[str, str] | None = None
    try:
        while True:
            edges = await store.edges(Granularity.APP, time, now, _BATCH, cursor)
            for e in edges:
                src, dst = e.key.source, e.key.target
                if e.target_kind is NodeKind.UNKNOWN and dst.startswith(PREFIX):
                    peer = found.setdefault(dst, UnknownPeer(dst))
                    peer.ports.update(e.stats.ports)
                    peer.contacts.append(_contact(src, True, e.stats))
                if e.source_kind is NodeKind.UNKNOWN and src.startswith(PREFIX):
                    peer = found.setdefault(src, UnknownPeer(src))
                    peer.contacts.append(_contact(dst, False, e.stats))
            if len(edges) < _BATCH:
                break
            cursor = (edges[-1].key.source, edges[-1].key.target)
    except StoreUnavailable as exc:
        failure = LayerFailure(Layer.NETWORK, f"the NETWORK layer is unavailable: {exc}", True, exc)
        return UnknownPeers((), False, after, (failure,))
    names = sorted(n for n in found if after is None or n > after)
    page = names[:first]
    for n in page:
        found[n].contacts.sort(key=lambda c: (-c.connections, c.workload))
    if catalog is not None and page:
        peers = [found[n] for n in page]
        known = await catalog.peer_leases([p.address for p in peers])
        for p in peers:
            p.lease_before, p.lease_after = nearest_leases(known.get(p.address, ()), p.first_seen,
                                                           p.last_seen)
    return UnknownPeers(tuple(found[n] for n in page), len(names) > first, page[-1] if page else after, ())

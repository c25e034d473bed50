"""NETWORK stage 2: resolve remote addresses and collapse intermediaries into direct edges.

Input: :class:`FlowAggregate` records from stage 1 (10 s windows). Output: :class:`EdgePartial`
records in ``window_seconds`` windows (60 s), at APP and CLUSTER granularity, for stage 3.

Rules (the observation contract of the project brief):

* The remote address is resolved with the lease valid at the aggregate's first start. If the
  address changed hands between the first and the last start of an aggregate, the later owner gets
  an edge too (one connection of the aggregate, no bytes); the rest stays with the first owner.
* Direction comes from ``role`` only: a client record is ``local -> remote``, a server record is
  ``remote -> local``. Ports and byte counts never decide it, so a consumer connecting to its
  broker is ``consumer -> broker``.
* Remote lease kinds DATABASE / MESSAGING / EXTERNAL become virtual nodes named by the lease owner
  (same name at both granularities); an address without a lease becomes ``ip:<address>`` UNKNOWN.
  The leases of that address just before and just after the unattributed instant (when there are
  any) are remembered for ``unknownPeers`` (:meth:`NetworkStage2.take_peer_leases`); the traffic
  is never given to them.
* LOAD_BALANCER / API_GATEWAY / PROXY: client records pointing at the intermediary and server
  records pointing at it (from its backends) are joined per intermediary per window: every client
  x every backend gives the direct edge client -> backend with the intermediary in
  ``stats.intermediaries``; the client's traffic is split across backends by the backends'
  connection counts (exact when there is one backend). Ports of a joined edge are the backend's.
  Clients without a backend give ``client -> <intermediary>`` (UNINSTRUMENTED, the intermediary is
  the target, not listed in ``intermediaries``); backends without clients are dropped and counted.
* NAT_GATEWAY: a server record pointing at a NAT address is not an edge; it adds the NAT to the
  intermediaries of the edges that client-side records produced into that backend (app, and its
  cluster at CLUSTER granularity) in the same window; with no such edge it is counted
  (``nat_unmatched``). A client record pointing at a NAT address is treated like a client of an
  intermediary (an edge ``client -> <nat>`` unless something joins it).
* Workload to workload: client records give Side.CLIENT partials, server records Side.SERVER;
  stage 3 takes the maximum across sides, so a connection reported by both ends counts once.
* Two-sided observations (``local_app`` empty: cloud flow logs) resolve ``local_addr`` the same way
  and give Side.PAIR partials. If the local end is an intermediary, the record is turned around so
  the intermediary is the remote end (an intermediary -> backend record is the backend's view).

Output partials are *deltas*: a window is flushed once its end passes the watermark, and
aggregates that arrive later (within ``grace_seconds``) are flushed as further partials of the same
window, which stage 3 adds up. Join state of flushed windows is kept for the grace period so late
clients still pair with their backends. A joined edge's share is always computed from the client's
whole traffic and the backends' current weights, and the partial carries the difference to what
was already emitted (negative if a late backend took some of it), so the sum of a window's
partials equals the split an on-time run makes, whatever arrived late. A backend that arrives after
its clients were flushed as ``client -> <intermediary>`` adds the direct edge but cannot take the
fallback edge back (counted as ``late_backend_after_fallback``). After the grace period late
aggregates are dropped and counted.

Distributed: all aggregates that must meet in one worker share :meth:`NetworkStage2.route_key`
(the intermediary for flows through one, otherwise the app the traffic goes into).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from topology.address import AddressBook
from topology.catalog import AddressKind, AddressLease
from topology.model import EdgeKey, EdgePartial, Granularity, Layer, NodeKind, Side
from topology.stages.network_stage1 import AggregateRow, FlowAggregate, FlowAggregates, as_row, protocol_name
from topology.stats import MAX_INTERMEDIARIES, MAX_PORTS, EdgeStats
from topology.wire.flow import ROLE_CLIENT, ROLE_SERVER

#: A resolved end: (app-level name, cluster-level name or None, kind).
Node = tuple[str, str | None, NodeKind]

_JOINED = frozenset((AddressKind.LOAD_BALANCER, AddressKind.API_GATEWAY, AddressKind.PROXY))
_INTERMEDIARY = _JOINED | {AddressKind.NAT_GATEWAY}
_VIRTUAL = {AddressKind.DATABASE: NodeKind.DATABASE, AddressKind.MESSAGING: NodeKind.MESSAGING,
            AddressKind.EXTERNAL: NodeKind.EXTERNAL}
_APP, _CLUSTER = Granularity.APP, Granularity.CLUSTER
# Sides as small ints inside the hot dictionaries (hashing an Enum member is slow); _SIDES maps back.
_CLIENT, _SERVER, _PAIR = 0, 1, 2
_SIDES = (Side.CLIENT, Side.SERVER, Side.PAIR)


class _Acc:
    """Mutable running totals of one edge (or one client of a join) in one window."""

    __slots__ = ("connections", "first", "inter", "last", "ports", "proto", "received", "sent",
                 "source_app", "source_kind", "target_app", "target_kind")

    def __init__(self, source_kind: NodeKind = NodeKind.SERVICE, target_kind: NodeKind = NodeKind.SERVICE,
                 source_app: str | None = None, target_app: str | None = None) -> None:
        self.first = 0.0
        self.last = 0.0
        self.connections = 0
        self.sent = 0
        self.received = 0
        self.proto = 256
        self.ports: set[int] = set()
        self.inter: set[str] | None = None
        self.source_kind, self.target_kind = source_kind, target_kind
        self.source_app, self.target_app = source_app, target_app

    @property
    def empty(self) -> bool:
        return not (self.first or self.connections or self.sent or self.received)

    def reset(self) -> None:
        self.first = self.last = 0.0
        self.connections = self.sent = self.received = 0
        self.proto = 256
        self.ports = set()

    def add(
        self, first: float, last: float, conns: int, sent: int, received: int, proto: int, port: int
    ) -> None:
        if not self.first or first < self.first:
            self.first = first
        if last > self.last:
            self.last = last
        self.connections += conns
        self.sent += sent
        self.received += received
        if proto < self.proto:
            self.proto = proto
        self.ports.add(port)

    def add_acc(self, o: _Acc, conns: int, sent: int, received: int, ports: set[int]) -> None:
        """Add ``o``'s times and protocol with the given (split) counts and ``ports``."""
        if o.first and (not self.first or o.first < self.first):
            self.first = o.first
        if o.last > self.last:
            self.last = o.last
        self.connections += conns
        self.sent += sent
        self.received += received
        if o.proto < self.proto:
            self.proto = o.proto
        self.ports |= ports

    def stats(self) -> EdgeStats:
        return EdgeStats(
            first_seen=self.first,
            last_seen=self.last,
            protocol=protocol_name(self.proto) if self.proto < 256 else None,
            ports=tuple(sorted(self.ports)[:MAX_PORTS]),
            connections=self.connections,
            bytes_sent=self.sent,
            bytes_received=self.received,
            intermediaries=tuple(sorted(self.inter)[:MAX_INTERMEDIARIES]) if self.inter else (),
        )


_ClientKey = tuple[str, str | None, int]  # (client name, cluster, side)
_BackendKey = tuple[str, str | None]  # (backend name, cluster)


class _Join:
    """Clients and backends of one intermediary in one window."""

    __slots__ = ("backends", "clients", "emitted", "emitted_backends", "fallback_emitted")

    def __init__(self) -> None:
        # (client name, cluster, side) -> (client node, all its traffic so far, traffic not yet flushed)
        self.clients: dict[tuple[str, str | None, int], tuple[Node, _Acc, _Acc]] = {}
        # (backend name, cluster) -> (backend node, its traffic from the intermediary)
        self.backends: dict[tuple[str, str | None], tuple[Node, _Acc]] = {}
        self.emitted_backends: set[tuple[str, str | None]] = set()
        # (client key, backend key) -> (connections, bytes sent, bytes received) emitted so far
        self.emitted: dict[tuple[_ClientKey, _BackendKey], tuple[int, int, int]] = {}
        self.fallback_emitted = False


class _Window:
    __slots__ = ("app", "cluster", "direct", "dirty", "early_sent", "emitted_into", "flushed", "joins", "nat",
                 "nat_new")

    def __init__(self) -> None:
        # Pending (unflushed) edge totals, keyed by (source, target, side).
        self.app: dict[tuple[str, str, int], _Acc] = {}
        self.cluster: dict[tuple[str, str, int], _Acc] = {}
        self.joins: dict[str, _Join] = {}
        # NAT annotations: (granularity, backend name) -> NAT names; and those not yet applied.
        self.nat: dict[tuple[Granularity, str], set[str]] = {}
        self.nat_new: set[tuple[str, str | None, str]] = set()  # (backend app, cluster, NAT name)
        # Client-side edges already flushed, by (granularity, target): for NAT records that come late.
        self.emitted_into: dict[tuple[Granularity, str], dict[tuple[str, int], _Acc]] = {}
        # Agent records of a direct edge already placed: (app, cluster, role, remote address) ->
        # (lease start, lease end, app edge, cluster edge). The six 10 s aggregates of a minute then
        # skip resolution. Cleared at each flush and whenever the address book changes.
        self.direct: dict[tuple[str, str, int, str], tuple[float, float, _Acc, _Acc | None]] = {}
        self.flushed = False
        self.dirty = False
        self.early_sent: set[tuple[Granularity, str, str, int]] | None = None  # flush(new_only=True)


class NetworkStage2:
    """Address resolution and intermediary collapse (see the module docstring)."""

    def __init__(self, addresses: AddressBook, window_seconds: int = 60, grace_seconds: int = 120) -> None:
        if window_seconds <= 0 or grace_seconds < 0:
            raise ValueError("window_seconds must be positive and grace_seconds not negative")
        self.addresses = addresses
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self._windows: dict[int, _Window] = {}
        self._watermark = float("-inf")
        self._book_version = -1
        # leases next to unattributed traffic, by (address, owner, start): see take_peer_leases
        self._peer_leases: dict[tuple[str, str, float], AddressLease] = {}
        # windows changed since the last take_touched() (incremental checkpoints, ingest.checkpoint)
        self._touched: set[int] = set()
        self.counters: dict[str, int] = {
            "aggregates": 0,
            "partials": 0,
            "late_accepted": 0,
            "late_dropped": 0,
            "unknown_address": 0,
            "no_cluster": 0,
            "owner_changed_in_aggregate": 0,
            "both_ends_intermediaries": 0,
            "intermediary_without_clients": 0,
            "late_backend_after_fallback": 0,
            "nat_unmatched": 0,
        }

    # -- input ------------------------------------------------------------------------------------
    def add(self, aggregates: Iterable[FlowAggregate]) -> None:
        rows = aggregates.rows if isinstance(aggregates, FlowAggregates) else map(as_row, aggregates)
        counters = self.counters
        ws = self.window_seconds
        resolve_span = self.addresses.resolve_span
        route = self._route
        if self.addresses.version != self._book_version:
            self._book_version = self.addresses.version
            for window in self._windows.values():
                window.direct.clear()
            self._touched.update(self._windows)
        current, st = -1, None
        n = 0
        for (wstart, _, app, cluster, role, remote_addr, port, proto, conns, sent, received, first_ms,
             last_start_ms, last_end_ms, local_addr) in rows:
            n += 1
            w = wstart - wstart % ws
            if w != current:
                current, st = w, self._window(w)
            if st is None:
                counters["late_dropped"] += 1
                continue
            if st.flushed:
                counters["late_accepted"] += 1
            if role != ROLE_CLIENT:  # orient the bytes source -> target
                sent, received = received, sent
            t0 = first_ms / 1000.0
            last = last_end_ms / 1000.0
            t1 = last_start_ms / 1000.0
            if app:
                known = st.direct.get((app, cluster, role, remote_addr))
                if known is not None and known[0] <= t0 and t1 < known[1]:
                    known[2].add(t0, last, conns, sent, received, proto, port)
                    if known[3] is not None:
                        known[3].add(t0, last, conns, sent, received, proto, port)
                    continue
            lease, lease_late = resolve_span(remote_addr, t0, t1)
            if lease is None or lease_late is None:
                self._unattributed(remote_addr, t0 if lease is None else t1)
            if app:
                local: Node = (app, cluster or None, NodeKind.SERVICE)
                side = _CLIENT if role == ROLE_CLIENT else _SERVER
                if lease is not None and lease is lease_late and lease.kind not in _INTERMEDIARY:
                    app_acc, cluster_acc = self._direct(st, local, role, side, lease, remote_addr)
                    app_acc.add(t0, last, conns, sent, received, proto, port)
                    if cluster_acc is not None:
                        cluster_acc.add(t0, last, conns, sent, received, proto, port)
                    end = math.inf if lease.end is None else lease.end
                    st.direct[(app, cluster, role, remote_addr)] = (lease.start, end, app_acc, cluster_acc)
                    continue
            else:
                side = _PAIR
                own = self.addresses.resolve(local_addr, t0)
                if own is None:
                    self._unattributed(local_addr, t0)
                if own is not None and own.kind in _INTERMEDIARY:
                    if lease is not None and lease.kind in _INTERMEDIARY:
                        counters["both_ends_intermediaries"] += 1
                        continue
                    # Turn the record around: the intermediary is the remote end of the other side's view.
                    local = self._node(lease, remote_addr)
                    lease = lease_late = own
                    remote_addr = local_addr
                    role = ROLE_SERVER if role == ROLE_CLIENT else ROLE_CLIENT
                else:
                    local = self._node(own, local_addr)
            if lease_late is not lease:
                counters["owner_changed_in_aggregate"] += 1
                moved = 1 if conns >= 2 else 0
                conns -= moved
                route(st, local, role, side, lease_late, remote_addr, last_start_ms / 1000.0, last, moved,
                      0, 0, proto, port)
            route(st, local, role, side, lease, remote_addr, t0, last, conns, sent, received, proto, port)
        counters["aggregates"] += n

    def _unattributed(self, addr: str, t: float) -> None:
        """Remember the leases of ``addr`` just before and just after ``t``, which no lease covers:
        they tell an engineer whose the address was or will be, but the traffic stays unattributed."""
        for lease in self.addresses.neighbours(addr, t):
            if lease is not None:
                if lease.ip != addr:
                    lease = dataclasses.replace(lease, ip=addr)  # the address as the UNKNOWN node names it
                self._peer_leases[(addr, lease.owner, lease.start)] = lease

    def take_touched(self) -> set[int]:
        """The starts of the windows changed since the last call (added to, flushed, caches
        cleared), among those still kept: an incremental checkpoint rewrites only these."""
        out, self._touched = self._touched, set()
        return out

    def take_peer_leases(self) -> list[AddressLease]:
        """The leases met next to unattributed traffic since the last call (the one before and the one
        after each unattributed observation, with the address as the traffic gave it), for the
        catalog store (``record_peer_leases``)."""
        out = list(self._peer_leases.values())
        self._peer_leases.clear()
        return out

    def _window(self, w: int) -> _Window | None:
        """The state of window ``w`` (created if new), None if it is past its grace period."""
        st = self._windows.get(w)
        if st is None:
            if w + self.window_seconds + self.grace_seconds <= self._watermark:
                return None
            st = self._windows[w] = _Window()
        st.dirty = True
        self._touched.add(w)
        return st

    def _route(
        self, st: _Window, local: Node, role: int, side: int, lease: AddressLease | None, remote_addr: str,
        first: float, last: float, conns: int, sent: int, received: int, proto: int, port: int,
    ) -> None:
        """Place one observation; ``sent``/``received`` are already oriented source -> target."""
        if lease is not None and lease.kind in _INTERMEDIARY:
            if role == ROLE_SERVER and lease.kind is AddressKind.NAT_GATEWAY:
                st.nat_new.add((local[0], local[1], lease.owner))
                return
            join = st.joins.get(lease.owner)
            if join is None:
                join = st.joins[lease.owner] = _Join()
            if role == ROLE_CLIENT:
                client = join.clients.get((local[0], local[1], side))
                if client is None:
                    client = join.clients[(local[0], local[1], side)] = (local, _Acc(), _Acc())
                client[1].add(first, last, conns, sent, received, proto, port)
                client[2].add(first, last, conns, sent, received, proto, port)
            else:
                backend = join.backends.get((local[0], local[1]))
                if backend is None:
                    backend = join.backends[(local[0], local[1])] = (local, _Acc())
                backend[1].add(first, last, conns, sent, received, proto, port)
            return
        app_acc, cluster_acc = self._direct(st, local, role, side, lease, remote_addr)
        app_acc.add(first, last, conns, sent, received, proto, port)
        if cluster_acc is not None:
            cluster_acc.add(first, last, conns, sent, received, proto, port)

    def _direct(self, st: _Window, local: Node, role: int, side: int, lease: AddressLease | None,
                remote_addr: str) -> tuple[_Acc, _Acc | None]:
        """The edge accumulators (APP, CLUSTER) of a record whose remote end is not an intermediary."""
        remote = self._node(lease, remote_addr)
        if role == ROLE_CLIENT:
            return self._accs(st, local, remote, side)
        return self._accs(st, remote, local, side)

    def _node(self, lease: AddressLease | None, addr: str) -> Node:
        if lease is None:
            self.counters["unknown_address"] += 1
            name = "ip:" + addr
            return (name, name, NodeKind.UNKNOWN)
        if lease.kind is AddressKind.WORKLOAD:
            return (lease.owner, lease.cluster, NodeKind.SERVICE)
        return (lease.owner, lease.owner, _VIRTUAL.get(lease.kind, NodeKind.UNINSTRUMENTED))

    def _accs(self, st: _Window, src: Node, dst: Node, side: int) -> tuple[_Acc, _Acc | None]:
        key = (src[0], dst[0], side)
        app_acc = st.app.get(key)
        if app_acc is None:
            app_acc = st.app[key] = _Acc(src[2], dst[2])
        sc, dc = src[1], dst[1]
        if sc is None or dc is None:
            self.counters["no_cluster"] += 1
            return app_acc, None
        key = (sc, dc, side)
        cluster_acc = st.cluster.get(key)
        if cluster_acc is None:
            cluster_acc = st.cluster[key] = _Acc(
                src[2], dst[2],
                src[0] if src[2] is NodeKind.SERVICE else None,
                dst[0] if dst[2] is NodeKind.SERVICE else None,
            )
        return app_acc, cluster_acc

    # -- output -----------------------------------------------------------------------------------
    def flush(self, watermark: float, early: bool = False, new_only: bool = False) -> list[EdgePartial]:
        """Partials of every window that ends at or before ``watermark`` and has news since its last flush.

        With ``early``, windows still open also emit their *direct* edges so far (workload to
        workload, databases, brokers, external hosts): partials are additive, so nothing is counted
        twice. Intermediary joins and NAT annotations wait for the window to close, as they need
        both sides of the window. With ``new_only`` as well, only edges new in the window are (not
        emitted in it or in the window before, nor pending there: what makes a new edge visible);
        the others keep adding up until the close.
        """
        if watermark > self._watermark:
            self._watermark = watermark
        ws = self.window_seconds
        out: list[EdgePartial] = []
        for w in sorted(self._windows):
            st = self._windows[w]
            if w + ws > watermark:
                if not early:
                    break
                self._touched.add(w)
                st.direct.clear()
                if new_only:
                    self._emit_new(w, st, self._windows.get(w - ws), out)
                else:
                    self._emit_pending(w, st, out)
                continue
            if st.dirty:
                self._touched.add(w)
                self._emit(w, st, out)
                st.dirty = False
                st.flushed = True
            if w + ws + self.grace_seconds <= watermark:
                del self._windows[w]
                self._touched.discard(w)
        self.counters["partials"] += len(out)
        return out

    def _emit(self, w: int, st: _Window, out: list[EdgePartial]) -> None:
        st.direct.clear()  # its edges are flushed below; later records start new ones
        for owner, join in st.joins.items():
            self._flush_join(st, owner, join)
        new_nat = self._apply_nat(st)
        self._emit_pending(w, st, out)
        for gran, dst, nat in new_nat:
            for (src, side), acc in st.emitted_into.get((gran, dst), {}).items():
                if acc.inter is not None and nat in acc.inter:
                    continue
                note = _Acc(acc.source_kind, acc.target_kind, acc.source_app, acc.target_app)
                note.inter = {nat}
                out.append(self._partial(gran, src, dst, w, side, note))

    def _emit_pending(self, w: int, st: _Window, out: list[EdgePartial]) -> None:
        """Emit the window's pending edge totals and start new ones."""
        sent = getattr(st, "early_sent", None)
        for gran, accs in ((_APP, st.app), (_CLUSTER, st.cluster)):
            for (src, dst, side), acc in accs.items():
                out.append(self._partial(gran, src, dst, w, side, acc))
                if side != _SERVER:
                    st.emitted_into.setdefault((gran, dst), {})[(src, side)] = acc
                if sent is not None:  # edges the next window's new_only flushes know
                    sent.add((gran, src, dst, side))
            accs.clear()

    def _emit_new(self, w: int, st: _Window, prev: _Window | None, out: list[EdgePartial]) -> None:
        """Emit the pending edges of open window ``w`` not yet emitted in it or in the window before,
        nor pending there (new edges)."""
        sent = getattr(st, "early_sent", None)  # None also for windows checkpointed before it existed
        if sent is None:
            sent = st.early_sent = set()
        before = (getattr(prev, "early_sent", None) or set()) if prev is not None else set()
        for gran, accs in ((_APP, st.app), (_CLUSTER, st.cluster)):
            pending = (prev.app if gran is _APP else prev.cluster) if prev is not None else {}
            new = [k for k in accs
                   if (gran, *k) not in sent and (gran, *k) not in before and k not in pending]
            for k in new:
                src, dst, side = k
                acc = accs.pop(k)
                out.append(self._partial(gran, src, dst, w, side, acc))
                if side != _SERVER:
                    st.emitted_into.setdefault((gran, dst), {})[(src, side)] = acc
                sent.add((gran, *k))

    def _partial(self, gran: Granularity, src: str, dst: str, w: int, side: int, acc: _Acc) -> EdgePartial:
        return EdgePartial(EdgeKey(Layer.NETWORK, gran, src, dst), w, self.window_seconds, _SIDES[side],
                           acc.stats(), acc.source_kind, acc.target_kind, acc.source_app, acc.target_app)

    def _flush_join(self, st: _Window, owner: str, join: _Join) -> None:
        backends = sorted(join.backends)
        if not join.clients:
            if any(b not in join.emitted_backends for b in backends):
                self.counters["intermediary_without_clients"] += 1
            join.emitted_backends = set(backends)
            return
        if not backends:
            via: Node = (owner, owner, NodeKind.UNINSTRUMENTED)
            for (_, _, side), (client, _, pending) in join.clients.items():
                if not pending.empty:
                    self._joined(st, client, via, side, pending, pending.connections, pending.sent,
                                 pending.received, pending.ports, None)
            join.fallback_emitted = True
        else:
            weights = [join.backends[b][1].connections for b in backends]
            if not any(weights):
                weights = [1] * len(weights)
            total = sum(weights)
            if join.fallback_emitted and any(b not in join.emitted_backends for b in backends):
                self.counters["late_backend_after_fallback"] += 1
            for ckey, (client, whole, pending) in join.clients.items():
                if whole.empty:
                    continue
                for b, weight in zip(backends, weights, strict=True):
                    # The share of the whole traffic; the partial carries what changed since the last one.
                    share = (whole.connections * weight // total, whole.sent * weight // total,
                             whole.received * weight // total)
                    done = join.emitted.get((ckey, b))
                    if done == share and pending.empty:
                        continue
                    c0, s0, r0 = done or (0, 0, 0)
                    node, acc = join.backends[b]
                    self._joined(st, client, node, ckey[2], whole, share[0] - c0, share[1] - s0,
                                 share[2] - r0, acc.ports or whole.ports, owner)
                    join.emitted[(ckey, b)] = share
            join.emitted_backends = set(backends)
        for _, _, pending in join.clients.values():
            pending.reset()

    def _joined(self, st: _Window, src: Node, dst: Node, side: int, part: _Acc, conns: int, sent: int,
                received: int, ports: set[int], owner: str | None) -> None:
        """Add ``part``'s times and protocol with these counts to the edge ``src -> dst``."""
        for acc in self._accs(st, src, dst, side):
            if acc is not None:
                acc.add_acc(part, conns, sent, received, ports)
                if owner is None:
                    continue
                if acc.inter is None:
                    acc.inter = {owner}
                else:
                    acc.inter.add(owner)

    def _apply_nat(self, st: _Window) -> list[tuple[Granularity, str, str]]:
        """Record new NAT annotations and apply all of them to the pending client-side edges."""
        new: list[tuple[Granularity, str, str]] = []
        if not st.nat_new and not st.nat:
            return new
        pending_targets = {(gran, k[1]) for gran, accs in ((_APP, st.app), (_CLUSTER, st.cluster))
                           for k in accs if k[2] != _SERVER}
        for app, cluster, nat in sorted(st.nat_new, key=lambda x: (x[0], x[1] or "", x[2])):
            matched = False
            for gran, name in ((_APP, app), (_CLUSTER, cluster)):
                if name is None:
                    continue
                names = st.nat.setdefault((gran, name), set())
                if nat not in names:
                    names.add(nat)
                    new.append((gran, name, nat))
                matched = (matched or (gran, name) in pending_targets
                           or bool(st.emitted_into.get((gran, name))))
            if not matched:
                self.counters["nat_unmatched"] += 1
        st.nat_new.clear()
        if st.nat:
            for gran, accs in ((_APP, st.app), (_CLUSTER, st.cluster)):
                for (_, dst, side), acc in accs.items():
                    nats = st.nat.get((gran, dst))
                    if nats and side != _SERVER:
                        acc.inter = nats | acc.inter if acc.inter else set(nats)
        return new

    # -- routing ----------------------------------------------------------------------------------
    def route_key(self, a: FlowAggregate) -> str:
        """Partition key for distributed stage-2 workers: aggregates that must meet share it.

        Flows through an intermediary: its name (clients and backends of one join). Otherwise the
        app the traffic goes into (so NAT records of a backend meet the client edges into it).
        """
        return self.route_row(as_row(a))

    def route_row(self, row: AggregateRow) -> str:
        """:meth:`route_key` of an aggregate given as its row (:data:`AggregateRow`)."""
        local_app, role, remote_addr, first_start_ms, local_addr = row[2], row[4], row[5], row[11], row[14]
        t0 = first_start_ms / 1000.0
        lease = self.addresses.resolve(remote_addr, t0)
        if not local_app:
            own = self.addresses.resolve(local_addr, t0)
            if own is not None and own.kind in _INTERMEDIARY:
                return own.owner
            local = self._node(own, local_addr)[0]
        else:
            local = local_app
        if lease is not None and lease.kind in _JOINED:
            return lease.owner
        if lease is not None and lease.kind is AddressKind.NAT_GATEWAY:
            return local if role == ROLE_SERVER else lease.owner
        return self._node(lease, remote_addr)[0] if role == ROLE_CLIENT else local

"""Address ownership as the agent sees it: which workload uses which local address, as leases.

Every attributed record says "workload W used local address A at time t". The first such sighting
of A publishes a lease (A, W, start); while A stays in use the same lease is re-sent every
``renew_seconds`` (leases are idempotent, and the compacted topic keeps the latest); an address not
used for ``forget_seconds`` is no longer renewed.

Start of a lease: the earliest moment the owner is known to have held the address, so that a peer's
connection that started a little earlier than this node saw it still resolves. For a client that is
its connection's start (connect() precedes everything the server sees); for a server, when it
started listening on that port if the agent saw it, else when its process started.

Moves and sharing: when another workload uses A, the previous owner's processes are checked. If
none is alive any more, A moved: a new lease starts at the new owner's first use (never before the
previous owner's last), and stage 2 closes the old one there, so earlier flows keep the old owner.
If the previous owner is still alive, A is shared by two workloads (host networking): a lease would
misattribute one of them, so the current lease is closed and A is not leased while it stays shared
(counted). Loopback, unspecified and link-local addresses name no workload across the network and
are never leased. Unattributed processes (``unattributed:<comm>``) take part in this as owners that
are never published: an address they use is either shared (no lease) or, once they hold it alone,
not leased at all, the previous owner's lease ended explicitly, so their traffic stays
unattributed rather than misattributed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.attribution import UNATTRIBUTED
from agent.workloads import Workload
from topology.catalog import AddressKind, AddressLease


@dataclass(slots=True)
class _Owner:
    workload: Workload
    start: float
    last_seen: float
    pids: set[int] = field(default_factory=set)
    sent_at: float | None = None  # None: not published yet
    shared: bool = False


def leasable(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    return not (a.is_loopback or a.is_unspecified or a.is_link_local or a.is_multicast)


class Leases:
    def __init__(self, alive: Callable[[int], bool], renew_seconds: float = 30.0,
                 forget_seconds: float = 600.0, max_pids: int = 64) -> None:
        self.alive = alive
        self.renew_seconds = renew_seconds
        self.forget_seconds = forget_seconds
        self.max_pids = max_pids
        self._by_ip: dict[str, _Owner] = {}
        self._closing: list[AddressLease] = []
        self.counters = {"moved": 0, "shared": 0, "published": 0, "renewed": 0}

    def __len__(self) -> int:
        return len(self._by_ip)

    def observe(self, ip: str, workload: Workload, pid: int, since: float, seen: float) -> None:
        """``workload`` (process ``pid``) used ``ip`` from ``since`` (earliest known) until ``seen``."""
        cur = self._by_ip.get(ip)
        if cur is None:
            if not leasable(ip):
                return
            self._by_ip[ip] = _Owner(workload, since, seen, {pid})
            return
        if cur.workload == workload:
            cur.last_seen = max(cur.last_seen, seen)
            if len(cur.pids) < self.max_pids:
                cur.pids.add(pid)
            if cur.shared:
                return
            if cur.sent_at is None and since < cur.start:
                cur.start = since
            return
        if any(self.alive(p) for p in cur.pids if p != pid):
            if not cur.shared:
                self.counters["shared"] += 1
                if cur.sent_at is not None:
                    self._closing.append(self._lease(ip, cur, end=max(since, cur.start)))
            cur.shared = True
            cur.last_seen = max(cur.last_seen, seen)
            return
        self.counters["moved"] += 1
        start = max(since, cur.last_seen)
        if cur.sent_at is not None:  # explicit end: the new owner may be one that is never leased
            self._closing.append(self._lease(ip, cur, end=max(start, cur.start)))
        self._by_ip[ip] = _Owner(workload, start, seen, {pid})

    def due(self, now: float) -> list[AddressLease]:
        """Leases to send now: closings, new owners, and renewals of addresses still in use."""
        out, self._closing = self._closing, []
        for ip in list(self._by_ip):
            o = self._by_ip[ip]
            if now - o.last_seen > self.forget_seconds:
                del self._by_ip[ip]
                continue
            if o.shared:
                if not any(self.alive(p) for p in o.pids):  # the sharers are gone: start afresh
                    del self._by_ip[ip]
                continue
            if o.workload.app.startswith(UNATTRIBUTED):
                continue
            if o.sent_at is None:
                self.counters["published"] += 1
            elif now - o.sent_at >= self.renew_seconds and o.last_seen > o.sent_at:
                self.counters["renewed"] += 1
            else:
                continue
            o.sent_at = now
            out.append(self._lease(ip, o))
        return out

    def owner(self, ip: str) -> Workload | None:
        o = self._by_ip.get(ip)
        return None if o is None or o.shared else o.workload

    @staticmethod
    def _lease(ip: str, o: _Owner, end: float | None = None) -> AddressLease:
        return AddressLease(ip, o.workload.app, AddressKind.WORKLOAD, round(o.start, 3), end,
                            o.workload.cluster or None)

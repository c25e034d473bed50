"""Time-ranged address ownership as the simulator knows it, and the pool addresses are reused from."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

from topology.catalog import AddressKind, AddressLease
from topology.sim.fleet import ip_int, ip_text, next_workload_ip


class LeaseBook:
    """Every lease ever handed out, per address, plus a FIFO pool of freed workload addresses.

    Freed addresses are handed out again (oldest first) once ``reuse_after`` seconds have passed,
    so a redeployed app's old addresses soon belong to *other* apps: what makes resolving a flow with
    the owner at its start time (not the current one) matter.
    """

    def __init__(self, next_ip: int, reuse_after: float = 0.0) -> None:
        self._next_ip = next_ip
        self._free: deque[tuple[int, float]] = deque()
        self.reuse_after = reuse_after
        self._history: dict[int, list[AddressLease]] = {}
        self.reused = 0  # addresses handed out again after being freed

    # -- pool ----------------------------------------------------------------------------------------
    def allocate(self, now: float) -> int:
        if self._free and self._free[0][1] + self.reuse_after <= now:
            self.reused += 1
            return self._free.popleft()[0]
        self._next_ip = next_workload_ip(self._next_ip)
        return self._next_ip

    def release(self, ip: int, now: float) -> None:
        self._free.append((ip, now))

    # -- leases --------------------------------------------------------------------------------------
    def open(
        self, ip: int, owner: str, kind: AddressKind, start: float, cluster: str | None = None
    ) -> AddressLease:
        hist = self._history.setdefault(ip, [])
        if hist and hist[-1].end is None:
            raise ValueError(f"{ip_text(ip)} is still leased to {hist[-1].owner}")
        lease = AddressLease(ip_text(ip), owner, kind, start, None, cluster)
        hist.append(lease)
        return lease

    def close(self, ip: int, end: float) -> AddressLease:
        hist = self._history.get(ip)
        if not hist or hist[-1].end is not None:
            raise ValueError(f"{ip_text(ip)} has no open lease")
        cur = hist[-1]
        ended = AddressLease(cur.ip, cur.owner, cur.kind, cur.start, end, cur.cluster)
        hist[-1] = ended
        return ended

    def ownership_at(self, ip: str | int, t: float) -> AddressLease | None:
        """The lease that held ``ip`` at instant ``t`` (start <= t < end), or None."""
        key = ip_int(ip) if isinstance(ip, str) else ip
        hist = self._history.get(key)
        if not hist:
            return None
        i = bisect_right([le.start for le in hist], t) - 1
        if i < 0:
            return None
        lease = hist[i]
        return lease if lease.end is None or t < lease.end else None

    def current(self) -> list[AddressLease]:
        return [h[-1] for h in self._history.values() if h[-1].end is None]

    def history(self) -> list[AddressLease]:
        return [le for h in self._history.values() for le in h]

    def owners(self, ip: str | int) -> list[str]:
        """Everyone who ever held ``ip``, in order."""
        key = ip_int(ip) if isinstance(ip, str) else ip
        return [le.owner for le in self._history.get(key, [])]

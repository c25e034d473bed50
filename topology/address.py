"""Time-ranged IP address ownership: who held an address at a given instant.

The NETWORK layer resolves the remote end of every flow with the lease that was valid at the
flow's *start* time, never with the current owner: addresses are reused after deploys, and
"current owner" attributes old traffic to the wrong service.

Rules of :meth:`AddressBook.add` (leases arrive from a compacted topic, so replays and re-orderings
are normal and must not change the result):

* adding the same lease twice changes nothing;
* a lease with an ``end`` closes the lease of the same ip, owner and start;
* a lease for the same ip that starts later closes any earlier lease of that ip at its start
  (two owners never hold one address at the same instant: the newer claim wins);
* a lease for the same ip and start as an existing one replaces it (a correction).

:meth:`AddressBook.resolve` is a dictionary look-up and a bisection over that ip's leases.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable

from topology.catalog import AddressLease
from topology.wire.flow import pack_ip, unpack_ip


class _Leases:
    """The leases of one address, sorted by start (parallel lists for :func:`bisect`)."""

    __slots__ = ("leases", "starts")

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.leases: list[AddressLease] = []


class AddressBook:
    """Index of :class:`AddressLease` records by address and time."""

    def __init__(self, leases: Iterable[AddressLease] = ()) -> None:
        self._by_text: dict[str, _Leases] = {}
        self._by_packed: dict[bytes, _Leases] = {}
        # Text forms looked up and not found: unknown addresses repeat, parsing them again is wasted.
        self._unknown_text: set[str] = set()
        self.counters: dict[str, int] = {"leases": 0, "closed_by_successor": 0, "replaced": 0}
        #: Changes with every add(): callers that cache resolutions compare it.
        self.version = 0
        for lease in leases:
            self.add(lease)

    def __len__(self) -> int:
        """Number of distinct addresses known."""
        return len(self._by_packed)

    # -- building ---------------------------------------------------------------------------------
    def add(self, lease: AddressLease) -> None:
        """Record one lease (idempotent; see the module docstring). Raises ValueError on a bad ip."""
        self.version += 1
        try:
            packed = pack_ip(lease.ip)
        except ValueError as e:
            raise ValueError(f"address lease for {lease.owner!r} has an invalid ip {lease.ip!r}") from e
        entry = self._by_packed.get(packed)
        if entry is None:
            entry = _Leases()
            self._by_packed[packed] = entry
            self._by_text[unpack_ip(packed)] = entry
            self._unknown_text.clear()
        self._by_text.setdefault(lease.ip, entry)
        starts, leases = entry.starts, entry.leases
        i = bisect.bisect_left(starts, lease.start)
        if i < len(starts) and starts[i] == lease.start:
            cur = leases[i]
            if (cur.owner, cur.kind, cur.cluster) == (lease.owner, lease.kind, lease.cluster):
                # The same lease again, or its closing record: an end is never forgotten.
                end = _earliest_end(cur.end, lease.end)
                if end != cur.end:
                    leases[i] = dataclasses.replace(cur, end=end)
                return
            self.counters["replaced"] += 1
            leases[i] = _bounded(lease, starts[i + 1] if i + 1 < len(starts) else None)
        else:
            starts.insert(i, lease.start)
            leases.insert(i, _bounded(lease, starts[i + 1] if i + 1 < len(starts) else None))
            self.counters["leases"] += 1
        if i > 0:
            prev = leases[i - 1]
            if prev.end is None or prev.end > lease.start:
                leases[i - 1] = dataclasses.replace(prev, end=lease.start)
                self.counters["closed_by_successor"] += 1

    # -- looking up -------------------------------------------------------------------------------
    def resolve(self, ip: str | bytes, t: float) -> AddressLease | None:
        """The lease of ``ip`` valid at instant ``t`` (epoch seconds), or None if nobody held it.

        ``ip`` is text (``"10.1.2.3"``, ``"::ffff:10.1.2.3"``, ``"2001:db8::1"``) or the 16-byte
        packed form of the flow wire format.
        """
        entry = self._entry(ip)
        return None if entry is None else _at(entry, t)

    def resolve_span(
        self, ip: str | bytes, t0: float, t1: float
    ) -> tuple[AddressLease | None, AddressLease | None]:
        """The leases valid at ``t0`` and at ``t1`` (t0 <= t1) with one look-up of ``ip``."""
        entry = self._by_text.get(ip) if isinstance(ip, str) else None
        if entry is None:
            entry = self._entry(ip)
            if entry is None:
                return None, None
        starts = entry.starts
        i = bisect.bisect_right(starts, t0) - 1
        if i + 1 < len(starts) and starts[i + 1] <= t1:  # another lease starts in between
            return _at(entry, t0), _at(entry, t1)
        if i < 0:
            return None, None
        lease = entry.leases[i]
        end = lease.end
        if end is None or t1 < end:
            return lease, lease
        return (lease if t0 < end else None), None

    def neighbours(self, ip: str | bytes, t: float) -> tuple[AddressLease | None, AddressLease | None]:
        """For an instant ``t`` that no lease of ``ip`` covers: the lease that ended last at or before
        ``t`` and the one that starts first after it (either None when there is none). Leases of one
        address never overlap, so these are the previous and the next lease in start order."""
        entry = self._entry(ip)
        if entry is None:
            return None, None
        i = bisect.bisect_right(entry.starts, t) - 1
        before = entry.leases[i] if i >= 0 else None
        if before is not None and (before.end is None or t < before.end):
            return None, None  # covered: not a question for this method
        return before, entry.leases[i + 1] if i + 1 < len(entry.leases) else None

    def leases(self, ip: str | bytes) -> tuple[AddressLease, ...]:
        """Every lease of ``ip``, oldest first."""
        entry = self._entry(ip)
        return () if entry is None else tuple(entry.leases)

    def _entry(self, ip: str | bytes) -> _Leases | None:
        if isinstance(ip, str):
            entry = self._by_text.get(ip)
            if entry is None and ip not in self._unknown_text:
                try:
                    entry = self._by_packed.get(pack_ip(ip))
                except ValueError:
                    entry = None
                if entry is None:
                    self._remember_unknown(ip)
                else:
                    self._by_text[ip] = entry
            return entry
        return self._by_packed.get(bytes(ip).ljust(16, b"\x00"))

    def _remember_unknown(self, ip: str) -> None:
        if len(self._unknown_text) >= 100_000:
            self._unknown_text.clear()
        self._unknown_text.add(ip)


def _at(entry: _Leases, t: float) -> AddressLease | None:
    i = bisect.bisect_right(entry.starts, t) - 1
    if i < 0:
        return None
    lease = entry.leases[i]
    return None if lease.end is not None and t >= lease.end else lease


def _earliest_end(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _bounded(lease: AddressLease, next_start: float | None) -> AddressLease:
    """``lease`` ended no later than the start of the next lease of the same address."""
    if next_start is None or (lease.end is not None and lease.end <= next_start):
        return lease
    return dataclasses.replace(lease, end=next_start)


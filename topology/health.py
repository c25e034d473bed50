"""Health of services over time, from :class:`HealthEvent` records (topic ``topology.health``).

A service's status holds from its event's ``at`` until the next event of that service. Adding the
same event twice changes nothing; events may arrive out of order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from topology.catalog import HealthEvent, HealthState, HealthStatus

_RANK = {HealthState.UNKNOWN: 0, HealthState.HEALTHY: 1, HealthState.DEGRADED: 2, HealthState.UNHEALTHY: 3}


class HealthBook:
    """Health events per service, answering "what was its state at t?"."""

    def __init__(self, events: Iterable[HealthEvent] = ()) -> None:
        self._times: dict[str, list[float]] = {}
        self._events: dict[str, list[HealthEvent]] = {}
        self.counters: dict[str, int] = {"events": 0, "duplicates": 0}
        for e in events:
            self.add(e)

    def add(self, event: HealthEvent) -> None:
        times = self._times.setdefault(event.service, [])
        events = self._events.setdefault(event.service, [])
        i = bisect.bisect_left(times, event.at)
        if i < len(times) and times[i] == event.at:
            # One state per instant: the later report of the same instant wins (a correction).
            self.counters["duplicates"] += 1
            events[i] = event
            return
        times.insert(i, event.at)
        events.insert(i, event)
        self.counters["events"] += 1

    def state_at(self, name: str, t: float) -> HealthStatus | None:
        """The status of ``name`` at ``t``; ``since`` is when that status began (None if never reported)."""
        times = self._times.get(name)
        if not times:
            return None
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            return None
        events = self._events[name]
        cur = events[i]
        j = i
        while j > 0 and events[j - 1].status is cur.status:
            j -= 1
        return HealthStatus(cur.status, events[j].at, cur.reason)

    def worst_during(self, name: str, start: float, end: float) -> HealthState | None:
        """The worst status ``name`` had at any instant of [start, end), None if never reported by then."""
        times = self._times.get(name)
        if not times:
            return None
        events = self._events[name]
        lo = max(0, bisect.bisect_right(times, start) - 1)
        hi = bisect.bisect_left(times, end)
        worst: HealthState | None = None
        for e in events[lo:hi]:
            if worst is None or _RANK[e.status] > _RANK[worst]:
                worst = e.status
        return worst

    def services(self) -> list[str]:
        return sorted(self._times)

"""Event-time clocks of input partitions.

Every stage runs in event time, so that replaying a topic gives the same windows as the live run.

* Stage 1 reads what producers wrote: a partition's clock is the largest event time seen in it
  (never more than ``max_future`` ahead of the Kafka timestamp of the record that carried it). A
  partition that has been silent for ``idle_seconds`` of wall time moves towards the wall clock
  (quickly, but step by step), so the last windows of a finished stream, and partitions nobody
  writes to, do not hold time back. Only silence the worker actually watched counts: if the worker
  itself did not poll for a while (a busy or starved process, a long garbage collection), records
  may be waiting unread, so that stretch restarts the idle timer instead of counting as silence.
* Later stages read what the stage before them wrote. Each record of a repartition topic names its
  *source* (the upstream input partition) and that source's clock; tick records carry the clocks of
  every source of an upstream worker. A partition's clock is the minimum over all expected sources
  (the partitions of the upstream stage's input topics), so a window closes only when every
  upstream partition has moved past it, whatever the interleaving. Clocks never go back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class SourceClock:
    """Clock of a partition of a stage-1 input topic."""

    idle_seconds: float = 10.0
    idle_rate: float = 30.0  # event seconds per wall second while idle
    now: float = -math.inf
    last_activity: float = 0.0  # wall time of the last record (or of the assignment)
    last_advance: float = 0.0  # wall time of the last idle advance
    last_check: float = 0.0  # wall time of the last idle check (the worker checks on every poll)
    max_check_gap: float = 2.0  # a longer gap between checks is a stalled worker, not silence

    def observe(self, event_time: float, wall: float) -> None:
        if event_time > self.now:
            self.now = event_time
        self.last_activity = wall

    def touch(self, wall: float) -> None:
        """A record arrived that carries no usable time (still activity: no idle advance)."""
        self.last_activity = wall

    def advance_if_idle(self, wall: float, floor: float = -math.inf) -> bool:
        """After ``idle_seconds`` of silence, move towards the wall clock at ``idle_rate`` (never
        jumping, so every stage still flushes its windows in order, within their grace period).
        A partition that never had a record starts from ``floor`` (the slowest clock of the worker's
        other partitions) or, without one, from the wall clock. True if the clock moved."""
        gap = wall - self.last_check
        self.last_check = wall
        if gap > max(self.max_check_gap, self.idle_seconds / 2):
            self.last_activity = max(self.last_activity, wall)  # unwatched time is not silence
            return False
        if wall - self.last_activity < self.idle_seconds or wall <= self.now:
            return False
        if not math.isfinite(self.now):
            self.now = floor if math.isfinite(floor) and floor < wall else wall
            self.last_advance = wall
            return True
        since = wall - max(self.last_advance, self.last_activity + self.idle_seconds)
        if since <= 0:
            return False
        self.now = min(wall, self.now + self.idle_rate * since)
        self.last_advance = wall
        return True


@dataclass
class MergedClock:
    """Clock of a partition of a repartition topic: the minimum over the upstream sources."""

    expected: frozenset[str] = frozenset()
    sources: dict[str, float] = field(default_factory=dict)
    now: float = -math.inf

    def observe(self, source: str, t: float) -> None:
        if t > self.sources.get(source, -math.inf):
            self.sources[source] = t
        low = min((self.sources.get(s, -math.inf) for s in self.expected), default=-math.inf)
        if not self.expected:
            low = min(self.sources.values(), default=-math.inf)
        if low > self.now:
            self.now = low

    def expect(self, expected: frozenset[str]) -> None:
        """Set the sources to wait for (the upstream topics' partitions, read from metadata)."""
        self.expected = expected

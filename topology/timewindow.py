"""Time windows, ranges and retention. The clock is always an argument (event time), never read here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

MINUTE = 60
HOUR = 3600
DAY = 86400

#: Granularities of stored windows, finest first. Stage 3 writes MINUTE windows; roll-ups build the rest.
STORED_GRANULARITIES: tuple[int, ...] = (MINUTE, HOUR, DAY)


def align(t: float, seconds: int) -> int:
    """Start of the window of length ``seconds`` that holds instant ``t``."""
    return int(t // seconds) * seconds


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Half-open interval [start, end) in epoch seconds."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.end >= self.start:
            raise ValueError(f"time range ends before it starts: [{self.start}, {self.end})")

    @classmethod
    def ending_at(cls, at: float, window_seconds: float) -> TimeRange:
        return cls(at - window_seconds, at)

    def overlaps(self, start: float, end: float) -> bool:
        return start < self.end and end > self.start

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Retention:
    """How long windows of each granularity are kept (seconds). Bounded storage: edges x windows.

    The catalog's store of recent traces (what ``Query.trace`` answers from) is bounded too: at most
    ``traces`` traces, none that started more than ``trace_seconds`` before the newest one kept.
    """

    minute: int = 6 * HOUR
    hour: int = 14 * DAY
    day: int = 400 * DAY
    traces: int = 10_000
    trace_seconds: float = HOUR

    def __post_init__(self) -> None:
        if self.traces < 0 or not self.trace_seconds >= 0:
            raise ValueError("the trace store's size and retention must be >= 0")

    def for_granularity(self, seconds: int) -> int:
        return {MINUTE: self.minute, HOUR: self.hour, DAY: self.day}[seconds]

    def finest_covering(self, start: float, now: float) -> int:
        """The finest stored granularity whose retention still covers instant ``start``."""
        for g in STORED_GRANULARITIES:
            if now - self.for_granularity(g) <= start:
                return g
        return DAY


@dataclass(frozen=True, slots=True)
class Rollups:
    """Which roll-up windows (HOUR, DAY) a store holds complete, as :func:`read_plan` needs to know.

    ``through``: the clock of the store's last roll-up; every period that ended at or before it was
    built from its finer windows. ``pending``: periods (seconds, start) that finer windows were written
    into since (late data): their roll-up window, if any, misses those until the next roll-up.
    """

    through: float = 0.0
    pending: frozenset[tuple[int, int]] = frozenset()

    def built(self, seconds: int, start: int) -> bool:
        """Whether the roll-up window of this period was built (it holds every finer window then)."""
        return start + seconds <= self.through

    def complete(self, seconds: int, start: int) -> bool:
        """Built, and no finer window was written into the period since (nor into one of its hours)."""
        if not self.built(seconds, start) or (seconds, start) in self.pending:
            return False
        return not any(
            g < seconds and start <= s < start + seconds for g, s in self.pending
        )


class Span(NamedTuple):
    """The stored windows of ``seconds`` that start in [start, end) (both aligned to ``seconds``)."""

    seconds: int
    start: int
    end: int


def _up(t: float, seconds: int) -> int:
    return -int(-t // seconds) * seconds


def read_plan(time: TimeRange, now: float, retention: Retention, rollups: Rollups) -> tuple[Span, ...]:
    """Which stored windows answer ``time``: disjoint spans in time order, each instant of the range
    inside exactly one window read (no interval counted twice), at most ``retention``'s answer to
    "which granularity still covers the range start" coarse.

    Periods of a granularity that lie whole inside the range and whose roll-up is complete are read
    as one coarse window each; the rest of the range - its tail that is not rolled up yet (the current
    hour or day), periods with late finer windows, and a head or tail that covers only part of a
    period - is read at the next finer granularity, down to minutes. Where the finer windows are past
    their retention, the built coarse window that holds the instant answers (it may reach outside
    the range: the best that is stored).
    """
    if time.end <= time.start:
        return ()
    top = retention.finest_covering(time.start, now)
    levels = STORED_GRANULARITIES[: STORED_GRANULARITIES.index(top) + 1]  # finest first
    out: list[Span] = []
    _cover(time.start, time.end, levels, now, retention, rollups, out)
    joined: list[Span] = []
    for s in out:  # neighbours of one granularity become one span
        if joined and joined[-1].seconds == s.seconds and joined[-1].end == s.start:
            joined[-1] = Span(s.seconds, joined[-1].start, s.end)
        else:
            joined.append(s)
    return tuple(joined)


def _cover(
    a: float, b: float, levels: tuple[int, ...], now: float, retention: Retention, rollups: Rollups,
    out: list[Span],
) -> None:
    """Append the spans that read [a, b) (a < b) with granularities ``levels`` (finest first)."""
    g = levels[-1]
    if len(levels) == 1:
        out.append(Span(g, align(a, g), _up(b, g)))
        return
    finer = levels[:-1]
    finer_from = now - retention.for_granularity(finer[-1])  # finer windows kept from this instant
    built_end = align(rollups.through, g)  # periods starting before this were built
    run = -1  # start of the current run of coarse periods
    p = align(a, g)
    while p < b and p < built_end:
        x, y = max(a, p), min(b, p + g)
        gone = x < finer_from
        if gone or (x == p and y == p + g and rollups.complete(g, p)):
            if run < 0:
                run = p
        else:
            if run >= 0:
                out.append(Span(g, run, p))
                run = -1
            _cover(x, y, finer, now, retention, rollups, out)
        p += g
    if run >= 0:
        out.append(Span(g, run, p))
    if p < b:  # not rolled up yet: finer windows
        _cover(max(a, p), b, finer, now, retention, rollups, out)

"""Time windows, ranges and retention. The clock is always an argument (event time), never read here."""

from __future__ import annotations

from dataclasses import dataclass

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

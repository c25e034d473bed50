"""Absurd timestamps: what no real producer sends, rejected to the dead-letter topic with a reason.

The reference is the time the record says it was produced (the flow batch's ``emitted_ms``, else
the Kafka record timestamp), so replays of old topics are judged as they were when written.
"""

from __future__ import annotations

MIN_TIME = 946_684_800.0  # 2000-01-01: before that, a zero or garbage clock
MAX_FUTURE = 86_400.0  # a day ahead of the reference: clocks are not that wrong
MAX_PAST = 30 * 86_400.0  # a month behind the reference: older than any window we could still place


def reference(kafka_timestamp_ms: int | None, emitted_ms: int | None = None) -> float | None:
    for ms in (emitted_ms, kafka_timestamp_ms):
        if ms is not None and ms / 1000.0 >= MIN_TIME:
            return ms / 1000.0
    return None


def problem(t: float, ref: float | None) -> str | None:
    """Why ``t`` (epoch seconds) is absurd, or None if it is plausible."""
    if t != t or t < MIN_TIME:  # NaN or before 2000
        return f"absurd timestamp {t!r}: before 2000-01-01"
    if ref is not None and t > ref + MAX_FUTURE:
        return f"absurd timestamp {t:.0f}: more than a day after it was produced ({ref:.0f})"
    if ref is not None and t < ref - MAX_PAST:
        return f"absurd timestamp {t:.0f}: more than 30 days before it was produced ({ref:.0f})"
    return None

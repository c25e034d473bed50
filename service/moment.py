"""Instants as people type them: ISO 8601 (``2026-01-05T03:00:00Z``) or relative to now (``now``,
``now-30m``, ``now - 2h``, ``now-PT15M``).

A relative time is read when the query runs, against the clock reading every resolver of that
request shares (``RequestContext.now``), not when the argument is parsed: :class:`RelativeTime`
keeps the offset, and :func:`epoch` turns any instant argument into epoch seconds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import dateutil.parser

from topology.settings import parse_duration

__all__ = ["RelativeTime", "epoch", "parse_moment"]

_RELATIVE = re.compile(r"^\s*now\s*(?:(?P<sign>[-+])\s*(?P<offset>\S.*?))?\s*$", re.IGNORECASE)


class RelativeTime(datetime):
    """``now + offset`` (offset in seconds, negative for the past). As a datetime it holds the instant
    it stood for when parsed; :func:`epoch` reads it against the request's clock instead."""

    offset: float

    @classmethod
    def from_now(cls, offset: float) -> RelativeTime:
        t = datetime.now(UTC) + timedelta(seconds=offset)
        out = cls(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, tzinfo=UTC)
        out.offset = offset
        return out


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date-time, or ``now`` with an optional ``+``/``-`` duration (90s, 30m, 1h30m, PT15M)."""
    m = _RELATIVE.match(text)
    if m is None:
        return dateutil.parser.isoparse(text)
    if m["sign"] is None:
        return RelativeTime.from_now(0.0)
    seconds = parse_duration(m["offset"])
    return RelativeTime.from_now(-seconds if m["sign"] == "-" else seconds)


def epoch(at: datetime, now: float) -> float:
    """Epoch seconds of an instant argument; a relative time counts from ``now``; no offset means UTC."""
    if isinstance(at, RelativeTime):
        return now + at.offset
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()

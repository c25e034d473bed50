"""Instants as people type them: ISO 8601 or relative to now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.moment import RelativeTime, epoch, parse_moment

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("text", "offset"), [
    ("now", 0.0), ("now-30m", -1800.0), ("now - 2h", -7200.0), ("NOW-1h30m", -5400.0), ("now-PT15M", -900.0),
    ("now+5m", 300.0), ("now-90", -90.0), (" now-1d ", -86400.0),
])
def test_relative_times_count_from_the_request_clock(text: str, offset: float) -> None:
    at = parse_moment(text)
    assert isinstance(at, RelativeTime) and at.offset == offset
    assert epoch(at, NOW) == NOW + offset


def test_absolute_times_ignore_the_clock_and_no_offset_means_utc() -> None:
    eight = datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert epoch(parse_moment("2027-01-15T08:00:00Z"), NOW) == eight
    assert epoch(parse_moment("2027-01-15T08:00:00"), NOW) == eight
    plus2 = parse_moment("2027-01-15T10:00:00+02:00")
    assert plus2.tzinfo is not None and epoch(plus2, NOW) == eight
    assert epoch(datetime(2027, 1, 15, 9, tzinfo=timezone(timedelta(hours=1))), NOW) == epoch(plus2, NOW)


@pytest.mark.parametrize("text", ["now-", "now-abc", "yesterday", "now*2", "", "now-1x"])
def test_what_is_not_a_time_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_moment(text)


@given(st.integers(min_value=0, max_value=10**7))
def test_any_seconds_ago(seconds: int) -> None:
    assert epoch(parse_moment(f"now-{seconds}s"), NOW) == NOW - seconds

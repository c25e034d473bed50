"""Event-time clocks of input partitions (pure, no broker)."""

from __future__ import annotations

import math

import pytest

from ingest.clock import MergedClock, SourceClock


def polled(clock: SourceClock, start: float, end: float, every: float = 0.2) -> bool:
    """Check the clock as a worker polling every ``every`` seconds would; True if it ever moved."""
    moved = False
    t = start
    while t <= end + 1e-9:
        moved |= clock.advance_if_idle(t)
        t += every
    return moved


def test_a_partition_watched_silent_for_idle_seconds_follows_the_wall_clock() -> None:
    c = SourceClock(idle_seconds=3.0)
    c.observe(1000.0, wall=5000.0)
    assert not polled(c, 5000.0, 5002.9)
    assert c.now == 1000.0
    assert polled(c, 5003.0, 5004.0)
    assert 1000.0 < c.now <= 1000.0 + 30.0 * 1.0 + 1e-6  # step by step at idle_rate, no jump to the wall
    polled(c, 5004.2, 5200.0)
    assert c.now == pytest.approx(5200.0)  # and in the end it reaches the wall clock


def test_a_stalled_worker_does_not_mistake_its_own_stall_for_silence() -> None:
    c = SourceClock(idle_seconds=3.0)
    c.observe(1000.0, wall=5000.0)
    polled(c, 5000.0, 5001.0)
    # the process did not poll for 4 s (starved, blocked event loop): records may be waiting unread
    assert not c.advance_if_idle(5005.0)
    assert not polled(c, 5005.2, 5007.9)
    assert c.now == 1000.0
    assert polled(c, 5008.0, 5008.4)  # three watched seconds of silence after the stall


def test_activity_resets_the_idle_timer() -> None:
    c = SourceClock(idle_seconds=3.0)
    c.observe(1000.0, wall=5000.0)
    polled(c, 5000.0, 5002.0)
    c.touch(5002.0)  # a record without usable time is still activity
    assert not polled(c, 5002.2, 5004.8)
    assert c.now == 1000.0


def test_a_partition_that_never_had_a_record_starts_from_the_floor() -> None:
    c = SourceClock(idle_seconds=3.0, last_activity=5000.0)
    t = 5000.0
    while t < 5002.9:
        assert not c.advance_if_idle(t, floor=1234.0)
        t += 0.2
    assert c.now == -math.inf
    assert c.advance_if_idle(5003.0, floor=1234.0)
    assert c.now == 1234.0  # the slowest clock of the worker's other partitions, not the wall clock


def test_merged_clock_is_the_minimum_over_expected_sources_and_never_goes_back() -> None:
    m = MergedClock()
    m.expect(frozenset({"a:0", "a:1"}))
    m.observe("a:0", 100.0)
    assert m.now == -math.inf  # a:1 not heard from yet
    m.observe("a:1", 90.0)
    assert m.now == 90.0
    m.observe("a:1", 80.0)  # an older clock from the same source changes nothing
    assert m.now == 90.0
    m.observe("a:1", 120.0)
    assert m.now == 100.0

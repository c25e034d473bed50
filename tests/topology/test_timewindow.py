"""``read_plan``: which stored windows answer a time range, checked against a model of a store.

The model: one request in every minute before ``now``. The store's last roll-up ran at ``through``
(at or before ``now``): it built every hour and day that ended by then and deleted the windows past
their retention at that clock. Late minutes (``pending`` hours) arrived after their hour was built:
the hour window (and its day's) misses one request each until the next roll-up.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from topology.timewindow import DAY, HOUR, MINUTE, Retention, Rollups, Span, TimeRange, align, read_plan

T0 = 1_700_006_400  # a UTC midnight


@dataclass(frozen=True)
class Store:
    now: float
    retention: Retention
    rollups: Rollups

    def kept(self, seconds: int, start: int) -> bool:
        """Whether the window exists (built, if a roll-up, and not deleted by the last roll-up)."""
        cutoff = self.rollups.through - self.retention.for_granularity(seconds)
        alive = start + seconds > cutoff if self.rollups.through else True
        return alive and (seconds == MINUTE or self.rollups.built(seconds, start))

    def requests(self, seconds: int, start: int) -> int:
        """What the stored window holds: its minutes before ``now``, less the late ones not rolled up."""
        if not self.kept(seconds, start):
            return 0
        n = max(0, min(start + seconds, _up(self.now, MINUTE)) - start) // MINUTE
        if seconds > MINUTE:
            n -= sum(1 for g, s in self.rollups.pending if start <= s < start + seconds and g < seconds)
            n -= (seconds, start) in self.rollups.pending
        return n

    def answer(self, plan: tuple[Span, ...]) -> int:
        total = 0
        for sp in plan:
            if sp.seconds == MINUTE:  # many: counted arithmetically
                lo = sp.start
                if self.rollups.through:  # deleted: those ending at or before through - retention
                    cutoff = self.rollups.through - self.retention.minute
                    lo = max(lo, align(cutoff - MINUTE, MINUTE) + MINUTE)
                hi = min(sp.end, _up(self.now, MINUTE))
                total += max(0, hi - lo) // MINUTE
            else:
                total += sum(self.requests(sp.seconds, t) for t in range(sp.start, sp.end, sp.seconds))
        return total


def _up(t: float, seconds: int) -> int:
    return -int(-t // seconds) * seconds


def minutes_before_now(lo: int, hi: int, now: float) -> int:
    return max(0, min(hi, _up(now, MINUTE)) - lo) // MINUTE


@st.composite
def stores(draw: st.DrawFn) -> Store:
    now = T0 + draw(st.integers(0, 40 * DAY))
    retention = Retention(
        minute=draw(st.sampled_from([HOUR, 2 * HOUR, 6 * HOUR])),
        hour=draw(st.sampled_from([DAY, 3 * DAY, 14 * DAY])),
        day=draw(st.sampled_from([30 * DAY, 400 * DAY])),
    )
    if draw(st.integers(0, 9)) == 0:
        return Store(now, retention, Rollups())  # never rolled up: only minutes
    through = now - draw(st.integers(0, HOUR // 2))
    # late minutes land in built hours whose minutes are still kept
    first = align(through - retention.minute, HOUR) + HOUR
    built = list(range(first, align(through, HOUR), HOUR))
    pending = draw(st.lists(st.sampled_from(built), max_size=3)) if built else []
    marks = {(HOUR, h) for h in pending}
    if draw(st.booleans()) and through > DAY:  # a day rebuilt from a late hour, before the next roll-up
        marks.add((DAY, align(through, DAY) - DAY))
    return Store(now, retention, Rollups(through, frozenset(marks)))


@st.composite
def ranges(draw: st.DrawFn, now: float) -> TimeRange:
    start = now - draw(st.integers(0, 45 * DAY))
    end = start + draw(st.integers(1, 45 * DAY))
    return TimeRange(start, min(end, now + HOUR))


def finer(seconds: int) -> int:
    return {HOUR: MINUTE, DAY: HOUR}[seconds]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_plan_reads_every_minute_of_the_range_once_from_windows_that_hold_it(data: st.DataObject) -> None:
    store = data.draw(stores())
    time = data.draw(ranges(store.now))
    assume(time.start >= store.now - store.retention.day)  # before it nothing is kept
    plan = read_plan(time, store.now, store.retention, store.rollups)
    # disjoint, in time order, contiguous, aligned, and covering the range's minutes
    assert plan
    for sp in plan:
        assert sp.start < sp.end and sp.start % sp.seconds == 0 and sp.end % sp.seconds == 0
    for a, b in itertools.pairwise(plan):
        assert a.end == b.start and a.seconds != b.seconds
    lo, hi = align(time.start, MINUTE), _up(time.end, MINUTE)
    assert plan[0].start <= lo and plan[-1].end >= hi
    # at most the granularity that retention says still covers the range start; minutes alone need
    # no roll-up (stores skip reading their roll-up state then)
    top = store.retention.finest_covering(time.start, store.now)
    assert max(sp.seconds for sp in plan) <= top
    if top == MINUTE:
        assert plan == read_plan(time, store.now, store.retention, Rollups())
    extra = 0  # minutes read outside the range: only from coarse windows whose finer ones are gone
    for sp in plan:
        if sp.seconds == MINUTE:
            assert lo <= sp.start and sp.end <= hi
            continue
        for t in range(sp.start, sp.end, sp.seconds):
            assert store.rollups.built(sp.seconds, t), (sp, t, "a roll-up window that was not built")
            x, y = max(t, time.start), min(t + sp.seconds, time.end)
            gone = x < store.now - store.retention.for_granularity(finer(sp.seconds))
            outside = t < lo or t + sp.seconds > hi
            assert not outside or gone, (sp, t, "a partial period read coarse though its minutes are kept")
            assert gone or store.rollups.complete(sp.seconds, t), (sp, t, "a stale roll-up read")
            assert x < y
            extra += minutes_before_now(t, max(t, lo), store.now)
            extra += minutes_before_now(min(t + sp.seconds, hi), t + sp.seconds, store.now)
    # so the answer is the truth: every minute once, nothing missed, nothing twice (the late minutes
    # of a pending period are only missed where the plan had to read its roll-up: minutes gone)
    stale = sum(
        1 for sp in plan if sp.seconds > MINUTE for t in range(sp.start, sp.end, sp.seconds)
        for g, s in store.rollups.pending
        if (g == sp.seconds and s == t) or (g < sp.seconds and t <= s < t + sp.seconds)
    )
    assert store.answer(plan) == minutes_before_now(lo, hi, store.now) + extra - stale


NOW = T0 + 30 * DAY + 13 * HOUR + 25 * MINUTE + 17  # rolled up at the minute before
ROLLED = Rollups(through=NOW - 17)


def test_a_day_reads_the_hours_rolled_up_and_the_minutes_of_the_current_hour() -> None:
    plan = read_plan(TimeRange.ending_at(NOW, DAY), NOW, Retention(), ROLLED)
    hour = align(NOW, HOUR)
    assert plan == (Span(HOUR, hour - DAY, hour), Span(MINUTE, hour, _up(NOW, MINUTE)))


def test_thirty_days_read_days_then_hours_of_today_then_minutes_of_this_hour() -> None:
    plan = read_plan(TimeRange.ending_at(NOW, 30 * DAY), NOW, Retention(), ROLLED)
    day, hour = align(NOW, DAY), align(NOW, HOUR)
    assert plan == (
        Span(DAY, day - 30 * DAY, day), Span(HOUR, day, hour), Span(MINUTE, hour, _up(NOW, MINUTE)),
    )


def test_an_unaligned_head_is_read_finer_while_its_finer_windows_are_kept() -> None:
    # 5 hours back: minutes are kept (6 h) from the start on, so minutes answer (as before)
    start = NOW - 5 * HOUR
    plan = read_plan(TimeRange(start, NOW - 2 * HOUR), NOW, Retention(), ROLLED)
    assert plan == (Span(MINUTE, align(start, MINUTE), _up(NOW - 2 * HOUR, MINUTE)),)  # minutes cover it all
    # 10 days back: hours answer; the minutes of the head are gone, so the hour that holds it answers
    start = NOW - 10 * DAY - 30 * MINUTE
    plan = read_plan(TimeRange(start, NOW), NOW, Retention(), ROLLED)
    assert plan[0] == Span(HOUR, align(start, HOUR), align(NOW, HOUR))


def test_late_minutes_are_read_from_the_minutes_until_their_hour_is_rolled_up_again() -> None:
    late = align(NOW, HOUR) - 3 * HOUR
    plan = read_plan(TimeRange.ending_at(NOW, DAY), NOW, Retention(), Rollups(ROLLED.through,
                                                                                 frozenset({(HOUR, late)})))
    hour = align(NOW, HOUR)
    assert plan == (
        Span(HOUR, hour - DAY, late), Span(MINUTE, late, late + HOUR), Span(HOUR, late + HOUR, hour),
        Span(MINUTE, hour, _up(NOW, MINUTE)),
    )


def test_without_any_roll_up_the_minutes_answer() -> None:
    assert read_plan(TimeRange.ending_at(NOW, DAY), NOW, Retention(), Rollups()) == (
        Span(MINUTE, align(NOW - DAY, MINUTE), _up(NOW, MINUTE)),
    )


@pytest.mark.parametrize("length", [0.0, -0.0])
def test_an_empty_range_reads_nothing(length: float) -> None:
    assert read_plan(TimeRange(NOW, NOW + length), NOW, Retention(), ROLLED) == ()

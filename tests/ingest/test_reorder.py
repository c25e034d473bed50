"""The reorder buffer: records from several upstream partitions back into event-time order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.reorder import ReorderBuffer


def test_records_wait_until_the_clock_reaches_them_and_leave_oldest_first() -> None:
    b = ReorderBuffer()
    for t, data in [(5.0, b"e"), (1.0, b"a"), (3.0, b"c"), (3.0, b"d"), (2.0, b"b")]:
        b.push(t, data)
    assert list(b.release(0.5)) == []
    assert list(b.release(3.0)) == [(1.0, b"a"), (2.0, b"b"), (3.0, b"c"), (3.0, b"d")]  # ties: arrival order
    assert len(b) == 1
    assert list(b.release(10.0)) == [(5.0, b"e")] and len(b) == 0


def test_push_payloads_takes_each_payload_at_its_latest_time_or_nothing_on_bad_bytes() -> None:
    def times(data: bytes) -> list[int]:
        if data == b"bad":
            raise ValueError("bad bytes")
        return [int(x) * 1_000_000_000 for x in data.split(b",") if x]

    b = ReorderBuffer()
    assert b.push_payloads([b"3,9,4", b"", b"1"], times) == 4
    assert list(b.release(100.0)) == [(0.0, b""), (1.0, b"1"), (9.0, b"3,9,4")]
    with pytest.raises(ValueError):
        b.push_payloads([b"2", b"bad"], times)
    assert len(b) == 0  # nothing of a bad batch was pushed


@given(st.lists(st.tuples(st.floats(0, 100, allow_nan=False), st.binary(max_size=4)), max_size=40),
       st.lists(st.floats(0, 120, allow_nan=False), max_size=6))
def test_released_records_are_sorted_complete_and_never_early(items: list[tuple[float, bytes]],
                                                              clocks: list[float]) -> None:
    b = ReorderBuffer()
    for t, data in items:
        b.push(t, data)
    out: list[tuple[float, bytes]] = []
    for now in [*sorted(clocks), 1000.0]:
        released = list(b.release(now))
        assert all(t <= now for t, _ in released)
        out.extend(released)
    assert [t for t, _ in out] == sorted(t for t, _ in items)
    assert sorted(out) == sorted(items)

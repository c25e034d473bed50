"""AddressBook: the lease valid at an instant, whatever order the leases arrive in."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topology.address import AddressBook
from topology.catalog import AddressKind, AddressLease
from topology.wire.flow import pack_ip

W = AddressKind.WORKLOAD


def test_resolves_the_owner_at_the_instant_not_the_current_one() -> None:
    book = AddressBook([AddressLease("10.0.0.5", "old", W, 100, 200, "old-v1"),
                        AddressLease("10.0.0.5", "new", W, 250, None, "new-v3")])
    assert book.resolve("10.0.0.5", 99.9) is None
    assert book.resolve("10.0.0.5", 100).owner == "old"  # type: ignore[union-attr]
    assert book.resolve("10.0.0.5", 199.99).owner == "old"  # type: ignore[union-attr]
    assert book.resolve("10.0.0.5", 200) is None  # end is exclusive; nobody until 250
    assert book.resolve("10.0.0.5", 250).cluster == "new-v3"  # type: ignore[union-attr]
    assert book.resolve("10.0.0.5", 10**10).owner == "new"  # type: ignore[union-attr]
    assert book.resolve("10.0.0.6", 150) is None


def test_a_later_lease_closes_the_open_one_at_its_start() -> None:
    book = AddressBook()
    book.add(AddressLease("10.0.0.5", "old", W, 100))
    book.add(AddressLease("10.0.0.5", "new", W, 300))
    assert [(x.owner, x.end) for x in book.leases("10.0.0.5")] == [("old", 300), ("new", None)]
    assert book.resolve("10.0.0.5", 299).owner == "old"  # type: ignore[union-attr]
    # out of order: a lease that starts in between closes the earlier one and is bounded by the later one
    book.add(AddressLease("10.0.0.5", "middle", W, 200))
    assert [(x.owner, x.start, x.end) for x in book.leases("10.0.0.5")] == [
        ("old", 100, 200), ("middle", 200, 300), ("new", 300, None)]
    assert book.counters["closed_by_successor"] == 2


def test_adding_twice_changes_nothing_and_an_end_record_closes_the_lease() -> None:
    lease = AddressLease("10.0.0.5", "svc", W, 100, None, "svc-v1")
    book = AddressBook([lease, lease])
    assert book.leases("10.0.0.5") == (lease,)
    book.add(AddressLease("10.0.0.5", "svc", W, 100, 150, "svc-v1"))
    book.add(lease)  # replaying the open record does not re-open it
    assert [x.end for x in book.leases("10.0.0.5")] == [150]
    assert book.resolve("10.0.0.5", 160) is None
    # the same start with another owner is a correction: it replaces the lease
    book.add(AddressLease("10.0.0.5", "other", W, 100))
    assert [x.owner for x in book.leases("10.0.0.5")] == ["other"]
    assert book.counters["replaced"] == 1


def test_text_and_packed_forms_reach_the_same_leases() -> None:
    book = AddressBook([AddressLease("10.1.2.0", "v4", W, 0), AddressLease("2001:db8::1", "v6", W, 0),
                        AddressLease("::ffff:10.9.9.9", "mapped", W, 0)])
    assert len(book) == 3
    for text in ("10.1.2.0", "::ffff:10.1.2.0", "::ffff:a01:200"):
        assert book.resolve(text, 5).owner == "v4"  # type: ignore[union-attr]
    assert book.resolve(pack_ip("10.1.2.0"), 5).owner == "v4"  # type: ignore[union-attr]
    assert book.resolve(pack_ip("10.1.2.0").rstrip(b"\x00"), 5).owner == "v4"  # type: ignore[union-attr]
    assert book.resolve("2001:0db8:0::1", 5).owner == "v6"  # type: ignore[union-attr]
    assert book.resolve("10.9.9.9", 5).owner == "mapped"  # type: ignore[union-attr]
    assert book.resolve("not an address", 5) is None
    assert book.resolve_span("10.1.2.0", 1, 2)[0] is book.resolve_span("10.1.2.0", 1, 2)[1]


def test_an_unknown_address_becomes_known_when_its_lease_arrives() -> None:
    book = AddressBook()
    assert book.resolve("10.3.3.3", 5) is None
    book.add(AddressLease("10.3.3.3", "late", W, 0))
    assert book.resolve("10.3.3.3", 5).owner == "late"  # type: ignore[union-attr]


def test_invalid_ip_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="invalid ip"):
        AddressBook().add(AddressLease("10.0.0.300", "svc", W, 0))


lease_lists = st.lists(
    st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2"]), st.sampled_from(["a", "b", "c"]),
              st.integers(0, 1000), st.one_of(st.none(), st.integers(0, 1000))),
    max_size=12,
    unique_by=lambda x: (x[0], x[2]),  # one claim per address and start: then order cannot matter
)


@given(lease_lists, st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_arrival_order(raw: list[tuple[str, str, int, int | None]],
                                                     rnd: random.Random) -> None:
    leases = [AddressLease(ip, owner, W, start, None if end is None else start + end)
              for ip, owner, start, end in raw]
    shuffled = leases * 2
    rnd.shuffle(shuffled)
    a, b = AddressBook(leases), AddressBook(shuffled)
    for ip in ("10.0.0.1", "10.0.0.2"):
        assert a.leases(ip) == b.leases(ip)
        for t in range(-1, 2100, 37):
            ra = a.resolve(ip, t)
            assert ra == b.resolve(ip, t)
            # the answer is the latest lease started at or before t, if it still held the address at t
            started = [x for x in leases if x.ip == ip and x.start <= t]
            if not started:
                assert ra is None
                continue
            latest = max(started, key=lambda x: x.start)
            held = latest.end is None or t < latest.end
            assert (ra is None) == (not held)
            if ra is not None:
                assert ra.owner == latest.owner


def test_neighbours_are_the_leases_just_before_and_just_after_an_uncovered_instant() -> None:
    old, mid, new = (AddressLease("10.0.0.5", "old", W, 100, 200, "old-v1"),
                     AddressLease("10.0.0.5", "mid", W, 300, 400, "mid-v1"),
                     AddressLease("10.0.0.5", "new", W, 500, None, "new-v3"))
    book = AddressBook([new, old, mid])
    assert book.neighbours("10.0.0.5", 50) == (None, old)
    assert book.neighbours("10.0.0.5", 200) == (old, mid)  # the end is exclusive: 200 is not covered
    assert book.neighbours("10.0.0.5", 450) == (mid, new)
    assert book.neighbours("10.0.0.5", 150) == (None, None)  # covered: no question of neighbours
    assert book.neighbours("10.0.0.5", 10**10) == (None, None)  # the open lease covers it
    assert book.neighbours("10.0.0.6", 150) == (None, None)
    assert book.neighbours(pack_ip("10.0.0.5"), 250) == (old, mid)

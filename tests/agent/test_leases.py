"""Address ownership from the agent's sightings: publish, renew, move, share, never lease loopback."""

from __future__ import annotations

from agent.leases import Leases
from agent.workloads import Workload
from topology.address import AddressBook

CART, SEARCH = Workload("cart", "cart-prod"), Workload("search", "")
IP = "10.1.2.3"


def test_first_sighting_publishes_then_renews_while_in_use() -> None:
    alive: set[int] = {1}
    leases = Leases(alive.__contains__, renew_seconds=30)
    leases.observe(IP, CART, 1, since=100.0, seen=101.0)
    leases.observe(IP, CART, 1, since=99.5, seen=102.0)  # an earlier start before publishing: kept
    (lease,) = leases.due(110.0)
    got = (lease.ip, lease.owner, lease.cluster, lease.start, lease.end)
    assert got == (IP, "cart", "cart-prod", 99.5, None)
    assert leases.due(120.0) == []  # nothing new, renewal not due
    assert leases.due(145.0) == []  # due, but the address was not used since it was sent
    leases.observe(IP, CART, 1, since=150.0, seen=151.0)
    (renewal,) = leases.due(151.0)
    assert renewal == lease
    assert leases.counters == {"moved": 0, "shared": 0, "published": 1, "renewed": 1}


def test_a_move_starts_a_new_lease_after_the_old_owner_and_ends_the_old_one() -> None:
    alive: set[int] = {1}
    leases = Leases(alive.__contains__)
    leases.observe(IP, CART, 1, since=100.0, seen=105.0)
    old = leases.due(106.0)
    alive.clear()  # the cart process exited
    leases.observe(IP, SEARCH, 2, since=103.0, seen=120.0)  # a process started before cart's last use
    closing, new = leases.due(121.0)
    assert (closing.owner, closing.start, closing.end) == ("cart", 100.0, 105.0)
    assert (new.owner, new.start, new.end) == ("search", 105.0, None)
    book = AddressBook([*old, closing, new])
    assert book.resolve(IP, 104.9).owner == "cart"
    assert book.resolve(IP, 105.0).owner == "search"
    assert leases.counters["moved"] == 1


def test_an_address_used_by_two_live_workloads_is_not_leased() -> None:
    alive: set[int] = {1, 2}
    leases = Leases(alive.__contains__)
    leases.observe(IP, CART, 1, since=100.0, seen=101.0)
    (first,) = leases.due(101.0)
    leases.observe(IP, SEARCH, 2, since=110.0, seen=111.0)
    (closing,) = leases.due(112.0)
    assert (closing.owner, closing.start, closing.end) == ("cart", 100.0, 110.0)
    leases.observe(IP, CART, 1, since=120.0, seen=121.0)
    assert leases.due(200.0) == [] and leases.owner(IP) is None
    book = AddressBook([first, closing])
    assert book.resolve(IP, 115.0) is None  # unattributed, never misattributed
    alive.clear()  # both gone: the next user owns it afresh
    assert leases.due(201.0) == []
    leases.observe(IP, SEARCH, 3, since=300.0, seen=301.0)
    (fresh,) = leases.due(302.0)
    assert (fresh.owner, fresh.start) == ("search", 300.0)


def test_unattributed_users_end_the_lease_and_are_never_published() -> None:
    alive: set[int] = set()
    leases = Leases(alive.__contains__)
    leases.observe(IP, CART, 1, since=100.0, seen=101.0)
    (lease,) = leases.due(101.0)
    leases.observe(IP, Workload("unattributed:curl"), 2, since=110.0, seen=111.0)
    (closing,) = leases.due(112.0)
    assert (closing.owner, closing.end) == ("cart", 110.0)
    assert AddressBook([lease, closing]).resolve(IP, 110.5) is None


def test_loopback_and_link_local_are_never_leased() -> None:
    leases = Leases(lambda pid: True)
    for ip in ("127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0"):
        leases.observe(ip, CART, 1, since=1.0, seen=2.0)
    assert leases.due(3.0) == [] and len(leases) == 0


def test_forgotten_after_disuse() -> None:
    leases = Leases(lambda pid: True, forget_seconds=60)
    leases.observe(IP, CART, 1, since=100.0, seen=100.0)
    assert len(leases.due(101.0)) == 1
    leases.due(200.0)
    assert len(leases) == 0

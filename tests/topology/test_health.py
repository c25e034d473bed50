"""HealthBook: the state of a service at an instant and during a window."""

from __future__ import annotations

from topology.catalog import HealthEvent, HealthState
from topology.health import HealthBook

H, D, U = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY


def test_state_at_and_since() -> None:
    book = HealthBook([HealthEvent("api", U, 300, "5xx"), HealthEvent("api", H, 100),
                       HealthEvent("api", H, 200), HealthEvent("api", D, 400)])
    assert book.state_at("api", 99) is None
    s = book.state_at("api", 250)
    assert s is not None and (s.status, s.since) == (H, 100)  # healthy since the first of the run
    s = book.state_at("api", 300)
    assert s is not None and (s.status, s.since, s.reason) == (U, 300, "5xx")
    assert book.state_at("web", 300) is None
    assert book.services() == ["api"]


def test_worst_during_a_window() -> None:
    book = HealthBook([HealthEvent("api", H, 100), HealthEvent("api", U, 130), HealthEvent("api", H, 140)])
    assert book.worst_during("api", 120, 180) is U
    assert book.worst_during("api", 140, 200) is H
    assert book.worst_during("api", 60, 100) is None  # nothing known before 100
    assert book.worst_during("api", 90, 120) is H
    assert book.worst_during("api", 135, 136) is U  # the state in force at the start counts
    assert book.worst_during("nobody", 0, 1000) is None


def test_same_instant_twice_is_a_correction() -> None:
    book = HealthBook([HealthEvent("api", H, 100), HealthEvent("api", U, 100)])
    s = book.state_at("api", 100)
    assert s is not None and s.status is U
    assert book.counters == {"events": 1, "duplicates": 1}

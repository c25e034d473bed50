"""The closest names to a name nobody knows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from topology.suggest import closest

KNOWN = ["checkout-api", "checkout-worker", "payments", "payments-db", "orders", "orders-db", "ledger",
         "search", "search-indexer"]


def test_typos_prefixes_and_case_find_their_service() -> None:
    assert closest("paymnets", KNOWN)[0] == "payments"
    assert closest("checkout", KNOWN)[:2] == ["checkout-api", "checkout-worker"]
    assert closest("ORDERS", KNOWN)[0] == "orders"
    assert closest("order", KNOWN)[:2] == ["orders", "orders-db"]
    assert closest("search-indexer-v2", KNOWN)[0] == "search-indexer"


def test_nothing_alike_gives_nothing() -> None:
    assert closest("zzzz", KNOWN) == []
    assert closest("x", []) == []


def test_at_most_n_best_first() -> None:
    assert len(closest("payments", KNOWN, n=1)) == 1
    assert closest("payments", KNOWN)[0] == "payments"


@given(st.text(max_size=30), st.lists(st.text(max_size=30), max_size=30))
def test_suggestions_are_known_names_without_repeats(name: str, known: list[str]) -> None:
    got = closest(name, dict.fromkeys(known))
    assert len(got) <= 5 and len(set(got)) == len(got) and set(got) <= set(known)

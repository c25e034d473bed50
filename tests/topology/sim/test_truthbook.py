"""The truth book's minute bitmaps answer like a plain set of windows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from topology.model import Layer
from topology.sim.truth import TruthBook

BASE = 28_333_334 * 60  # a minute boundary


@given(
    st.lists(st.integers(0, 400), min_size=1, max_size=40), st.integers(-70, 25_000), st.integers(0, 25_000)
)
def test_window_queries_match_a_set_of_minutes(minutes: list[int], since_off: int, length: int) -> None:
    book = TruthBook()
    for m in minutes:  # any order, repeats, both entry points
        book.observe(Layer.NETWORK, "a", "b", BASE + m * 60 + (m % 60))
        book.observe_window(Layer.IPC, ("a", "b"), BASE + m * 60)
    windows = sorted({BASE + m * 60 for m in minutes})
    since, until = BASE + since_off, BASE + since_off + length
    expected = any(w + 60 > since and w < until for w in windows)
    for layer in (Layer.NETWORK, Layer.IPC):
        assert book.windows(layer, ("a", "b")) == windows
        assert (("a", "b") in book.pairs(layer, since, until)) == expected
        assert book.pairs(layer) == {("a", "b")}
    assert book.pairs(Layer.TRACE) == set()


def test_truth_json_shape() -> None:
    book = TruthBook()
    book.observe(Layer.NETWORK, "web", "orders-db", BASE)
    book.observe(Layer.TRACE, "user", "web", BASE + 61)
    book.observe(Layer.TRACE, "web", "orders-db", BASE + 61)
    assert book.as_dict() == {
        "layers": {
            "NETWORK": [["web", "orders-db"]],
            "IPC": [],
            "TRACE": [["user", "web"], ["web", "orders-db"]],
        },
        "unified": [["user", "web"], ["web", "orders-db"]],
    }
    assert book.as_dict(BASE + 60, BASE + 120)["layers"]["NETWORK"] == []
    assert book.as_dict(BASE + 59.5, BASE + 60)["layers"]["NETWORK"] == [["web", "orders-db"]]

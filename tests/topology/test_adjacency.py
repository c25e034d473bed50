"""topology.adjacency: integer adjacency, unions and the level walk, against a plain breadth-first walk."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topology.adjacency import Adjacency, union, walk

NAMES = ["a", "b", "c", "d", "e", "f", "g", "h", "A", "Z", "b-1", "naïve-服务"]
edges_st = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES)), max_size=40)


def reference(
    pairs: Iterable[tuple[str, str]], roots: Iterable[str], upstream: bool, depth: int
) -> list[tuple[str, int, str]]:
    """The level walk of topology.query.traverse on plain sets: each node once at its smallest depth,
    via the smallest name of the previous level that reaches it."""
    edges = set(pairs)
    seen = set(roots)
    frontier = set(roots)
    out: list[tuple[str, int, str]] = []
    for level in range(1, depth + 1):
        best: dict[str, str] = {}
        for s, t in edges:
            near, far = (s, t) if upstream else (t, s)
            if near in frontier and far not in seen and (far not in best or near < best[far]):
                best[far] = near
        if not best:
            break
        out += [(name, level, best[name]) for name in sorted(best)]
        seen |= set(best)
        frontier = set(best)
    return out


def walked(
    adjacency: Adjacency, roots: Iterable[str], upstream: bool, depth: int
) -> list[tuple[str, int, str]]:
    return [(name, lv.depth, via) for lv in walk(adjacency, roots, upstream, depth)
            for name, via in zip(lv.names, lv.via, strict=True)]


@settings(max_examples=300, deadline=None)
@given(edges_st, st.lists(st.sampled_from([*NAMES, "unknown"]), max_size=3), st.booleans(), st.integers(0, 7))
def test_the_walk_is_the_plain_breadth_first_walk(
    pairs: list[tuple[str, str]], roots: list[str], upstream: bool, depth: int
) -> None:
    adjacency = Adjacency.from_pairs(pairs)
    assert adjacency.pairs() == sorted(set(pairs))
    assert walked(adjacency, roots, upstream, depth) == reference(pairs, roots, upstream, depth)


@settings(max_examples=200, deadline=None)
@given(st.lists(edges_st, min_size=1, max_size=3), st.sampled_from(NAMES), st.booleans(), st.integers(0, 6))
def test_a_union_walks_like_the_graph_of_all_its_edges(
    layers: list[list[tuple[str, str]]], root: str, upstream: bool, depth: int
) -> None:
    parts = [Adjacency.from_pairs(p) for p in layers]
    merged = union(parts)
    everything = [e for p in layers for e in p]
    assert merged.pairs() == sorted(set(everything))
    assert walked(merged, [root], upstream, depth) == reference(everything, [root], upstream, depth)
    assert union(parts) is merged  # kept with its parts


def test_cycles_self_loops_and_depth() -> None:
    # a -> b -> c -> a (cycle), c -> c, d -> b; blast radius (against the edges) of a
    g = Adjacency.from_pairs([("a", "b"), ("b", "c"), ("c", "a"), ("c", "c"), ("d", "b"), ("a", "b")])
    assert len(g) == 5
    assert walked(g, ["a"], False, 10) == [("c", 1, "a"), ("b", 2, "c"), ("d", 3, "b")]
    assert walked(g, ["a"], False, 2) == [("c", 1, "a"), ("b", 2, "c")]
    assert walked(g, ["a"], False, 0) == []
    assert walked(g, ["a"], True, 10) == [("b", 1, "a"), ("c", 2, "b")]
    # two roots: a node reachable from both is listed once, via the smaller name
    assert walked(g, ["c", "d"], True, 1) == [("a", 1, "c"), ("b", 1, "d")]
    assert walked(g, ["nobody"], True, 3) == []
    with pytest.raises(ValueError, match="depth"):
        walk(g, ["a"], True, -1)


def test_empty() -> None:
    empty = Adjacency.from_pairs([])
    assert len(empty) == 0 and empty.pairs() == []
    assert walked(empty, ["a"], True, 3) == []
    assert union([]).pairs() == [] and union([empty]) is empty

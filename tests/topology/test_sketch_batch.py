"""QuantileBatch answers exactly what merging each group's sketches and asking the merge answers."""

from __future__ import annotations

import random

from topology.sketch import LatencySketch, merge_sketches
from topology.sketch_batch import QuantileBatch

QS = (0.0, 0.5, 0.9, 0.99, 1.0)


def _sparse_pairs(s: LatencySketch) -> tuple[int, ...]:
    """The counts as (empty buckets skipped, count) pairs, as the embedded store writes them."""
    out: list[int] = []
    gap = 0
    for c in s.counts:
        if c:
            out += (gap, c)
            gap = 0
        else:
            gap += 1
    return tuple(out)


def _check(groups: list[list[LatencySketch]], r: random.Random) -> None:
    batch = QuantileBatch(len(groups))
    for g, parts in enumerate(groups):
        for s in parts:
            if s.counts and r.random() < 0.5:
                batch.add_stored(g, s.scale, s.offset, s.zero, _sparse_pairs(s), True)
            elif s.total and r.random() < 0.5:
                batch.add_stored(g, s.scale, s.offset, s.zero, s.counts, False)
            else:
                batch.add(g, s)
    got = batch.quantiles(QS)
    for i, q in enumerate(QS):
        assert got[i] == [merge_sketches(parts).quantile(q) for parts in groups], q


def test_random_groups_give_the_same_floats_as_merging() -> None:
    r = random.Random(3)
    for _ in range(150):
        groups: list[list[LatencySketch]] = []
        for _ in range(r.randrange(1, 25)):
            parts = []
            for _ in range(r.randrange(0, 5)):
                xs = [r.lognormvariate(-4, 1.2) for _ in range(r.randrange(1, 90))]
                parts.append(LatencySketch.of(xs + [0.0] * r.randrange(0, 3)))
            groups.append(parts)
        _check(groups, r)


def test_edge_cases() -> None:
    r = random.Random(4)
    one = LatencySketch.of([0.25])
    zeros = LatencySketch(zero=4)  # observations at zero only
    finer = LatencySketch.from_counts({-300: 2, -290: 1, -200: 5}, 1, scale=7)  # another scale: merged as is
    _check([[], [LatencySketch()], [one], [zeros], [zeros, one], [finer], [finer, one, zeros], [one] * 7], r)
    _check([[]], r)  # nothing at all
    assert QuantileBatch(0).quantiles((0.5,)) == [[]]

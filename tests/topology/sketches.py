"""Latency sketches for tests: a hypothesis strategy and a builder from (seconds, count) pairs."""

from __future__ import annotations

from hypothesis import strategies as st

from topology.sketch import EMPTY, MAX_SCALE, SCALE, LatencySketch, bucket_of


def lat(*at: tuple[float, int], zero: int = 0) -> LatencySketch:
    """The sketch of ``count`` observations of ``seconds`` for each pair (at our scale)."""
    counts: dict[int, int] = {}
    for seconds, n in at:
        i = bucket_of(seconds)
        counts[i] = counts.get(i, 0) + n
    return LatencySketch.from_counts(counts, zero)


#: Any sketch a stage or a store can hold: our scale or a client's finer one, a few sparse buckets.
sketches = st.builds(
    LatencySketch.from_counts,
    st.one_of(  # far apart, or close together (as real latencies are, and stored sparse)
        st.dictionaries(st.integers(-1200, 1200), st.integers(0, 10**6), max_size=12),
        st.dictionaries(st.integers(-340, -100), st.integers(0, 300), max_size=40),
    ),
    st.integers(0, 50),
    st.sampled_from([SCALE, SCALE, SCALE + 1, MAX_SCALE]),
)

#: A latency field: unmeasured or a sketch.
latencies = st.one_of(st.just(EMPTY), sketches)

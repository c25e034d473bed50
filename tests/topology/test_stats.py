from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import (
    LogarithmMapping,
)

from tests.store.contract import QUANTILES
from tests.topology.sketches import latencies, sketches
from topology.sim.latency import LATENCY_SHAPES, latency_samples
from topology.sketch import (
    EMPTY,
    MAX_BUCKETS,
    MAX_SCALE,
    SCALE,
    LatencySketch,
    bucket_of,
    merge_sketches,
    relative_error,
)
from topology.stats import EdgeStats, latency_from_json
from topology.store.embedded_codec import StatsCodec, decode, encode, stored, stored_sketch

stats = st.builds(
    EdgeStats,
    first_seen=st.floats(1, 2e9),
    last_seen=st.floats(1, 2e9),
    ports=st.lists(st.integers(1, 65535), max_size=20).map(lambda x: tuple(sorted(set(x))[:16])),
    connections=st.integers(0, 10**6),
    requests=st.integers(0, 10**6),
    errors=st.integers(0, 10**6),
    latency=latencies,
    endpoints=st.lists(st.text(max_size=5), max_size=70).map(lambda x: tuple(sorted(set(x))[:64])),
)


@given(stats, stats, stats)
def test_merge_is_associative_and_commutative(a: EdgeStats, b: EdgeStats, c: EdgeStats) -> None:
    assert a.merge(b) == b.merge(a)
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    assert left.to_dict().keys() == right.to_dict().keys()
    assert left.requests == right.requests and left.endpoints == right.endpoints
    assert left.latency == right.latency and left.first_seen == right.first_seen


@given(stats)
def test_dict_round_trip(a: EdgeStats) -> None:
    assert EdgeStats.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_merge_max_does_not_double_count_two_views_of_one_connection() -> None:
    client = EdgeStats(first_seen=10, last_seen=20, connections=3, bytes_sent=100, ports=(443,))
    server = EdgeStats(first_seen=11, last_seen=21, connections=3, bytes_sent=100, ports=(443,))
    both = client.merge_max(server)
    assert both.connections == 3 and both.bytes_sent == 100
    assert (both.first_seen, both.last_seen) == (10, 21)


# -- the sketch: encode/decode and merge ------------------------------------------------------------
@given(sketches, sketches, sketches)
def test_sketch_merge_is_associative_and_commutative(a: LatencySketch, b: LatencySketch,
                                                     c: LatencySketch) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c)) == merge_sketches([a, b, c])
    assert merge_sketches([c, a, b]) == merge_sketches([a, b, c])
    m = a.merge(b).merge(c)
    assert m.total == a.total + b.total + c.total
    assert m.scale == min((s.scale for s in (a, b, c) if s), default=m.scale)
    assert SCALE <= m.scale <= MAX_SCALE and (m.scale == SCALE or len(m.counts) <= MAX_BUCKETS)
    assert a.merge(EMPTY) == a and EMPTY.merge(a) == a


@given(sketches)
def test_sketch_encodings_round_trip(s: LatencySketch) -> None:
    assert LatencySketch.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert latency_from_json(json.loads(json.dumps(s.to_json()))) == s
    assert stored_sketch(stored(s)) == s
    assert pickle.loads(pickle.dumps(s)) == s and pickle.loads(pickle.dumps(s)).total == s.total
    st_ = EdgeStats(requests=s.total, latency=s, latency_sum=1.5)
    assert decode(encode(st_)) == st_
    codec = StatsCodec()
    assert codec.decode(codec.encode(st_, 0), 0) == st_


@given(st.dictionaries(
    st.sampled_from(["s", "o", "z", "c", "x"]),
    st.one_of(st.integers(-3, 9), st.lists(st.integers(-3, 3), max_size=4), st.text(max_size=2)),
))
def test_bad_json_sketches_are_refused_with_a_value_error(d: dict[str, object]) -> None:
    try:
        s = LatencySketch.from_json(d)
    except ValueError:
        return
    assert SCALE <= s.scale <= MAX_SCALE and all(c >= 0 for c in s.counts)


@given(st.floats(1e-8, 1e5))
def test_bucket_index_is_opentelemetry_s(v: float) -> None:
    for scale in (SCALE, MAX_SCALE):
        assert bucket_of(v, scale) == LogarithmMapping(scale).map_to_index(v)


@given(st.lists(st.floats(1e-6, 1e4), min_size=1, max_size=200), st.floats(0, 1))
def test_any_quantile_is_within_the_relative_error_of_numpy(xs: list[float], q: float) -> None:
    est = LatencySketch.of(xs).quantile(q)
    want = float(np.quantile(xs, q))
    assert est is not None and abs(est - want) <= relative_error() * want * (1 + 1e-9)


def test_relative_error_at_our_scale_is_about_1_percent() -> None:
    assert 0.0108 < relative_error() < 0.0109 and relative_error(MAX_SCALE) < 0.0014


# -- accuracy against numpy, through merges ---------------------------------------------------------------
@pytest.mark.parametrize("shape", LATENCY_SHAPES)
def test_quantiles_of_merged_minutes_are_within_2_percent_of_numpy(shape: str) -> None:
    xs = latency_samples(shape, 20_000)
    parts = [LatencySketch.of(p.tolist()) for p in np.array_split(xs, 60)]
    folded = EMPTY
    for p in parts:
        folded = folded.merge(p)
    assert folded == merge_sketches(parts) == LatencySketch.of(xs.tolist())
    for q in QUANTILES:
        want = float(np.quantile(xs, q))
        est = folded.quantile(q)
        assert est is not None and abs(est - want) <= 0.02 * want, (q, est, want)


def test_the_old_power_of_two_buckets_were_far_off_and_the_sketch_is_not() -> None:
    # the measurement: p99 of constant latencies was +82-96% off with power-of-two buckets
    xs = latency_samples("constant", 1000)
    s = LatencySketch.of(xs.tolist())
    assert s.quantile(0.99) == pytest.approx(0.0425, rel=relative_error())
    assert s.quantile(0.5) == pytest.approx(0.0425, rel=relative_error())


# -- what clients send --------------------------------------------------------------------------------
def test_an_exponential_histogram_in_seconds_keeps_its_finer_scale() -> None:
    s = LatencySketch.from_otlp(7, {-800: 3, -790: 1}, 2)
    assert (s.scale, s.offset, s.counts[0], s.counts[-1], s.zero) == (7, -800, 3, 1, 2)
    # finer than MAX_SCALE: merged down to it, bucket for bucket (10 -> 8 merges 4 buckets into one)
    s = LatencySketch.from_otlp(10, {-3200: 1, -3199: 1, -3197: 1, -3196: 5}, 0)
    assert (s.scale, s.offset, s.counts) == (MAX_SCALE, -800, (3, 5))  # -3200..-3197 -> -800
    # merging with one of ours gives ours
    assert s.merge(LatencySketch.of([0.01])).scale == SCALE


def test_an_exponential_histogram_in_milliseconds_maps_each_bucket_by_its_middle() -> None:
    # scale 0, bucket 2 = (4, 8] ms: its middle in relative terms is 16/3 ms
    s = LatencySketch.from_otlp(0, {2: 5}, 1, unit_seconds=1e-3)
    assert s == LatencySketch.from_counts({bucket_of(0.016 / 3): 5}, 1)


def test_old_power_of_two_histograms_read_as_sketches_at_their_old_resolution() -> None:
    old = [0] * 22
    old[5], old[11] = 7, 1  # (16, 32] ms and (1.024, 2.048] s
    s = latency_from_json(old)
    assert s.total == 8 and s.quantile(0.0) == pytest.approx(0.016 * 2**0.5, rel=relative_error())
    assert EdgeStats.from_dict({"latency": old, "requests": 8}).latency == s
    with pytest.raises(ValueError):
        latency_from_json([1, 2, 3])


def test_few_calls_spread_wide_are_stored_sparse_and_read_back_the_same() -> None:
    codec = StatsCodec()
    few = EdgeStats(requests=3, latency=LatencySketch.of([0.002, 0.01, 0.09]))  # ~70 and ~100 buckets apart
    dense_bytes = len(few.latency.counts)
    blob = codec.encode(few, 0)
    assert codec.decode(blob, 0) == few
    assert len(blob) < dense_bytes  # 3 (gap, count) pairs instead of ~170 counts


def test_a_sketch_beyond_the_range_we_keep_is_refused() -> None:
    with pytest.raises(ValueError, match="buckets lie in"):
        LatencySketch.from_json({"s": 5, "o": 10**6, "z": 0, "c": [1]})
    far = LatencySketch.from_counts({10**6: 2, -(10**6): 1})  # built from a client's counts: clamped
    assert far.quantile(1.0) == pytest.approx(2.0**20, rel=0.011) and far.total == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600), st.integers(1, 2**40)), min_size=1, max_size=12),
       st.integers(-300, 300), st.integers(0, 3))
def test_sparse_sketches_of_any_width_and_gap_read_back_the_same(pairs: list[tuple[int, int]], offset: int,
                                                                zero: int) -> None:
    counts: list[int] = []
    for gap, n in pairs:
        counts += [0] * (gap if counts else 0) + [n]
    s = EdgeStats(requests=1, latency=LatencySketch(5, offset, tuple(counts), zero))
    codec = StatsCodec()
    assert codec.decode(codec.encode(s, 0), 0) == s


def test_a_negative_sketch_count_is_stored_plain_and_read_back_the_same() -> None:
    s = EdgeStats(requests=1, latency=LatencySketch(5, 0, (3,) + (0,) * 40 + (-1, 9), 0))
    codec = StatsCodec()
    blob = codec.encode(s, 0)
    assert blob[0] == 0 and codec.decode(blob, 0) == s  # tag 0: the plain format

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from topology.stats import LATENCY_BOUNDS, N_BUCKETS, EdgeStats, bucket_index, latency_histogram

hist = st.lists(st.integers(0, 1000), min_size=N_BUCKETS, max_size=N_BUCKETS).map(tuple)
stats = st.builds(
    EdgeStats,
    first_seen=st.floats(1, 2e9),
    last_seen=st.floats(1, 2e9),
    ports=st.lists(st.integers(1, 65535), max_size=20).map(lambda x: tuple(sorted(set(x))[:16])),
    connections=st.integers(0, 10**6),
    requests=st.integers(0, 10**6),
    errors=st.integers(0, 10**6),
    latency=st.one_of(st.just(()), hist),
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
    assert EdgeStats.from_dict(a.to_dict()) == a


def test_merge_max_does_not_double_count_two_views_of_one_connection() -> None:
    client = EdgeStats(first_seen=10, last_seen=20, connections=3, bytes_sent=100, ports=(443,))
    server = EdgeStats(first_seen=11, last_seen=21, connections=3, bytes_sent=100, ports=(443,))
    both = client.merge_max(server)
    assert both.connections == 3 and both.bytes_sent == 100
    assert (both.first_seen, both.last_seen) == (10, 21)


def test_bucket_edges_and_quantile() -> None:
    assert bucket_index(0.001) == 0
    assert bucket_index(0.0011) == 1
    assert bucket_index(0.002) == 1
    assert bucket_index(1e9) == N_BUCKETS - 1
    h = latency_histogram([0.010] * 99 + [1.5])
    s = EdgeStats(latency=h, requests=100)
    p50 = s.latency_quantile(0.5)
    assert p50 is not None and 0.008 <= p50 <= 0.016
    p999 = s.latency_quantile(0.999)
    assert p999 is not None and LATENCY_BOUNDS[10] <= p999 <= LATENCY_BOUNDS[11]

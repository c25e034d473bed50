"""The store contract against the embedded store, plus what only the embedded store does."""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import pathlib
import random
import shutil
import sqlite3
import struct
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.store.contract import (
    APP,
    DOWN,
    IPC,
    LIVE,
    LIVE_NOW,
    NET,
    T0,
    UP,
    StoreContract,
    StoresFactory,
    minutes,
    npairs,
    win,
)
from tests.topology.sketches import latencies
from topology.catalog import HealthEvent, HealthState, TraceSummary
from topology.model import Layer, NodeKind
from topology.sketch import EMPTY, SCALE, LatencySketch, merge_sketches
from topology.sketch_batch import QuantileBatch
from topology.stats import EdgeStats
from topology.store import embedded_layer
from topology.store.base import Stores, StoreUnavailable
from topology.store.embedded import open_stores
from topology.store.embedded_catalog import HEALTH_IN_MEMORY, TRACES_PER_SERVICE
from topology.store.embedded_codec import (
    CODEC,
    StatsCodec,
    decode,
    decode_fields,
    encode,
    merge_all,
    merge_fields,
)
from topology.store.embedded_hot import HotRing
from topology.timewindow import DAY, HOUR, MINUTE, Retention, TimeRange


class EmbeddedFactory(StoresFactory):
    supports_reopen = True

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.opened: list[Stores] = []
        self.dir = root
        self.retention = Retention()

    async def fresh(self, retention: Retention | None = None) -> Stores:
        self.dir = self.root / f"stores{len(self.opened)}"
        self.retention = retention or Retention()
        stores = open_stores(self.dir, self.retention)
        self.opened.append(stores)
        return stores

    async def reopen(self) -> Stores:
        await self.opened[-1].close()
        stores = open_stores(self.dir, self.retention)
        self.opened.append(stores)
        return stores

    async def close(self) -> None:
        for s in self.opened:
            await s.close()


class TestEmbeddedStore(StoreContract):
    @pytest.fixture
    async def stores_factory(self, tmp_path: pathlib.Path) -> AsyncIterator[StoresFactory]:
        factory = EmbeddedFactory(tmp_path)
        yield factory
        await factory.close()


@pytest.fixture
async def factory(tmp_path: pathlib.Path) -> AsyncIterator[EmbeddedFactory]:
    f = EmbeddedFactory(tmp_path)
    yield f
    await f.close()


def crash(stores: Stores) -> None:
    """What a process's death does to its stores: the data directory's lock goes, nothing is closed."""
    assert stores.on_close is not None
    stores.on_close()


async def test_one_database_file_per_layer_and_one_for_the_catalog(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    await stores.layers[NET].upsert_windows(minutes("a", "b", LIVE_NOW - 120, 1))
    names = {p.name for p in factory.dir.iterdir() if p.suffix == ".db"}
    assert names == {"network.db", "ipc.db", "trace.db", "catalog.db"}
    assert (factory.dir / "network.db-wal").exists()  # WAL mode


async def test_committed_writes_are_visible_to_a_second_process_without_close(
    factory: EmbeddedFactory,
) -> None:
    stores = await factory.fresh()
    await stores.layers[NET].upsert_windows(minutes("a", "b", LIVE_NOW - 300, 3))
    crash(stores)
    other = open_stores(factory.dir)  # as if the first process had crashed here
    factory.opened.append(other)
    [e] = await other.layers[NET].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    assert e.stats.requests == 30


async def test_a_layer_file_cannot_be_opened_as_another_layer(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    await stores.close()
    shutil.copy(factory.dir / "network.db", factory.root / "ipc-copy.db")
    (factory.dir / "ipc.db").unlink()
    shutil.copy(factory.root / "ipc-copy.db", factory.dir / "ipc.db")
    with pytest.raises(ValueError, match="NETWORK"):
        open_stores(factory.dir)


async def test_a_closed_store_is_unavailable(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    await stores.close()
    with pytest.raises(StoreUnavailable) as err:
        await stores.layers[IPC].ping()
    assert err.value.layer is Layer.IPC
    with pytest.raises(StoreUnavailable):
        await stores.layers[NET].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    with pytest.raises(StoreUnavailable):
        await stores.catalog.services(["a"])


async def test_one_string_is_not_a_list_of_names(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    with pytest.raises(ValueError):
        await stores.layers[NET].neighbors("abc", UP, APP, LIVE, LIVE_NOW)
    with pytest.raises(ValueError):
        await stores.catalog.services("abc")


async def test_readers_answer_during_a_long_write_and_see_all_of_it_or_none(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    net = stores.layers[NET]
    await net.upsert_windows([win("root", "a", LIVE_NOW - 120)])
    big = [win("a", f"t{i:05d}", LIVE_NOW - 120 - m * MINUTE) for i in range(4000) for m in range(10)]
    writing = asyncio.create_task(net.upsert_windows(big))
    seen: list[int] = []
    during = 0
    while not writing.done():
        t = await net.traverse(["root"], UP, 2, APP, LIVE, LIVE_NOW)
        seen.append(len(t.reached))
        during += not writing.done()
        await asyncio.sleep(0)
    await writing
    assert during > 0  # queries were answered while the write was in flight
    assert set(seen) <= {1, 4001}
    assert len((await net.traverse(["root"], UP, 2, APP, LIVE, LIVE_NOW)).reached) == 4001


async def test_trace_summaries_are_bounded_per_service(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    await stores.catalog.record_traces(
        [TraceSummary(f"{i:032x}", "a", "GET", float(i), 0.1, 2, False, ("a",)) for i in range(250)]
    )
    kept = await stores.catalog.recent_traces("a", 1000)
    assert [t.start for t in kept] == [float(i) for i in range(249, 249 - TRACES_PER_SERVICE, -1)]


async def test_old_health_events_are_answered_from_disk(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    n = HEALTH_IN_MEMORY + 50
    states = [HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY]
    await stores.catalog.record_health(
        [HealthEvent("s", states[i % 3], 10.0 * i, str(i)) for i in range(1, n)]
    )
    for at, want in ((15.0, "1"), (105.0, "10"), (10.0 * (n - 1) + 5, str(n - 1))):
        assert (await stores.catalog.health(["s"], at))["s"].reason == want
    assert await stores.catalog.health(["s"], 5.0) == {}
    reopened = await factory.reopen()
    assert (await reopened.catalog.health(["s"], 105.0))["s"].status is states[10 % 3]


async def test_neighbors_downstream_of_many_names(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    net = stores.layers[NET]
    await net.upsert_windows([win(f"c{i}", "hub", LIVE_NOW - 120) for i in range(300)])
    got = await net.neighbors(["hub"], DOWN, APP, LIVE, LIVE_NOW)
    assert npairs(got) == sorted((f"c{i}", "hub") for i in range(300))


# -- the stats codec and the three stats sources agree with EdgeStats.merge ------------------------------
names_st = st.text(alphabet="ab'\"g.V()é服🚀", max_size=5)
stats_st = st.builds(
    EdgeStats,
    first_seen=st.one_of(st.just(0.0), st.floats(1, 2e9)),
    last_seen=st.one_of(st.just(0.0), st.floats(1, 2e9)),
    protocol=st.one_of(st.none(), st.sampled_from(["tcp", "http", "grpc", ""])),
    ports=st.lists(st.integers(1, 65535), max_size=20).map(tuple),  # also unsorted and too long
    connections=st.integers(0, 10**12),
    bytes_sent=st.integers(0, 2**50),
    bytes_received=st.integers(0, 10**12),
    intermediaries=st.lists(names_st, max_size=3).map(lambda x: tuple(sorted(set(x)))),
    requests=st.integers(0, 10**9),
    errors=st.integers(0, 10**6),
    latency=latencies,
    latency_sum=st.floats(0, 1e6),
    endpoints=st.lists(names_st, max_size=4).map(tuple),
    exemplars=st.lists(st.text("0123456789abcdef", min_size=1, max_size=4), max_size=3).map(tuple),
    connection_type=st.one_of(st.none(), st.sampled_from(["database", "messaging_system"])),
    health=st.sampled_from(["UNKNOWN", "HEALTHY", "DEGRADED", "UNHEALTHY"]),
)


def fold(items: list[EdgeStats]) -> EdgeStats:
    out = items[0]
    for s in items[1:]:
        out = out.merge(s)
    return out


@settings(deadline=None)
@given(stats_st)
def test_codec_round_trip(s: EdgeStats) -> None:
    assert decode(encode(s)) == s


@settings(deadline=None)
@given(st.lists(stats_st, min_size=1, max_size=5), st.integers(0, 2**40).map(lambda m: m * 60))
def test_compact_codec_round_trip(items: list[EdgeStats], base: int) -> None:
    codec = StatsCodec()
    blobs = [codec.encode(s, base) for s in items]
    rows, shapes = codec.take_new(), codec.take_new_shapes()
    assert [codec.decode(b, base) for b in blobs] == items
    reloaded = StatsCodec()  # what the next process reads from the attrs and shapes tables
    reloaded.load(rows, shapes)
    assert [reloaded.decode(b, base) for b in blobs] == items
    assert [merge_fields([reloaded.decode_fields(b, base) for b in blobs])] == [fold(items)]


trace_id_st = st.one_of(st.text("0123456789abcdef", min_size=32, max_size=32),
                        st.text("0123456789abcdef", min_size=1, max_size=6))


@settings(deadline=None)
@given(
    st.integers(10**9 // 60, 2_100_000_000 // 60).map(lambda m: m * 60),
    st.lists(st.integers(-(10**12), 10**12), min_size=2, max_size=2),
    st.lists(trace_id_st, max_size=5).map(lambda x: tuple(sorted(set(x)))),
)
def test_compact_codec_round_trip_of_span_times_and_trace_ids(base: int, ns: list[int],
                                                               exemplars: tuple[str, ...]) -> None:
    # span times (nanoseconds) near the window start, and W3C trace ids, as the trace layer has them
    s = EdgeStats(first_seen=(base * 10**9 + ns[0]) / 1e9, last_seen=(base * 10**9 + ns[1]) / 1e9,
                  requests=2, exemplars=exemplars)
    codec = StatsCodec()
    assert codec.decode(codec.encode(s, base), base) == s


def test_span_times_and_trace_ids_are_stored_in_few_bytes() -> None:
    base = 1_700_000_040
    ids = tuple(sorted(f"{random.Random(i).getrandbits(128):032x}" for i in range(5)))
    first, last = (base * 10**9 + 123_456_789) / 1e9, (base * 10**9 + 59_987_654_321) / 1e9
    s = EdgeStats(first_seen=first, last_seen=last, requests=2, exemplars=ids)
    blob = StatsCodec().encode(s, base)
    # tag and shape 2, each time 4 (ticks of 2**-22 s, not a float64), requests 1, 5 ids of 16 bytes, a count
    assert len(blob) == 2 + 4 + 4 + 1 + 1 + 5 * 16


def test_compact_codec_forgets_values_of_a_failed_transaction() -> None:
    codec = StatsCodec()
    a, b = EdgeStats(protocol="tcp", ports=(1,)), EdgeStats(protocol="udp", ports=(2,))
    first = codec.encode(a, 0)
    kept, kept_shapes = codec.take_new(), codec.take_new_shapes()
    mark = codec.mark()
    codec.encode(b, 0)
    codec.encode(EdgeStats(requests=3), 0)  # a new shape
    codec.take_new()
    codec.take_new_shapes()
    codec.undo(mark)  # that transaction rolled back
    again = codec.encode(b, 0)
    third = codec.encode(EdgeStats(requests=3), 0)
    rows, shapes = kept + codec.take_new(), kept_shapes + codec.take_new_shapes()
    reloaded = StatsCodec()
    reloaded.load(rows, shapes)
    assert reloaded.decode(first, 0) == a and reloaded.decode(again, 0) == b
    assert reloaded.decode(third, 0) == EdgeStats(requests=3)
    assert len(first) < 20


@settings(deadline=None)  # marshal may size a container from garbage before it fails
@given(st.one_of(st.binary(max_size=64), st.binary(max_size=64).map(lambda b: encode(EdgeStats())[:3] + b)))
def test_codec_refuses_garbage_with_a_value_error(blob: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode(blob)
    with contextlib.suppress(ValueError):
        StatsCodec().decode(blob, 0)
    with contextlib.suppress(ValueError):
        StatsCodec().decode(b"\x01" + blob, 0)


@settings(max_examples=50, deadline=None)
@given(st.lists(stats_st, min_size=1, max_size=6))
def test_merge_all_is_the_fold_of_merge(items: list[EdgeStats]) -> None:
    assert merge_all(items) == fold(items)
    assert merge_fields([decode_fields(encode(s)) for s in items]) == fold(items)


def test_a_grown_hot_ring_with_sketches_saves_and_loads_the_same() -> None:
    ring = HotRing(4)
    rows = [ring.new_row() for _ in range(2)]
    ring.write(rows, [T0, T0], [EdgeStats(requests=1, latency=LatencySketch.of([0.01])), EdgeStats()])
    rows += [ring.new_row() for _ in range(2998)]  # the columns grow twice past the first 1,024 rows
    ring.write(rows[2500:2501], [T0 + MINUTE], [EdgeStats(requests=2, latency=LatencySketch.of([0.2, 0.3]))])
    again = HotRing.from_arrays(ring.to_arrays())
    for r in (ring, again):
        got = r.merged([rows[0], rows[1], rows[2500], rows[2999]], T0, T0 + 2 * MINUTE)
        assert [None if g is None else g.latency for g in got] == [
            LatencySketch.of([0.01]), EMPTY, LatencySketch.of([0.2, 0.3]), None]


def test_a_hot_ring_with_a_sketch_at_another_scale_saves_and_loads_the_same() -> None:
    ring = HotRing(4)
    rows = [ring.new_row() for _ in range(3)]
    odd = LatencySketch(3, -40, (1, 0, 2), 1)
    ring.write(rows, [T0, T0, T0 + MINUTE], [EdgeStats(requests=4, latency=odd), EdgeStats(),
                                             EdgeStats(requests=2, latency=LatencySketch.of([0.2, 0.3]))])
    arrays = ring.to_arrays()
    assert "sketches" in arrays and "sk_state" not in arrays  # a cell per stored tuple
    again = HotRing.from_arrays(arrays)
    for r in (ring, again):
        got = r.merged(rows, T0, T0 + 2 * MINUTE)
        assert [None if g is None else g.latency for g in got] == [odd, EMPTY, LatencySketch.of([0.2, 0.3])]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30), stats_st), min_size=1, max_size=40),
    st.integers(0, 30),
    st.integers(1, 12),
)
def test_the_hot_ring_gives_the_fold_of_the_windows_in_range(
    writes: list[tuple[int, int, EdgeStats]], first: int, length: int
) -> None:
    ring = HotRing(12)
    base = T0
    for _ in range(4):
        ring.new_row()
    ring.write(
        [r for r, _, _ in writes], [base + m * MINUTE for _, m, _ in writes], [s for _, _, s in writes]
    )
    lo = base + first * MINUTE
    if not ring.covers(lo):
        return
    stored: dict[tuple[int, int], EdgeStats] = {}
    for r, m, s in writes:  # the last write of a window wins
        stored[(r, m)] = s
    got = ring.merged([0, 1, 2, 3], lo, lo + length * MINUTE - 30)
    for row in range(4):
        in_range = [stored[(row, m)] for m in range(first, first + length) if (row, m) in stored]
        assert got[row] == (fold(in_range) if in_range else None)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 11), latencies), min_size=1, max_size=30),
    st.integers(0, 6),
    st.integers(1, 12),
)
def test_the_hot_ring_feeds_quantiles_of_the_merged_sketches(
    writes: list[tuple[int, int, LatencySketch]], first: int, length: int
) -> None:
    # what rootCause reads: the ring's sketches go into a QuantileBatch as arrays (no Python loop per
    # bucket) and give exactly the quantiles of merging the windows' sketches
    ring = HotRing(12)
    for _ in range(4):
        ring.new_row()
    ring.write([r for r, _, _ in writes], [T0 + m * MINUTE for _, m, _ in writes],
               [EdgeStats(requests=1, latency=x) for _, _, x in writes])
    stored: dict[tuple[int, int], LatencySketch] = {}
    for r, m, x in writes:  # the last write of a window wins
        stored[(r, m)] = x
    lo = T0 + first * MINUTE
    groups = [3, 1, 0, 2]  # rows into groups in another order
    batch = QuantileBatch(4)
    ring.calls([0, 1, 2, 3], groups, lo, lo + length * MINUTE, batch)
    got = batch.quantiles((0.5, 0.99))
    for row in range(4):
        parts = [stored[(row, m)] for m in range(first, first + length) if (row, m) in stored]
        merged = merge_sketches(parts)
        assert [got[0][groups[row]], got[1][groups[row]]] == [merged.quantile(0.5), merged.quantile(0.99)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), stats_st), min_size=1, max_size=25))
def test_many_stored_windows_read_at_once_give_what_each_decodes(
    windows: list[tuple[int, EdgeStats]],
) -> None:
    # StatsCodec.calls_into (the disk side of call_metrics) against decode_calls of each record and
    # merging: the same request and error sums, the same quantiles
    codec = StatsCodec()
    rows = [(eid, T0, codec.encode(s, T0)) for eid, s in windows]
    group = {eid: 4 - eid for eid in range(5)}
    batch = QuantileBatch(5)
    sums = codec.calls_into(rows, group, batch)
    got = batch.quantiles((0.0, 0.5, 0.99, 1.0))
    for eid in range(5):
        mine = [s for e, s in windows if e == eid]
        decoded = [codec.decode_calls(blob, T0) for e, _, blob in rows if e == eid]
        assert sums.get(eid, (0, 0)) == (sum(d[0] for d in decoded), sum(d[1] for d in decoded))
        merged = merge_sketches([s.latency for s in mine])
        assert [q[group[eid]] for q in got] == [merged.quantile(x) for x in (0.0, 0.5, 0.99, 1.0)]


def _windows_of_few_shapes() -> list[tuple[int, EdgeStats]]:
    """(edge, stats): dense and sparse sketches, a record of another scale and one with exemplars."""
    rnd = random.Random(5)
    windows: list[tuple[int, EdgeStats]] = []
    for i in range(300):
        gaps = i % 2 == 1  # odd: mostly empty buckets, stored sparse
        counts = tuple(rnd.randint(1, 200) if not gaps or k % 7 == 0 else 0 for k in range(29))
        lat = LatencySketch(SCALE, rnd.randint(-400, -300), counts, rnd.randint(0, 200))
        windows.append((i % 11, EdgeStats(requests=rnd.randint(100, 250), errors=rnd.randint(1, 9),
                                          latency=lat)))
    finer = LatencySketch.from_counts({-50: 3}, 0, SCALE + 1)
    windows.append((3, EdgeStats(requests=120, errors=2, latency=finer)))
    one = LatencySketch.of([0.01])
    windows.append((4, EdgeStats(requests=130, errors=1, latency=one, exemplars=("ab",))))
    return windows


def _as_compact_4(codec: StatsCodec, blob: bytes) -> bytes:
    """A record as the previous format (compact-4) wrote it: the shape spelled out in a 9-byte header."""
    if blob[0] != 3:
        return blob
    mask, codes, nlat, size, _ = codec._header(blob)
    return struct.pack("<BHIH", 2, mask, codes, nlat) + blob[size:]


@pytest.mark.parametrize("previous", [False, True], ids=["compact-5", "compact-4"])
def test_many_stored_windows_of_one_shape_are_read_as_one_array(previous: bool) -> None:
    # records of one header (the same fields, widths and sketch length) are read with one np.frombuffer:
    # dense and sparse sketches, a record of another scale and one with exemplars among them; records
    # of the previous format the same
    codec = StatsCodec()
    windows = _windows_of_few_shapes()
    rows = [(eid, T0, codec.encode(s, T0)) for eid, s in windows]
    if previous:
        rows = [(eid, t, _as_compact_4(codec, blob)) for eid, t, blob in rows]
        assert [codec.decode(blob, T0) for _, _, blob in rows] == [s for _, s in windows]
    group = {eid: eid for eid in range(11)}
    batch = QuantileBatch(11)
    sums = codec.calls_into(rows, group, batch)
    got = batch.quantiles((0.0, 0.5, 0.99, 1.0))
    for eid in range(11):
        mine = [s for e, s in windows if e == eid]
        assert sums[eid] == (sum(s.requests for s in mine), sum(s.errors for s in mine))
        merged = merge_sketches([s.latency for s in mine])
        assert [q[eid] for q in got] == [merged.quantile(x) for x in (0.0, 0.5, 0.99, 1.0)]


async def test_memory_and_disk_give_the_same_stats(tmp_path: pathlib.Path) -> None:
    rnd = random.Random(11)
    hot, cold = open_stores(tmp_path / "hot"), open_stores(tmp_path / "cold", hot_minutes=0)
    try:
        names = [f"n{i}" for i in range(12)]
        ws = []
        for m in range(40):
            for _ in range(15):
                s, t = rnd.sample(names, 2)
                ws.append(
                    win(
                        s,
                        t,
                        T0 + m * MINUTE,
                        layer=IPC,
                        requests=rnd.randint(0, 100),
                        latency=LatencySketch.of([rnd.expovariate(50) for _ in range(rnd.randint(1, 9))])
                        if rnd.random() < 0.7
                        else EMPTY,
                        latency_sum=rnd.random(),
                        endpoints=tuple(sorted(rnd.sample(["/a", "/b", "/c"], 2))),
                        exemplars=(f"{rnd.getrandbits(16):04x}",),
                        health=rnd.choice(["HEALTHY", "DEGRADED"]),
                    )
                )
        for batch in (ws[:200], ws[200:450], ws[450:]):
            await hot.layers[IPC].upsert_windows(batch)
            await cold.layers[IPC].upsert_windows(batch)
        now = T0 + 40 * MINUTE
        for start in (now - 15 * MINUTE, now - 19 * MINUTE + 17, now - 5 * MINUTE, now - 35 * MINUTE):
            rng = TimeRange(start, now)
            for d in (UP, DOWN):
                a = await hot.layers[IPC].neighbors(names, d, APP, rng, now)
                b = await cold.layers[IPC].neighbors(names, d, APP, rng, now)
                assert a == b and len(a) > 10
                assert await hot.layers[IPC].neighbors(names, d, APP, rng, now) == a  # the memo
        crash(hot)
        reopened = open_stores(tmp_path / "hot")  # while the first is still open: a second reader
        try:
            rng = TimeRange(now - 15 * MINUTE, now)
            assert await reopened.layers[IPC].edges(APP, rng, now) == await cold.layers[IPC].edges(
                APP, rng, now
            )
        finally:
            await reopened.close()
    finally:
        await hot.close()
        await cold.close()


async def test_values_the_ring_does_not_hold_are_answered_exactly_from_disk(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    net = stores.layers[NET]
    await net.upsert_windows(
        minutes("a", "b", LIVE_NOW - 5 * MINUTE, 3, bytes_sent=2**62, requests=2**70)
        + minutes("a", "c", LIVE_NOW - 5 * MINUTE, 3, bytes_sent=7)
    )
    got = {e.key.target: e.stats for e in await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)}
    assert got["b"].bytes_sent == 3 * 2**62 and got["b"].requests == 3 * 2**70
    assert got["c"].bytes_sent == 21
    await net.upsert_windows(
        minutes("a", "d", LIVE_NOW - 5 * MINUTE, 2, health="MAINTENANCE")
    )  # not a known value
    [d] = [e for e in await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW) if e.key.target == "d"]
    assert d.stats.health == "MAINTENANCE" and d.stats.requests == 20


async def test_a_cancelled_upsert_still_lands_in_memory_and_on_disk_together(
    factory: EmbeddedFactory,
) -> None:
    stores = await factory.fresh()
    net = stores.layers[NET]
    task = asyncio.create_task(net.upsert_windows(minutes("a", "b", LIVE_NOW - 5 * MINUTE, 3)))
    await asyncio.sleep(0)  # let it start writing
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await net.ping()
    await net.upsert_windows([])  # waits for nothing; the write lock serialises what follows
    await net.rollup(LIVE_NOW - 30 * MINUTE)  # takes the write lock: the shielded upsert has finished
    in_memory = await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    reopened = await factory.reopen()
    assert await reopened.layers[NET].neighbors(["a"], UP, APP, LIVE, LIVE_NOW) == in_memory
    assert len(in_memory) == 1 and in_memory[0].stats.requests == 30


async def test_the_ring_saved_at_close_is_used_once(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh()
    ipc = stores.layers[IPC]
    await ipc.upsert_windows(
        minutes("a", "b", LIVE_NOW - 5 * MINUTE, 3, layer=IPC, latency=LatencySketch.of([0.2]))
    )
    want = await ipc.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    again = await factory.reopen()  # clean close: the ring is saved, and taken at open
    assert (factory.dir / "ipc.ring.npz").exists()
    assert await again.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW) == want
    await again.layers[IPC].upsert_windows(minutes("a", "b", LIVE_NOW - 2 * MINUTE, 1, layer=IPC, requests=5))
    crash(again)
    crashed = open_stores(factory.dir)  # the first is not closed: as after a crash, the saved ring is stale
    factory.opened.append(crashed)
    [e] = await crashed.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    assert e.stats.requests == 35


async def test_rollup_in_small_pieces_with_upserts_in_between(
    factory: EmbeddedFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_layer, "ROLLUP_CHUNK", 2)
    stores = await factory.fresh()
    net = stores.layers[NET]
    await net.upsert_windows(
        [w for i in range(7) for w in minutes("a", f"t{i}", T0 + i * MINUTE, 3, requests=i)]
    )
    now = T0 + 2 * HOUR
    late = minutes("a", "t3", T0 + 40 * MINUTE, 1, requests=1000)
    await asyncio.gather(net.rollup(now), net.upsert_windows(late))
    await net.rollup(now)  # the late window's mark survived the first roll-up if it came in between
    got = {
        e.key.target: e.stats.requests
        for e in await net.neighbors(["a"], UP, APP, TimeRange(T0, T0 + HOUR), T0 + 7 * HOUR)
    }
    assert got == {f"t{i}": 3 * i + (1000 if i == 3 else 0) for i in range(7)}
    assert (await net.window_count())[HOUR] == 7


async def test_remembered_answers_follow_every_write(factory: EmbeddedFactory) -> None:
    stores = await factory.fresh(Retention(minute=HOUR, hour=DAY, day=7 * DAY))
    net = stores.layers[NET]
    start = LIVE_NOW - 5 * MINUTE
    await net.upsert_windows([win("a", "b", start, requests=1)])
    for _ in range(2):  # asked twice: the second answer comes from what was remembered
        assert [e.stats.requests for e in await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)] == [1]
        assert [e.stats.requests for e in await net.neighbors(["b"], DOWN, APP, LIVE, LIVE_NOW)] == [1]
    await net.upsert_windows([win("a", "b", start, requests=2)])  # replaces
    assert [e.stats.requests for e in await net.neighbors(["a"], UP, APP, LIVE, LIVE_NOW)] == [2]
    assert [e.stats.requests for e in await net.neighbors(["b"], DOWN, APP, LIVE, LIVE_NOW)] == [2]
    await net.upsert_windows([win("c", "b", start, target_kind=NodeKind.DATABASE)])  # a new edge into b
    assert npairs(await net.neighbors(["b"], DOWN, APP, LIVE, LIVE_NOW)) == [("a", "b"), ("c", "b")]
    t = await net.traverse(["b"], DOWN, 1, APP, LIVE, LIVE_NOW)
    assert [r.name for r in t.reached] == ["a", "c"]
    await net.upsert_windows([win("x", "b", start, source_kind=NodeKind.EXTERNAL)])
    await net.upsert_windows([win("a", "b", start, target_kind=NodeKind.DATABASE)])  # kinds change
    assert {e.key.source: e.target_kind for e in await net.neighbors(["b"], DOWN, APP, LIVE, LIVE_NOW)} == {
        "a": NodeKind.DATABASE,
        "c": NodeKind.DATABASE,
        "x": NodeKind.SERVICE,
    }
    assert (await net.traverse(["b"], DOWN, 1, APP, LIVE, LIVE_NOW)).reached[-1].kind is NodeKind.EXTERNAL
    await net.rollup(LIVE_NOW + 2 * HOUR)  # retention: the minutes are gone
    past = TimeRange(start, start + MINUTE)
    assert await net.neighbors(["b"], DOWN, APP, past, LIVE_NOW + 2 * HOUR) != []  # the hour window
    assert await net.neighbors(["b"], DOWN, APP, past, LIVE_NOW) == []  # minutes asked for: none left


# -- the latency layout stored before sketches (codec compact-3) ------------------------------------------
OLD_HIST = (0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # (16, 32] ms, (1.0, 2.0] s
OLD_SKETCH = LatencySketch.from_power_of_two(OLD_HIST)


def test_old_records_decode_with_their_histogram_converted() -> None:
    plain = bytes((0,)) + marshal.dumps(
        (0.0, 0.0, None, (), 0, 0, 0, (), 8, 0, (5, (7, 0, 0, 0, 0, 0, 1)), 0.5, (), (), None, "UNKNOWN")
    )
    # compact: header (tag 1, mask: requests + latency, width codes 0, 7 buckets), requests, first
    # bucket, counts
    compact = struct.pack("<BHIB", 1, 1 << 8 | 1 << 10, 0, 7) + bytes((8, 5, 7, 0, 0, 0, 0, 0, 1))
    codec = StatsCodec()
    for blob in (plain, compact):
        got = codec.decode(blob, 0)
        assert (got.requests, got.latency, got.latency.total) == (8, OLD_SKETCH, 8)
    assert OLD_SKETCH.quantile(0.5) == pytest.approx(0.016 * 2**0.5, rel=0.011)


def _as_previous_codec(root: pathlib.Path, start: int) -> pathlib.Path:
    """Rewrite the IPC database as the previous codec would have written its one window; its path."""
    for snapshot in root.glob("*.npz"):
        snapshot.unlink()
    [db] = [p for p in root.glob("*.db") if "ipc" in p.name.lower()]
    old = (float(start), float(start + 59), None, (), 1, 0, 0, (), 8, 0, (5, (7, 0, 0, 0, 0, 0, 1)), 0.5, (),
           (), None, "UNKNOWN")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE meta SET value='compact-3' WHERE key='codec'")
        conn.execute("UPDATE windows SET stats=?", (bytes((0,)) + marshal.dumps(old),))
        conn.commit()
    return db


async def test_a_database_of_the_previous_codec_opens_reads_and_moves_on(tmp_path: pathlib.Path) -> None:
    stores = open_stores(tmp_path)
    now = LIVE_NOW - 5 * MINUTE
    await stores.layers[IPC].upsert_windows(minutes("a", "b", now, 1, layer=IPC, requests=8))
    await stores.close()
    db = _as_previous_codec(tmp_path, now)
    stores = open_stores(tmp_path)
    try:
        [e] = await stores.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        assert (e.stats.requests, e.stats.latency) == (8, OLD_SKETCH)
        await stores.layers[IPC].upsert_windows(minutes("a", "b", now + MINUTE, 1, layer=IPC,
                                                        latency=LatencySketch.of([0.02])))
        [e] = await stores.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        assert e.stats.latency == OLD_SKETCH.merge(LatencySketch.of([0.02]))
    finally:
        await stores.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='codec'").fetchone() == (CODEC,)


def _as_codec_4(root: pathlib.Path) -> pathlib.Path:
    """Rewrite the IPC database as compact-4 would have written it; its path."""
    for snapshot in root.glob("*.npz"):
        snapshot.unlink()
    [db] = [p for p in root.glob("*.db") if "ipc" in p.name.lower()]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        codec = StatsCodec()
        codec.load(conn.execute("SELECT id, value FROM attrs"), conn.execute("SELECT * FROM shapes"))
        rows = conn.execute("SELECT wsec, wstart, edge, stats FROM windows").fetchall()
        conn.executemany("UPDATE windows SET stats=? WHERE wsec=? AND wstart=? AND edge=?",
                         [(_as_compact_4(codec, blob), w, t, e) for w, t, e, blob in rows])
        conn.execute("DROP TABLE shapes")
        conn.execute("UPDATE meta SET value='compact-4' WHERE key='codec'")
        conn.commit()
    return db


async def test_a_database_of_compact_4_opens_reads_and_moves_on(tmp_path: pathlib.Path) -> None:
    # compact-4 spelled each record's shape out in a 9-byte header and had no shapes table
    stores = open_stores(tmp_path)
    now = LIVE_NOW - 5 * MINUTE
    lat = LatencySketch.of([0.01, 0.02, 0.02, 0.5])
    await stores.layers[IPC].upsert_windows(minutes("a", "b", now, 2, layer=IPC, requests=8, latency=lat))
    [before] = await stores.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    await stores.close()
    db = _as_codec_4(tmp_path)
    stores = open_stores(tmp_path)
    try:
        [e] = await stores.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        assert e.stats == before.stats
        await stores.layers[IPC].upsert_windows(minutes("a", "b", now + 2 * MINUTE, 1, layer=IPC, requests=8,
                                                        latency=lat))
        [e] = await stores.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        assert (e.stats.requests, e.stats.latency) == (24, merge_sketches([lat, lat, lat]))
    finally:
        await stores.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='codec'").fetchone() == (CODEC,)
        tags = {blob[0] for (blob,) in conn.execute("SELECT stats FROM windows")}
        assert tags == {2, 3}  # the old records as they were, the new one beside them


async def test_the_ring_merges_attributes_not_in_canonical_form(tmp_path: pathlib.Path) -> None:
    # endpoints as a caller may write them (repeated, unsorted): the ring merges them as disk does
    hot, cold = open_stores(tmp_path / "hot"), open_stores(tmp_path / "cold", hot_minutes=0)
    try:
        ws = [win("a", "b", LIVE_NOW - 3 * MINUTE, endpoints=("", "")),
              win("a", "c", LIVE_NOW - 2 * MINUTE, endpoints=("/z", "/a")),
              win("a", "c", LIVE_NOW - 1 * MINUTE, endpoints=("/z", "/a"))]
        for stores in (hot, cold):
            await stores.layers[NET].upsert_windows(ws)
        want = await cold.layers[NET].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
        assert await hot.layers[NET].neighbors(["a"], UP, APP, LIVE, LIVE_NOW) == want
        assert [e.stats.endpoints for e in want] == [("", ""), ("/a", "/z")]
    finally:
        await hot.close()
        await cold.close()

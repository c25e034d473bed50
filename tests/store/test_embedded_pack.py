"""Packs (``topology/store/embedded_pack.py``): a finished hour's minutes (a day's hours) in one row per
edge read exactly as the loose windows did, through every reader, late data and retention."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import pathlib
import sqlite3
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from unittest import mock

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.store.contract import APP, DOWN, IPC, LIVE, LIVE_NOW, NET, T0, TRACE, UP, minutes, win
from tests.store.test_embedded import stats_st
from topology.model import EdgeKey, EdgeSummary, EdgeWindow
from topology.sketch import LatencySketch
from topology.store import embedded_pack as packs
from topology.store.base import LayerStore
from topology.store.embedded import open_stores
from topology.store.embedded_codec import CODEC
from topology.store.embedded_index import array_from, to_blob
from topology.store.embedded_layer import EmbeddedLayerStore
from topology.timewindow import DAY, HOUR, MINUTE, Retention, TimeRange

NAMES = ["a", "b", "c", "d"]


# -- the format ----------------------------------------------------------------------------------------
@settings(deadline=None)
@given(
    st.sampled_from([(MINUTE, T0 + 5 * HOUR), (HOUR, T0 + 3 * DAY)]),
    st.dictionaries(st.integers(0, 59), st.binary(max_size=300), max_size=60),
    st.integers(0, 60),
)
def test_a_pack_gives_back_its_records(where: tuple[int, int], got: dict[int, bytes], cut: int) -> None:
    wsec, start = where
    n = packs.PACKED[wsec] // wsec
    records = sorted((start + i * wsec, rec) for i, rec in got.items() if i < n)
    slots, data = packs.pack(records, start, wsec)
    assert packs.unpack(slots, data, start, wsec) == records
    assert packs.count(slots) == len(records)
    floor = start + cut * wsec
    assert packs.unpack(slots, data, start, wsec, floor) == [r for r in records if r[0] >= floor]


def test_packs_refuse_what_they_cannot_hold_and_garbage() -> None:
    with pytest.raises(ValueError, match="not a 60 s window"):
        packs.pack([(T0 + HOUR, b"x")], T0, MINUTE)
    with pytest.raises(ValueError, match="twice"):
        packs.pack([(T0, b"x"), (T0, b"y")], T0, MINUTE)
    slots, data = packs.pack([(T0, b"abc"), (T0 + MINUTE, b"abd")], T0, MINUTE)
    for bad in (b"", b"\x07" + data[1:], data[:-3], data + b"\x00"):
        with pytest.raises(ValueError, match="corrupt pack"):
            packs.unpack(slots, bad, T0, MINUTE)
    with pytest.raises(ValueError, match="corrupt pack"):
        packs.unpack(slots | 4, data, T0, MINUTE)  # a window more than it holds


def test_similar_minutes_take_little_room() -> None:
    from topology.store.embedded_codec import StatsCodec

    codec = StatsCodec()
    records = [(T0 + m * MINUTE, codec.encode(win("a", "b", T0 + m * MINUTE, requests=1000 + m % 7,
                                                         bytes_sent=50_000 + 13 * m).stats, T0 + m * MINUTE))
               for m in range(60)]
    _, data = packs.pack(records, T0, MINUTE)
    assert len(data) < sum(len(r) for _, r in records) / 3


# -- the store: packed and loose give the same answers ---------------------------------------------------
@contextlib.contextmanager
def _no_packing() -> Iterator[None]:
    """A store that keeps every window loose (the roll-up packs nothing): the reference."""
    with mock.patch.dict(packs.PACKED, clear=True):
        yield


def _pair(e: EdgeSummary) -> tuple[str, str]:
    return e.key.source, e.key.target


async def _same(a: LayerStore, b: LayerStore, keys: Sequence[EdgeWindow], now: float) -> None:
    """Every reader of ``a`` (packs) answers as ``b`` (all loose) does."""
    assert await a.window_count() == await b.window_count()
    starts = [T0 + m * MINUTE for m in (0, 10, 37, 59, 60, 61, 119, 150, 179, 185)]
    ranges = [TimeRange(s, s + d) for s in starts for d in (MINUTE, 13 * MINUTE, HOUR + 7 * MINUTE, 3 * HOUR)]
    ranges.append(TimeRange(T0 - DAY, now))
    for rng in ranges:
        for d in (UP, DOWN):
            got = sorted(await a.neighbors(NAMES, d, APP, rng, now), key=_pair)
            want = sorted(await b.neighbors(NAMES, d, APP, rng, now), key=_pair)
            assert got == want, rng
            got_m = await a.call_metrics(NAMES, d, APP, rng, now)
            assert got_m == await b.call_metrics(NAMES, d, APP, rng, now)
        assert await a.edges(APP, rng, now) == await b.edges(APP, rng, now)
    asked = [(w.key, MINUTE, w.window_start) for w in keys] + [
        (w.key, HOUR, w.window_start - w.window_start % HOUR) for w in keys]
    assert await a.stored_stats(asked) == await b.stored_stats(asked)


def _packed_rows(root: pathlib.Path) -> tuple[int, int]:
    """(packs, loose minute windows before the newest hour) in the IPC database."""
    with contextlib.closing(sqlite3.connect(root / "ipc.db")) as conn:
        n = conn.execute("SELECT COUNT(*) FROM packs").fetchone()[0]
        loose = conn.execute("SELECT COUNT(*) FROM windows WHERE wsec=? AND wstart<?",
                             (MINUTE, T0 + 3 * HOUR)).fetchone()[0]
    return n, loose


window_st = st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES), st.integers(0, 199), stats_st)


def _windows(drawn: list[tuple[str, str, int, object]]) -> list[EdgeWindow]:
    out: dict[tuple[str, str, int], EdgeWindow] = {}
    for src, dst, m, s in drawn:
        if src != dst:
            out[(src, dst, m)] = win(src, dst, T0 + m * MINUTE, layer=IPC, s=s)  # type: ignore[arg-type]
    return list(out.values())


async def _both(root: pathlib.Path, steps: list[tuple[str, object]]) -> None:
    """Run the same writes on a packing store and a loose one, comparing every reader after each."""
    a = open_stores(root / "packed")
    with _no_packing():
        b = open_stores(root / "loose", hot_minutes=0)
    seen: list[EdgeWindow] = []
    now = T0
    try:
        for what, arg in steps:
            if what == "upsert":
                ws = arg
                assert isinstance(ws, list)
                seen += ws
                await a.layers[IPC].upsert_windows(ws)
                await b.layers[IPC].upsert_windows(ws)
            elif what == "rollup":
                assert isinstance(arg, int)
                now = max(now, arg)
                await a.layers[IPC].rollup(arg)
                with _no_packing():
                    await b.layers[IPC].rollup(arg)
            elif what == "reopen":
                await a.close()
                a = open_stores(root / "packed")
            await _same(a.layers[IPC], b.layers[IPC], seen, max(now, T0 + 200 * MINUTE))
    finally:
        await a.close()
        await b.close()


@settings(deadline=None, max_examples=12, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(window_st, min_size=1, max_size=40), st.lists(window_st, max_size=12))
def test_packed_hours_read_as_their_loose_minutes(first: list, late: list) -> None:  # type: ignore[type-arg]
    # the hours 0-2 are packed by the roll-up at 3 h 25; late windows (new minutes and replaced ones)
    # join their packs; roll-ups build the hours again; reopening reads the packs back into the ring;
    # retention at 7 h 30 leaves half of hour 1 (its pack stays, its older minutes are not read)
    ws, again = _windows(first), [w for w in _windows(late) if w.window_start < T0 + 3 * HOUR]
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_both(pathlib.Path(tmp), [
            ("upsert", ws[: len(ws) // 2]), ("upsert", ws[len(ws) // 2:]),
            ("rollup", T0 + 3 * HOUR + 25 * MINUTE),
            ("upsert", again),
            ("rollup", T0 + 3 * HOUR + 26 * MINUTE),
            ("reopen", None),
            ("rollup", T0 + 4 * HOUR),
            ("reopen", None),
            ("rollup", T0 + 7 * HOUR + 30 * MINUTE),
        ]))


async def test_the_roll_up_packs_finished_hours_and_days(tmp_path: pathlib.Path) -> None:
    stores = open_stores(tmp_path, Retention(minute=2 * DAY))  # the minutes' packs outlive the day
    try:
        net = stores.layers[NET]
        ws = minutes("a", "b", T0, 150) + minutes("a", "c", T0 + 5 * HOUR, 3)
        await net.upsert_windows(ws)
        await net.rollup(T0 + 2 * HOUR + 40 * MINUTE)
        with contextlib.closing(sqlite3.connect(tmp_path / "network.db")) as conn:
            q = "SELECT wsec, wstart, edge, slots FROM packs ORDER BY wstart, wsec"
            rows = conn.execute(q).fetchall()
            loose = conn.execute("SELECT wstart FROM windows WHERE wsec=?", (MINUTE,)).fetchall()
            hours = conn.execute("SELECT COUNT(*) FROM windows WHERE wsec=?", (HOUR,)).fetchone()[0]
        # the hours built go straight into their day's pack (the day is not over)
        assert [(w, t, packs.count(s)) for w, t, _, s in rows] == [
            (MINUTE, T0, 60), (HOUR, T0, 2), (MINUTE, T0 + HOUR, 60)]
        assert hours == 0
        assert sorted(t for (t,) in loose) == [w.window_start for w in ws[120:]]  # hour 2 and hour 5
        assert (await net.window_count())[MINUTE] == 153
        await net.rollup(T0 + DAY + HOUR)  # the day: its hours packed too
        with contextlib.closing(sqlite3.connect(tmp_path / "network.db")) as conn:
            rows = conn.execute("SELECT wsec, wstart, slots FROM packs WHERE wsec=?", (HOUR,)).fetchall()
            hours = conn.execute("SELECT COUNT(*) FROM windows WHERE wsec=?", (HOUR,)).fetchone()[0]
        assert [(w, t) for w, t, _ in rows] == [(HOUR, T0), (HOUR, T0)] and hours == 0
        assert (await net.window_count())[HOUR] == 4
        [e] = [e for e in await net.neighbors(["a"], UP, APP, TimeRange(T0, T0 + DAY), T0 + DAY + HOUR)
               if e.key.target == "b"]
        assert e.stats.requests == 1500
        # a late minute of a packed hour of a packed day: it joins its hour's pack, and the hour built
        # again joins its day's pack
        await net.upsert_windows([win("a", "b", T0 + 30 * MINUTE, requests=1000)])
        got = await net.stored_stats([(e.key, MINUTE, T0 + 30 * MINUTE), (e.key, HOUR, T0)])
        assert got[(e.key, MINUTE, T0 + 30 * MINUTE)].requests == 1000
        assert got[(e.key, HOUR, T0)].requests == 600
        await net.rollup(T0 + DAY + HOUR)
        got = await net.stored_stats([(e.key, HOUR, T0), (e.key, DAY, T0)])
        assert got[(e.key, HOUR, T0)].requests == 600 - 10 + 1000
        assert got[(e.key, DAY, T0)].requests == 1500 - 10 + 1000
        with contextlib.closing(sqlite3.connect(tmp_path / "network.db")) as conn:
            left = conn.execute("SELECT COUNT(*) FROM windows WHERE wsec<?", (DAY,)).fetchone()
        assert left == (0,)
    finally:
        await stores.close()


async def test_a_database_of_compact_5_opens_reads_and_packs(tmp_path: pathlib.Path) -> None:
    # compact-5 had no packs table: its minutes stay loose until their hour is rolled up
    stores = open_stores(tmp_path)
    now = LIVE_NOW - 5 * MINUTE
    lat = LatencySketch.of([0.01, 0.02, 0.5])
    await stores.layers[IPC].upsert_windows(minutes("a", "b", now - HOUR, 62, layer=IPC, latency=lat))
    want = await stores.layers[IPC].neighbors(["a"], UP, APP, LIVE, LIVE_NOW)
    wide = TimeRange(now - HOUR, LIVE_NOW)
    want_wide = await stores.layers[IPC].neighbors(["a"], UP, APP, wide, LIVE_NOW)
    await stores.close()
    db = tmp_path / "ipc.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE packs")
        conn.execute("UPDATE meta SET value='compact-5' WHERE key='codec'")
        conn.commit()
    stores = open_stores(tmp_path)
    try:
        ipc = stores.layers[IPC]
        assert await ipc.neighbors(["a"], UP, APP, LIVE, LIVE_NOW) == want
        await ipc.rollup(LIVE_NOW)  # the hour before is finished: packed
        assert _packed_rows(tmp_path)[0] == 3  # hours 0 (5 minutes) and 1 (57), the day's hours
        assert await ipc.neighbors(["a"], UP, APP, wide, LIVE_NOW) == want_wide
        assert (await ipc.window_count())[MINUTE] == 62
    finally:
        await stores.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='codec'").fetchone() == (CODEC,)


# -- trace ids past the catalog's trace retention ---------------------------------------------------------
def _ids(m: int) -> tuple[str, ...]:
    """Five trace ids of minute ``m`` (sorted, the smallest first; random bytes but for the first two)."""
    return tuple(sorted(f"{m:04x}" + hashlib.md5(f"{m} {k}".encode()).hexdigest()[4:] for k in range(5)))


async def test_packed_trace_windows_past_trace_retention_keep_one_trace_id(tmp_path: pathlib.Path) -> None:
    # trace retention 1 h: at the roll-up of 3 h 05 the windows that ended by 2 h 05 keep their
    # smallest trace id once packed; newer ones (and the hour window of hour 2) keep all five
    stores = open_stores(tmp_path, Retention(trace_seconds=HOUR))
    try:
        tr = stores.layers[TRACE]
        ws = [win("a", "b", T0 + m * MINUTE, layer=TRACE, requests=10, exemplars=_ids(m)) for m in range(185)]
        await tr.upsert_windows(ws)
        now = T0 + 3 * HOUR + 5 * MINUTE
        await tr.rollup(now)
        key = ws[0].key
        asked = [(key, MINUTE, T0 + m * MINUTE) for m in range(185)]
        asked += [(key, HOUR, T0 + h * HOUR) for h in range(3)]
        got = await tr.stored_stats(asked)
        for m in range(185):
            want = _ids(m)[:1] if m < 125 else _ids(m)
            assert got[(key, MINUTE, T0 + m * MINUTE)].exemplars == want, m
            assert got[(key, MINUTE, T0 + m * MINUTE)].requests == 10
        assert [got[(key, HOUR, T0 + h * HOUR)].exemplars for h in range(3)] == [
            _ids(0)[:1], _ids(60)[:1], _ids(120)]
        # a range read from the packs gives the thinned ids; the live minutes give all
        [old] = await tr.neighbors(["a"], UP, APP, TimeRange(T0 + 10 * MINUTE, T0 + 20 * MINUTE), now)
        assert old.stats.exemplars == tuple(sorted(x for m in range(10, 20) for x in _ids(m)[:1]))[:5]
        assert old.stats.requests == 100
        [live] = await tr.neighbors(["a"], UP, APP, TimeRange(now - 15 * MINUTE, now), now)
        assert live.stats.exemplars == _ids(170)
        # an hour later, the thin pass reaches hour 2: its minutes and its hour window keep one (and
        # what the store remembered of the edge for a range there is forgotten)
        rng = TimeRange(T0 + 130 * MINUTE, T0 + 140 * MINUTE)
        [e] = await tr.neighbors(["a"], UP, APP, rng, now + HOUR)
        assert e.stats.exemplars == _ids(130)
        await tr.rollup(now + HOUR)
        [e] = await tr.neighbors(["a"], UP, APP, rng, now + HOUR)
        assert e.stats.exemplars == tuple(sorted(x for m in range(130, 140) for x in _ids(m)[:1]))[:5]
        got = await tr.stored_stats([(key, MINUTE, T0 + 150 * MINUTE), (key, HOUR, T0 + 2 * HOUR)])
        assert got[(key, MINUTE, T0 + 150 * MINUTE)].exemplars == _ids(150)[:1]
        assert got[(key, HOUR, T0 + 2 * HOUR)].exemplars == _ids(120)[:1]
        # other layers keep theirs (they carry none from the stages; nothing is rewritten)
        net = stores.layers[NET]
        await net.upsert_windows([win("a", "b", T0, exemplars=_ids(0))])
        await net.rollup(now + HOUR)
        net_key = EdgeKey(NET, APP, "a", "b")
        assert (await net.stored_stats([(net_key, MINUTE, T0)]))[(net_key, MINUTE, T0)].exemplars == _ids(0)
    finally:
        await stores.close()


async def test_a_database_of_compact_6_is_thinned_and_packs_its_hours_at_its_next_roll_up(
    tmp_path: pathlib.Path,
) -> None:
    # a compact-6 store kept every trace id in its packs and its day's hours loose: the next roll-up
    # thins what is past trace retention and the hours it builds go into the day's pack
    stores = open_stores(tmp_path, Retention(trace_seconds=HOUR))
    tr = stores.layers[TRACE]
    ws = [win("a", "b", T0 + m * MINUTE, layer=TRACE, requests=10, exemplars=_ids(m)) for m in range(185)]
    key = ws[0].key
    await tr.upsert_windows(ws)
    await stores.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "trace.db")) as conn:  # as compact-6 stored it
        assert conn.execute("SELECT value FROM meta WHERE key='exemplars_thinned'").fetchone() is None
    # compact-6: no hour joined its day's pack early, no trace id was thinned
    with mock.patch.dict(packs.PACKED, {MINUTE: HOUR}, clear=True), \
            mock.patch.object(EmbeddedLayerStore, "_thinner", lambda self, now: None):
        stores = open_stores(tmp_path, Retention(trace_seconds=HOUR))
        await stores.layers[TRACE].rollup(T0 + 2 * HOUR + 5 * MINUTE)  # hours 0 and 1 packed, thinned
        await stores.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "trace.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM windows WHERE wsec=?", (HOUR,)).fetchone() == (2,)
        (data,) = conn.execute("SELECT data FROM packs WHERE wsec=? AND wstart=?", (MINUTE, T0)).fetchone()
        assert len(data) > 60 * 5 * 14  # every trace id kept (14 random bytes each)
        # compact-6 stored presence intervals as 8-byte integers
        spans = conn.execute("SELECT edge, wsec, intervals FROM spans").fetchall()
        assert spans and all(blob[0] == 0xFE for _, _, blob in spans)
        conn.executemany("UPDATE spans SET intervals=? WHERE edge=? AND wsec=?",
                         [(array_from(blob).tobytes(), e, w) for e, w, blob in spans])
        conn.execute("UPDATE meta SET value='compact-6' WHERE key='codec'")
        conn.commit()
    stores = open_stores(tmp_path, Retention(trace_seconds=HOUR))
    try:
        tr = stores.layers[TRACE]
        await tr.rollup(T0 + 3 * HOUR + 5 * MINUTE)
        got = await tr.stored_stats([(key, MINUTE, T0 + 30 * MINUTE), (key, HOUR, T0 + HOUR),
                                     (key, HOUR, T0 + 2 * HOUR)])
        assert got[(key, MINUTE, T0 + 30 * MINUTE)].exemplars == _ids(30)[:1]
        assert got[(key, HOUR, T0 + 2 * HOUR)].exemplars == _ids(120)
        assert (await tr.window_count()) == {MINUTE: 185, HOUR: 3}
        with contextlib.closing(sqlite3.connect(tmp_path / "trace.db")) as conn:
            hours = conn.execute("SELECT COUNT(*) FROM windows WHERE wsec=?", (HOUR,)).fetchone()
        assert hours == (2,)  # the loose hours of before stay loose until the day is rolled up
        assert [(e.key.target, e.stats.requests) for e in
                await tr.neighbors(["a"], UP, APP, TimeRange(T0, T0 + 3 * HOUR), T0 + 3 * HOUR + 5 * MINUTE)
                ] == [("b", 1800)]
    finally:
        await stores.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "trace.db")) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='codec'").fetchone() == (CODEC,)


@given(st.sampled_from([MINUTE, HOUR, DAY]), st.lists(st.integers(1, 10**6), max_size=40),
       st.integers(0, 10**6))
def test_presence_intervals_are_stored_as_varints_and_read_in_both_forms(
    wsec: int, gaps: list[int], first: int
) -> None:
    bounds, t = [], T0 - T0 % wsec + first * wsec
    for g in gaps[: len(gaps) // 2 * 2]:
        t += g * wsec
        bounds.append(t)
    iv = array("q", bounds)
    blob = to_blob(iv, wsec)
    assert blob[0] == 0xFE and len(blob) <= 1 + 3 + 5 + 3 * len(bounds)
    assert array_from(blob) == iv
    assert array_from(iv.tobytes()) == iv  # the older form
    odd = array("q", [*bounds, t + wsec + 1, t + 2 * wsec])  # not whole windows: in seconds
    assert to_blob(odd, wsec)[:2] == b"\xfe\x01" and array_from(to_blob(odd, wsec)) == odd

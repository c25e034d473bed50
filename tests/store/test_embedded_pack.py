"""Packs (``topology/store/embedded_pack.py``): a finished hour's minutes (a day's hours) in one row per
edge read exactly as the loose windows did, through every reader, late data and retention."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from unittest import mock

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.store.contract import APP, DOWN, IPC, LIVE, LIVE_NOW, NET, T0, UP, minutes, win
from tests.store.test_embedded import stats_st
from topology.model import EdgeSummary, EdgeWindow
from topology.sketch import LatencySketch
from topology.store import embedded_pack as packs
from topology.store.base import LayerStore
from topology.store.embedded import open_stores
from topology.store.embedded_codec import CODEC
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
            rows = conn.execute("SELECT wsec, wstart, edge, slots FROM packs ORDER BY wstart").fetchall()
            loose = conn.execute("SELECT wstart FROM windows WHERE wsec=?", (MINUTE,)).fetchall()
        assert [(w, t, packs.count(s)) for w, t, _, s in rows] == [(MINUTE, T0, 60), (MINUTE, T0 + HOUR, 60)]
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
        assert _packed_rows(tmp_path)[0] == 2  # hours 0 (5 minutes) and 1 (57)
        assert await ipc.neighbors(["a"], UP, APP, wide, LIVE_NOW) == want_wide
        assert (await ipc.window_count())[MINUTE] == 62
    finally:
        await stores.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='codec'").fetchone() == (CODEC,)

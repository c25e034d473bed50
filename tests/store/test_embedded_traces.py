"""What only the embedded catalog does with trace summaries: blocks, the lists and the trace store's index
rebuilt at open, collections, and databases written before blocks (the contract suite covers the rest)."""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import random
import sqlite3

import pytest

from tests.store.contract import NASTY_NAMES
from topology.catalog import TraceSpan, TraceSummary, pack_spans
from topology.store import embedded_catalog, embedded_traces
from topology.store.embedded_catalog import TRACES_PER_SERVICE, EmbeddedCatalogStore
from topology.store.embedded_traces import (
    TraceIndex,
    decode_block,
    encode_block,
    encode_spans,
    record_at,
    spans_at,
)
from topology.timewindow import Retention


def summary(i: int, services: tuple[str, ...] = ("a",), start: float | None = None,
            root: str | None = None) -> TraceSummary:
    at = float(i) if start is None else start
    span = TraceSpan(f"{i:016x}", None, services[0], "GET /", "SERVER", at, 0.01, False)
    return TraceSummary(f"{i:032x}", root or services[0], "GET /", at, 0.01 * i, i % 7, i % 3 == 0, services,
                        pack_spans([span]))


def without_spans(s: TraceSummary) -> TraceSummary:
    return TraceSummary(s.trace_id, s.root_service, s.root_name, s.start, s.duration, s.spans, s.error,
                        s.services)


def rows(path: pathlib.Path, table: str) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


class Model:
    """What the catalog answers, the plain way: every version of every (service, trace) kept, the lists
    cut when read; the trace store's retention applied per call as the contract says."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.listed: dict[str, dict[str, TraceSummary]] = {}
        self.stored: dict[str, TraceSummary] = {}

    def record(self, summaries: list[TraceSummary]) -> None:
        summaries = list({s.trace_id: s for s in summaries}.values())  # in one call, the last of an id
        for s in summaries:
            for service in {s.root_service, *s.services}:
                self.listed.setdefault(service, {})[s.trace_id] = without_spans(s)
            self.stored[s.trace_id] = s
        newest = max((s.start for s in self.stored.values()), default=0.0)
        oldest = newest - self.retention.trace_seconds
        self.stored = {t: s for t, s in self.stored.items() if s.start >= oldest}
        kept = sorted(self.stored.values(), key=lambda s: (s.start, s.trace_id))[-self.retention.traces:]
        self.stored = {s.trace_id: s for s in kept} if self.retention.traces else {}

    def recent(self, service: str, limit: int) -> list[TraceSummary]:
        found = sorted(self.listed.get(service, {}).values(), key=lambda s: (s.start, s.trace_id),
                       reverse=True)
        return found[:min(limit, TRACES_PER_SERVICE)]


async def agrees(cat: EmbeddedCatalogStore, model: Model, ids: list[str]) -> None:
    for service in model.listed:
        assert await cat.recent_traces(service, 1000) == model.recent(service, 1000), service
    assert await cat.recent_traces("a", 3) == model.recent("a", 3)
    for trace_id in ids:
        assert await cat.trace(trace_id) == model.stored.get(trace_id), trace_id


def workload(seed: int, calls: int) -> list[list[TraceSummary]]:
    """Calls of a few hot services and many cold ones (their lists keep old blocks alive), starts
    mostly rising, some traces recorded again later with a later start and other services."""
    rnd = random.Random(seed)
    services = ["a", "b", "c", *NASTY_NAMES, *(f"cold-{i}" for i in range(8))]
    out, seen, clock = [], [], 1000.0
    for _ in range(calls):
        batch = []
        for _ in range(rnd.randint(0, 60)):
            clock += rnd.random()
            if seen and rnd.random() < 0.05:  # recorded again, later
                old = rnd.choice(seen)
                i, start = int(old.trace_id, 16), clock
            else:
                i, start = len(seen) + 1, clock - rnd.random() * 30
            names = tuple(rnd.sample(services[:3], rnd.randint(1, 2)))
            if rnd.random() < 0.3:
                names += (rnd.choice(services[3:]),)
            s = summary(i, names, start, root=rnd.choice([names[0], "root-" + names[-1]]))
            batch.append(s)
            seen.append(s)
        out.append(batch)
    return out


@pytest.mark.parametrize("whole_block", [0, 10**9])  # a collection reads its copies by block, or one by one
async def test_answers_follow_the_model_through_collections_and_reopens(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, whole_block: int) -> None:
    monkeypatch.setattr(embedded_traces, "_COLLECT_SLACK", 100)  # collect often
    monkeypatch.setattr(embedded_catalog, "_WHOLE_BLOCK", whole_block)
    path, retention = tmp_path / "catalog.db", Retention(traces=150, trace_seconds=200.0)
    model, cat = Model(retention), EmbeddedCatalogStore(path, retention)
    ids: list[str] = []
    for n, batch in enumerate(workload(7, 320)):
        await cat.record_traces(batch)
        model.record(batch)
        ids += [s.trace_id for s in batch]
        if n % 40 == 39:
            await agrees(cat, model, ids)
            await cat.close()
            cat = EmbeddedCatalogStore(path, retention)
            await agrees(cat, model, ids)
    listed = {s.trace_id for service in model.listed for s in model.recent(service, 1000)}
    # the collections kept the records on disk within a few times those listed
    assert rows(path, "trace_blocks") < 320
    with sqlite3.connect(path) as c:
        on_disk = sum(len(decode_block(d)) for (d,) in c.execute("SELECT summaries FROM trace_blocks"))
    assert on_disk < 4 * len(listed) + 4 * 100
    assert rows(path, "trace_block_spans") <= 150  # a spans row is deleted once its traces left the store
    await cat.close()


async def test_what_was_written_is_there_after_a_crash(tmp_path: pathlib.Path) -> None:
    """Nothing waits in memory: another process opening the file sees every call written."""
    path = tmp_path / "catalog.db"
    cat = EmbeddedCatalogStore(path)
    await cat.record_traces([summary(i, ("a", "b")) for i in range(5)])
    await cat.record_traces([summary(7, ("b",))])
    other = EmbeddedCatalogStore(path)  # the file as a crash now would leave it
    assert [t.start for t in await other.recent_traces("b", 10)] == [7.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert await other.trace(f"{3:032x}") == summary(3, ("a", "b"))
    await other.close()
    await cat.close()


async def test_a_write_that_fails_leaves_the_answers_of_the_disk(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "catalog.db"
    cat = EmbeddedCatalogStore(path, Retention(traces=3))
    await cat.record_traces([summary(i, ("a", "b")) for i in range(4)])
    with sqlite3.connect(path) as c:  # the next write fails inside its transaction
        c.execute("CREATE TRIGGER full BEFORE INSERT ON trace_block_spans "
                  "BEGIN SELECT RAISE(ABORT, 'full'); END")
    with pytest.raises(sqlite3.IntegrityError):
        await cat.record_traces([summary(i, ("a", "c")) for i in range(4, 8)])
    assert [t.start for t in await cat.recent_traces("a", 10)] == [3.0, 2.0, 1.0, 0.0]
    assert await cat.recent_traces("c", 10) == []
    assert [i for i in range(8) if await cat.trace(f"{i:032x}") is not None] == [1, 2, 3]
    with sqlite3.connect(path) as c:
        c.execute("DROP TRIGGER full")
    await cat.record_traces([summary(8, ("c",))])
    assert [t.start for t in await cat.recent_traces("c", 10)] == [8.0]
    assert [i for i in range(9) if await cat.trace(f"{i:032x}") is not None] == [2, 3, 8]
    await cat.close()


async def test_a_replaced_trace_is_listed_once_with_its_new_start(tmp_path: pathlib.Path) -> None:
    cat = EmbeddedCatalogStore(tmp_path / "catalog.db")
    await cat.record_traces([summary(1), summary(2), summary(3)])
    await cat.record_traces([summary(1, start=10.0)])  # a late span moved its start
    assert [t.start for t in await cat.recent_traces("a", 10)] == [10.0, 3.0, 2.0]
    assert await cat.trace(f"{1:032x}") == summary(1, start=10.0)
    await cat.record_traces([summary(5), summary(5, start=11.0)])  # twice in one call: the last one
    assert await cat.trace(f"{5:032x}") == summary(5, start=11.0)
    assert [t.start for t in await cat.recent_traces("a", 2)] == [11.0, 10.0]
    await cat.close()


async def test_reads_during_writes_see_whole_lists(tmp_path: pathlib.Path) -> None:
    cat = EmbeddedCatalogStore(tmp_path / "catalog.db")
    await cat.record_traces([summary(i) for i in range(150)])
    seen = []

    async def read() -> None:
        for _ in range(50):
            seen.append([t.start for t in await cat.recent_traces("a", 1000)])
            await asyncio.sleep(0)

    reading = asyncio.create_task(read())
    for k in range(150, 400, 50):
        await cat.record_traces([summary(i) for i in range(k, k + 50)])
    await reading
    for got in seen:  # some whole answer: the newest 100 after one of the writes
        assert got == [float(i) for i in range(int(got[0]), int(got[0]) - TRACES_PER_SERVICE, -1)]
    assert [t.start for t in await cat.recent_traces("a", 1000)] == [float(i) for i in range(399, 299, -1)]
    await cat.close()


def test_a_block_decodes_to_what_was_encoded() -> None:
    batch = [summary(i, (NASTY_NAMES[i % len(NASTY_NAMES)], "b"), start=1e9 + i / 3, root=NASTY_NAMES[-i % 7])
             for i in range(20)]
    data = encode_block(batch)
    want = [(without_spans(s), None, True) for s in batch]
    assert decode_block(data) == want
    assert [record_at(data, i) for i in range(20)] == want
    copies = encode_block(batch[:2], [("x", "y"), ()], stored=False)
    assert decode_block(copies) == [(without_spans(batch[0]), ("x", "y"), False),
                                    (without_spans(batch[1]), (), False)]
    assert decode_block(encode_block([])) == []
    spans = encode_spans(batch)
    assert [spans_at(lambda at, n: spans[at:at + n], i) for i in range(20)] == [s.packed_spans for s in batch]
    with pytest.raises(ValueError):
        record_at(data, 20)
    # a name holding one of the text's separators: the block is written as JSON
    odd = [summary(1, ("a\x1fb", "c\x1ed", "e\x1d", ""), root="r\x1f"), summary(2, ("",))]
    for listed in (None, [("x\x1f",), ("",)]):
        assert decode_block(encode_block(odd, listed, listed is None)) == [
            (without_spans(s), None if listed is None else listed[i], listed is None)
            for i, s in enumerate(odd)]
    empty = summary(3, ("", "b"), root="")  # empty names without separators in them
    assert decode_block(encode_block([empty], [("",)], False)) == [(without_spans(empty), ("",), False)]


def test_the_index_lists_the_newest_hundred_by_start_then_id() -> None:
    idx = TraceIndex(Retention())
    block, _ = idx.add([summary(i, ("a",), start=float(i // 2)) for i in range(300)])
    got = [ref & 0xFFFFF for ref in idx.newest("a", 1000)]
    assert got == list(range(299, 199, -1))  # equal starts: the larger id is the newer
    assert idx.newest("a", 0) == idx.newest("nobody", 5) == []
    assert idx.stored(f"{5:032x}") == block << embedded_traces.BLOCK_BITS | 5


async def test_a_database_written_before_blocks_keeps_its_traces_and_lists(tmp_path: pathlib.Path) -> None:
    """Tables of 15f8572: a row per trace in trace_spans (summary as a JSON array), a row per service and
    trace in traces; a list may hold a few more than 100 rows and traces the trace store no longer has."""
    path = tmp_path / "catalog.db"
    old = [summary(i, ("a", "b") if i % 2 else ("a",)) for i in range(120)]
    text = {s.trace_id: json.dumps([s.root_service, s.root_name, s.duration, s.spans, s.error, s.services],
                                   separators=(",", ":")) for s in old}
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE traces(service TEXT NOT NULL, trace_id TEXT NOT NULL, start REAL NOT NULL, "
                  "data TEXT NOT NULL, PRIMARY KEY(service, trace_id)) WITHOUT ROWID")
        c.execute("CREATE TABLE trace_spans(trace_id TEXT NOT NULL, start REAL NOT NULL, "
                  "summary TEXT NOT NULL, spans BLOB NOT NULL)")
        c.execute("CREATE INDEX trace_spans_by_start ON trace_spans(start, trace_id)")
        c.executemany("INSERT INTO trace_spans VALUES (?,?,?,?)",
                      [(s.trace_id, s.start, text[s.trace_id], s.packed_spans) for s in old[-30:]])
        c.executemany("INSERT INTO traces VALUES (?,?,?,?)",
                      [(n, s.trace_id, s.start, text[s.trace_id]) for s in old[5:] for n in s.services])
    cat = EmbeddedCatalogStore(path, Retention(traces=20))
    assert await cat.recent_traces("a", 1000) == [without_spans(s) for s in reversed(old[20:])]
    assert await cat.recent_traces("b", 3) == [without_spans(s) for s in (old[119], old[117], old[115])]
    assert [i for i in range(120) if await cat.trace(f"{i:032x}") is not None] == list(range(100, 120))
    assert await cat.trace(old[110].trace_id) == old[110]
    await cat.record_traces([summary(120)])
    assert [i for i in range(121) if await cat.trace(f"{i:032x}") is not None] == list(range(101, 121))
    await cat.close()
    with sqlite3.connect(path) as c:
        tables = {n for (n,) in c.execute("SELECT name FROM sqlite_master")}
    assert not tables & {"traces", "trace_spans", "trace_spans_by_start", "trace_store"}
    cat = EmbeddedCatalogStore(path, Retention(traces=20))
    assert [t.start for t in await cat.recent_traces("a", 2)] == [120.0, 119.0]
    assert await cat.trace(old[110].trace_id) == old[110]
    await cat.close()


async def test_a_database_written_before_trace_spans_keeps_its_traces(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "catalog.db"
    old = [summary(i, ("a", "b")) for i in range(5)]
    with sqlite3.connect(path) as c:  # the former tables: JSON objects, the spans in base64
        c.execute("CREATE TABLE trace_store(trace_id TEXT PRIMARY KEY, start REAL NOT NULL, "
                  "data TEXT NOT NULL) WITHOUT ROWID")
        c.execute("CREATE INDEX trace_store_by_start ON trace_store(start, trace_id)")
        c.executemany("INSERT INTO trace_store VALUES (?,?,?)",
                      [(s.trace_id, s.start, json.dumps(s.to_dict())) for s in old])
        c.execute("CREATE TABLE traces(service TEXT NOT NULL, trace_id TEXT NOT NULL, start REAL NOT NULL, "
                  "data TEXT NOT NULL, PRIMARY KEY(service, trace_id)) WITHOUT ROWID")
        c.execute("CREATE INDEX traces_by_start ON traces(service, start, trace_id)")
        c.executemany("INSERT INTO traces VALUES ('a',?,?,?)",
                      [(s.trace_id, s.start, json.dumps(without_spans(s).to_dict())) for s in old])
    assert base64.b64encode(old[0].packed_spans).decode() in json.dumps(old[0].to_dict())
    cat = EmbeddedCatalogStore(path, Retention(traces=3))
    assert [i for i in range(5) if await cat.trace(f"{i:032x}") is not None] == [2, 3, 4]
    assert await cat.trace(old[4].trace_id) == old[4]
    assert await cat.recent_traces("a", 10) == [without_spans(s) for s in reversed(old)]
    await cat.record_traces([summary(5)])  # the store's bounds hold for the moved traces too
    assert [i for i in range(6) if await cat.trace(f"{i:032x}") is not None] == [3, 4, 5]
    newest = [without_spans(summary(5)), without_spans(old[4]), without_spans(old[3])]
    assert await cat.recent_traces("a", 3) == newest
    await cat.close()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT name FROM sqlite_master WHERE name LIKE 'trace_store%' "
                         "OR name LIKE 'traces%'").fetchall() == []


async def test_the_trace_store_is_found_by_id_after_a_reopen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "catalog.db"
    cat = EmbeddedCatalogStore(path, Retention(traces=4))
    await cat.record_traces([summary(i) for i in range(3)])
    await cat.close()
    cat = EmbeddedCatalogStore(path, Retention(traces=4))
    assert await cat.trace(f"{1:032x}") == summary(1)
    await cat.record_traces([summary(1, start=5.0), summary(3), summary(3, start=4.0)])  # replaced, twice
    await cat.record_traces([summary(4)])  # five: the oldest goes
    assert [i for i in range(5) if await cat.trace(f"{i:032x}") is not None] == [1, 2, 3, 4]
    assert await cat.trace(f"{3:032x}") == summary(3, start=4.0)
    await cat.close()
    assert rows(path, "trace_block_spans") == 3  # the first call's row keeps trace 2
    cat = EmbeddedCatalogStore(path, Retention(traces=2))  # a smaller store after a restart
    assert [i for i in range(5) if await cat.trace(f"{i:032x}") is not None] == [1, 4]
    assert [t.start for t in await cat.recent_traces("a", 10)] == [5.0, 4.0, 4.0, 2.0, 0.0]
    await cat.close()

"""What only the embedded catalog does with trace summaries: the per-service lists' amortised
eviction, and databases written before ``trace_spans`` (the contract suite covers the rest)."""

from __future__ import annotations

import base64
import json
import pathlib
import sqlite3

import pytest

from topology.catalog import TraceSpan, TraceSummary, pack_spans
from topology.store import embedded_catalog
from topology.store.embedded_catalog import _TRACES_SLACK, TRACES_PER_SERVICE, EmbeddedCatalogStore
from topology.timewindow import Retention


def summary(i: int, services: tuple[str, ...] = ("a",), start: float | None = None) -> TraceSummary:
    at = float(i) if start is None else start
    span = TraceSpan(f"{i:016x}", None, services[0], "GET /", "SERVER", at, 0.01, False)
    return TraceSummary(f"{i:032x}", services[0], "GET /", at, 0.01, 1, False, services, pack_spans([span]))


def rows_of(path: pathlib.Path, service: str) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT count(*) FROM traces WHERE service=?", (service,)).fetchone()[0])


def without_spans(s: TraceSummary) -> TraceSummary:
    return TraceSummary(s.trace_id, s.root_service, s.root_name, s.start, s.duration, s.spans, s.error,
                        s.services)


async def test_a_services_list_is_evicted_in_bulk_and_reads_see_its_newest(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "catalog.db"
    cat = EmbeddedCatalogStore(path, listed_buffer=1)  # every list written at once
    for i in range(400):  # one trace per write: the slack fills, then the oldest go at once
        await cat.record_traces([summary(i, ("a", "b") if i % 2 else ("a",))])
        assert min(i + 1, TRACES_PER_SERVICE) <= rows_of(path, "a") <= TRACES_PER_SERVICE + _TRACES_SLACK
        want = list(range(i, max(-1, i - TRACES_PER_SERVICE), -1))
        assert [t.start for t in await cat.recent_traces("a", 1000)] == [float(j) for j in want]
    assert [t.start for t in await cat.recent_traces("b", 3)] == [399.0, 397.0, 395.0]
    assert await cat.recent_traces("a", 1) == [without_spans(summary(399, ("a", "b")))]
    await cat.close()
    # reopened: the rows written before are not counted, so the first write evicts
    cat = EmbeddedCatalogStore(path, listed_buffer=1)
    await cat.record_traces([summary(400)])
    assert rows_of(path, "a") == TRACES_PER_SERVICE
    assert [t.start for t in await cat.recent_traces("a", 1000)] == [float(j) for j in range(400, 300, -1)]
    await cat.close()


async def test_lists_wait_in_memory_until_enough_rows_and_close_writes_them(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "catalog.db"
    cat = EmbeddedCatalogStore(path, listed_buffer=10)
    await cat.record_traces([summary(i, ("a", "b")) for i in range(4)])  # 8 rows wait
    assert rows_of(path, "a") == 0
    assert [t.start for t in await cat.recent_traces("b", 10)] == [3.0, 2.0, 1.0, 0.0]
    assert await cat.trace(f"{3:032x}") == summary(3, ("a", "b"))  # the trace store is written at once
    await cat.record_traces([summary(4, ("a", "b"))])  # 10 rows: written
    assert rows_of(path, "a") == rows_of(path, "b") == 5
    await cat.record_traces([summary(1, ("a", "b"), start=9.0)])  # waits; replaces the row on disk
    assert [t.start for t in await cat.recent_traces("a", 3)] == [9.0, 4.0, 3.0]
    assert len(await cat.recent_traces("a", 10)) == 5
    await cat.close()
    cat = EmbeddedCatalogStore(path)
    assert [t.start for t in await cat.recent_traces("a", 10)] == [9.0, 4.0, 3.0, 2.0, 0.0]
    await cat.close()


async def test_lists_wait_no_longer_than_listed_seconds(tmp_path: pathlib.Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash loses at most _LISTED_SECONDS of the lists: the first write after that long writes them."""
    clock = [1000.0]
    monkeypatch.setattr(embedded_catalog.time, "monotonic", lambda: clock[0])
    path = tmp_path / "catalog.db"
    cat = EmbeddedCatalogStore(path, listed_buffer=1000)
    await cat.record_traces([summary(1)])
    clock[0] += embedded_catalog._LISTED_SECONDS - 1
    await cat.record_traces([summary(2)])
    assert rows_of(path, "a") == 0  # both wait: few rows, not long enough
    clock[0] += 1
    await cat.record_traces([summary(3)])
    assert rows_of(path, "a") == 3  # on disk without close: a crash now loses nothing of them
    await cat.record_traces([summary(4)])
    assert rows_of(path, "a") == 3  # the next row waits again
    await cat.close()


async def test_a_replaced_trace_is_listed_once_with_its_new_start(tmp_path: pathlib.Path) -> None:
    cat = EmbeddedCatalogStore(tmp_path / "catalog.db")
    await cat.record_traces([summary(1), summary(2), summary(3)])
    await cat.record_traces([summary(1, start=10.0)])  # a late span moved its start
    assert [t.start for t in await cat.recent_traces("a", 10)] == [10.0, 3.0, 2.0]
    assert await cat.trace(f"{1:032x}") == summary(1, start=10.0)
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
    for s in old:
        assert await cat.trace(s.trace_id) == s
    assert await cat.recent_traces("a", 10) == [without_spans(s) for s in reversed(old)]
    await cat.record_traces([summary(5)])  # the store's bounds hold for the moved traces too
    assert [i for i in range(6) if await cat.trace(f"{i:032x}") is not None] == [3, 4, 5]
    newest = [without_spans(summary(5)), without_spans(old[4]), without_spans(old[3])]
    assert await cat.recent_traces("a", 3) == newest
    await cat.close()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT name FROM sqlite_master WHERE name LIKE 'trace_store%' "
                         "OR name = 'traces_by_start'").fetchall() == []


async def test_the_trace_store_is_found_by_id_after_a_reopen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "catalog.db"
    cat = EmbeddedCatalogStore(path, Retention(traces=4))
    await cat.record_traces([summary(i) for i in range(3)])
    await cat.close()
    cat = EmbeddedCatalogStore(path, Retention(traces=4))
    assert await cat.trace(f"{1:032x}") == summary(1)
    await cat.record_traces([summary(1, start=5.0), summary(3), summary(3, start=4.0)])  # replaced, twice
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT trace_id, start FROM trace_spans ORDER BY rowid").fetchall() == [
            (f"{i:032x}", at) for i, at in ((0, 0.0), (2, 2.0), (1, 5.0), (3, 4.0))]
    await cat.record_traces([summary(4)])  # five: the oldest goes
    assert [i for i in range(5) if await cat.trace(f"{i:032x}") is not None] == [1, 2, 3, 4]
    assert await cat.trace(f"{3:032x}") == summary(3, start=4.0)
    await cat.close()

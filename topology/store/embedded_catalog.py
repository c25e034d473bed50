"""The embedded :class:`CatalogStore`: ``catalog.db`` plus an in-memory copy of what queries need.

Memory: every catalog entry, every known node (name, granularity, kind, app, layers, first/last
seen), the sorted name lists per granularity, and each service's newest ``HEALTH_IN_MEMORY``
health events. Older health events, change events and trace summaries are read from SQLite.
Trace summaries are bounded: each service keeps its ``TRACES_PER_SERVICE`` newest (without their
spans); the store of recent traces (what ``trace`` answers, with the kept spans) holds at most
``Retention.traces`` and none older than ``Retention.trace_seconds`` before the newest start.

Writing them costs mostly the pages a commit dirties (each goes to the WAL, and again to the file at
the checkpoint), and Python per row: so each ``record_traces`` call is one block, two rows at the end
of two tables (its summaries once, in a compact columnar form, and their packed spans as they came),
and the lists and the trace store's index live in memory, rebuilt from the blocks at open
(``topology.store.embedded_traces``). Nothing waits in memory: a crash loses no written call.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import pathlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

from topology.catalog import AddressLease, HealthEvent, HealthState, HealthStatus, ServiceInfo, TraceSummary
from topology.change import ChangeEvent
from topology.model import Granularity, Layer, NodeInfo, NodeKind
from topology.store.base import CatalogStore, ServiceFilter, StoreUnavailable
from topology.store.embedded_db import Database
from topology.store.embedded_traces import (
    BLOCK_BITS,
    BLOCK_RECORDS,
    INDEX,
    TraceIndex,
    decode_block,
    encode_block,
    encode_spans,
    record_at,
    record_from,
    spans_at,
)
from topology.store.embedded_traces import (
    TRACES_PER_SERVICE as TRACES_PER_SERVICE,
)
from topology.store.embedded_version import WriteLock
from topology.timewindow import Retention

HEALTH_IN_MEMORY = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS services(name TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes(
  name TEXT NOT NULL, granularity TEXT NOT NULL, kind TEXT NOT NULL, app TEXT, layers TEXT NOT NULL,
  first_seen REAL NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY(name, granularity)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health(
  service TEXT NOT NULL, at REAL NOT NULL, status TEXT NOT NULL, reason TEXT,
  PRIMARY KEY(service, at)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_blocks(block INTEGER PRIMARY KEY, summaries BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS trace_block_spans(block INTEGER PRIMARY KEY, spans BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS peer_leases(
  ip TEXT NOT NULL, owner TEXT NOT NULL, start REAL NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY(ip, owner, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes(
  service TEXT NOT NULL, at REAL NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY(service, at, key)) WITHOUT ROWID;
"""
#: Records of one block read from it whole rather than one by one through its blob handle.
_WHOLE_BLOCK = 16
#: Names per SQL statement when change events are read for many services.
_CHANGES_BATCH = 500

_Health = tuple[float, HealthState, str | None]


def _names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        raise ValueError("names must be a collection of names, not one string")
    return list(dict.fromkeys(names))


def _merge_node(old: NodeInfo | None, new: NodeInfo) -> NodeInfo:
    if old is None:
        return new
    # a node seen as a real service stays one; otherwise the newest observation names the kind
    kind = NodeKind.SERVICE if NodeKind.SERVICE in (old.kind, new.kind) else new.kind
    firsts = [t for t in (old.first_seen, new.first_seen) if t]
    return NodeInfo(
        name=new.name,
        kind=kind,
        granularity=new.granularity,
        app=new.app or old.app,
        layers=old.layers | new.layers,
        first_seen=min(firsts) if firsts else 0.0,
        last_seen=max(old.last_seen, new.last_seen),
    )


def _layers_text(layers: frozenset[Layer]) -> str:
    return ",".join(sorted(layer.value for layer in layers))


def _summary(trace_id: str, start: float, text: str, packed_spans: bytes = b"") -> TraceSummary:
    """A summary of the tables before blocks: a JSON array ``[root service, root name, duration,
    spans, error, services]`` (or, before that, ``TraceSummary.to_dict``)."""
    d = json.loads(text)
    if isinstance(d, dict):
        return replace(TraceSummary.from_dict(d), packed_spans=packed_spans)
    root, name, duration, spans, error, services = d
    return TraceSummary(trace_id, str(root), str(name), start, float(duration), int(spans), bool(error),
                        tuple(services), packed_spans)


def _table(conn: sqlite3.Connection, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
    return conn.execute(sql, (name,)).fetchone() is not None


def _migrate_traces(conn: sqlite3.Connection) -> None:
    """Move the trace summaries of a database written before blocks into blocks, in one transaction:
    the store of recent traces (``trace_spans``: a row per trace; before it ``trace_store``: JSON with
    the spans in base64) as blocks listing nobody, and the services' lists (``traces``: a row per
    service and trace) as blocks of copies naming the services that listed each."""
    stored: list[TraceSummary] = []
    if _table(conn, "trace_store"):
        rows = conn.execute("SELECT data FROM trace_store")
        stored += [TraceSummary.from_dict(json.loads(d)) for (d,) in rows]
    if _table(conn, "trace_spans"):
        stored += [_summary(t, start, text, bytes(spans)) for t, start, text, spans in conn.execute(
            "SELECT trace_id, start, summary, spans FROM trace_spans ORDER BY rowid")]
    listed: dict[tuple[str, float, str], list[str]] = {}
    if _table(conn, "traces"):
        for service, trace_id, start, data in conn.execute(
                "SELECT service, trace_id, start, data FROM traces ORDER BY trace_id, service"):
            listed.setdefault((trace_id, start, data), []).append(service)
    copies = [_summary(t, start, data) for t, start, data in listed]
    block = 1 + (conn.execute("SELECT max(block) FROM trace_blocks").fetchone()[0] or 0)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for i in range(0, len(stored), BLOCK_RECORDS):
            part = stored[i:i + BLOCK_RECORDS]
            listing_none = encode_block(part, [()] * len(part))
            conn.execute("INSERT INTO trace_blocks VALUES (?,?)", (block, listing_none))
            conn.execute("INSERT INTO trace_block_spans VALUES (?,?)", (block, encode_spans(part)))
            block += 1
        names = [tuple(n) for n in listed.values()]
        for i in range(0, len(copies), BLOCK_RECORDS):
            conn.execute("INSERT INTO trace_blocks VALUES (?,?)", (block, encode_block(
                copies[i:i + BLOCK_RECORDS], names[i:i + BLOCK_RECORDS], stored=False)))
            block += 1
        for table in ("trace_store", "trace_spans", "traces"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _load_traces(conn: sqlite3.Connection, retention: Retention) -> tuple[TraceIndex, list[int]]:
    """The trace index rebuilt from the blocks, and the spans rows it no longer needs."""
    idx = TraceIndex(retention)
    spans = {b for (b,) in conn.execute("SELECT block FROM trace_block_spans")}
    for block, data in conn.execute("SELECT block, summaries FROM trace_blocks ORDER BY block"):
        idx.load(block, decode_block(data), block in spans)
    if spans:
        idx.next_block = max(idx.next_block, max(spans) + 1)
    return idx, idx.loaded(spans)


def _read_records(conn: sqlite3.Connection, refs: Iterable[int]) -> dict[int, TraceSummary]:
    """The summaries (without spans) of these refs whose blocks are still there."""
    by_block: dict[int, list[int]] = {}
    for ref in refs:
        by_block.setdefault(ref >> BLOCK_BITS, []).append(ref)
    out: dict[int, TraceSummary] = {}
    for block, wanted in by_block.items():
        if len(wanted) > _WHOLE_BLOCK:  # many of a block (a collection's copies): read it at once
            row = conn.execute("SELECT summaries FROM trace_blocks WHERE block=?", (block,)).fetchone()
            for ref in wanted if row is not None else ():
                out[ref] = record_at(row[0], ref & INDEX)[0]
            continue
        with _blob(conn, "trace_blocks", "summaries", block) as read:
            if read is not None:
                for ref in wanted:
                    out[ref] = record_from(read, ref & INDEX)[0]
    return out


@contextlib.contextmanager
def _blob(conn: sqlite3.Connection, table: str, column: str,
          row: int) -> Iterator[Callable[[int, int], bytes] | None]:
    """``read(offset, length)`` of a blob, without reading the rest of it; None if the row is gone."""
    try:
        blob = conn.blobopen(table, column, row, readonly=True)
    except sqlite3.OperationalError as e:
        if "no such rowid" in str(e):
            yield None
            return
        raise

    def read(offset: int, length: int) -> bytes:
        blob.seek(offset)
        return blob.read(length)

    with blob:
        yield read


class EmbeddedCatalogStore(CatalogStore):
    def __init__(self, path: pathlib.Path, retention: Retention | None = None) -> None:
        self._retention = retention or Retention()
        self._db = Database(path, SCHEMA, None)
        self._lock = WriteLock()
        self._services: dict[str, ServiceInfo] = {}
        self._cluster_app: dict[str, str] = {}  # cluster -> app, from catalog entries
        self._nodes: dict[tuple[Granularity, str], NodeInfo] = {}
        self._sorted: dict[Granularity, list[str] | None] = {g: None for g in Granularity}
        self._health: dict[str, list[_Health]] = {}
        self._traces = TraceIndex(self._retention)
        self._unwritten: dict[int, list[TraceSummary]] = {}  # blocks not committed yet, by block
        self._load()

    def _load(self) -> None:
        conn = self._db.writer
        for (data,) in conn.execute("SELECT data FROM services"):
            self._put_service(ServiceInfo.from_stored(json.loads(data)))
        for name, gran, kind, app, layers, first, last in conn.execute("SELECT * FROM nodes"):
            g = Granularity(gran)
            seen_in = frozenset(Layer(x) for x in layers.split(",") if x)
            self._nodes[(g, name)] = NodeInfo(name, NodeKind(kind), g, app, seen_in, first, last)
        for service, at, status, reason in conn.execute(
            "SELECT service, at, status, reason FROM health ORDER BY service, at"
        ):
            self._health.setdefault(service, []).append((at, HealthState(status), reason))
        for events in self._health.values():
            del events[:-HEALTH_IN_MEMORY]
        if any(_table(conn, t) for t in ("trace_store", "trace_spans", "traces")):
            _migrate_traces(conn)
        self._traces, unneeded = _load_traces(conn, self._retention)
        if unneeded:
            conn.executemany("DELETE FROM trace_block_spans WHERE block=?", [(b,) for b in unneeded])

    def _put_service(self, info: ServiceInfo) -> None:
        old = self._services.get(info.name)
        if old is not None:
            for c in old.clusters:
                if self._cluster_app.get(c) == old.name:
                    del self._cluster_app[c]
        self._services[info.name] = info
        for c in info.clusters:
            self._cluster_app[c] = info.name
        self._sorted = {g: None for g in Granularity}

    def _check(self) -> None:
        if self._db.closed:
            raise StoreUnavailable(None, "the catalog store is closed")

    @property
    def version(self) -> int:
        """Changes after every write: see :class:`CatalogStore`."""
        return self._lock.released

    # -- services --------------------------------------------------------------------------------
    async def upsert_services(self, infos: Sequence[ServiceInfo]) -> None:
        # shielded: memory and disk stay together if the caller gives up
        await asyncio.shield(self._upsert_services(list(infos)))

    async def _upsert_services(self, infos: Sequence[ServiceInfo]) -> None:
        if not infos:
            return
        if not all(isinstance(i.name, str) and i.name for i in infos):
            raise ValueError("a catalog entry needs a non-empty name")
        latest = {i.name: i for i in infos}
        rows = [(n, json.dumps(i.to_dict(), separators=(",", ":"))) for n, i in latest.items()]
        async with self._lock:
            await self._db.write(
                lambda c: c.executemany("INSERT OR REPLACE INTO services VALUES (?,?)", rows)
            )
            for info in latest.values():
                self._put_service(info)

    async def services(self, names: Iterable[str]) -> dict[str, ServiceInfo]:
        self._check()
        return {n: self._services[n] for n in _names(names) if n in self._services}

    # -- nodes -----------------------------------------------------------------------------------
    async def register_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        # shielded: memory and disk stay together if the caller gives up
        await asyncio.shield(self._register_nodes(list(nodes)))

    async def _register_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        if not nodes:
            return
        async with self._lock:
            merged: dict[tuple[Granularity, str], NodeInfo] = {}
            for n in nodes:
                k = (n.granularity, n.name)
                merged[k] = _merge_node(merged.get(k) or self._nodes.get(k), n)
            changed = {k: v for k, v in merged.items() if self._nodes.get(k) != v}
            if not changed:
                return
            rows = [
                (
                    v.name,
                    v.granularity.value,
                    v.kind.value,
                    v.app,
                    _layers_text(v.layers),
                    v.first_seen,
                    v.last_seen,
                )
                for v in changed.values()
            ]
            sql = "INSERT OR REPLACE INTO nodes VALUES (?,?,?,?,?,?,?)"
            await self._db.write(lambda c: c.executemany(sql, rows))
            for k, v in changed.items():
                if k not in self._nodes:
                    self._sorted[k[0]] = None
                self._nodes[k] = v

    async def known_nodes(self, names: Iterable[str]) -> dict[str, NodeInfo]:
        self._check()
        out: dict[str, NodeInfo] = {}
        for n in _names(names):
            info = self._nodes.get((Granularity.APP, n)) or self._nodes.get((Granularity.CLUSTER, n))
            if info is not None:
                out[n] = info
        return out

    def _sorted_names(self, granularity: Granularity) -> list[str]:
        names = self._sorted[granularity]
        if names is None:
            found = {n for g, n in self._nodes if g is granularity}
            if granularity is Granularity.APP:
                found.update(self._services)
            else:
                found.update(self._cluster_app)
            names = self._sorted[granularity] = sorted(found)
        return names

    def _app_of(self, name: str, granularity: Granularity) -> str | None:
        if granularity is Granularity.APP:
            return name
        node = self._nodes.get((granularity, name))
        if node is not None and node.app:
            return node.app
        return self._cluster_app.get(name)

    def _matches(self, name: str, flt: ServiceFilter, granularity: Granularity) -> bool:
        if flt.tiers is not None or flt.domains is not None or flt.owner_team is not None:
            app = self._app_of(name, granularity)
            info = self._services.get(app) if app else None
            if info is None:
                return False
            if flt.tiers is not None and info.tier not in flt.tiers:
                return False
            if flt.domains is not None and info.domain not in flt.domains:
                return False
            if flt.owner_team is not None and (info.owner is None or info.owner.team != flt.owner_team):
                return False
        if flt.layers is not None:
            node = self._nodes.get((granularity, name))
            if node is None or not (node.layers & flt.layers):
                return False
        return True

    async def list_names(
        self, flt: ServiceFilter, granularity: Granularity, limit: int, after: str | None
    ) -> list[str]:
        self._check()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        names = self._sorted_names(granularity)
        i = 0 if after is None else bisect.bisect_right(names, after)
        prefix = flt.name_prefix
        if prefix:
            i = max(i, bisect.bisect_left(names, prefix))
        out: list[str] = []
        while i < len(names) and len(out) < limit:
            name = names[i]
            i += 1
            if prefix and not name.startswith(prefix):
                break
            if self._matches(name, flt, granularity):
                out.append(name)
        return out

    # -- health ----------------------------------------------------------------------------------
    async def record_health(self, events: Sequence[HealthEvent]) -> None:
        # shielded: memory and disk stay together if the caller gives up
        await asyncio.shield(self._record_health(list(events)))

    async def _record_health(self, events: Sequence[HealthEvent]) -> None:
        if not events:
            return
        latest = {(e.service, float(e.at)): e for e in events}
        rows = [(e.service, at, e.status.value, e.reason) for (_, at), e in latest.items()]
        async with self._lock:
            await self._db.write(
                lambda c: c.executemany("INSERT OR REPLACE INTO health VALUES (?,?,?,?)", rows)
            )
            for (service, at), e in latest.items():
                hist = self._health.setdefault(service, [])
                item: _Health = (at, e.status, e.reason)
                i = bisect.bisect_left(hist, at, key=lambda h: h[0])
                if i < len(hist) and hist[i][0] == at:
                    hist[i] = item
                else:
                    hist.insert(i, item)
                    if len(hist) > HEALTH_IN_MEMORY:
                        del hist[0]

    async def health(self, names: Iterable[str], at: float) -> dict[str, HealthStatus]:
        self._check()
        out: dict[str, HealthStatus] = {}
        older: list[str] = []
        for n in _names(names):
            hist = self._health.get(n)
            if not hist:
                continue
            i = bisect.bisect_right(hist, at, key=lambda h: h[0])
            if i:
                t, status, reason = hist[i - 1]
                out[n] = HealthStatus(status, t, reason)
            elif len(hist) >= HEALTH_IN_MEMORY:
                older.append(n)  # memory holds only the newest events; ask the disk
        if older:

            def read(c: sqlite3.Connection) -> list[tuple[str, float, str, str | None]]:
                found = []
                for n in older:
                    row = c.execute(
                        "SELECT service, at, status, reason FROM health "
                        "WHERE service=? AND at<=? ORDER BY at DESC LIMIT 1",
                        (n, at),
                    ).fetchone()
                    if row is not None:
                        found.append(row)
                return found

            for n, t, state, reason in await self._db.read(read):
                out[n] = HealthStatus(HealthState(state), t, reason)
        return out

    # -- changes ---------------------------------------------------------------------------------
    async def record_changes(self, events: Sequence[ChangeEvent]) -> None:
        if not events:
            return
        rows = [(e.service, float(e.at), e.key, json.dumps(e.to_dict(), separators=(",", ":")))
                for e in events]
        async with self._lock:
            await self._db.write(
                lambda c: c.executemany("INSERT OR IGNORE INTO changes VALUES (?,?,?,?)", rows)
            )

    async def changes(
        self, names: Iterable[str], start: float, end: float, limit: int
    ) -> list[ChangeEvent]:
        self._check()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        wanted = _names(names)
        if not wanted or limit == 0:
            return []

        def read(c: sqlite3.Connection) -> list[tuple[float, str, str, str]]:
            found: list[tuple[float, str, str, str]] = []
            for i in range(0, len(wanted), _CHANGES_BATCH):
                part = wanted[i:i + _CHANGES_BATCH]
                marks = ",".join("?" * len(part))
                found.extend(c.execute(
                    f"SELECT at, service, key, data FROM changes WHERE service IN ({marks}) "
                    "AND at >= ? AND at <= ? ORDER BY at DESC, service, key LIMIT ?",
                    (*part, start, end, limit),
                ).fetchall())
            return found

        rows = await self._db.read(read)
        rows.sort(key=lambda r: (-r[0], r[1], r[2]))
        return [ChangeEvent.from_dict(json.loads(d)) for _, _, _, d in rows[:limit]]

    # -- leases next to unattributed traffic ---------------------------------------------------------
    async def record_peer_leases(self, leases: Sequence[AddressLease]) -> None:
        if not leases:
            return
        rows = [(x.ip, x.owner, float(x.start), json.dumps(x.to_dict(), separators=(",", ":")))
                for x in leases]
        async with self._lock:
            await self._db.write(
                lambda c: c.executemany("INSERT OR REPLACE INTO peer_leases VALUES (?,?,?,?)", rows)
            )

    async def peer_leases(self, ips: Iterable[str]) -> dict[str, list[AddressLease]]:
        self._check()
        wanted = _names(ips)

        def read(c: sqlite3.Connection) -> list[tuple[str, str]]:
            found: list[tuple[str, str]] = []
            for i in range(0, len(wanted), _CHANGES_BATCH):
                part = wanted[i:i + _CHANGES_BATCH]
                found.extend(c.execute(
                    f"SELECT ip, data FROM peer_leases WHERE ip IN ({','.join('?' * len(part))}) "
                    "ORDER BY ip, start, owner", part).fetchall())
            return found

        out: dict[str, list[AddressLease]] = {}
        for ip, data in await self._db.read(read) if wanted else []:
            out.setdefault(ip, []).append(AddressLease.from_dict(json.loads(data)))
        return out

    # -- traces ----------------------------------------------------------------------------------
    async def record_traces(self, summaries: Sequence[TraceSummary]) -> None:
        # shielded: memory and disk stay together if the caller gives up
        await asyncio.shield(self._record_traces(list(summaries)))

    async def _record_traces(self, summaries: Sequence[TraceSummary]) -> None:
        latest = list({s.trace_id: s for s in summaries}.values())  # one of an id: the last
        for i in range(0, len(latest), BLOCK_RECORDS):
            async with self._lock:
                await self._write_block(latest[i:i + BLOCK_RECORDS])

    async def _write_block(self, batch: list[TraceSummary]) -> None:
        """Write a block of summaries (and collect the blocks nobody needs first, when due), memory
        first: the blocks not yet committed are read from ``_unwritten``. Under the lock."""
        idx = self._traces
        rows: list[tuple[int, bytes]] = []
        dead: list[int] = []
        if idx.collect_due():
            dead, copy = idx.collect()
            found = await self._db.read(lambda c: _read_records(c, copy)) if copy else {}
            left, copied, copies, names = idx.copied(found, copy)
            dead += left
            if copied is not None:
                self._unwritten[copied] = copies
                rows.append((copied, encode_block(copies, names, stored=False)))
        block, unspanned = idx.add(batch)
        self._unwritten[block] = batch
        rows.append((block, encode_block(batch)))
        spans = encode_spans(batch)

        def write(c: sqlite3.Connection) -> None:
            c.executemany("INSERT INTO trace_blocks VALUES (?,?)", rows)
            c.execute("INSERT INTO trace_block_spans VALUES (?,?)", (block, spans))
            c.executemany("DELETE FROM trace_block_spans WHERE block=?", [(b,) for b in unspanned + dead])
            c.executemany("DELETE FROM trace_blocks WHERE block=?", [(b,) for b in dead])

        try:
            await self._db.write(write)
        except BaseException:  # memory went first: take it back from the disk
            self._unwritten.clear()
            with contextlib.suppress(StoreUnavailable):
                self._traces = await self._db.read(lambda c: _load_traces(c, self._retention)[0])
            raise
        for b, _ in rows:
            del self._unwritten[b]

    def _unwritten_record(self, ref: int) -> TraceSummary | None:
        block = self._unwritten.get(ref >> BLOCK_BITS)
        return None if block is None else block[ref & INDEX]

    async def recent_traces(self, name: str, limit: int) -> list[TraceSummary]:
        self._check()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        for _ in range(3):  # a collection may move records meanwhile: ask again
            refs = self._traces.newest(name, limit)
            found = {ref: s for ref in refs if (s := self._unwritten_record(ref)) is not None}
            wanted = [ref for ref in refs if ref not in found]
            if wanted:
                found.update(await self._db.read(lambda c, w=wanted: _read_records(c, w)))  # type: ignore[misc]
            if len(found) == len(refs):
                break
        return [replace(found[ref], packed_spans=b"") if found[ref].packed_spans else found[ref]
                for ref in refs if ref in found]

    async def trace(self, trace_id: str) -> TraceSummary | None:
        self._check()
        ref = self._traces.stored(trace_id)
        if ref is None:
            return None
        s = self._unwritten_record(ref)
        if s is not None:
            return s

        def read(c: sqlite3.Connection) -> TraceSummary | None:
            block, index = ref >> BLOCK_BITS, ref & INDEX
            with _blob(c, "trace_blocks", "summaries", block) as summaries, \
                    _blob(c, "trace_block_spans", "spans", block) as spans:
                if summaries is None or spans is None:  # evicted meanwhile
                    return None
                return replace(record_from(summaries, index)[0], packed_spans=spans_at(spans, index))

        return await self._db.read(read)

    async def close(self) -> None:
        async with self._lock:  # a write under way finishes first
            self._db.close()

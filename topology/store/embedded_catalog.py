"""The embedded :class:`CatalogStore`: ``catalog.db`` plus an in-memory copy of what queries need.

Memory: every catalog entry, every known node (name, granularity, kind, app, layers, first/last
seen), the sorted name lists per granularity, and each service's newest ``HEALTH_IN_MEMORY``
health events. Older health events, change events and trace summaries are read from SQLite.
Trace summaries are bounded: each service keeps its ``TRACES_PER_SERVICE`` newest (without their
spans). The store of recent traces (``trace_spans``: one row per trace, with its kept spans) holds at
most ``Retention.traces`` rows and none older than ``Retention.trace_seconds`` before the newest start.

Writing trace summaries costs mostly the pages a commit dirties (each goes to the WAL, and again to
the file at the checkpoint), so their tables keep few B-trees with scattered keys: ``traces`` is its
primary key alone (a service's list is sorted when read: at most ``TRACES_PER_SERVICE`` plus a slack
of rows), and its eviction runs for a service once per ``_TRACES_SLACK`` of its traces, not per
write; ``trace_spans`` is a rowid table (new rows go to its end; the packed spans stored as they
come, not in base64 JSON) with one index, by start, which grows at its end too; its index by trace
id is a dict in memory (``Retention.traces`` entries at most, read from the table at open).
The services' lists touch a page per service wherever they are written, so their rows wait in
memory and are written at once when ``_LISTED_BUFFER`` of them wait, or at the first write
``_LISTED_SECONDS`` after the oldest came (reads merge them; ``close`` writes them): a crash loses
at most that many rows, or that many seconds, of the lists (the traces stay in ``trace_spans``).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from topology.catalog import AddressLease, HealthEvent, HealthState, HealthStatus, ServiceInfo, TraceSummary
from topology.change import ChangeEvent
from topology.model import Granularity, Layer, NodeInfo, NodeKind
from topology.store.base import CatalogStore, ServiceFilter, StoreUnavailable
from topology.store.embedded_db import Database
from topology.store.embedded_version import WriteLock
from topology.timewindow import Retention

TRACES_PER_SERVICE = 100
#: Rows a service's list of traces may hold beyond ``TRACES_PER_SERVICE`` before its oldest are deleted
#: (reads never return them): a service's eviction runs once per this many of its traces, not per write.
_TRACES_SLACK = TRACES_PER_SERVICE // 10
#: Rows of the services' lists of traces gathered in memory before they are written together: every
#: write dirties about one page per service it touches, so writing them per flush costs pages, not rows.
#: A burst fills 4,096 rows in about a second (1,000 services: ~4 rows per page dirtied); 32,768 (a few
#: MiB of memory) write a page per ~30 rows, -32 % CPU per summary (bench.trace_summaries --spread 30).
_LISTED_BUFFER = 32768
_LISTED_SECONDS = 30.0  # the longest a row of the lists waits in memory (what a crash can lose)
HEALTH_IN_MEMORY = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS services(name TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes(
  name TEXT NOT NULL, granularity TEXT NOT NULL, kind TEXT NOT NULL, app TEXT, layers TEXT NOT NULL,
  first_seen REAL NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY(name, granularity)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health(
  service TEXT NOT NULL, at REAL NOT NULL, status TEXT NOT NULL, reason TEXT,
  PRIMARY KEY(service, at)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traces(
  service TEXT NOT NULL, trace_id TEXT NOT NULL, start REAL NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY(service, trace_id)) WITHOUT ROWID;
DROP INDEX IF EXISTS traces_by_start;
CREATE TABLE IF NOT EXISTS trace_spans(
  trace_id TEXT NOT NULL, start REAL NOT NULL, summary TEXT NOT NULL, spans BLOB NOT NULL);
DROP INDEX IF EXISTS trace_spans_by_id;
CREATE INDEX IF NOT EXISTS trace_spans_by_start ON trace_spans(start, trace_id);
CREATE TABLE IF NOT EXISTS peer_leases(
  ip TEXT NOT NULL, owner TEXT NOT NULL, start REAL NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY(ip, owner, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes(
  service TEXT NOT NULL, at REAL NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY(service, at, key)) WITHOUT ROWID;
"""
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


def _summary_text(s: TraceSummary) -> str:
    """A summary as stored beside its id and start, without its spans: a JSON array."""
    return json.dumps([s.root_service, s.root_name, s.duration, s.spans, s.error, s.services],
                      separators=(",", ":"))


def _summary(trace_id: str, start: float, text: str, packed_spans: bytes = b"") -> TraceSummary:
    """The summary :func:`_summary_text` stored (or, written before it, ``TraceSummary.to_dict``)."""
    d = json.loads(text)
    if isinstance(d, dict):
        return replace(TraceSummary.from_dict(d), packed_spans=packed_spans)
    root, name, duration, spans, error, services = d
    return TraceSummary(trace_id, str(root), str(name), start, float(duration), int(spans), bool(error),
                        tuple(services), packed_spans)


def _move_trace_store(conn: sqlite3.Connection) -> None:
    """Move the recent traces of a database written before ``trace_spans`` (table ``trace_store``: a
    JSON text per trace, its spans in base64) into ``trace_spans``, in one transaction."""
    rows = []
    for (data,) in conn.execute("SELECT data FROM trace_store"):
        s = TraceSummary.from_dict(json.loads(data))
        rows.append((s.trace_id, s.start, _summary_text(s), s.packed_spans))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT INTO trace_spans VALUES (?,?,?,?)", rows)
        conn.execute("DROP TABLE trace_store")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class EmbeddedCatalogStore(CatalogStore):
    def __init__(self, path: pathlib.Path, retention: Retention | None = None,
                 listed_buffer: int = _LISTED_BUFFER) -> None:
        self._retention = retention or Retention()
        self._listed_buffer = listed_buffer
        self._db = Database(path, SCHEMA, None)
        self._lock = WriteLock()
        self._services: dict[str, ServiceInfo] = {}
        self._cluster_app: dict[str, str] = {}  # cluster -> app, from catalog entries
        self._nodes: dict[tuple[Granularity, str], NodeInfo] = {}
        self._sorted: dict[Granularity, list[str] | None] = {g: None for g in Granularity}
        self._health: dict[str, list[_Health]] = {}
        # rows of each service in ``traces``, an upper bound (a replaced trace counts again); a service
        # not here has ``_unlisted_rows`` (0 in an empty table, else full: rows written before)
        self._trace_rows: dict[str, int] = {}
        self._unlisted_rows = TRACES_PER_SERVICE + _TRACES_SLACK
        # rows of ``traces`` not written yet, by service then trace id: (start, summary text)
        self._listed: dict[str, dict[str, tuple[float, str]]] = {}
        self._listed_rows = 0
        self._listed_since = 0.0  # monotonic time of the oldest row waiting in ``_listed``
        self._trace_ids: dict[str, int] = {}  # trace_spans: rowid by trace id (its index, in memory)
        self._next_rowid = 1
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
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='trace_store'").fetchone():
            _move_trace_store(conn)
        if conn.execute("SELECT 1 FROM traces LIMIT 1").fetchone() is None:
            self._unlisted_rows = 0
        self._trace_ids = dict(conn.execute("SELECT trace_id, rowid FROM trace_spans"))
        self._next_rowid = 1 + (conn.execute("SELECT max(rowid) FROM trace_spans").fetchone()[0] or 0)

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
        # shielded: what is written and what waits in memory stay apart if the caller gives up
        await asyncio.shield(self._record_traces(list(summaries)))

    async def _record_traces(self, summaries: Sequence[TraceSummary]) -> None:
        if not summaries:
            return
        latest: dict[str, tuple[float, str, bytes]] = {}
        listed: list[tuple[str, str, float, str]] = []
        for s in summaries:
            data = _summary_text(s)
            latest[s.trace_id] = (s.start, data, s.packed_spans)
            listed.extend((service, s.trace_id, s.start, data) for service in {s.root_service, *s.services})
        size, seconds = self._retention.traces, self._retention.trace_seconds

        async with self._lock:
            ids, first = self._trace_ids, self._next_rowid
            kept = [(first + i, trace_id, start, data, spans)
                    for i, (trace_id, (start, data, spans)) in enumerate(latest.items())]
            replaced = [(ids[trace_id],) for trace_id in latest if trace_id in ids]
            count = len(ids) + len(latest) - len(replaced)  # rows once these are written
            evicted: list[str] = []

            def write(c: sqlite3.Connection) -> None:
                c.executemany("DELETE FROM trace_spans WHERE rowid=?", replaced)
                c.executemany("INSERT INTO trace_spans(rowid, trace_id, start, summary, spans) "
                              "VALUES (?,?,?,?,?)", kept)
                evicted.extend(t for (t,) in c.execute(
                    "DELETE FROM trace_spans WHERE start < (SELECT max(start) FROM trace_spans) - ? "
                    "RETURNING trace_id", (seconds,)).fetchall())
                over = count - len(evicted) - size
                if over > 0:  # the oldest by start, then id
                    evicted.extend(t for (t,) in c.execute(
                        "DELETE FROM trace_spans WHERE rowid IN (SELECT rowid FROM trace_spans "
                        "ORDER BY start, trace_id LIMIT ?) RETURNING trace_id", (over,)).fetchall())

            pending = self._listed
            if not pending:
                self._listed_since = time.monotonic()
            for service, trace_id, start, data in listed:
                rows = pending.get(service)
                if rows is None:
                    rows = pending[service] = {}
                rows[trace_id] = (start, data)
            self._listed_rows += len(listed)
            if (self._listed_rows < self._listed_buffer
                    and time.monotonic() - self._listed_since < _LISTED_SECONDS):
                await self._db.write(write)
            else:
                await self._write_listed(write)
            self._next_rowid = first + len(kept)
            for rowid, trace_id, *_ in kept:
                ids[trace_id] = rowid
            for trace_id in evicted:
                del ids[trace_id]

    async def _write_listed(self, then: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Write the services' lists of traces waiting in memory (after ``then``, in one transaction),
        evicting the oldest of each list that may have grown past its slack. Under the lock."""
        pending, counts, full = self._listed, self._trace_rows, TRACES_PER_SERVICE + _TRACES_SLACK
        unknown = self._unlisted_rows
        rows = [(service, trace_id, start, data)
                for service, traces in pending.items() for trace_id, (start, data) in traces.items()]
        due = [(service, TRACES_PER_SERVICE - 1) for service, traces in pending.items()
               if counts.get(service, unknown) + len(traces) > full]

        def write(c: sqlite3.Connection) -> None:
            if then is not None:
                then(c)
            c.executemany("INSERT OR REPLACE INTO traces VALUES (?,?,?,?)", rows)
            c.executemany(
                "DELETE FROM traces WHERE service=?1 AND (start, trace_id) < (SELECT start, trace_id "
                "FROM traces WHERE service=?1 ORDER BY start DESC, trace_id DESC LIMIT 1 OFFSET ?2)",
                due,
            )

        await self._db.write(write)
        for service, traces in pending.items():
            counts[service] = counts.get(service, unknown) + len(traces)
        for service, _ in due:
            counts[service] = TRACES_PER_SERVICE
        self._listed, self._listed_rows = {}, 0

    async def recent_traces(self, name: str, limit: int) -> list[TraceSummary]:
        self._check()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        limit = min(limit, TRACES_PER_SERVICE)  # a list may hold a few more until evicted
        waiting = dict(self._listed.get(name, {}))  # before the read: rows written meanwhile are on disk
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT trace_id, start, data FROM traces WHERE service=? "
                "ORDER BY start DESC, trace_id DESC LIMIT ?", (name, limit + len(waiting)),
            ).fetchall()
        )
        found = {trace_id: (start, data) for trace_id, start, data in rows}
        found.update(waiting)  # newer than what is on disk
        newest = sorted(found.items(), key=lambda kv: (kv[1][0], kv[0]), reverse=True)[:limit]
        return [_summary(trace_id, start, data) for trace_id, (start, data) in newest]

    async def trace(self, trace_id: str) -> TraceSummary | None:
        self._check()
        rowid = self._trace_ids.get(trace_id)
        if rowid is None:
            return None
        rows = await self._db.read(lambda c: c.execute(
            "SELECT start, summary, spans FROM trace_spans WHERE rowid=?", (rowid,)).fetchall())
        if not rows:  # evicted meanwhile
            return None
        start, text, spans = rows[0]
        return _summary(trace_id, start, text, bytes(spans))

    async def close(self) -> None:
        async with self._lock:
            try:
                if self._listed and not self._db.closed:
                    await self._write_listed()
            finally:
                self._db.close()

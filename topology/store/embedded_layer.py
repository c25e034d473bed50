"""The embedded :class:`LayerStore`: one SQLite file per layer, answered from an in-memory index.

Storage (``<layer>.db``)::

    edges(id, granularity, source, target, source_kind, target_kind, source_app, target_app)
    windows(wsec, wstart, edge, stats)  -- one row per stored window; the key starts with time, so a
                                        -- minute's upsert appends pages, roll-up and retention scan ranges
    spans(edge, wsec, intervals)        -- the edge's presence (see embedded_index.py), written through
    attrs(id, value)                    -- the set-like stats fields, interned (see embedded_codec.py)
    shapes(id, mask, codes, nlat)       -- the layouts of stats records, interned (see embedded_codec.py)
    packs(wsec, wstart, edge, slots, data) -- the minute windows of a rolled-up hour (hour windows of
                                        -- a rolled-up day) of one edge in one row (embedded_pack.py)
    pending_rollup(wsec, wstart, n)     -- hours/days with new finer windows since their last roll-up
                                        -- (n counts the upserts that marked it)
    meta(key, value)                    -- layer name, format versions, clock of the last roll-up

Memory (bounded by edges, never by windows or records):

* the :class:`~topology.store.embedded_index.GraphIndex`: adjacency and per-edge presence intervals
  (~0.5 KB per edge), loaded from ``edges`` and ``spans`` at open;
* :class:`~topology.store.embedded_stats.StatsSource`: the hot ring of the last ``hot_minutes``
  minute windows of every edge (``embedded_hot.py``: ~1-6 KB per edge at 20 minutes) and a memo
  per edge of its summary for the last range asked;
* per node and direction, the summaries of its present edges for the last range asked (references
  to the memos), dropped as soon as one of the node's edges changes.

Queries walk the index without touching SQLite; the stats of the edges they return come from memory
when the range is recent, else from one batched SQLite query. Presence is written through for hour
and day windows and late minute windows; the minute windows of the last ``CHECKPOINT_SECONDS``
reach ``spans`` in one checkpoint (open replays them from ``windows``). Intervals are stored
untrimmed and trimmed at open with the last roll-up's clock. A clean close also saves the hot ring
(``<layer>.ring.npz``) for a quick reopen; after a crash it is refilled from ``windows``.

Roll-up: an upsert marks the hour (day) its minute (hour) windows belong to; ``rollup(now)`` rebuilds
every marked hour that ended before ``now`` as the merge of its minute windows (replacing the
previous hour window, in the edge's pack of that day) and moves them into one pack per edge, then
every marked finished day from its hours (packed the same way), then thins the trace ids of packed
windows past the trace retention (one kept: ``_thinner``), then deletes windows older than their
granularity's retention (a pack when all of its windows are; readers skip its windows past retention
until then). An hour whose minute windows were already partly deleted by retention (a very late
window) is not rebuilt: its hour window keeps what it had.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import operator
import pathlib
import secrets
import sqlite3
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Any

from topology.adjacency import Adjacency
from topology.metric import CallMetrics
from topology.model import (
    Direction,
    EdgeKey,
    EdgeSummary,
    EdgeWindow,
    Granularity,
    Layer,
    NodeInfo,
    NodeKind,
    Reached,
    TraversalResult,
)
from topology.sketch import LatencySketch
from topology.stats import EdgeStats
from topology.store import embedded_pack as packs
from topology.store.base import LayerStore, RollupReport, StoreUnavailable
from topology.store.embedded_adjacency import KeptAdjacency
from topology.store.embedded_codec import CODEC, OLD_CODECS, StatsCodec, merge_fields
from topology.store.embedded_db import Database
from topology.store.embedded_index import (
    SLOT,
    EdgeRec,
    GraphIndex,
    add_interval,
    array_from,
    overlaps,
    to_blob,
)
from topology.store.embedded_stats import Plan, StatsSource
from topology.store.embedded_version import WriteLock
from topology.timewindow import (
    DAY,
    HOUR,
    MINUTE,
    STORED_GRANULARITIES,
    Retention,
    Rollups,
    TimeRange,
    align,
    read_plan,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS edges(
  id INTEGER PRIMARY KEY, granularity TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL,
  source_kind TEXT NOT NULL, target_kind TEXT NOT NULL, source_app TEXT, target_app TEXT,
  UNIQUE(granularity, source, target));
CREATE TABLE IF NOT EXISTS windows(
  wsec INTEGER NOT NULL, wstart INTEGER NOT NULL, edge INTEGER NOT NULL, stats BLOB NOT NULL,
  PRIMARY KEY(wsec, wstart, edge)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attrs(id INTEGER PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS shapes(id INTEGER PRIMARY KEY, mask INTEGER NOT NULL, codes INTEGER NOT NULL,
  nlat INTEGER NOT NULL);
-- a rowid table: an edge seen every few minutes has a few KB of intervals, which a WITHOUT ROWID
-- table keeps on overflow pages of their own (2/3 of the table's pages were empty); databases made
-- before keep theirs (the same statements work on both)
CREATE TABLE IF NOT EXISTS spans(edge INTEGER NOT NULL, wsec INTEGER NOT NULL, intervals BLOB NOT NULL,
  PRIMARY KEY(edge, wsec));
CREATE TABLE IF NOT EXISTS pending_rollup(wsec INTEGER NOT NULL, wstart INTEGER NOT NULL, n INTEGER NOT NULL,
  PRIMARY KEY(wsec, wstart)) WITHOUT ROWID;
""" + packs.SCHEMA

_COARSER = {MINUTE: HOUR, HOUR: DAY}
SCHEMA_VERSION = "4"
#: Edges per roll-up piece (one transaction under the write lock).
ROLLUP_CHUNK = 4096
_MARK = "INSERT INTO pending_rollup VALUES (?, ?, 1) ON CONFLICT(wsec, wstart) DO UPDATE SET n = n + 1"
#: How often (in minutes of data) minute presence is checkpointed into ``spans``.
CHECKPOINT_SECONDS = 10 * MINUTE
#: Minutes of recent windows the hot ring holds per edge: the default live window (15 min) and then some.
DEFAULT_HOT_MINUTES = 20
#: Page size of a new layer database: packs of 0.3-3 KB fill 16 KB pages much better than 4 KB ones
#: (two 1.8 KB packs left half of a 4 KB page unused). Existing files keep theirs.
PAGE_SIZE = 16384
#: Trace ids a packed window keeps once it ended ``Retention.trace_seconds`` before the roll-up's clock:
#: the catalog has dropped those traces (see ``_thinner``).
PACKED_EXEMPLARS = 1


@dataclass(frozen=True, slots=True)
class _EdgeRow:
    id: int
    key: EdgeKey
    source_kind: NodeKind
    target_kind: NodeKind
    source_app: str | None
    target_app: str | None


def _edge_row(rec: EdgeRec, w: EdgeWindow) -> _EdgeRow:
    return _EdgeRow(rec.id, w.key, w.source_kind, w.target_kind, w.source_app, w.target_app)


def _validate(layer: Layer, windows: Sequence[EdgeWindow]) -> None:
    for w in windows:
        if w.key.layer is not layer:
            raise ValueError(f"a {w.key.layer.value} window cannot be stored in the {layer.value} store")
        if w.window_seconds not in STORED_GRANULARITIES:
            raise ValueError(f"window_seconds must be one of {STORED_GRANULARITIES}, got {w.window_seconds}")
        if not isinstance(w.stats.latency, LatencySketch):
            raise ValueError(f"latency must be a LatencySketch, got {type(w.stats.latency).__name__}")
        try:
            operator.index(w.window_start)
        except TypeError:
            raise ValueError(f"window_start must be an integer, got {w.window_start!r}") from None
        if w.window_start % w.window_seconds:
            raise ValueError(f"window_start {w.window_start} is not aligned to {w.window_seconds} s")
        if not w.key.source or not w.key.target:
            raise ValueError("edge source and target must be non-empty names")


def _write_windows(
    conn: sqlite3.Connection,
    codec: StatsCodec,
    rows: list[tuple[int, int, int, bytes]],
    packed: frozenset[tuple[int, int]] | set[tuple[int, int]],
) -> None:
    """Store encoded windows (wsec, wstart, edge, stats) with the attrs and shapes they name: into
    their edge's pack if their hour (day) is packed (``packed``: those periods) and the edge has a
    pack there, else loose. In key order: a minute's windows then append to the table's last pages,
    which stay full (in the order they come, a page splits in the middle and both halves stay half
    empty)."""
    if packed:
        rows = packs.merge_into(conn, rows, packed)
    rows.sort(key=_KEY)
    conn.executemany("INSERT OR REPLACE INTO windows VALUES (?,?,?,?)", rows)
    conn.executemany("INSERT INTO attrs VALUES (?,?)", codec.take_new())
    conn.executemany("INSERT INTO shapes VALUES (?,?,?,?)", codec.take_new_shapes())


_KEY = operator.itemgetter(0, 1, 2)
_BY_START = operator.itemgetter(1, 0)


def _pending(conn: sqlite3.Connection, coarse: int, now: float) -> list[tuple[int, int]]:
    """Marked periods of ``coarse`` seconds that ended at or before ``now``: (start, mark count)."""
    return conn.execute(
        "SELECT wstart, n FROM pending_rollup WHERE wsec=? AND wstart + ? <= ? ORDER BY wstart",
        (coarse, coarse, now),
    ).fetchall()


def _extended_spans(windows: Iterable[tuple[EdgeRec, int, int]]) -> dict[tuple[int, int], array[int]]:
    """New presence intervals (copies) of the edges that get these windows (edge, seconds, start)."""
    out: dict[tuple[int, int], array[int]] = {}
    for rec, wsec, wstart in windows:
        k = (rec.id, wsec)
        iv = out.get(k)
        if iv is None:
            iv = out[k] = rec.intervals_copy(wsec)
        add_interval(iv, wstart, wstart + wsec)
    return out


_PAIR = attrgetter("pair")
_NO_STATS = EdgeStats()  # what ``with_stats=False`` answers carry


def _SUMMARY_PAIR(e: EdgeSummary) -> tuple[str, str]:
    return e.key.source, e.key.target


def _presence(plan: Plan) -> Callable[[EdgeRec], bool]:
    """Whether an edge has a window in the plan (one span, the common case, tested inline)."""
    if len(plan) == 1:
        [(wsec, start, end)] = plan
        slot = SLOT[wsec]

        def one(rec: EdgeRec) -> bool:
            iv = rec.spans[slot]
            return iv is not None and overlaps(iv, start, end)

        return one
    spans = [(SLOT[wsec], start, end) for wsec, start, end in plan]

    def any_of(rec: EdgeRec) -> bool:
        for slot, start, end in spans:
            iv = rec.spans[slot]
            if iv is not None and overlaps(iv, start, end):
                return True
        return False

    return any_of


def _names(names: Iterable[str]) -> list[str]:
    """The distinct names, in the order given."""
    if isinstance(names, str):
        raise ValueError("names must be a collection of names, not one string")
    return list(dict.fromkeys(names))


class EmbeddedLayerStore(LayerStore):
    def __init__(
        self, path: pathlib.Path, layer: Layer, retention: Retention, hot_minutes: int = DEFAULT_HOT_MINUTES
    ) -> None:
        self.layer = layer
        self.retention = retention
        self._db = Database(path, SCHEMA, layer, page_size=PAGE_SIZE)
        self._lock = WriteLock()
        self._index = GraphIndex(layer)
        self._codec = StatsCodec()
        self._stats = StatsSource(self._db, self._codec, hot_minutes)
        self._next_id = 1
        self._last_rollup = 0.0
        self._thinned = 0.0  # packed periods ending at or before this keep few trace ids (_thin)
        self._checkpoint = 0  # minute windows starting before this are in ``spans``
        self._top_minute = 0  # newest minute window start stored
        self._dirty: set[int] = set()  # edges with minute presence newer than the checkpoint
        # per (granularity, upstream?, node): (span key, its present edges' summaries)
        self._near: dict[tuple[Granularity, bool, str], tuple[Plan, list[EdgeSummary]]] = {}
        self._bare: dict[tuple[Granularity, bool, str], tuple[Plan, list[EdgeSummary]]] = {}  # no stats
        self._pending: set[tuple[int, int]] = set()  # pending_rollup's periods, as in the file
        self._packed: set[tuple[int, int]] = set()  # (window seconds, period start) with packs in the file
        self._rollups = Rollups()  # what reads plan with: the last roll-up's clock and ``_pending``
        self._adjacency = KeptAdjacency(self._index)  # present edges per range, as integer arrays
        try:
            self._load()
        except BaseException:
            self._db.close()
            raise

    # -- opening ---------------------------------------------------------------------------------
    def _meta(self, conn: sqlite3.Connection, key: str, default: str | None) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None and default is not None:
            conn.execute("INSERT INTO meta VALUES (?, ?)", (key, default))
            return default
        return None if row is None else str(row[0])

    def _load(self) -> None:
        conn = self._db.writer
        fresh = conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0
        layer = self._meta(conn, "layer", self.layer.value)
        if layer != self.layer.value:
            raise ValueError(f"{self._db.path} holds the {layer} layer, not {self.layer.value}")
        for key, want in (("schema", SCHEMA_VERSION), ("codec", CODEC)):
            have = self._meta(conn, key, want if fresh else None)
            if key == "codec" and have in OLD_CODECS:  # read as it is; new windows in the new format
                conn.execute("UPDATE meta SET value=? WHERE key=?", (CODEC, key))
                have = CODEC
            if have != want:
                raise ValueError(
                    f"{self._db.path} was written in another format ({key} {have}, this version "
                    f"reads {want}): move it away or delete it"
                )
        self._last_rollup = float(self._meta(conn, "last_rollup", None) or 0.0)
        self._thinned = float(self._meta(conn, "exemplars_thinned", None) or 0.0)
        self._pending = {(int(w), int(t)) for w, t in conn.execute("SELECT wsec, wstart FROM pending_rollup")}
        self._packed = packs.periods_of(conn)
        self._codec.load(conn.execute("SELECT id, value FROM attrs"),
                         conn.execute("SELECT id, mask, codes, nlat FROM shapes"))
        for eid, gran, src, dst, skind, tkind, sapp, tapp in conn.execute(
            "SELECT id, granularity, source, target, source_kind, target_kind, source_app, target_app "
            "FROM edges"
        ):
            rec = EdgeRec(eid, EdgeKey(self.layer, Granularity(gran), src, dst))
            rec.source_kind, rec.target_kind = NodeKind(skind), NodeKind(tkind)
            rec.source_app, rec.target_app = sapp, tapp
            self._index.add(rec)
            self._next_id = max(self._next_id, eid + 1)
        for eid, wsec, blob in conn.execute("SELECT edge, wsec, intervals FROM spans"):
            loaded = self._index.by_id.get(eid)
            if loaded is not None:
                loaded.set_intervals(wsec, array_from(blob))
        last = self._last_rollup
        self._checkpoint = int(self._meta(conn, "spans_checkpoint", None) or 0)
        # minute windows since the checkpoint: their presence, and the newest ones' stats for the ring
        # (unless the ring saved at the last clean close is there)
        top = conn.execute("SELECT MAX(wstart) FROM windows WHERE wsec=?", (MINUTE,)).fetchone()[0]
        self._top_minute = int(top or 0)
        newest_pack = max((t for g, t in self._packed if g == MINUTE), default=None)
        if newest_pack is not None and newest_pack + HOUR > self._top_minute:
            for (slots,) in conn.execute(
                "SELECT slots FROM packs WHERE wsec=? AND wstart=?", (MINUTE, newest_pack)
            ):
                self._top_minute = max(self._top_minute, packs.newest(slots, newest_pack, MINUTE))
        token = self._meta(conn, "ring_snapshot", None)
        conn.execute("DELETE FROM meta WHERE key='ring_snapshot'")  # good for this open only
        snapshot = bool(token) and self._stats.load_snapshot(self._snapshot_path, self._index, str(token))
        ring_from = self._top_minute + MINUTE if snapshot else self._stats.ring_start(self._top_minute)
        scan_from = min(self._checkpoint, ring_from)
        fill: list[tuple[EdgeRec, int, tuple[Any, ...]]] = []
        floor = align(last - self.retention.minute, MINUTE) if last else 0
        packed = packs.expand(
            conn.execute("SELECT edge, wstart, slots, data FROM packs WHERE wsec=? AND wstart>=?",
                         (MINUTE, align(scan_from, HOUR))),
            MINUTE, scan_from, self._top_minute + MINUTE, floor)
        loose = conn.execute(
            "SELECT edge, wstart, stats FROM windows WHERE wsec=? AND wstart>=?", (MINUTE, scan_from)
        ).fetchall()
        for eid, wstart, blob in sorted(packed + loose, key=_BY_START):
            known = self._index.by_id.get(eid)
            if known is None:
                continue
            if wstart >= self._checkpoint:
                known.add_minute(wstart)
                self._dirty.add(eid)
            if wstart >= ring_from:
                fill.append((known, wstart, self._codec.decode_fields(blob, wstart)))
        empty = []
        for rec in self._index.all_edges():
            if last:
                for g in STORED_GRANULARITIES:
                    rec.trim(g, last - self.retention.for_granularity(g))
            if rec.empty:
                empty.append(rec)
        for rec in empty:
            self._index.remove(rec)
            self._stats.forget(rec)
            self._dirty.discard(rec.id)
        if empty:
            conn.executemany("DELETE FROM edges WHERE id=?", [(r.id,) for r in empty])
            conn.executemany("DELETE FROM spans WHERE edge=?", [(r.id,) for r in empty])
        if last:
            self._stats.on_retention(last, self.retention)
        self._stats.load(
            align(last - self.retention.minute, MINUTE) if last else 0,
            [x for x in fill if x[0].id in self._index.by_id],
        )

    @property
    def version(self) -> int:
        """Changes after every write (and every change of kept stats): see :class:`LayerStore`."""
        return self._lock.released + self._stats.generation

    # -- writing ---------------------------------------------------------------------------------
    async def upsert_windows(self, windows: Sequence[EdgeWindow]) -> None:
        _validate(self.layer, windows)
        if windows:
            # shielded: a caller that gives up (cancellation) must not leave disk and memory apart
            await asyncio.shield(self._upsert(list(windows)))

    async def _upsert(self, windows: list[EdgeWindow]) -> None:
        if not windows:
            return
        async with self._lock:
            self._check()
            new: dict[EdgeKey, EdgeRec] = {}
            changed: dict[int, _EdgeRow] = {}
            items: list[tuple[EdgeRec, int, int, EdgeStats]] = []
            for w in windows:
                found = self._index.get(w.key) or new.get(w.key)
                if found is None:
                    rec = new[w.key] = EdgeRec(self._next_id, w.key)
                    self._next_id += 1
                    changed[rec.id] = _edge_row(rec, w)
                else:
                    rec = found
                    if (
                        rec.id in changed
                        or w.source_kind is not rec.source_kind
                        or w.target_kind is not rec.target_kind
                        or w.source_app != rec.source_app
                        or w.target_app != rec.target_app
                    ):
                        changed[rec.id] = _edge_row(rec, w)  # the latest window's kinds and apps win
                items.append((rec, w.window_seconds, int(w.window_start), w.stats))

            checkpoint = self._checkpoint
            # minute windows at or after the checkpoint reach ``spans`` at the next checkpoint (a crash
            # before it loses nothing: open replays them from ``windows``); the others are written through
            through = [
                (rec, wsec, wstart) for rec, wsec, wstart, _ in items if wsec != MINUTE or wstart < checkpoint
            ]

            codec = self._codec
            mark = codec.mark()
            packed = frozenset(self._packed)
            marks = {  # the coarser periods to roll up (again)
                (_COARSER[wsec], align(wstart, _COARSER[wsec]))
                for _, wsec, wstart, _ in items
                if wsec in _COARSER
            }

            def write(conn: sqlite3.Connection) -> dict[tuple[int, int], array[int]]:
                conn.executemany(
                    "INSERT OR REPLACE INTO edges VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (
                            e.id,
                            e.key.granularity.value,
                            e.key.source,
                            e.key.target,
                            e.source_kind.value,
                            e.target_kind.value,
                            e.source_app,
                            e.target_app,
                        )
                        for e in changed.values()
                    ],
                )
                _write_windows(
                    conn,
                    codec,
                    [(wsec, wstart, rec.id, codec.encode(st, wstart)) for rec, wsec, wstart, st in items],
                    packed,
                )
                spans = _extended_spans(through)
                conn.executemany(
                    "INSERT OR REPLACE INTO spans VALUES (?,?,?)",
                    [(eid, wsec, to_blob(iv, wsec)) for (eid, wsec), iv in spans.items()],
                )
                conn.executemany(_MARK, sorted(marks))
                return spans

            spans = await self._db.write(write, partial(codec.undo, mark))
            self._pending |= marks
            # committed: now the memory (only ever changed on the event loop thread, under the lock)
            for rec in new.values():
                self._index.add(rec)
            for row in changed.values():
                rec = self._index.by_id[row.id]
                rec.source_kind, rec.target_kind = row.source_kind, row.target_kind
                rec.source_app, rec.target_app = row.source_app, row.target_app
            for (eid, wsec), iv in spans.items():
                self._index.by_id[eid].set_intervals(wsec, iv)
            for rec, wsec, wstart, _ in items:
                if wsec == MINUTE and wstart >= checkpoint:
                    rec.add_minute(wstart)
                    self._dirty.add(rec.id)
                    if wstart > self._top_minute:
                        self._top_minute = wstart
            self._stats.on_windows(items)
            self._forget_near([rec for rec, _, _, _ in items])
            if self._top_minute - self._checkpoint >= CHECKPOINT_SECONDS:
                await self._save_spans()

    async def _save_spans(self) -> None:
        """Write the presence of every edge changed since the last checkpoint (holding the lock)."""
        dirty = [self._index.by_id[eid] for eid in sorted(self._dirty) if eid in self._index.by_id]
        checkpoint = self._top_minute + MINUTE

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO spans VALUES (?,?,?)",
                [(rec.id, MINUTE, to_blob(rec.intervals_copy(MINUTE), MINUTE)) for rec in dirty],
            )
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('spans_checkpoint', ?)", (str(checkpoint),))

        await self._db.write(write)
        self._dirty.clear()
        self._checkpoint = checkpoint

    async def rollup(self, now: float) -> RollupReport:
        return await asyncio.shield(self._rollup(now))

    async def _rollup(self, now: float) -> RollupReport:
        # Period by period and, inside a period, edge range by edge range: each piece is one short
        # transaction under the write lock, so upserts go on between pieces. A period's mark goes
        # only when all its pieces are built, and only if no upsert touched the period meanwhile.
        self._check()
        last = self._last_rollup
        built = 0
        for fine in (MINUTE, HOUR):
            coarse = _COARSER[fine]
            # windows of ``fine`` ending at or before this were deleted by an earlier roll-up
            deleted_before = align(last - self.retention.for_granularity(fine), fine) if last else None
            async with self._lock:
                periods = await self._db.write(partial(_pending, coarse=coarse, now=now))
            for start, version in periods:
                if deleted_before is not None and start < deleted_before:
                    log.warning(
                        "%s: not rebuilding the %d s window at %d: its finer windows were partly "
                        "deleted by retention",
                        self.layer.value,
                        coarse,
                        start,
                    )
                else:
                    for lo, hi in self._edge_ranges():
                        built += await self._rollup_piece(fine, coarse, start, lo, hi, now)
                up = _COARSER.get(coarse)

                def finish(
                    c: sqlite3.Connection,
                    coarse: int = coarse,
                    start: int = start,
                    version: int = version,
                    up: int | None = up,
                ) -> bool:
                    done = c.execute(
                        "DELETE FROM pending_rollup WHERE wsec=? AND wstart=? AND n=?",
                        (coarse, start, version),
                    ).rowcount
                    if up is not None:
                        c.execute(_MARK, (up, align(start, up)))
                    return bool(done)

                async with self._lock:
                    if await self._db.write(finish):  # else an upsert marked it again meanwhile
                        self._pending.discard((coarse, start))
                    if up is not None:
                        self._pending.add((up, align(start, up)))
        await self._thin_packs(now)
        async with self._lock:
            self._check()
            deleted = await self._apply_retention(now)
            self._last_rollup = max(self._last_rollup, now)
        return RollupReport(built=built, deleted=deleted)

    async def _rollup_piece(self, fine: int, coarse: int, start: int, lo: int, hi: int, now: float) -> int:
        """Build the ``coarse`` window at ``start`` of the edges with ids in [lo, hi] into their packs
        of the period above it (an hour into its day's pack; days stay loose), and pack their ``fine``
        windows of that period (``embedded_pack.py``); trace ids thinned as of ``now`` (``_thinner``)."""

        codec = self._codec
        mark = codec.mark()
        packed = frozenset(self._packed)
        times = range(start, start + coarse, fine)
        packing = packs.PACKED.get(fine) == coarse
        # the coarse window goes straight into its edge's pack of the period above (an hour into its
        # day's pack), so only the current hour's minutes stay loose
        up = packs.PACKED.get(coarse)
        into: tuple[int, int] | None = (coarse, align(start, up)) if up else None
        edit = self._thinner(now)

        def build(conn: sqlite3.Connection) -> dict[tuple[int, int], array[int]]:
            # runs on the writer thread; reads the index (nothing changes it while the lock is held)
            # the stored bytes are kept until an edge is merged: decoded latency sketches are ~10x larger
            parts: dict[int, dict[int, bytes]] = {}
            for eid, t, blob in packs.expand(
                conn.execute("SELECT edge, wstart, slots, data FROM packs WHERE wsec=? AND wstart=? "
                             "AND edge BETWEEN ? AND ?", (fine, start, lo, hi)),
                fine, start, start + coarse, 0,
            ):
                parts.setdefault(eid, {})[t] = blob
            stray = False  # loose windows of edges not in the index (none expected): kept as they are
            for t in times:
                for eid, blob in conn.execute(
                    "SELECT edge, stats FROM windows WHERE wsec=? AND wstart=? AND edge BETWEEN ? AND ?",
                    (fine, t, lo, hi),
                ):
                    parts.setdefault(eid, {})[t] = blob
                    stray = stray or eid not in self._index.by_id
            rows = []
            packs_ = []
            built: list[tuple[EdgeRec, int, int]] = []
            for eid, got in parts.items():
                rec = self._index.by_id.get(eid)
                if rec is not None:
                    blobs = sorted(got.items())
                    fields = [codec.decode_fields(blob, t) for t, blob in blobs]
                    rows.append((coarse, start, eid, codec.encode(merge_fields(fields), start)))
                    if packing:
                        packs_.append((fine, start, eid, *packs.pack(edit(blobs, fine) if edit else blobs,
                                                                      start, fine)))
                    built.append((rec, coarse, start))
            if into is not None:  # all into packs (made if the edge has none), none loose
                rows = packs.merge_into(conn, rows, {into}, create=True, edit=edit)
                conn.executemany("DELETE FROM windows WHERE wsec=? AND wstart=? AND edge=?",
                                 [(coarse, start, rec.id) for rec, _, _ in built])
            _write_windows(conn, codec, rows, packed)
            conn.executemany("INSERT OR REPLACE INTO packs VALUES (?,?,?,?,?)", packs_)
            if packing and stray:
                conn.executemany("DELETE FROM windows WHERE wsec=? AND wstart=? AND edge=?",
                                 [(fine, t, eid) for _, _, eid, slots, _ in packs_
                                  for t in times if slots >> (t - start) // fine & 1])
            elif packing:  # what was packed, edge range by edge range
                conn.executemany("DELETE FROM windows WHERE wsec=? AND wstart=? AND edge BETWEEN ? AND ?",
                                 [(fine, t, lo, hi) for t in times])
            spans = _extended_spans(built)
            conn.executemany(
                "INSERT OR REPLACE INTO spans VALUES (?,?,?)",
                [(eid, wsec, to_blob(iv, wsec)) for (eid, wsec), iv in spans.items()],
            )
            return spans

        async with self._lock:
            self._check()
            spans = await self._db.write(build, partial(codec.undo, mark))
            if spans and packing:
                self._packed.add((fine, start))
            if spans and into is not None:
                self._packed.add(into)
            touched = []
            for (eid, wsec), iv in spans.items():
                rec = self._index.by_id[eid]
                rec.set_intervals(wsec, iv)
                touched.append(rec)
            self._stats.on_built(touched)
            self._forget_near(touched)
            return len(spans)

    def _edge_ranges(self) -> list[tuple[int, int]]:
        """The edge id ranges [lo, hi] of the roll-up's pieces (``ROLLUP_CHUNK`` edges each)."""
        ids = sorted(self._index.by_id)
        bounds = ids[::ROLLUP_CHUNK] or [0]
        return [(lo, bounds[k + 1] - 1 if k + 1 < len(bounds) else 2**62) for k, lo in enumerate(bounds)]

    def _thinner(self, now: float) -> packs.Edit | None:
        """What thins the trace ids of windows written into packs: a window that ended
        ``Retention.trace_seconds`` (the catalog's trace retention) before ``now`` keeps
        ``PACKED_EXEMPLARS`` of them (the smallest), since the catalog no longer holds those traces;
        newer ones keep all. Only TRACE windows carry trace ids (None for the other layers)."""
        if self.layer is not Layer.TRACE or not now:
            return None
        cutoff = now - self.retention.trace_seconds
        fewer = self._codec.fewer_exemplars

        def edit(records: list[tuple[int, bytes]], wsec: int) -> list[tuple[int, bytes]]:
            return [(t, fewer(rec, PACKED_EXEMPLARS) if t + wsec <= cutoff else rec) for t, rec in records]

        return edit

    async def _thin_packs(self, now: float) -> None:
        """Thin the trace ids (``_thinner``) in the packs that hold windows which ended past trace
        retention since the last pass. A pass runs when that bound crosses an hour: a finished hour's
        minutes are rewritten once, a day's pack once an hour (packs written meanwhile, by the roll-up,
        were thinned as they were written: rewriting finds nothing to change)."""
        edit = self._thinner(now)
        cut = align(now - self.retention.trace_seconds, HOUR)
        done = self._thinned
        if edit is None or cut <= done:
            return
        keep = self.retention.for_granularity
        todo = sorted((g, t) for g, t in self._packed  # not those retention is about to delete
                      if t < cut and t + packs.PACKED[g] > max(done, now - keep(g)))
        for wsec, start in todo:
            for lo, hi in self._edge_ranges():
                async with self._lock:
                    self._check()
                    changed = await self._db.write(
                        partial(packs.rewrite, wsec=wsec, start=start, lo=lo, hi=hi, edit=edit))
                    touched = [self._index.by_id[e] for e in changed if e in self._index.by_id]
                    if touched:  # what was remembered of them read the ids before
                        self._stats.on_built(touched)
                        self._forget_near(touched)
        async with self._lock:
            self._check()
            await self._db.write(lambda c: c.execute(
                "INSERT OR REPLACE INTO meta VALUES ('exemplars_thinned', ?)", (repr(float(cut)),)))
            self._thinned = cut

    async def _apply_retention(self, now: float) -> int:
        last = max(self._last_rollup, now)

        def delete(conn: sqlite3.Connection) -> int:
            deleted = 0
            for g in STORED_GRANULARITIES:
                cutoff = now - self.retention.for_granularity(g)
                deleted += conn.execute(
                    "DELETE FROM windows WHERE wsec=? AND wstart <= ?", (g, cutoff - g)
                ).rowcount
                if g in packs.PACKED:  # a packed window counts when its pack goes
                    deleted += packs.delete_expired(conn, g, cutoff)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_rollup', ?)", (repr(last),))
            return deleted

        deleted = await self._db.write(delete)
        self._packed = {
            (g, t) for g, t in self._packed if t + packs.PACKED[g] > now - self.retention.for_granularity(g)
        }
        self._stats.on_retention(now, self.retention)
        empty: list[EdgeRec] = []
        cutoffs = [(g, now - self.retention.for_granularity(g)) for g in STORED_GRANULARITIES]
        for i, rec in enumerate(self._index.all_edges()):
            for g, cutoff in cutoffs:
                rec.trim(g, cutoff)
            if rec.empty:
                empty.append(rec)
            if i % 4096 == 4095:
                await asyncio.sleep(0)  # let queries in: what they may see is only older than retention
        for rec in empty:
            self._index.remove(rec)
            self._stats.forget(rec)
            self._dirty.discard(rec.id)
        self._adjacency.clear()  # built while trimming, or holding removed edges
        if empty:
            ids = [(r.id,) for r in empty]

            def drop(conn: sqlite3.Connection) -> None:
                conn.executemany("DELETE FROM edges WHERE id=?", ids)
                conn.executemany("DELETE FROM spans WHERE edge=?", ids)

            await self._db.write(drop)
        return deleted

    # -- reading ---------------------------------------------------------------------------------
    def _plan(self, time: TimeRange, now: float) -> Plan:
        """The spans of windows that answer ``time``: rolled-up ones, and finer ones for the rest."""
        r = self._rollups
        if r.through != self._last_rollup or r.pending != self._pending:
            r = self._rollups = Rollups(self._last_rollup, frozenset(self._pending))
        return read_plan(time, now, self.retention, r)

    async def _adjacent(
        self,
        names: list[str],
        upstream: bool,
        granularity: Granularity,
        plan: Plan,
        with_stats: bool = True,
    ) -> dict[str, list[EdgeSummary]]:
        """Each name's present edges (outgoing if ``upstream``), sorted by the other end. Lists are
        remembered per node and span until an edge of the node changes; callers must not modify them.
        Without ``with_stats``, lists not remembered with their stats come with empty stats (remembered
        apart, the same way)."""
        key = plan
        fresh = self._stats.fresh(key)
        cache = self._near
        bare = None if with_stats else self._bare
        out: dict[str, list[EdgeSummary]] = {}
        todo: list[str] = []
        for name in names:
            k = (granularity, upstream, name)
            c = cache.get(k)
            if bare is not None and (c is None or c[0] != key):
                c = bare.get(k)
            if fresh and c is not None and c[0] == key:
                out[name] = c[1]
            else:
                todo.append(name)
        if not todo:
            return out
        recs, parts = self._present(todo, upstream, granularity, plan)
        for name in todo:
            out[name] = []  # not a node of this graph (nothing to remember), unless in ``parts``
        if bare is not None:
            for name, i, j in parts:
                out[name] = found = [
                    EdgeSummary(r.key, _NO_STATS, r.source_kind, r.target_kind) for r in recs[i:j]
                ]
                if fresh:
                    bare[(granularity, upstream, name)] = (key, found)
            return out
        generation = self._stats.generation
        summaries = await self._stats.summaries(recs, plan)
        keep = fresh and generation == self._stats.generation  # no write meanwhile: safe to remember
        for name, i, j in parts:
            out[name] = found = summaries[i:j]
            if keep:
                cache[(granularity, upstream, name)] = (key, found)
        return out

    def _present(
        self, names: list[str], upstream: bool, granularity: Granularity, plan: Plan
    ) -> tuple[list[EdgeRec], list[tuple[str, int, int]]]:
        """The present edges of each name (outgoing if ``upstream``), sorted by the other end, in one
        list, and per name that is a node of this graph its slice ``(name, start, stop)`` of it."""
        present = _presence(plan)
        adjacency = self._index.outgoing if upstream else self._index.incoming
        recs: list[EdgeRec] = []
        parts: list[tuple[str, int, int]] = []
        for name in names:
            adj = adjacency(granularity, name)
            if not adj:
                continue
            i = len(recs)
            for rec in adj.values():
                if present(rec):
                    recs.append(rec)
            if len(recs) - i > 1:
                recs[i:] = sorted(recs[i:], key=_PAIR)
            parts.append((name, i, len(recs)))
        return recs, parts

    async def _summaries(self, recs: list[EdgeRec], plan: Plan) -> list[EdgeSummary]:
        return await self._stats.summaries(recs, plan)

    def _forget_near(self, recs: Sequence[EdgeRec]) -> None:
        """What was remembered of these edges' ends (they were just written) is gone."""
        self._adjacency.changed(recs)
        cache, bare = self._near, self._bare
        if not cache and not bare:
            return
        for rec in recs:
            g = rec.key.granularity
            up, down = (g, True, rec.key.source), (g, False, rec.key.target)
            cache.pop(up, None)
            cache.pop(down, None)
            bare.pop(up, None)
            bare.pop(down, None)

    async def neighbors(
        self,
        names: Iterable[str],
        direction: Direction,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        with_stats: bool = True,
    ) -> list[EdgeSummary]:
        self._check()
        wanted = _names(names)
        lists = await self._adjacent(
            wanted, direction is Direction.UPSTREAM, granularity, self._plan(time, now), with_stats
        )
        out: list[EdgeSummary] = []
        for name in wanted:  # an edge is listed under one end only: no duplicates
            out.extend(lists[name])
        return out

    async def adjacency(self, granularity: Granularity, time: TimeRange, now: float) -> Adjacency:
        # kept per plan until a write makes an edge come or go there (embedded_adjacency.py), with
        # the test of presence ``_present`` applies
        self._check()
        plan = self._plan(time, now)
        return self._adjacency.get(granularity, plan, _presence(plan))

    async def call_metrics(
        self,
        names: Iterable[str],
        direction: Direction,
        granularity: Granularity,
        time: TimeRange,
        now: float,
    ) -> list[tuple[EdgeKey, CallMetrics]]:
        # the same edges as ``neighbors`` (each listed under one end, names in order), their metrics
        # computed in one vectorised pass and remembered per range (embedded_stats.py)
        self._check()
        plan = self._plan(time, now)
        recs, _ = self._present(_names(names), direction is Direction.UPSTREAM, granularity, plan)
        metrics = await self._stats.call_metrics(recs, plan)
        return [(r.key, m) for r, m in zip(recs, metrics, strict=True)]

    async def traverse(
        self,
        roots: Iterable[str],
        direction: Direction,
        depth: int,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        with_stats: bool = True,
    ) -> TraversalResult:
        self._check()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        plan = self._plan(time, now)
        upstream = direction is Direction.UPSTREAM
        frontier = sorted(_names(roots))
        seen = set(frontier)
        reached: list[Reached] = []
        walked: list[EdgeSummary] = []
        for level in range(1, depth + 1):
            if not frontier:
                break
            lists = await self._adjacent(frontier, upstream, granularity, plan, with_stats)
            best: dict[str, tuple[str, EdgeSummary]] = {}  # newly reached -> (smallest parent, its edge)
            for name in frontier:
                for e in lists[name]:
                    walked.append(e)
                    other = e.key.target if upstream else e.key.source
                    if other in seen:
                        continue
                    prev = best.get(other)
                    if prev is None or name < prev[0]:
                        best[other] = (name, e)
            frontier = sorted(best)
            seen.update(frontier)
            for other in frontier:
                via, e = best[other]
                reached.append(Reached(other, level, via, e.target_kind if upstream else e.source_kind))
        walked.sort(key=_SUMMARY_PAIR)
        return TraversalResult(tuple(reached), tuple(walked))

    async def edges(
        self,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        limit: int | None = None,
        after: tuple[str, str] | None = None,
    ) -> list[EdgeSummary]:
        self._check()
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        plan = self._plan(time, now)
        present = _presence(plan)
        keys = self._index.sorted_keys(granularity)
        recs: list[EdgeRec] = []
        for i in range(0 if after is None else bisect.bisect_right(keys, (after[0], after[1])), len(keys)):
            if limit is not None and len(recs) >= limit:
                break
            rec = self._index.edge(granularity, *keys[i])
            if present(rec):
                recs.append(rec)
        return await self._summaries(recs, plan)

    async def nodes(self, names: Iterable[str]) -> dict[str, NodeInfo]:
        self._check()
        return self._index.nodes(_names(names))

    async def stored_stats(
        self, keys: Sequence[tuple[EdgeKey, int, int]]
    ) -> dict[tuple[EdgeKey, int, int], EdgeStats]:
        self._check()
        wanted = [(k, rec.id) for k in keys if (rec := self._index.get(k[0])) is not None]

        floors = dict(self._stats.floors)

        def read(conn: sqlite3.Connection) -> list[bytes | None]:
            got = [conn.execute("SELECT stats FROM windows WHERE wsec=? AND wstart=? AND edge=?",
                                (k[1], k[2], eid)).fetchone() for k, eid in wanted]
            return [row[0] if row else packs.get(conn, k[1], k[2], eid, floors.get(k[1], 0))
                    for row, (k, eid) in zip(got, wanted, strict=True)]

        async with self._lock:  # no upsert half-way: its blobs may name attributes it is adding
            blobs = await self._db.read(read) if wanted else []
            return {k: self._codec.decode(blob, k[2])
                    for (k, _), blob in zip(wanted, blobs, strict=True) if blob is not None}

    async def window_count(self) -> dict[int, int]:
        floors = dict(self._stats.floors)

        def read(conn: sqlite3.Connection) -> dict[int, int]:
            with packs.snapshot(conn):
                loose = conn.execute("SELECT wsec, COUNT(*) FROM windows GROUP BY wsec").fetchall()
                packed = conn.execute("SELECT wsec, wstart, slots FROM packs").fetchall()
            out = {int(g): int(n) for g, n in loose}
            for g, t, slots in packed:
                below = max(0, min(packs.PACKED[g], floors[g] - t)) // g  # windows before the floor
                n = packs.count(slots >> below)
                if n:
                    out[g] = out.get(g, 0) + n
            return out

        return await self._db.read(read)

    def _check(self) -> None:
        if self._db.closed:
            raise StoreUnavailable(self.layer, f"the {self.layer.value} store is closed")

    async def ping(self) -> None:
        self._check()
        await self._db.read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        async with self._lock:
            if self._db.closed:
                return
            try:  # both only make the next open quicker
                if self._dirty:
                    await self._save_spans()
                token = secrets.token_hex(8)
                if await asyncio.to_thread(
                    self._stats.save_snapshot, self._snapshot_path, self._index, token
                ):
                    await self._db.write(
                        lambda c: c.execute(
                            "INSERT OR REPLACE INTO meta VALUES ('ring_snapshot', ?)", (token,)
                        )
                    )
            except (OSError, StoreUnavailable) as e:
                log.warning("%s: closing without a quick-reopen snapshot: %s", self.layer.value, e)
            finally:
                self._db.close()

    @property
    def _snapshot_path(self) -> pathlib.Path:
        return self._db.path.with_suffix(".ring.npz")

    def close_now(self) -> None:
        """Close without waiting for the write lock (only when nothing else uses the store)."""
        self._db.close()

"""Where the embedded store gets the merged stats of the edges a query returns.

A range is read as its plan (:func:`topology.timewindow.read_plan`): a few spans of windows of
one granularity each (rolled-up hours or days, then the minutes not rolled up yet). Three sources,
tried in order for each edge of an answer:

1. a memo on the edge: its summary for the last plan asked (dropped whenever the edge's windows
   change): repeated queries cost a look-up; and for a long range (roll-ups, then minutes) the fold
   of all but its newest 10-15 minutes, kept until a window inside that part is written: after the
   next live minute only the newest minutes are merged again (from the ring);
2. the hot ring (``embedded_hot.py``): recent minute windows of every edge, merged vectorised;
3. SQLite: one batched query per span for all the remaining edges (older ranges, hours, days),
   and one for the packs that hold the span's finished hours' minutes or days' hours (unpacked to
   the very rows they were before, so the answers are the same).

All three give exactly the fold of ``EdgeStats.merge`` over the windows in time order (span by
span: each span's fold, then those folded in time order).

:meth:`StatsSource.call_metrics` answers the reduced :class:`CallMetrics` (requests, errors,
latency median and p99) the same three ways, without building merged stats: the ring's and the
disk's sketches go into one :class:`QuantileBatch`, and only requests, errors and sketches are
decoded from disk. Its answers are remembered per range (up to ``METRIC_SPANS`` ranges) and per
edge, and forgotten for an edge when a window of it inside the range is written.
"""

from __future__ import annotations

import logging
import pathlib
import sqlite3
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from topology.metric import CallMetrics
from topology.model import EdgeSummary
from topology.sketch_batch import QuantileBatch
from topology.stats import EdgeStats
from topology.store import embedded_pack as packs
from topology.store.embedded_codec import StatsCodec, merge_fields
from topology.store.embedded_db import Database
from topology.store.embedded_hot import HotRing
from topology.store.embedded_index import SLOT, EdgeRec, GraphIndex, overlaps
from topology.timewindow import MINUTE, STORED_GRANULARITIES, Retention, Span, align

log = logging.getLogger(__name__)

#: Above this many (window, edge) probes, one range scan of the windows table is cheaper.
PROBE_LIMIT = 50_000
#: Above this many windows in the range, always scan.
MAX_TARGETS = 2_000

#: A long range's newest minutes (10 to 15) are read apart from the rest, which is remembered per edge.
TAIL, TAIL_STEP = 10 * MINUTE, 5 * MINUTE

#: Ranges whose call metrics are remembered (the current and baseline windows of a few questions).
METRIC_SPANS = 8

Plan = tuple[Span, ...]  # what a range reads: equal plans select the same windows
_EMPTY = EdgeStats()


def _split(plan: Plan) -> tuple[Plan, Span | None]:
    """A long range's plan (rolled-up spans, then minutes) as the part that stays the same from one
    minute to the next (``prefix``: all but the newest 10-15 minutes) and those newest minutes
    (``tail``, which the ring holds); ``(plan, None)`` for other plans. Equal plans split alike, so
    answers do not depend on what the ring holds."""
    if len(plan) < 2 or plan[-1].seconds != MINUTE:
        return plan, None
    last = plan[-1]
    cut = max(last.start, align(last.end - TAIL, TAIL_STEP))
    if cut == last.start:
        return plan[:-1], last
    return (*plan[:-1], Span(MINUTE, last.start, cut)), Span(MINUTE, cut, last.end)


def _has(span: Span, rec: EdgeRec) -> bool:
    """Whether the edge has a window in the span."""
    iv = rec.spans[SLOT[span.seconds]]
    return iv is not None and overlaps(iv, span.start, span.end)


class StatsSource:
    def __init__(self, db: Database, codec: StatsCodec, hot_minutes: int) -> None:
        self._db = db
        self._codec = codec
        self.ring = HotRing(hot_minutes) if hot_minutes >= 2 else None
        self._cold_rows: set[int] = set()  # rows whose windows could not go into the ring
        self.generation = 0  # bumped by every change of stored windows
        # per granularity: windows starting before this were deleted by retention
        self.floors = dict.fromkeys(STORED_GRANULARITIES, 0)
        self._metrics: dict[Plan, dict[int, CallMetrics]] = {}  # per plan, per edge id

    # -- keeping up with writes ------------------------------------------------------------------
    def ring_start(self, top: int) -> int:
        """The oldest minute window start the ring can hold when ``top`` is the newest."""
        if self.ring is None:
            return top + MINUTE
        return top - (self.ring.slots - 1) * MINUTE

    def load(self, minute_floor: int, fill: Sequence[tuple[EdgeRec, int, tuple[Any, ...]]]) -> None:
        """Fill the ring at open with the newest minute windows on disk (stats as stored)."""
        if self.ring is not None:
            self.ring.forget_before(minute_floor)
            self._to_ring([r for r, _, _ in fill], [t for _, t, _ in fill], [f for _, _, f in fill], True)

    def save_snapshot(self, path: pathlib.Path, index: GraphIndex, token: str) -> bool:
        """Write the ring to ``path`` (atomically) for :meth:`load_snapshot`; False if there is none."""
        if self.ring is None or not self.ring.used:
            return False
        arrays = self.ring.to_arrays()
        arrays["rows"] = np.array(
            [(r.id, r.row) for r in index.by_id.values() if r.row >= 0], np.int64
        ).reshape(-1, 2)
        arrays["cold"] = np.array(sorted(self._cold_rows), np.int64)
        arrays["token"] = np.frombuffer(token.encode(), np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        # np.savez_compressed's layout (np.load reads it), deflated at level 1: a third of the CPU of
        # its default level for a file ~20 % larger (it is written at every clean close)
        with tmp.open("wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for name, a in arrays.items():
                with z.open(name + ".npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asanyarray(a), allow_pickle=False)
        tmp.replace(path)
        return True

    def load_snapshot(self, path: pathlib.Path, index: GraphIndex, token: str) -> bool:
        """Take the ring saved at the last clean close, if it is that close's (``token``) and fits."""
        if self.ring is None or not path.exists():
            return False
        try:
            with np.load(path, allow_pickle=False) as d:
                arrays = {k: d[k] for k in d.files}
            if arrays["token"].tobytes().decode() != token or int(arrays["meta"][0]) != self.ring.slots:
                return False
            ring = HotRing.from_arrays(arrays)
        except (OSError, ValueError, KeyError, EOFError, TypeError) as e:
            log.warning("ignoring the hot ring snapshot %s: %s", path, e)
            return False
        for eid, row in arrays["rows"].tolist():
            rec = index.by_id.get(eid)
            if rec is not None:
                rec.row = row
            else:
                ring.release(row)
        self.ring = ring
        self._cold_rows = {int(x) for x in arrays["cold"]}
        return True

    def _to_ring(
        self, recs: Sequence[EdgeRec], starts: Sequence[int], items: Sequence[Any], stored: bool
    ) -> None:
        """Put minute windows into the ring (``items``: EdgeStats, or stored tuples if ``stored``)."""
        ring = self.ring
        if ring is None or not recs:
            return
        write = ring.write_fields if stored else ring.write
        for rec in recs:
            if rec.row < 0:
                rec.row = ring.new_row()
        try:
            write([r.row for r in recs], starts, items)
        except OverflowError:  # a value the ring does not hold: those edges are answered from disk
            for rec, start, item in zip(recs, starts, items, strict=True):
                try:
                    write([rec.row], [start], [item])
                except OverflowError:
                    self._cold_rows.add(rec.row)

    def on_windows(self, written: Sequence[tuple[EdgeRec, int, int, EdgeStats]]) -> None:
        """Windows (edge, seconds, start, stats) were committed."""
        self.generation += 1
        recs: list[EdgeRec] = []
        starts: list[int] = []
        stats: list[EdgeStats] = []
        for rec, wsec, wstart, s in written:
            rec.cache = None
            p = rec.prefix
            if p is not None and any(g == wsec and lo <= wstart < hi for g, lo, hi in p[0]):  # type: ignore[index]
                rec.prefix = None
            for plan, table in self._metrics.items():
                if any(g == wsec and lo <= wstart < hi for g, lo, hi in plan):
                    table.pop(rec.id, None)
            if wsec == MINUTE:
                recs.append(rec)
                starts.append(wstart)
                stats.append(s)
        self._to_ring(recs, starts, stats, False)

    def on_built(self, recs: Sequence[EdgeRec]) -> None:
        """Roll-up windows were written for these edges."""
        self.generation += 1
        for rec in recs:
            rec.cache = rec.prefix = None
            for table in self._metrics.values():
                table.pop(rec.id, None)

    def on_retention(self, now: float, retention: Retention) -> None:
        """Windows ending at or before ``now`` - retention are gone: so are answers that used them."""
        self.generation += 1
        self._metrics.clear()
        for g in STORED_GRANULARITIES:
            self.floors[g] = max(self.floors[g], align(now - retention.for_granularity(g), g))
        if self.ring is not None:
            self.ring.forget_before(self.floors[MINUTE])
            self.ring.compact_attrs()

    def fresh(self, plan: Plan) -> bool:
        """Whether answers for ``plan`` may be remembered (none of its windows was deleted)."""
        return all(s.start >= self.floors[s.seconds] for s in plan)

    def forget(self, rec: EdgeRec) -> None:
        if self.ring is not None and rec.row >= 0:
            self.ring.release(rec.row)
            self._cold_rows.discard(rec.row)
            rec.row = -1
        rec.cache = rec.prefix = None
        for table in self._metrics.values():
            table.pop(rec.id, None)

    # -- answering -------------------------------------------------------------------------------
    async def summaries(self, recs: Sequence[EdgeRec], plan: Plan) -> list[EdgeSummary]:
        """One summary per edge (in order): its windows in the plan's spans, merged in time order."""
        out: list[EdgeSummary | None] = []
        missing: list[tuple[int, EdgeRec]] = []
        fresh = self.fresh(plan)
        for i, rec in enumerate(recs):
            c = rec.cache
            if fresh and c is not None and c[0] == plan:  # type: ignore[index]
                out.append(c[1])  # type: ignore[index]
            else:
                out.append(None)
                missing.append((i, rec))
        if missing:
            generation = self.generation
            edges = [r for _, r in missing]
            prefix, tail = _split(plan)
            if tail is None:
                folded, awaited = await self._folds(edges, plan)
            else:
                folded, awaited = await self._with_prefix(edges, prefix, tail, generation)
            # nothing written meanwhile (the ring answers without a pause)
            keep = fresh and (not awaited or generation == self.generation)
            for (i, rec), st in zip(missing, folded, strict=True):
                out[i] = summary = EdgeSummary(rec.key, st or _EMPTY, rec.source_kind, rec.target_kind)
                if keep:
                    rec.cache = (plan, summary)
        return out  # type: ignore[return-value]  # every slot is filled above

    async def _with_prefix(
        self, recs: Sequence[EdgeRec], prefix: Plan, tail: Span, generation: int
    ) -> tuple[list[EdgeStats | None], bool]:
        """:meth:`_folds` over ``prefix`` then ``tail``, with each edge's fold of the prefix remembered
        (``EdgeRec.prefix``) until a window inside it is written: a long range re-reads only its tail
        (from the ring) after the next live minute."""
        fresh = self.fresh(prefix)
        done: list[EdgeStats | None] = [None] * len(recs)
        need: list[int] = []
        for j, rec in enumerate(recs):
            c = rec.prefix
            if fresh and c is not None and c[0] == prefix:  # type: ignore[index]
                done[j] = c[1]  # type: ignore[index]
            else:
                need.append(j)
        got, awaited = await self._folds([recs[j] for j in need], prefix)
        keep = fresh and (not awaited or generation == self.generation)
        for j, st in zip(need, got, strict=True):
            done[j] = st
            if keep:
                recs[j].prefix = (prefix, st)
        tails, more = await self._folds(recs, (tail,))
        both = [t if p is None else p if t is None else p.merge(t) for p, t in zip(done, tails, strict=True)]
        return both, awaited or more

    async def _folds(self, recs: Sequence[EdgeRec], plan: Plan) -> tuple[list[EdgeStats | None], bool]:
        """Per edge (in order) the left fold, in time order, of its spans' folds (None: no window), and
        whether the disk was read (a write may have come in meanwhile)."""
        acc: list[EdgeStats | None] = [None] * len(recs)
        awaited = False
        ring = self.ring
        for span in plan:
            todo = [(j, r) for j, r in enumerate(recs) if _has(span, r)]
            got: list[tuple[int, EdgeStats | None]] = []
            if todo and span.seconds == MINUTE and ring is not None and ring.covers(span.start):
                cold = self._cold_rows
                hot = [(j, r) for j, r in todo if r.row >= 0 and r.row not in cold]
                todo = [(j, r) for j, r in todo if r.row < 0 or r.row in cold]
                got += zip([j for j, _ in hot], ring.merged([r.row for _, r in hot], span.start, span.end),
                           strict=True)
            if todo:
                awaited = True
                found = await self._from_disk([r for _, r in todo], span)
                got += [(j, found.get(r.id)) for j, r in todo]
            for j, st in got:
                if st is not None:
                    a = acc[j]
                    acc[j] = st if a is None else a.merge(st)
        return acc, awaited

    async def call_metrics(self, recs: Sequence[EdgeRec], plan: Plan) -> list[CallMetrics]:
        """One :class:`CallMetrics` per edge (in order): what :meth:`summaries` would merge, reduced."""
        fresh = self.fresh(plan)
        table = self._metrics.get(plan, {}) if fresh else {}
        out: list[CallMetrics | None] = []
        missing: list[tuple[int, EdgeRec]] = []
        for i, rec in enumerate(recs):
            m = table.get(rec.id)
            if m is None:
                c = rec.cache
                if fresh and c is not None and c[0] == plan:  # type: ignore[index]
                    m = CallMetrics.of(c[1].stats)  # type: ignore[index]
            out.append(m)
            if m is None:
                missing.append((i, rec))
        if missing:
            generation = self.generation
            batch = QuantileBatch(len(missing))
            counts: list[tuple[int, int]] = [(0, 0)] * len(missing)
            ring = self.ring
            for span in plan:
                disk = [(g, r) for g, (_, r) in enumerate(missing) if _has(span, r)]
                if disk and span.seconds == MINUTE and ring is not None and ring.covers(span.start):
                    cold = self._cold_rows
                    hot = [(g, r) for g, r in disk if r.row >= 0 and r.row not in cold]
                    disk = [(g, r) for g, r in disk if r.row < 0 or r.row in cold]
                    groups = [g for g, _ in hot]
                    sums = ring.calls([r.row for _, r in hot], groups, span.start, span.end, batch)
                    for g, req, err in zip(groups, *sums, strict=True):
                        counts[g] = (counts[g][0] + req, counts[g][1] + err)
                if disk:
                    group = {r.id: g for g, r in disk}
                    for eid, (req, err) in self._calls_from_disk(await self._read(span, [r for _, r in disk]),
                                                                 group, batch).items():
                        g = group[eid]
                        counts[g] = (counts[g][0] + req, counts[g][1] + err)
            p50, p99 = batch.quantiles((0.5, 0.99))
            keep = fresh and generation == self.generation  # nothing was written meanwhile
            if keep:
                table = self._metrics.setdefault(plan, {})
                while len(self._metrics) > METRIC_SPANS:
                    del self._metrics[next(iter(self._metrics))]  # the oldest plan asked
            for g, (i, rec) in enumerate(missing):
                out[i] = m = CallMetrics(*counts[g], p50[g], p99[g])
                if keep:
                    table[rec.id] = m
        return out  # type: ignore[return-value]  # every slot is filled above

    def _calls_from_disk(self, rows: list[tuple[int, int, bytes]], group: dict[int, int],
                         batch: QuantileBatch) -> dict[int, tuple[int, int]]:
        """Requests and errors per edge id of the stored windows ``rows``; their sketches go into
        ``batch`` (edge ``e``'s as group ``group[e]``)."""
        return self._codec.calls_into(rows, group, batch)

    async def _from_disk(self, recs: Sequence[EdgeRec], span: Span) -> dict[int, EdgeStats]:
        rows = await self._read(span, recs)
        decode = self._codec.decode_fields
        out: dict[int, EdgeStats] = {}
        i = 0
        while i < len(rows):
            j = i
            eid = rows[i][0]
            while j < len(rows) and rows[j][0] == eid:
                j += 1
            out[eid] = merge_fields([decode(rows[k][2], rows[k][1]) for k in range(i, j)])
            i = j
        return out

    async def _read(self, span: Span, recs: Sequence[EdgeRec]) -> list[tuple[int, int, bytes]]:
        """The stored windows (edge, start, blob) of ``recs`` in the span, by edge then start: loose
        ones and those in packs (``embedded_pack.py``)."""
        wsec, lo, hi = span
        ids = sorted({r.id for r in recs})
        n_targets = (hi - lo) // wsec
        if n_targets <= 0:
            return []
        probe = n_targets <= MAX_TARGETS and n_targets * len(ids) <= PROBE_LIMIT
        floor = self.floors[wsec]

        def read(conn: sqlite3.Connection) -> list[tuple[int, int, bytes]]:
            if wsec not in packs.PACKED:
                return loose(conn)
            with packs.snapshot(conn):  # a roll-up between the two moves windows from one to the other
                return loose(conn) + packs.read(conn, wsec, lo, hi, ids, floor)

        def loose(conn: sqlite3.Connection) -> list[tuple[int, int, bytes]]:
            if probe:
                starts = "[" + ",".join(str(t) for t in range(lo, hi, wsec)) + "]"
                edges = "[" + ",".join(map(str, ids)) + "]"
                return conn.execute(
                    "SELECT edge, wstart, stats FROM windows WHERE wsec=? AND wstart IN "
                    "(SELECT value FROM json_each(?)) AND edge IN (SELECT value FROM json_each(?))",
                    (wsec, starts, edges),
                ).fetchall()
            # one range scan, the edges tested inside SQLite (rows of other edges never become
            # Python objects: ~1/3 less than filtering them here)
            return conn.execute(
                "SELECT edge, wstart, stats FROM windows WHERE wsec=? AND wstart>=? AND wstart<? "
                "AND edge IN (SELECT value FROM json_each(?))",
                (wsec, lo, hi, "[" + ",".join(map(str, ids)) + "]"),
            ).fetchall()

        rows = await self._db.read(read)
        rows.sort(key=lambda x: (x[0], x[1]))
        return rows

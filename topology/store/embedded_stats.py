"""Where the embedded store gets the merged stats of the edges a query returns.

Windows of the query's granularity overlapping the range are merged per edge. They are read from
SQLite in one batched query for all the edges of an answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from topology.stats import EdgeStats
from topology.store.embedded_codec import decode
from topology.store.embedded_db import Database
from topology.store.embedded_index import EdgeRec, GraphIndex
from topology.timewindow import TimeRange, align


class StatsSource:
    def __init__(self, db: Database, hot_seconds: int) -> None:
        self._db = db
        self.hot_seconds = hot_seconds

    def load(self, index: GraphIndex, conn: sqlite3.Connection) -> None:
        """Warm up from disk at open."""

    def on_write(self, rec: EdgeRec, wsec: int, wstart: int, stats: EdgeStats | None) -> None:
        """A window was stored (``stats`` None: built by a roll-up)."""

    def on_retention(self, minute_cutoff: float) -> None: ...

    def forget(self, rec: EdgeRec) -> None: ...

    async def merged(self, recs: Sequence[EdgeRec], wsec: int, time: TimeRange) -> dict[int, EdgeStats]:
        if not recs:
            return {}
        ids = sorted({r.id for r in recs})
        lo = align(time.start, wsec)
        hi = time.end
        id_list = "[" + ",".join(map(str, ids)) + "]"

        def read(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return conn.execute(
                "SELECT edge, stats FROM windows WHERE edge IN (SELECT value FROM json_each(?)) "
                "AND wsec=? AND wstart>=? AND wstart<? ORDER BY edge, wstart",
                (id_list, wsec, lo, hi)).fetchall()

        rows = await self._db.read(read)
        out: dict[int, EdgeStats] = {}
        for eid, blob in rows:
            s = decode(blob)
            prev = out.get(eid)
            out[eid] = s if prev is None else prev.merge(s)
        return out

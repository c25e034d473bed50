"""Packs: the finished hours' minute windows (and finished days' hour windows) of one edge in one row.

A minute window stored alone costs its record (15-80 bytes) and as much again in SQLite's per-row
cost (key, cell and record headers, cell pointer, unused page space). When an hour is rolled up,
its minute windows move into one row per edge and hour (``packs``); when a day is rolled up, its
hour windows do the same. A pack holds each window's record exactly as it was stored (the bytes
:class:`~topology.store.embedded_codec.StatsCodec` wrote, against its own window start), so a reader
that unpacks gets the rows it would have read from ``windows``, bit for bit: every answer stays the
same. Storage::

    packs(wsec, wstart, edge, slots, data)  -- wsec: the packed windows' length; wstart: the hour
                                            -- (day) start; slots: bit i set when the window
                                            -- wstart + i * wsec is in it; data: see below

``data`` is a format byte (1) and then, raw-deflated, the length of each window's record in slot
order (varints), then the records grouped by length (shortest first), each group column by column:
byte 0 of every record of that length in time order, then byte 1, and so on. Records of one length
mostly share a layout (one shape: the same header, the same field at the same place), so a column
holds one field's byte across the minutes - the header's bytes repeat, a counter's high bytes change
little - which deflate keeps in much less than the records one after the other.

Each (edge, window) is stored once: loose in ``windows`` or in a pack. An hour window goes into its
day's pack as soon as the roll-up builds it (the day's pack is read, the hour added, written back), so
only the current hour's minutes are loose. Windows written into a packed hour or day later (late
data, a roll-up built again) join its pack if the edge has one (the pack is rewritten in the same
transaction), else stay loose until the period is rolled up again. Retention deletes a pack when its
whole period is past the retention of its windows; windows inside a pack older than that are skipped
on reading (``floor``).

Trace ids: a TRACE window written into a pack after it ended ``Retention.trace_seconds`` before the
roll-up's clock keeps only its smallest trace id (``EmbeddedLayerStore._thinner``), and a pass once an
hour does the same to the windows already packed: the catalog no longer holds those traces, and
five random 16-byte ids per window were a third of the TRACE store.
"""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from topology.timewindow import DAY, HOUR, MINUTE, align

#: window length -> the period its windows are packed by (when that period is rolled up)
PACKED = {MINUTE: HOUR, HOUR: DAY}
_FORMAT = 1
#: Above this many (period, edge) probes, one range scan of the packs is cheaper.
PROBE_LIMIT = 50_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS packs(wsec INTEGER NOT NULL, wstart INTEGER NOT NULL, edge INTEGER NOT NULL,
  slots INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(wsec, wstart, edge));
"""
# a rowid table: a pack is ~0.3-3 KB, which a WITHOUT ROWID table keeps mostly on overflow pages
_ONE = "SELECT slots, data FROM packs WHERE wsec=? AND wstart=? AND edge=?"
_NEXT = "SELECT MIN(wstart) FROM packs WHERE wsec=? AND wstart>?"


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)


def pack(records: Sequence[tuple[int, bytes]], start: int, wsec: int) -> tuple[int, bytes]:
    """(slots, data) of the windows ``records`` ((window start, stored record), in time order) of the
    period at ``start``."""
    slots = 0
    raw = bytearray()
    groups: dict[int, list[bytes]] = {}
    for t, rec in records:
        i = (t - start) // wsec
        if t != start + i * wsec or not 0 <= i < PACKED[wsec] // wsec:
            raise ValueError(f"window {t} is not a {wsec} s window of the period at {start}")
        if slots >> i & 1:
            raise ValueError(f"window {t} given twice")
        slots |= 1 << i
        _varint(len(rec), raw)
        groups.setdefault(len(rec), []).append(rec)
    for n, same in sorted(groups.items()):
        block = b"".join(same)
        raw += block if len(same) == 1 or not n else np.frombuffer(block, np.uint8).reshape(-1, n).T.tobytes()
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return slots, bytes((_FORMAT,)) + c.compress(bytes(raw)) + c.flush()


def unpack(slots: int, data: bytes, start: int, wsec: int, floor: int = 0) -> list[tuple[int, bytes]]:
    """The windows (start, record) of a pack, in time order, those starting before ``floor`` left out.
    ValueError if ``data`` is not a pack."""
    if not data or data[0] != _FORMAT:
        raise ValueError("corrupt pack: unknown format")
    d = zlib.decompressobj(-15)
    try:
        raw = d.decompress(data[1:])
    except zlib.error as e:
        raise ValueError(f"corrupt pack: {e}") from e
    if not d.eof or d.unused_data:
        raise ValueError("corrupt pack: the compressed stream is cut short or followed by more")
    times = [start + i * wsec for i in range(slots.bit_length()) if slots >> i & 1]
    lengths: list[int] = []
    pos = 0
    try:
        for _ in times:
            n = shift = 0
            while True:
                b = raw[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            lengths.append(n)
    except IndexError:
        raise ValueError("corrupt pack: cut short") from None
    if pos + sum(lengths) != len(raw):
        raise ValueError("corrupt pack: its records do not add up to its bytes")
    records: dict[int, list[bytes]] = {}
    for n in sorted(set(lengths)):
        k = lengths.count(n)
        block = raw[pos : pos + n * k]
        pos += n * k
        if k == 1 or not n:
            records[n] = [block] if n else [b""] * k
        else:
            rows = np.frombuffer(block, np.uint8).reshape(n, k).T.tobytes()
            records[n] = [rows[j : j + n] for j in range(0, n * k, n)]
    taken = dict.fromkeys(records, 0)
    out: list[tuple[int, bytes]] = []
    for t, n in zip(times, lengths, strict=True):
        if t >= floor:
            out.append((t, records[n][taken[n]]))
        taken[n] += 1
    return out


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction around several statements of the reader connection: they see the same
    state (a roll-up committed between them would move windows from ``windows`` into ``packs``)."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def count(slots: int) -> int:
    return bin(slots).count("1")


def newest(slots: int, start: int, wsec: int) -> int:
    """The start of the newest window in a pack."""
    return start + (slots.bit_length() - 1) * wsec


def read(
    conn: sqlite3.Connection, wsec: int, lo: int, hi: int, ids: Sequence[int], floor: int
) -> list[tuple[int, int, bytes]]:
    """The packed windows (edge, start, record) of the edges ``ids`` that start in [lo, hi) (and at
    or after ``floor``)."""
    coarse = PACKED[wsec]
    periods = list(range(align(lo, coarse), hi, coarse))
    if not periods or not ids:
        return []
    edges = "[" + ",".join(map(str, ids)) + "]"
    if len(periods) * len(ids) <= PROBE_LIMIT:
        rows = conn.execute(
            "SELECT edge, wstart, slots, data FROM packs WHERE wsec=? AND wstart IN "
            "(SELECT value FROM json_each(?)) AND edge IN (SELECT value FROM json_each(?))",
            (wsec, "[" + ",".join(map(str, periods)) + "]", edges),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT edge, wstart, slots, data FROM packs WHERE wsec=? AND wstart>=? AND wstart<? "
            "AND edge IN (SELECT value FROM json_each(?))",
            (wsec, periods[0], hi, edges),
        ).fetchall()
    return expand(rows, wsec, lo, hi, floor)


def expand(
    rows: Iterable[tuple[int, int, int, bytes]], wsec: int, lo: int, hi: int, floor: int
) -> list[tuple[int, int, bytes]]:
    """Pack rows (edge, period start, slots, data) as window rows (edge, start, record) in [lo, hi)."""
    out: list[tuple[int, int, bytes]] = []
    low = max(lo, floor)
    for eid, start, slots, data in rows:
        out += [(eid, t, rec) for t, rec in unpack(slots, data, start, wsec, low) if t < hi]
    return out


def get(conn: sqlite3.Connection, wsec: int, wstart: int, eid: int, floor: int) -> bytes | None:
    """The record of one packed window, None if it is not in a pack."""
    coarse = PACKED.get(wsec)
    if coarse is None or wstart < floor:
        return None
    p = align(wstart, coarse)
    row = conn.execute(_ONE, (wsec, p, eid)).fetchone()
    if row is None or not row[0] >> (wstart - p) // wsec & 1:
        return None
    return dict(unpack(row[0], row[1], p, wsec))[wstart]


#: What may change a pack's records as it is written: (records in time order, their window length) ->
#: the records to keep (the same windows).
Edit = Callable[[list[tuple[int, bytes]], int], list[tuple[int, bytes]]]


def merge_into(
    conn: sqlite3.Connection,
    rows: list[tuple[int, int, int, bytes]],
    periods: frozenset[tuple[int, int]] | set[tuple[int, int]],
    create: bool = False,
    edit: Edit | None = None,
) -> list[tuple[int, int, int, bytes]]:
    """Of the windows ``rows`` (wsec, wstart, edge, record) about to be written, put those whose edge
    has a pack for their period into it (rewriting the pack); the others are returned, to be written
    loose. ``periods``: the (wsec, period start) that have packs (others are not looked up). With
    ``create``, an edge without a pack for such a period gets one (nothing is returned loose for
    those periods). ``edit``: applied to each pack's records before it is written."""
    late: dict[tuple[int, int, int], dict[int, bytes]] = {}
    loose = []
    for wsec, wstart, eid, rec in rows:
        coarse = PACKED.get(wsec)
        p = align(wstart, coarse) if coarse else 0
        if coarse and (wsec, p) in periods:
            late.setdefault((wsec, p, eid), {})[wstart] = rec
        else:
            loose.append((wsec, wstart, eid, rec))
    out = []
    for (wsec, p, eid), new in late.items():
        row = conn.execute(_ONE, (wsec, p, eid)).fetchone()
        if row is None and not create:
            loose += [(wsec, t, eid, rec) for t, rec in new.items()]
            continue
        have = dict(unpack(row[0], row[1], p, wsec)) if row is not None else {}
        have.update(new)
        records = sorted(have.items())
        out.append((wsec, p, eid, *pack(edit(records, wsec) if edit else records, p, wsec)))
    conn.executemany("INSERT OR REPLACE INTO packs VALUES (?,?,?,?,?)", out)
    return loose


def rewrite(conn: sqlite3.Connection, wsec: int, start: int, lo: int, hi: int, edit: Edit) -> list[int]:
    """Apply ``edit`` to the packs of the period at ``start`` (windows of ``wsec``) of the edges with
    ids in [lo, hi], and write back those it changed; their edges."""
    out = []
    for eid, slots, data in conn.execute(
        "SELECT edge, slots, data FROM packs WHERE wsec=? AND wstart=? AND edge BETWEEN ? AND ?",
        (wsec, start, lo, hi),
    ).fetchall():
        records = unpack(slots, data, start, wsec)
        edited = edit(records, wsec)
        if edited != records:
            out.append((wsec, start, eid, *pack(edited, start, wsec)))
    conn.executemany("INSERT OR REPLACE INTO packs VALUES (?,?,?,?,?)", out)
    return [eid for _, _, eid, _, _ in out]


def periods_of(conn: sqlite3.Connection) -> set[tuple[int, int]]:
    """The (wsec, period start) that have packs (one index seek per period)."""
    out: set[tuple[int, int]] = set()
    for wsec in PACKED:
        (t,) = conn.execute(_NEXT, (wsec, -(2**62))).fetchone()
        while t is not None:
            out.add((wsec, int(t)))
            (t,) = conn.execute(_NEXT, (wsec, t)).fetchone()
    return out


def delete_expired(conn: sqlite3.Connection, wsec: int, cutoff: float) -> int:
    """Delete the packs all of whose windows end at or before ``cutoff``; how many windows they held."""
    coarse = PACKED[wsec]
    gone = conn.execute(
        "SELECT slots FROM packs WHERE wsec=? AND wstart <= ?", (wsec, cutoff - coarse)
    ).fetchall()
    conn.execute("DELETE FROM packs WHERE wsec=? AND wstart <= ?", (wsec, cutoff - coarse))
    return sum(count(s) for (s,) in gone)


__all__ = ["DAY", "PACKED", "SCHEMA", "Edit", "count", "expand", "get", "merge_into", "newest", "pack",
           "periods_of", "read", "rewrite", "unpack"]

"""The embedded catalog's trace summaries: blocks on disk, the lists and the trace store's index in memory.

Each ``record_traces`` call writes one **block**: one row of ``trace_blocks`` (its summaries, without
spans, in a compact columnar form: :func:`encode_block`) and one row of ``trace_block_spans`` (their
packed spans, concatenated: :func:`encode_spans`). A record of a block is named by a **ref**,
``block << BLOCK_BITS | index``. Nothing is written per (service, trace) and nothing per trace: a write
is two INSERTs that go to the end of their tables, plus the deletes of blocks nobody needs any more.

What reads need is in memory (:class:`TraceIndex`, pure: the catalog does the I/O):

- each service's list, its ``TRACES_PER_SERVICE`` newest traces by (start, trace id): entries
  ``(start, trace id, ref)`` shared by the services of a record, appended as they come and cut to the
  newest, one per trace (the last written: a trace recorded again replaces its entry), when they reach
  twice that many and when read;
- the trace store (what ``trace(id)`` answers): an entry per kept trace by id, a heap by (start, id)
  for the evictions of ``Retention`` (``trace_seconds`` before the newest start, then the oldest beyond
  ``traces``), and per block the number of kept traces in it: a block's spans row is deleted when that
  reaches 0;
- per block the number of records it holds on disk. The lists keep summaries far longer than the trace
  store keeps spans (100 per service, however old), so a block's summaries stay while any list refers
  to one of them. A collection (:meth:`TraceIndex.collect`, when the records on disk have doubled since
  the last one) deletes the blocks no list or store refers to, and copies the records still listed
  out of the sparsest blocks into a new block (a copy names the services still listing it) until the
  records on disk are within 1.5 times those listed (plus the blocks the trace store needs).

The text of a block's summaries is their strings joined by control characters (a JSON array when a
name holds one): ~4x cheaper to make than JSON per record; a read splits a block's text once.

At open the index is rebuilt from the blocks, oldest first: the lists from every record (a copy lists the
services it names, an original its root service and its services), the trace store from the records
with spans in blocks that still have their spans row, then its retention. That is the state the writes
left (their lists keep the newest by (start, id), and blocks are deleted only when nothing refers to
them), but for a trace recorded again with an earlier start than before, whose older neighbours may come
back after a restart.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import struct
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from topology.catalog import TraceSummary
from topology.timewindow import Retention

TRACES_PER_SERVICE = 100
BLOCK_BITS = 20
BLOCK_RECORDS = 1 << BLOCK_BITS  # the most records of a block (a bigger call writes several)
INDEX = BLOCK_RECORDS - 1  # a ref's index in its block: ref & INDEX (its block: ref >> BLOCK_BITS)
#: Records on disk beyond those a collection leaves before the next one (their bytes: ~100 each).
_COLLECT_SLACK = 20_000

_ERROR, _STORED = 1, 2  # flags of a record: its trace had an error; its spans are in the block's spans row
_HEADER = struct.Struct("<IB")  # records, text format
_SEPARATED, _JSON = 1, 2  # text formats
_RS, _US, _GS = "\x1e", "\x1f", "\x1d"
_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")
_U32_PAIR = struct.Struct("<II")
_SWAP = sys.byteorder != "little"

Entry = tuple[float, str, int]  # (start, trace id, ref): what the lists and the trace store hold
Listed = tuple[str, ...]


def _column(kind: str, values: Iterable[Any]) -> bytes:
    a = array(kind, values)
    if _SWAP:  # pragma: no cover - big-endian machines
        a.byteswap()
    return a.tobytes()


def _from_column(kind: str, data: bytes) -> array[Any]:
    a = array(kind)
    a.frombytes(data)
    if _SWAP:  # pragma: no cover
        a.byteswap()
    return a


def encode_block(summaries: Sequence[TraceSummary], listed: Sequence[Listed] | None = None,
                 stored: bool = True) -> bytes:
    """The summaries (without their spans) as one ``trace_blocks`` row. ``listed``: the services whose
    lists hold each (copies; else its root service and services); ``stored``: their spans are in the
    block's spans row (the trace store keeps them).

    Layout (little-endian): n u32, text format u8, start f64[n], duration f64[n], spans i64[n],
    flags u8[n], offsets u32[n+1], then the records' texts (UTF-8) one after the other, each followed by
    a separator (record i: ``text[offsets[i]:offsets[i+1] - 1]``). A record's text is its trace id,
    root service, root name and services separated by US, and for a copy GS, the number of services it
    names and those, separated by US; or, if a string of the block holds one of those separators, a
    JSON array ``[id, root service, root name, [services](, [listed])]``.
    """
    n = len(summaries)
    if listed is None:
        records = [_US.join((s.trace_id, s.root_service, s.root_name, *s.services)) for s in summaries]
        separators = 2 * n
    else:
        records = [_US.join((s.trace_id, s.root_service, s.root_name, *s.services)) + _GS
                   + _US.join((str(len(names)), *names)) for s, names in zip(summaries, listed, strict=True)]
        separators = 2 * n + sum(map(len, listed))
    separators += sum(len(s.services) for s in summaries)
    text, form = _RS.join(records), _SEPARATED
    if (text.count(_US) != separators or text.count(_RS) != max(n - 1, 0)
            or text.count(_GS) != (0 if listed is None else n)):  # a name holds a separator
        form = _JSON
        rows: list[tuple[Any, ...]] = [(s.trace_id, s.root_service, s.root_name, s.services)
                                       for s in summaries]
        if listed is not None:
            rows = [(*row, names) for row, names in zip(rows, listed, strict=True)]
        records = [json.dumps(row, separators=(",", ":")) for row in rows]  # ASCII
        text = _RS.join(records)
    data = text.encode("utf-8", "surrogatepass")
    lengths = map(len, records) if len(data) == len(text) else (
        len(r.encode("utf-8", "surrogatepass")) for r in records)
    flag = _STORED if stored else 0
    return b"".join((
        _HEADER.pack(n, form),
        _column("d", [s.start for s in summaries]),
        _column("d", [s.duration for s in summaries]),
        _column("q", [s.spans for s in summaries]),
        bytes([flag | _ERROR if s.error else flag for s in summaries]),
        _column("I", itertools.accumulate((x + 1 for x in lengths), initial=0)),
        data,
    ))


def encode_spans(summaries: Sequence[TraceSummary]) -> bytes:
    """The packed spans of the summaries as one ``trace_block_spans`` row: offsets u32[n+1], then the
    packed spans one after the other (record i: ``data[offsets[i]:offsets[i+1]]``)."""
    packed = [s.packed_spans for s in summaries]
    offsets = itertools.accumulate(map(len, packed), initial=4 * (len(packed) + 1))
    return _column("I", offsets) + b"".join(packed)


def spans_at(read: Callable[[int, int], bytes], index: int) -> bytes:
    """Record ``index``'s packed spans from a spans row, ``read(offset, length)`` giving its bytes."""
    a, b = _U32_PAIR.unpack(read(4 * index, 8))
    return read(a, b - a)


Record = tuple[TraceSummary, Listed | None, bool]  # a summary without spans, a copy's services, stored


def _record(form: int, text: str, start: float, duration: float, spans: int, flags: int) -> Record:
    if form == _JSON:
        row = json.loads(text)
        fields, services, listed = row[:3], tuple(row[3]), tuple(row[4]) if len(row) > 4 else None
    else:
        head, copy, tail = text.partition(_GS)
        fields = head.split(_US)
        services, listed = tuple(fields[3:]), tuple(tail.split(_US)[1:]) if copy else None
    summary = TraceSummary(fields[0], fields[1], fields[2], start, duration, spans, bool(flags & _ERROR),
                           services)
    return summary, listed, bool(flags & _STORED)


def record_from(read: Callable[[int, int], bytes], index: int) -> Record:
    """Record ``index`` of a ``trace_blocks`` row, ``read(offset, length)`` giving its bytes: its summary
    (without spans), the services a copy names (None: an original), whether its spans are kept."""
    n, form = _HEADER.unpack(read(0, _HEADER.size))
    if not 0 <= index < n:
        raise ValueError(f"a block of {n} records has no record {index}")
    at = _HEADER.size + 8 * index
    offsets = _HEADER.size + 25 * n
    a, b = _U32_PAIR.unpack(read(offsets + 4 * index, 8))
    text = read(offsets + 4 * (n + 1) + a, b - a - 1).decode("utf-8", "surrogatepass")
    return _record(form, text, _F64.unpack(read(at, 8))[0], _F64.unpack(read(at + 8 * n, 8))[0],
                   _I64.unpack(read(at + 16 * n, 8))[0], read(_HEADER.size + 24 * n + index, 1)[0])


def record_at(data: bytes, index: int) -> Record:
    """Record ``index`` of a ``trace_blocks`` row held in memory (see :func:`record_from`)."""
    return record_from(lambda at, length: data[at:at + length], index)


def decode_block(data: bytes) -> list[Record]:
    """Every record of a ``trace_blocks`` row, in order."""
    n, form = _HEADER.unpack_from(data)
    starts = _HEADER.size
    counts, flags = starts + 16 * n, starts + 24 * n
    text = data[flags + n + 4 * (n + 1):].decode("utf-8", "surrogatepass")
    texts = text.split(_RS) if n else []
    if len(texts) != n:
        raise ValueError(f"a block of {n} records holds {len(texts)}")
    return [_record(form, *row) for row in zip(texts, _from_column("d", data[starts:starts + 8 * n]),
                                               _from_column("d", data[starts + 8 * n:counts]),
                                               _from_column("q", data[counts:flags]), data[flags:flags + n],
                                               strict=True)]


def _listed(s: TraceSummary) -> Listed:
    return s.services if s.root_service in s.services else (s.root_service, *s.services)


def _trim(entries: list[Entry]) -> None:
    """A service's list cut to its newest ``TRACES_PER_SERVICE`` (by start, then id) with one entry per
    trace, the last written (entries are kept in the order written after the sorted part a cut leaves)."""
    latest = {e[1]: e for e in entries}
    if len(latest) < len(entries):
        entries[:] = latest.values()
    entries.sort(reverse=True)
    del entries[TRACES_PER_SERVICE:]


class TraceIndex:
    """The lists, the trace store's index and the blocks' bookkeeping (see the module's docstring).

    Pure: :meth:`add` and :meth:`collect` say which blocks to write and delete, the catalog writes them.
    A service's list takes new entries at its end and is cut (:func:`_trim`) when it holds twice
    ``TRACES_PER_SERVICE``, when read, and before a collection.
    """

    def __init__(self, retention: Retention, next_block: int = 1) -> None:
        self.retention = retention
        self.next_block = next_block
        self._lists: dict[str, list[Entry]] = {}  # service -> its entries
        self._stored: dict[str, Entry] = {}  # the trace store: its entry by trace id
        self._store_heap: list[Entry] = []  # its entries and replaced ones, for the evictions
        self._newest = -math.inf  # the newest start in the trace store
        self._spans: dict[int, int] = {}  # block -> traces of the trace store in it (its spans row)
        self._blocks: dict[int, int] = {}  # block -> records in its row of trace_blocks
        self._records = 0
        self._collect_at = _COLLECT_SLACK

    # -- writing ---------------------------------------------------------------------------------
    def add(self, summaries: Sequence[TraceSummary]) -> tuple[int, list[int]]:
        """Take a call's summaries (distinct trace ids, at most ``BLOCK_RECORDS``) as a new block, listed
        and kept in the trace store; returns the block and the blocks whose spans rows are no longer
        needed."""
        block = self._new_block(len(summaries))
        base = block << BLOCK_BITS
        self._spans[block] = len(summaries)
        dropped: list[int] = []
        lists, room, put = self._lists, 2 * TRACES_PER_SERVICE, self._store_put
        for i, s in enumerate(summaries):
            entry = (s.start, s.trace_id, base | i)
            for service in _listed(s):
                entries = lists.get(service)
                if entries is None:
                    lists[service] = [entry]
                else:
                    entries.append(entry)
                    if len(entries) > room:
                        _trim(entries)
            put(entry, dropped)
        self._evict(dropped)
        return block, dropped

    def _new_block(self, records: int) -> int:
        if records > BLOCK_RECORDS:
            raise ValueError(f"a block holds at most {BLOCK_RECORDS} records, not {records}")
        block = self.next_block
        self.next_block += 1
        self._blocks[block] = records
        self._records += records
        return block

    def _store_put(self, entry: Entry, dropped: list[int]) -> None:
        old = self._stored.get(entry[1])
        self._stored[entry[1]] = entry
        heapq.heappush(self._store_heap, entry)
        if old is not None:
            self._unstore(old, dropped)
            if old[0] >= self._newest > entry[0]:
                self._newest = max(e[0] for e in self._stored.values())
        if entry[0] > self._newest:
            self._newest = entry[0]

    def _unstore(self, entry: Entry, dropped: list[int]) -> None:
        block = entry[2] >> BLOCK_BITS
        left = self._spans[block] - 1
        if left:
            self._spans[block] = left
        else:
            del self._spans[block]
            dropped.append(block)

    def _evict(self, dropped: list[int]) -> None:
        """The trace store's retention: older than ``trace_seconds`` before the newest start, then the
        oldest (by start, then id) beyond ``traces``."""
        heap, stored, spans = self._store_heap, self._stored, self._spans
        oldest, size, pop = self._newest - self.retention.trace_seconds, self.retention.traces, heapq.heappop
        while heap and (heap[0][0] < oldest or len(stored) > size):
            entry = pop(heap)
            if stored.get(entry[1]) is entry:
                del stored[entry[1]]
                block = entry[2] >> BLOCK_BITS  # _unstore, inline: once per trace in a steady state
                left = spans[block] - 1
                if left:
                    spans[block] = left
                else:
                    del spans[block]
                    dropped.append(block)
        if not stored:
            self._newest = -math.inf
        if len(heap) > 2 * len(stored) + 1024:  # replaced entries piled up
            heap[:] = stored.values()
            heapq.heapify(heap)

    # -- collection ------------------------------------------------------------------------------
    def collect_due(self) -> bool:
        return self._records > self._collect_at

    def collect(self) -> tuple[list[int], dict[int, list[str]]]:
        """The blocks nobody refers to (to delete), and the records to copy out of blocks less than half
        used, as many as keep the records on disk within 1.5 times those listed: ref -> the services
        still listing it (read them, then :meth:`copied`)."""
        live: set[Entry] = set()
        for entries in self._lists.values():
            _trim(entries)
            live.update(entries)
        used = Counter(e[2] >> BLOCK_BITS for e in live)
        dead = [b for b in self._blocks if b not in used and b not in self._spans]
        for b in dead:
            self._records -= self._blocks.pop(b)
        # the sparsest blocks first, until the records are within half again those listed (and those of
        # the blocks the trace store needs): each record copied frees the most
        spanned = sum(n for b, n in self._blocks.items() if b in self._spans)
        records, goal, sparse = self._records, len(live) * 3 // 2 + spanned, set()
        for b in sorted((b for b in used if b not in self._spans), key=lambda b: used[b] / self._blocks[b]):
            if records <= goal or 2 * used[b] >= self._blocks[b]:
                break
            sparse.add(b)
            records -= self._blocks[b] - used[b]
        copy: dict[int, list[str]] = {}
        if sparse:
            for service, entries in self._lists.items():
                for e in entries:
                    if e[2] >> BLOCK_BITS in sparse:
                        copy.setdefault(e[2], []).append(service)
        self._collect_at = records + max(records, _COLLECT_SLACK)
        return dead, copy

    def copied(self, found: dict[int, TraceSummary], copy: dict[int, list[str]]) -> tuple[
            list[int], int | None, list[TraceSummary], list[Listed]]:
        """Move the listed records of :meth:`collect` (``found``: those read, by ref) to one new block of
        copies (its summaries and listed services to write); returns the blocks they leave (to delete),
        the new block (None if nothing was found) and its records."""
        left = sorted({ref >> BLOCK_BITS for ref in copy})
        for b in left:
            self._records -= self._blocks.pop(b)
        refs = [ref for ref in sorted(copy) if ref in found]  # the others' blocks are gone: unlisted
        block = self._new_block(len(refs)) if refs else 0
        moved = {ref: (found[ref].start, found[ref].trace_id, block << BLOCK_BITS | i)
                 for i, ref in enumerate(refs)}
        for service in {service for services in copy.values() for service in services}:
            entries = self._lists[service]  # after the collection's cut: one entry per trace
            entries[:] = [moved.get(e[2], e) for e in entries if e[2] in moved or e[2] not in copy]
        if not refs:
            return left, None, [], []
        return left, block, [found[ref] for ref in refs], [tuple(copy[ref]) for ref in refs]

    # -- reading ---------------------------------------------------------------------------------
    def newest(self, service: str, limit: int) -> list[int]:
        """The refs of the service's newest ``limit`` traces (at most ``TRACES_PER_SERVICE``), newest
        first."""
        entries = self._lists.get(service)
        if entries is None or limit <= 0:
            return []
        _trim(entries)
        return [e[2] for e in entries[:limit]]

    def stored(self, trace_id: str) -> int | None:
        """The ref of the trace store's record of this trace."""
        entry = self._stored.get(trace_id)
        return None if entry is None else entry[2]

    @property
    def records(self) -> int:
        """Records in the rows of ``trace_blocks``."""
        return self._records

    # -- rebuilding ------------------------------------------------------------------------------
    def load(self, block: int, records: Sequence[Record], spans: bool) -> None:
        """Take back a block written before (oldest first); ``spans``: its spans row is there. Call
        :meth:`loaded` after the last."""
        self.next_block = max(self.next_block, block + 1)
        self._blocks[block] = len(records)
        self._records += len(records)
        base, unused = block << BLOCK_BITS, list[int]()
        for i, (s, names, stored) in enumerate(records):
            entry = (s.start, s.trace_id, base | i)
            for service in _listed(s) if names is None else names:
                entries = self._lists.setdefault(service, [])
                entries.append(entry)
                if len(entries) > 2 * TRACES_PER_SERVICE:
                    _trim(entries)
            if stored and spans:
                self._spans[block] = self._spans.get(block, 0) + 1
                self._store_put(entry, unused)

    def loaded(self, spans_rows: Iterable[int]) -> list[int]:
        """Apply the trace store's retention after :meth:`load`; returns the spans rows no longer
        needed."""
        dropped: list[int] = []
        self._evict(dropped)
        dropped.extend(b for b in spans_rows if b not in self._spans and b not in dropped)
        self._collect_at = _COLLECT_SLACK  # the first write collects what the last run left
        return dropped

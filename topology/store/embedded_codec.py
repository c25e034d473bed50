"""How the embedded store writes an :class:`EdgeStats` into one SQLite column, and merges many at once.

Format ``CODEC`` (recorded in each database's ``meta`` table): a :mod:`marshal` dump of a fixed
16-tuple of the fields in declaration order, with the latency sketch as
``(scale, offset, zero count, counts)`` (None when unmeasured; see :mod:`topology.sketch`). Only
``None``, ``int``, ``float``, ``str`` and tuples of them are written, so it reads back exactly (and
~5-10x faster than JSON, at 40% of its size). marshal's encoding of these basic types has not
changed since Python 3.4; the ``meta`` entry lets a future format be told apart.

Databases of the previous formats (:data:`OLD_CODECS`) are read as they are and new windows are
written in the new format beside them: ``compact-7`` records and packs are those of ``compact-6``,
but presence intervals (``spans``) may be stored as varints (``embedded_index.to_blob``), which a
reader of ``compact-6`` would misread; ``compact-6`` records are those of ``compact-5``, but the
finished hours' minute windows and days' hour windows move into packs (``embedded_pack.py``), which
a reader of ``compact-5`` would not see (so it must refuse the database); ``compact-4`` records
spell their shape out in a 9-byte header (tag 2) instead of naming it in the ``shapes`` table
(tag 3, :class:`StatsCodec`); ``compact-3`` windows hold the old power-of-two histogram as
``(first non-zero bucket, counts)``, which :func:`stored_sketch` converts on reading
(:meth:`LatencySketch.from_power_of_two`). A database of a newer format is refused with a message
naming both formats (``EmbeddedLayerStore``).
"""

from __future__ import annotations

import marshal
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, TypeVar

import numpy as np

from topology.sketch import EMPTY, SCALE, LatencySketch, merge_sketches
from topology.sketch_batch import QuantileBatch
from topology.stats import (
    MAX_ENDPOINTS,
    MAX_EXEMPLARS,
    MAX_INTERMEDIARIES,
    MAX_PORTS,
    OLD_LATENCY_BUCKETS,
    EdgeStats,
)

CODEC = "compact-7"
#: Formats this version reads too (and then writes CODEC beside).
OLD_CODECS = ("compact-3", "compact-4", "compact-5", "compact-6")
T = TypeVar("T")

_SMALL_TUPLE = ord(")")  # marshal's type code of a small tuple (its high bit flags a shared reference)
_HEALTH_ORDER = {"UNKNOWN": 0, "HEALTHY": 1, "DEGRADED": 2, "UNHEALTHY": 3}


def _strs(t: tuple[str, ...]) -> tuple[str, ...]:
    return t if all(type(x) is str for x in t) else tuple(str(x) for x in t)


def _ints(t: tuple[int, ...]) -> tuple[int, ...]:
    return t if all(type(x) is int for x in t) else tuple(int(x) for x in t)


StoredSketch = tuple[int, int, int, tuple[int, ...]]  # scale, offset, zero, counts


def stored(lat: LatencySketch) -> StoredSketch | None:
    """A sketch as stored: ``(scale, offset, zero, counts)``; None if unmeasured."""
    if not lat.total:
        return None
    return int(lat.scale), int(lat.offset), int(lat.zero), _ints(lat.counts)


def stored_sketch(f: tuple[Any, ...] | None) -> LatencySketch:
    """The sketch of a stored field: ``(scale, offset, zero, counts)``, the old
    ``(first bucket, counts)`` of a power-of-two histogram, or None."""
    if f is None:
        return EMPTY
    if len(f) == 4:
        return LatencySketch(f[0], f[1], f[3], f[2])
    lo, counts = f
    hist = [0] * OLD_LATENCY_BUCKETS
    hist[lo : lo + len(counts)] = counts
    return LatencySketch.from_power_of_two(hist)


def encode(s: EdgeStats) -> bytes:
    return marshal.dumps(
        (
            float(s.first_seen),
            float(s.last_seen),
            None if s.protocol is None else str(s.protocol),
            _ints(s.ports),
            int(s.connections),
            int(s.bytes_sent),
            int(s.bytes_received),
            _strs(s.intermediaries),
            int(s.requests),
            int(s.errors),
            stored(s.latency),
            float(s.latency_sum),
            _strs(s.endpoints),
            _strs(s.exemplars),
            None if s.connection_type is None else str(s.connection_type),
            str(s.health),
        )
    )


def decode_fields(blob: bytes) -> tuple[Any, ...]:
    """The stored 16-tuple, the sketch as stored (for readers that want columns, not objects)."""
    if len(blob) < 2 or blob[0] & 0x7F != _SMALL_TUPLE or blob[1] != 16:
        raise ValueError("corrupt stats record: not a stored stats tuple")
    try:
        fields = marshal.loads(blob)
    except (EOFError, ValueError, TypeError, MemoryError) as e:
        raise ValueError(f"corrupt stats record: {e!r}") from e
    if type(fields) is not tuple or len(fields) != 16:
        raise ValueError("corrupt stats record: not a stored stats tuple")
    return fields


def decode(blob: bytes) -> EdgeStats:
    f = decode_fields(blob)
    try:
        return EdgeStats(
            f[0],
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            stored_sketch(f[10]),
            f[11],
            f[12],
            f[13],
            f[14],
            f[15],
        )
    except (TypeError, ValueError, IndexError) as e:
        raise ValueError(f"corrupt stats record: {e}") from e


def _union(parts: list[tuple[T, ...]], limit: int) -> tuple[T, ...]:
    """What folding ``_bounded_union`` over ``parts`` gives: a lone non-empty part as it is, else the
    sorted union cut to ``limit``."""
    nonempty = [p for p in parts if p]
    if not nonempty:
        return ()
    if len(nonempty) == 1:
        return nonempty[0]
    found: set[T] = set()
    for p in nonempty:
        found.update(p)
    return tuple(sorted(found)[:limit])  # type: ignore[type-var]


def merge_all(items: Sequence[EdgeStats]) -> EdgeStats:
    """The same as ``items[0].merge(items[1]).merge(items[2])...``, in one pass."""
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return items[0].merge(items[1])
    firsts = [s.first_seen for s in items if s.first_seen]
    latency = merge_sketches(s.latency for s in items)
    health = max((s.health for s in items), key=lambda h: _HEALTH_ORDER.get(h, 0))  # the first of the worst
    return EdgeStats(
        first_seen=min(firsts) if firsts else 0.0,
        last_seen=max(s.last_seen for s in items),
        protocol=next((s.protocol for s in items if s.protocol), items[-1].protocol),
        ports=_union([s.ports for s in items], MAX_PORTS),
        connections=sum(s.connections for s in items),
        bytes_sent=sum(s.bytes_sent for s in items),
        bytes_received=sum(s.bytes_received for s in items),
        intermediaries=_union([s.intermediaries for s in items], MAX_INTERMEDIARIES),
        requests=sum(s.requests for s in items),
        errors=sum(s.errors for s in items),
        latency=latency,
        latency_sum=sum(s.latency_sum for s in items),
        endpoints=_union([s.endpoints for s in items], MAX_ENDPOINTS),
        exemplars=_union([s.exemplars for s in items], MAX_EXEMPLARS),
        connection_type=next(
            (s.connection_type for s in items if s.connection_type), items[-1].connection_type
        ),
        health=health,
    )


def merge_fields(items: Sequence[tuple[Any, ...]]) -> EdgeStats:
    """:func:`merge_all` of stored tuples (``decode_fields``), without building each EdgeStats."""
    if len(items) == 1:
        f = items[0]
        return EdgeStats(
            f[0],
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            stored_sketch(f[10]),
            f[11],
            f[12],
            f[13],
            f[14],
            f[15],
        )
    (
        first,
        last,
        protocol,
        ports,
        conns,
        sent,
        received,
        inter,
        requests,
        errors,
        lats,
        lat_sum,
        endpoints,
        exemplars,
        ctype,
        health,
    ) = zip(*items, strict=True)
    firsts = [t for t in first if t]
    latency = merge_sketches(stored_sketch(t) for t in lats if t is not None)
    return EdgeStats(
        first_seen=min(firsts) if firsts else 0.0,
        last_seen=max(last),
        protocol=next((p for p in protocol if p), protocol[-1]),
        ports=_union(list(ports), MAX_PORTS),
        connections=sum(conns),
        bytes_sent=sum(sent),
        bytes_received=sum(received),
        intermediaries=_union(list(inter), MAX_INTERMEDIARIES),
        requests=sum(requests),
        errors=sum(errors),
        latency=latency,
        latency_sum=sum(lat_sum),
        endpoints=_union(list(endpoints), MAX_ENDPOINTS),
        exemplars=_union(list(exemplars), MAX_EXEMPLARS),
        connection_type=next((c for c in ctype if c), ctype[-1]),
        health=max(health, key=lambda h: _HEALTH_ORDER.get(h, 0)),
    )


# -- the compact format ------------------------------------------------------------------------------
_HEADER = struct.Struct("<BHIH")  # tag, field mask, 2-bit codes per field, latency buckets stored
_OLD_HEADER = struct.Struct("<BHIB")  # the same with at most 255 buckets (power-of-two histograms)
_TAG_PLAIN, _TAG_OLD_COMPACT, _TAG_COMPACT, _TAG_SHAPED = 0, 1, 2, 3
Shape = tuple[int, int, int]  # field mask, 2-bit codes per field, latency buckets stored (nlat)
MAX_SHAPES = 1 << 21  # shape ids are varints of at most 3 bytes
_INT_CODES = "BHIQ"
_TIME_CODES = "HIqd"
_HEALTH_CODE = {"HEALTHY": 1, "DEGRADED": 2, "UNHEALTHY": 3}
_HEALTH_NAME = {v: k for k, v in _HEALTH_CODE.items()}
_INT_FIELDS = (4, 5, 6, 8, 9)  # connections, bytes_sent, bytes_received, requests, errors
_HEX = frozenset("0123456789abcdef")
Attrs = tuple[Any, Any, Any, Any, Any]  # protocol, ports, intermediaries, endpoints, connection_type
_NO_ATTRS: Attrs = (None, (), (), (), None)


_SPARSE = 0x8000  # the nlat flag of a sparse latency sketch


def _varint(i: int) -> bytes:
    """``i`` (0 <= i < MAX_SHAPES) in 1-3 bytes, 7 bits each, low first, the high bit: more follows."""
    if i < 0x80:
        return bytes((i,))
    if i < 0x4000:
        return bytes((i & 0x7F | 0x80, i >> 7))
    return bytes((i & 0x7F | 0x80, i >> 7 & 0x7F | 0x80, i >> 14))


def _head_size(blob: bytes) -> int:
    """Bytes of a shaped record's header (tag and shape id); 0 if it is not one (or is cut short)."""
    if len(blob) < 2 or blob[0] != _TAG_SHAPED:
        return 0
    if blob[1] < 0x80:
        return 2
    if len(blob) < 3:
        return 0
    if blob[2] < 0x80:
        return 3
    return 4 if len(blob) > 3 else 0
_WIDTH = (1, 2, 4, 8)  # bytes of each integer code
_RUN_DTYPES = tuple(np.dtype("<" + c) for c in _INT_CODES)
_PAIR_DTYPES = tuple(np.dtype([("gap", "<u1"), ("count", "<" + c)]) for c in _INT_CODES)


def _sparse(counts: tuple[int, ...], width: int) -> list[int] | None:
    """``counts`` as (empty buckets skipped, count) pairs, if that is smaller and every gap fits a byte."""
    nonzero = len(counts) - counts.count(0)
    if nonzero * (1 + _WIDTH[width]) >= len(counts) * _WIDTH[width] or nonzero >= _SPARSE:
        return None
    if width == 0:  # every count is a byte (bytes() raises otherwise): found by the regex engine
        at = [m.start() for m in _NONZERO.finditer(bytes(counts))]
    else:
        at = [i for i, n in enumerate(counts) if n]
    out: list[int] = []
    prev = -1
    for i in at:
        if i - prev > 256:
            return None
        out += (i - prev - 1, counts[i])
        prev = i
    return out


_NONZERO = re.compile(rb"[^\x00]")


def _dense(pairs: tuple[int, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for i in range(0, len(pairs), 2):
        if pairs[i]:
            out.extend([0] * pairs[i])
        out.append(pairs[i + 1])
    return tuple(out)


class _Plain(Exception):
    """This record is written in the plain format."""


def _int_code(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise _Plain
    if v < 0x100:
        return 0
    if v < 0x10000:
        return 1
    if v < 0x100000000:
        return 2
    if v < 0x10000000000000000:
        return 3
    raise _Plain


#: Mask bits no field uses (ports and intermediaries live in ``attrs``), flags of the shape instead:
_FINE = 1 << 3  # time code 2 is a count of 2**-22 s after the window start (``_TICK``), not int64 ms
_EXEMPLAR_16 = 1 << 7  # every exemplar is 16 bytes (a W3C trace id): no length byte before each
_FLAGS = _FINE | _EXEMPLAR_16
_TICKS = 4194304.0  # 2**22 per second: the spacing of float64 epoch seconds from 2004 to 2038


def _time(t: float, base: int) -> tuple[int, float | int, bool]:
    """(code, value, fine): milliseconds after ``base`` when that is exact, else (span times in
    nanoseconds are not) ticks of 2**-22 s after ``base`` when exact, else the float itself."""
    if type(t) is float and t == t and abs(t) < 1e15:
        ms = round(t * 1000)
        if ms / 1000 == t:
            k = ms - base * 1000
            if 0 <= k < 0x10000:
                return 0, k, False
            if 0 <= k < 0x100000000:
                return 1, k, False
            return 2, k, False
        ticks = (t - base) * _TICKS
        if 0 <= ticks < 0x100000000 and ticks == int(ticks) and base + int(ticks) / _TICKS == t:
            return 2, int(ticks), True
    return 3, float(t), False


_SENTINELS = (0, 0.0, -1)  # appended to the unpacked values: what absent fields read
_ZERO, _ZERO_F, _NONE = -3, -2, -1


class _Plan:
    """How to unpack one shape (field mask, width codes, histogram length, old or new latency)."""

    __slots__ = ("calls", "calls_at", "first_fine", "first_ms", "floats", "head", "ints", "last_fine",
                 "last_ms", "lat", "lat_end", "record", "run", "struct")

    def __init__(self, mask: int, codes: int, nlat: int, old: bool) -> None:
        fmt = ["<"]
        pos: dict[int, int] = {}
        n = 0
        before_lat: list[str] = []  # the formats of the fields before the sketch
        fine = bool(mask & _FINE)
        for f in range(16):
            if not mask >> f & 1 or 1 << f & _FLAGS:
                continue
            c = codes >> (2 * f) & 3
            pos[f] = n
            if f < 2:
                fmt.append("I" if fine and c == 2 else _TIME_CODES[c])
                n += 1
            elif f == 2 or f in _INT_FIELDS:
                fmt.append(_INT_CODES[c])
                n += 1
            elif f == 10 and old:
                fmt.append("B" + _INT_CODES[c] * nlat)
                n += 1 + nlat
            elif f == 10 and nlat & _SPARSE:  # scale, offset, zero count, (gap, count) per bucket
                before_lat = fmt[1:]
                k = nlat & ~_SPARSE
                fmt.append("bh" + _INT_CODES[c] + ("B" + _INT_CODES[c]) * k)
                n += 3 + 2 * k
            elif f == 10:  # scale, offset, zero count, counts
                before_lat = fmt[1:]
                fmt.append("bh" + _INT_CODES[c] * (1 + nlat))
                n += 3 + nlat
            elif f == 11:
                fmt.append("d")
                n += 1
        self.struct = struct.Struct("".join(fmt))
        self.first_fine = 0 in pos and fine and codes & 3 == 2
        self.last_fine = 1 in pos and fine and codes >> 2 & 3 == 2
        self.first_ms = 0 in pos and codes & 3 != 3 and not self.first_fine
        self.last_ms = 1 in pos and codes >> 2 & 3 != 3 and not self.last_fine
        self.floats = itemgetter(
            pos.get(0, _ZERO_F), pos.get(1, _ZERO_F), pos.get(11, _ZERO_F), pos.get(2, _NONE)
        )
        self.ints = itemgetter(*(pos.get(f, _ZERO) for f in _INT_FIELDS))
        self.calls = itemgetter(pos.get(8, _ZERO), pos.get(9, _ZERO))  # requests, errors
        self.lat = pos.get(10, -1)
        self.lat_end = self.lat + 3 + (2 * (nlat & ~_SPARSE) if nlat & _SPARSE else nlat)  # new format
        # for readers of many records (StatsCodec.calls_into): the fields up to the sketch's zero
        # count, then the sketch's counts as one run of equal-width integers (or (gap, count) pairs)
        self.calls_at = (pos.get(8, -1), pos.get(9, -1))  # requests, errors among the values (-1: absent)
        self.head: struct.Struct | None = None
        self.run = (0, 0, False)  # width code of the counts, how many, sparse
        # the record's values as a numpy dtype (after its header): the head's values one field each, the
        # counts as one array field "run"; None where records of this shape can carry exemplars
        self.record: np.dtype[Any] | None = None
        if 10 in pos and not old:
            c = codes >> 20 & 3
            self.head = struct.Struct("<" + "".join(before_lat) + "bh" + _INT_CODES[c])
            self.run = (c, nlat & ~_SPARSE, bool(nlat & _SPARSE))
            if not mask & 1 << 13:
                n_run = self.run[1]
                run_type = _PAIR_DTYPES[c] if self.run[2] else _RUN_DTYPES[c]
                rest = self.struct.size - self.head.size - n_run * run_type.itemsize
                fields: list[tuple[Any, ...]] = [
                    (f"v{i}", "<" + ch) for i, ch in enumerate(self.head.format[1:])
                ]
                fields.append(("run", run_type, (n_run,)))
                if rest:
                    fields.append(("rest", f"V{rest}"))
                self.record = np.dtype(fields)

class StatsCodec:
    """The compact format of one database: about 15-45 bytes a window instead of 90-140.

    ``tag(1) shape(1-3)`` then the present fields packed with the smallest integer width that holds
    them, then exemplars as bytes. The shape - which fields are present (a 16-bit mask), the width of
    each (2 bits per field, ``codes``) and how many latency buckets are stored (``nlat``) - is one
    varint id into the database's ``shapes`` table: a store holds a few thousand shapes and billions of
    windows, so the 8 bytes it took in every record (format ``compact-4``, tag 2, still read) are the
    biggest saving. The latency sketch is ``scale offset zero`` and its counts, dense (``nlat``
    counts) or, where that is smaller (few calls spread wide), sparse: ``nlat = 0x8000 | k`` and ``k``
    pairs of (empty buckets skipped, count). Times are stored as milliseconds after the window start
    when that is exact; the set-like fields (protocol, ports, intermediaries, endpoints, connection
    type), which rarely change, are one id into the database's ``attrs`` table. Anything unusual
    (negative or huge counters, odd exemplars or health values) falls back to the plain format
    (``encode``) behind a tag byte: exact either way.

    Encoding happens on the writer thread only; new ``attrs`` and ``shapes`` rows are handed to the
    same transaction (:meth:`take_new`, :meth:`take_new_shapes`) and forgotten again if it fails
    (:meth:`undo`).
    """

    def __init__(self) -> None:
        self._ids: dict[Attrs, int] = {}
        self._values: list[Attrs] = []
        self._saved = 0  # values below this index are in the table
        self._shape_ids: dict[Shape, int] = {}
        self._shapes: list[Shape] = []
        self._shapes_saved = 0
        self._heads: dict[bytes, bytes] = {}  # shape id -> the header of its records
        self._plans: dict[tuple[int, int, int, bool], _Plan] = {}

    def load(
        self, rows: Iterable[tuple[int, bytes]], shapes: Iterable[tuple[int, int, int, int]] = ()
    ) -> None:
        """Read the database's ``attrs`` rows (id, value) and ``shapes`` rows (id, mask, codes, nlat)."""
        for i, blob in sorted(rows):
            if i != len(self._values):
                raise ValueError(f"the attrs table has a gap at id {len(self._values)}")
            value: Attrs = tuple(marshal.loads(blob))
            self._ids[value] = i
            self._values.append(value)
        self._saved = len(self._values)
        for i, mask, codes, nlat in sorted(shapes):
            if i != len(self._shapes):
                raise ValueError(f"the shapes table has a gap at id {len(self._shapes)}")
            self._shape_ids[(mask, codes, nlat)] = i
            self._shapes.append((mask, codes, nlat))
        self._shapes_saved = len(self._shapes)

    def take_new(self) -> list[tuple[int, bytes]]:
        """``attrs`` rows to insert with the windows just encoded."""
        new = [(i, marshal.dumps(self._values[i])) for i in range(self._saved, len(self._values))]
        self._saved = len(self._values)
        return new

    def take_new_shapes(self) -> list[tuple[int, int, int, int]]:
        """``shapes`` rows (id, mask, codes, nlat) to insert with the windows just encoded."""
        new = [(i, *self._shapes[i]) for i in range(self._shapes_saved, len(self._shapes))]
        self._shapes_saved = len(self._shapes)
        return new

    def mark(self) -> tuple[int, int]:
        return len(self._values), len(self._shapes)

    def undo(self, mark: tuple[int, int]) -> None:
        """The transaction failed: forget the values and shapes added since ``mark``."""
        values, shapes = mark
        for value in self._values[values:]:
            del self._ids[value]
        del self._values[values:]
        self._saved = min(self._saved, values)
        for shape in self._shapes[shapes:]:
            del self._shape_ids[shape]
        del self._shapes[shapes:]
        self._shapes_saved = min(self._shapes_saved, shapes)

    def _attr_id(self, a: Attrs) -> int:
        i = self._ids.get(a)
        if i is None:
            marshal.dumps(a)  # only basic types: raises ValueError otherwise
            i = self._ids[a] = len(self._values)
            self._values.append(a)
        return i

    def _shape_head(self, mask: int, codes: int, nlat: int) -> bytes:
        """The header of records of this shape (tag, shape id), the shape interned if new."""
        i = self._shape_ids.get((mask, codes, nlat))
        if i is None:
            i = len(self._shapes)
            if i >= MAX_SHAPES:
                raise _Plain
            self._shape_ids[(mask, codes, nlat)] = i
            self._shapes.append((mask, codes, nlat))
        return bytes((_TAG_SHAPED,)) + _varint(i)

    def _plan(self, mask: int, codes: int, nlat: int, old: bool = False) -> _Plan:
        key = (mask, codes, nlat, old)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(mask, codes, nlat, old)
        return plan

    def _header(self, blob: bytes) -> tuple[int, int, int, int, bool]:
        """(mask, codes, nlat, header size, old) of a compact record (struct.error, IndexError or
        ValueError if it is not one)."""
        tag = blob[0]
        if tag == _TAG_SHAPED:
            n = _head_size(blob)
            if not n:
                raise ValueError("cut short")
            i = blob[1] & 0x7F
            if n > 2:
                i |= (blob[2] & 0x7F) << 7
            if n > 3:
                i |= blob[3] << 14
            mask, codes, nlat = self._shapes[i]
            return mask, codes, nlat, n, False
        if tag == _TAG_COMPACT:
            _, mask, codes, nlat = _HEADER.unpack_from(blob)
            return mask, codes, nlat, _HEADER.size, False
        if tag == _TAG_OLD_COMPACT:
            _, mask, codes, nlat = _OLD_HEADER.unpack_from(blob)
            return mask, codes, nlat, _OLD_HEADER.size, True
        raise ValueError(f"unknown record tag {tag}")

    # -- writing -----------------------------------------------------------------------------------
    def encode(self, s: EdgeStats, base: int) -> bytes:
        try:
            return self._compact(s, base)
        except (_Plain, ValueError, TypeError, OverflowError, struct.error):
            return bytes((_TAG_PLAIN,)) + encode(s)

    def _compact(self, s: EdgeStats, base: int) -> bytes:
        mask = codes = nlat = 0
        vals: list[Any] = []
        first, last = s.first_seen, s.last_seen
        x0 = _time(first, base) if first else None
        x1 = _time(last, base) if last else None
        fine = (x0 is not None and x0[2]) or (x1 is not None and x1[2])
        if x0 is not None:
            c, v, its_fine = x0
            if fine and c == 2 and not its_fine:  # code 2 means ticks in this record: the float itself
                c, v = 3, float(first)
            mask, codes = 1, c
            vals.append(v)
        if x1 is not None:
            c, v, its_fine = x1
            if fine and c == 2 and not its_fine:
                c, v = 3, float(last)
            mask |= 2
            codes |= c << 2
            vals.append(v)
        if fine:
            mask |= _FINE
        attrs = (s.protocol, s.ports, s.intermediaries, s.endpoints, s.connection_type)
        if attrs != _NO_ATTRS:
            i = self._attr_id(attrs)
            mask |= 4
            codes |= _int_code(i) << 4
            vals.append(i)
        for f, v in ((4, s.connections), (5, s.bytes_sent), (6, s.bytes_received), (8, s.requests),
                     (9, s.errors)):
            if v:
                mask |= 1 << f
                codes |= _int_code(v) << (2 * f)
                vals.append(v)
        lat = s.latency
        if lat.total:
            if type(lat) is not LatencySketch:
                raise _Plain
            counts = lat.counts
            width = _int_code(max(lat.zero, max(counts, default=0)))
            mask |= 1 << 10
            codes |= width << 20
            vals += (lat.scale, lat.offset, lat.zero)
            sparse = _sparse(counts, width)
            if sparse is None:
                nlat = len(counts)
                vals.extend(counts)
            else:
                nlat = _SPARSE | len(sparse) // 2
                vals.extend(sparse)
        if s.latency_sum:
            if type(s.latency_sum) is not float:
                raise _Plain
            mask |= 1 << 11
            vals.append(s.latency_sum)
        tail = b""
        ex = s.exemplars
        if ex and all(type(x) is str and len(x) == 32 for x in ex) and _HEX.issuperset(joined := "".join(ex)):
            mask |= _EXEMPLAR_16 | 1 << 13
            tail = bytes((len(ex),)) + bytes.fromhex(joined)
        elif ex:
            parts = [bytes((len(s.exemplars),))]
            for x in s.exemplars:
                if type(x) is not str or len(x) % 2 or not 0 < len(x) <= 510 or not _HEX.issuperset(x):
                    raise _Plain
            if all(len(x) == 32 for x in s.exemplars):
                mask |= _EXEMPLAR_16
                parts += [bytes.fromhex(x) for x in s.exemplars]
            else:
                parts += [bytes((len(x) // 2,)) + bytes.fromhex(x) for x in s.exemplars]
            mask |= 1 << 13
            tail = b"".join(parts)
        if s.health != "UNKNOWN":
            h = _HEALTH_CODE.get(s.health)
            if h is None:
                raise _Plain
            mask |= 1 << 15
            codes |= h << 30
        body = self._plan(mask, codes, nlat).struct.pack(*vals)  # before the shape is interned: may raise
        return self._shape_head(mask, codes, nlat) + body + tail

    # -- reading -----------------------------------------------------------------------------------
    def decode_fields(self, blob: bytes, base: int) -> tuple[Any, ...]:
        """The 16 fields in declaration order, the sketch as stored (see :func:`stored_sketch`)."""
        if not blob:
            raise ValueError("corrupt stats record: empty")
        if blob[0] == _TAG_PLAIN:
            return decode_fields(blob[1:])
        try:
            mask, codes, nlat, hsize, old = self._header(blob)
            plan = self._plan(mask, codes, nlat, old)
            vals = plan.struct.unpack_from(blob, hsize) + _SENTINELS
            first, last, lat_sum, attr_id = plan.floats(vals)
            if plan.first_ms:
                first = (base * 1000 + first) / 1000
            elif plan.first_fine:
                first = base + first / _TICKS
            if plan.last_ms:
                last = (base * 1000 + last) / 1000
            elif plan.last_fine:
                last = base + last / _TICKS
            attrs = self._values[attr_id] if attr_id >= 0 else _NO_ATTRS
            conns, sent, received, requests, errors = plan.ints(vals)
            p = plan.lat
            lat: tuple[Any, ...] | None
            if p < 0:
                lat = None
            elif old:
                lat = (vals[p], vals[p + 1 : p + 1 + nlat])
            elif nlat & _SPARSE:
                lat = (vals[p], vals[p + 1], vals[p + 2], _dense(vals[p + 3 : p + 3 + 2 * (nlat & ~_SPARSE)]))
            else:
                lat = (vals[p], vals[p + 1], vals[p + 2], vals[p + 3 : p + 3 + nlat])
            exemplars: tuple[str, ...] = ()
            if mask & 1 << 13:
                pos = hsize + plan.struct.size
                out = []
                if mask & _EXEMPLAR_16:
                    pos += 1
                    for _ in range(blob[pos - 1]):
                        if pos + 16 > len(blob):
                            raise IndexError("exemplars cut short")
                        out.append(blob[pos : pos + 16].hex())
                        pos += 16
                else:
                    for _ in range(blob[pos]):
                        n = blob[pos + 1]
                        out.append(blob[pos + 2 : pos + 2 + n].hex())
                        pos += 1 + n
                exemplars = tuple(out)
            health = _HEALTH_NAME[codes >> 30 & 3] if mask & 1 << 15 else "UNKNOWN"
        except (struct.error, IndexError, KeyError, ValueError) as e:
            raise ValueError(f"corrupt stats record: {e}") from e
        return (
            first,
            last,
            attrs[0],
            attrs[1],
            conns,
            sent,
            received,
            attrs[2],
            requests,
            errors,
            lat,
            lat_sum,
            attrs[3],
            exemplars,
            attrs[4],
            health,
        )

    def decode_calls(self, blob: bytes, base: int) -> tuple[int, int, Any]:
        """Only requests, errors and the latency sketch, for readers that judge calls: the sketch as
        ``(scale, offset, zero, values, sparse)`` with sparse pairs left unexpanded, a LatencySketch
        (old or plain records) or None (unmeasured)."""
        if blob and (blob[0] == _TAG_SHAPED or blob[0] == _TAG_COMPACT):
            try:
                mask, codes, nlat, hsize, _ = self._header(blob)
                plan = self._plan(mask, codes, nlat)
                vals = plan.struct.unpack_from(blob, hsize) + _SENTINELS
            except (struct.error, IndexError, KeyError, ValueError) as e:
                raise ValueError(f"corrupt stats record: {e}") from e
            requests, errors = plan.calls(vals)
            p = plan.lat
            if p < 0:
                return requests, errors, None
            return requests, errors, (vals[p], vals[p + 1], vals[p + 2], vals[p + 3 : plan.lat_end],
                                      nlat >= _SPARSE)
        f = self.decode_fields(blob, base)
        return f[8], f[9], stored_sketch(f[10]) if f[10] is not None else None

    def calls_into(self, rows: Sequence[tuple[int, int, bytes]], group: Mapping[int, int],
                   batch: QuantileBatch) -> dict[int, tuple[int, int]]:
        """Requests and errors summed per edge id of the stored windows ``rows`` (edge, start, blob),
        their sketches added to ``batch`` (edge ``e``'s as group ``group[e]``): what
        :meth:`decode_calls` of each gives, with the counts of many records read in one
        ``np.frombuffer`` per integer width instead of a tuple per record."""
        sums: dict[int, tuple[int, int]] = {}
        # records of one shape (the same header, no exemplars) are read as one numpy array each
        shapes: dict[bytes, list[tuple[int, int, bytes]]] = {}
        one_by_one: list[tuple[int, int, bytes]] = []
        for row in rows:
            blob = row[2]
            tag = blob[:1]
            if tag == b"\x03":
                n = _head_size(blob)
                if n:
                    shapes.setdefault(blob[:n], []).append(row)
                    continue
            elif tag == b"\x02" and len(blob) >= _HEADER.size:
                shapes.setdefault(blob[: _HEADER.size], []).append(row)
                continue
            one_by_one.append(row)
        for header, same in shapes.items():
            if not self._calls_of_shape(header, same, group, batch, sums):
                one_by_one += same
        self._calls_one_by_one(one_by_one, group, batch, sums)
        return sums

    def _calls_of_shape(self, header: bytes, rows: list[tuple[int, int, bytes]], group: Mapping[int, int],
                        batch: QuantileBatch, sums: dict[int, tuple[int, int]]) -> bool:
        """:meth:`calls_into` for records of one header, vectorised; False (nothing done) where they do not
        fit one array (exemplars, another length, a scale other than ours)."""
        try:
            mask, codes, nlat, hsize, _ = self._header(header)
        except (struct.error, IndexError, ValueError):
            return False  # decode_calls says what is wrong
        plan = self._plans.get((mask, codes, nlat, False)) or self._plan(mask, codes, nlat)
        record = plan.record
        size = hsize + (record.itemsize if record is not None else 0)
        if record is None or any(len(row[2]) != size for row in rows):
            return False
        arr = np.frombuffer(b"".join([row[2][hsize:] for row in rows]), record)
        p = plan.lat
        if not (arr[f"v{p}"] == SCALE).all():
            return False
        at = np.array([group[row[0]] for row in rows], np.int64)
        _, n, sparse = plan.run
        offsets, zeros = arr[f"v{p + 1}"].astype(np.int64), arr[f"v{p + 2}"].astype(np.int64)
        lengths = np.full(len(rows), n, np.int64)
        if sparse:
            pairs = arr["run"].reshape(-1)
            batch.add_sparse_runs(at, offsets, lengths, zeros, pairs["gap"].astype(np.int64), pairs["count"])
        else:
            batch.add_runs(at, offsets, lengths, zeros, arr["run"].reshape(-1))
        got = [arr[f"v{i}"].tolist() if i >= 0 else [0] * len(rows) for i in plan.calls_at]
        for row, requests, errors in zip(rows, *got, strict=True):
            eid = row[0]
            was = sums.get(eid)
            sums[eid] = (requests, errors) if was is None else (was[0] + requests, was[1] + errors)
        return True

    def _calls_one_by_one(self, rows: Sequence[tuple[int, int, bytes]], group: Mapping[int, int],
                          batch: QuantileBatch, sums: dict[int, tuple[int, int]]) -> None:
        """:meth:`calls_into` for the records that do not fit one array (plain or old formats, exemplars,
        another scale): :meth:`decode_calls` each."""
        for eid, wstart, blob in rows:
            requests, errors, lat = self.decode_calls(blob, wstart)
            if type(lat) is tuple:
                batch.add_stored(group[eid], *lat)
            elif lat is not None:
                batch.add(group[eid], lat)
            was = sums.get(eid)
            sums[eid] = (requests, errors) if was is None else (was[0] + requests, was[1] + errors)

    def decode(self, blob: bytes, base: int) -> EdgeStats:
        f = self.decode_fields(blob, base)
        return EdgeStats(
            f[0],
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            stored_sketch(f[10]),
            f[11],
            f[12],
            f[13],
            f[14],
            f[15],
        )

    def fewer_exemplars(self, blob: bytes, keep: int) -> bytes:
        """``blob`` with at most ``keep`` (>= 1) of its trace ids, the first (smallest) ones: the same
        shape (the mask does not say how many), the tail cut. Records that are not of the current
        compact format, or hold fewer, are returned as they are. (Used by packs: embedded_pack.py.)"""
        if keep < 1 or not blob or blob[0] != _TAG_SHAPED:
            return blob
        try:
            mask, codes, nlat, hsize, old = self._header(blob)
        except (IndexError, KeyError, ValueError):
            return blob
        if not mask & 1 << 13 or not mask & _EXEMPLAR_16:
            return blob
        pos = hsize + self._plan(mask, codes, nlat, old).struct.size
        if pos >= len(blob) or blob[pos] <= keep or len(blob) != pos + 1 + 16 * blob[pos]:
            return blob
        return blob[:pos] + bytes((keep,)) + blob[pos + 1 : pos + 1 + 16 * keep]

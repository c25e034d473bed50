"""The embedded store's in-memory graph index: adjacency and per-edge presence, no stats, no I/O.

One :class:`GraphIndex` per layer. For each granularity (APP, CLUSTER) it holds the outgoing and
incoming adjacency maps, and for each edge an :class:`EdgeRec` with *presence*: for every stored
window length (minute, hour, day) the union of the edge's stored windows as a sorted list of
disjoint half-open intervals, flattened into an ``array('q')`` ``[s0, e0, s1, e1, ...]``.
Consecutive windows merge into one interval, so an edge seen every minute costs 16 bytes per
granularity however many windows it has; the worst case (traffic every other window) is bounded
by the retention (360 minute, 336 hour, 400 day windows).

Memory held per edge: one ``EdgeRec`` (~150 bytes) plus its interval arrays, plus two adjacency
entries. Stats are not held here (see ``embedded_hot.py`` and SQLite).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import replace

from topology.model import EdgeKey, Granularity, Layer, NodeInfo, NodeKind
from topology.timewindow import DAY, HOUR, MINUTE, align

SLOT = {MINUTE: 0, HOUR: 1, DAY: 2}  # window seconds -> index into EdgeRec.spans


def _find_after(iv: array[int], t: int) -> int:
    """Index of the first interval whose start is > t (binary search on the even positions)."""
    lo, hi = 0, len(iv) // 2
    while lo < hi:
        mid = (lo + hi) // 2
        if iv[2 * mid] > t:
            hi = mid
        else:
            lo = mid + 1
    return lo


def add_interval(iv: array[int], s: int, e: int) -> None:
    """Add [s, e) to the interval set, merging with touching or overlapping intervals."""
    n = len(iv)
    if n == 0 or iv[n - 2] < s:  # fast paths: appending after (or touching) the last interval
        if n and iv[n - 1] >= s:
            if e > iv[n - 1]:
                iv[n - 1] = e
            return
        iv.append(s)
        iv.append(e)
        return
    i = _find_after(iv, s)  # intervals [0, i) start at or before s
    if i > 0 and iv[2 * i - 1] >= s:  # merge with the previous interval
        i -= 1
        if iv[2 * i + 1] >= e:
            return
        iv[2 * i + 1] = e
    else:
        iv.insert(2 * i, e)
        iv.insert(2 * i, s)
    # swallow following intervals that now touch
    j = i + 1
    end = iv[2 * i + 1]
    while 2 * j < len(iv) and iv[2 * j] <= end:
        end = max(end, iv[2 * j + 1])
        j += 1
    if j > i + 1:
        iv[2 * i + 1] = end
        del iv[2 * (i + 1) : 2 * j]


#: First byte of intervals stored as varints (``to_blob``). The first byte of the older form is the
#: low byte of a window start, a multiple of 60 s and so of 4: never this.
_VARINTS = 0xFE


def to_blob(iv: array[int], wsec: int) -> bytes:
    """Intervals as stored on disk: ``0xFE``, then varints of the unit (``wsec``; 1 if a bound is not
    a whole window, which a store never has), the first start and every following bound as a
    difference from the one before, in units (~2-3 bytes an interval instead of 16). The older form,
    ``array.tobytes()`` (8-byte integers in the machine's byte order), is still read, and written only
    for bounds that are negative or out of order (never: intervals are sorted and disjoint)."""
    unit = wsec if all(n % wsec == 0 for n in iv) else 1
    out = bytearray((_VARINTS,))
    _varint(unit, out)
    prev = 0
    for n in iv:
        d = (n - prev) // unit
        if d < 0:
            return iv.tobytes()
        _varint(d, out)
        prev = n
    return bytes(out)


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)


def array_from(blob: bytes) -> array[int]:
    """Intervals as stored on disk (either form of ``to_blob``)."""
    iv = array("q")
    if not blob or blob[0] != _VARINTS:
        iv.frombytes(blob)
        return iv
    values = []
    n = shift = 0
    for b in memoryview(blob)[1:]:
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            values.append(n)
            n = shift = 0
    if shift or not values or not values[0]:
        raise ValueError("corrupt presence intervals")
    unit, t = values[0], 0
    for d in values[1:]:
        t += d * unit
        iv.append(t)
    return iv


def overlaps(iv: array[int], start: float, end: float) -> bool:
    """Whether any interval overlaps [start, end)."""
    n = len(iv)
    if n and iv[n - 2] < end:  # the last interval starts before ``end``: it alone decides (most queries)
        return iv[n - 1] > start
    # the last interval starting before ``end`` reaches furthest among those that can overlap
    lo, hi = 0, len(iv) // 2
    while lo < hi:
        mid = (lo + hi) // 2
        if iv[2 * mid] < end:
            lo = mid + 1
        else:
            hi = mid
    return lo > 0 and iv[2 * lo - 1] > start


def trim_before(iv: array[int], low: int) -> None:
    """Drop everything before ``low`` (intervals ending at or before it vanish)."""
    k = 0
    n = len(iv) // 2
    while k < n and iv[2 * k + 1] <= low:
        k += 1
    if k:
        del iv[: 2 * k]
    if iv and iv[0] < low:
        iv[0] = low


class EdgeRec:
    """One edge of the index (at one granularity)."""

    __slots__ = (
        "cache",
        "id",
        "key",
        "pair",
        "prefix",
        "row",
        "source_app",
        "source_kind",
        "spans",
        "target_app",
        "target_kind",
    )

    def __init__(self, edge_id: int, key: EdgeKey) -> None:
        self.id = edge_id
        self.key = key
        self.pair = (key.source, key.target)
        self.source_kind = NodeKind.SERVICE
        self.target_kind = NodeKind.SERVICE
        self.source_app: str | None = None
        self.target_app: str | None = None
        self.spans: list[array[int] | None] = [None, None, None]  # minute, hour, day intervals
        self.cache: object = None  # owned by the stats layer (a merged-stats memo)
        self.prefix: object = None  # owned by the stats layer (the memo of a long range's older part)
        self.row = -1  # owned by the stats layer (its row in the hot ring)

    def set_intervals(self, window_seconds: int, iv: array[int]) -> None:
        self.spans[SLOT[window_seconds]] = iv if len(iv) else None

    def add_minute(self, window_start: int) -> None:
        iv = self.spans[0]
        if iv is None:
            iv = self.spans[0] = array("q")
        add_interval(iv, window_start, window_start + MINUTE)

    def intervals_copy(self, window_seconds: int) -> array[int]:
        iv = self.spans[SLOT[window_seconds]]
        return array("q") if iv is None else array("q", iv)

    def trim(self, window_seconds: int, cutoff: float) -> None:
        """Forget windows ending at or before ``cutoff`` (retention)."""
        slot = SLOT[window_seconds]
        iv = self.spans[slot]
        if iv is None:
            return
        trim_before(iv, align(cutoff, window_seconds))
        if not iv:
            self.spans[slot] = None

    @property
    def empty(self) -> bool:
        return all(s is None for s in self.spans)

    def seen_bounds(self) -> tuple[int, int]:
        """(first, last) instant covered by any stored window, (0, 0) if none."""
        first, last = 0, 0
        for iv in self.spans:
            if iv:
                first = iv[0] if not first else min(first, iv[0])
                last = max(last, iv[-1])
        return first, last


class _Graph:
    __slots__ = ("inc", "out", "sorted_keys")

    def __init__(self) -> None:
        self.out: dict[str, dict[str, EdgeRec]] = {}
        self.inc: dict[str, dict[str, EdgeRec]] = {}
        self.sorted_keys: list[tuple[str, str]] | None = None


class GraphIndex:
    """Adjacency of one layer at both granularities, plus an id -> edge map."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self._graphs = {g: _Graph() for g in Granularity}
        self.by_id: dict[int, EdgeRec] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, key: EdgeKey) -> EdgeRec | None:
        row = self._graphs[key.granularity].out.get(key.source)
        return None if row is None else row.get(key.target)

    def add(self, rec: EdgeRec) -> None:
        g = self._graphs[rec.key.granularity]
        s, t = rec.key.source, rec.key.target
        g.out.setdefault(s, {})[t] = rec
        g.inc.setdefault(t, {})[s] = rec
        g.sorted_keys = None
        self.by_id[rec.id] = rec

    def remove(self, rec: EdgeRec) -> None:
        g = self._graphs[rec.key.granularity]
        s, t = rec.key.source, rec.key.target
        row = g.out.get(s)
        if row is not None:
            row.pop(t, None)
            if not row:
                del g.out[s]
        col = g.inc.get(t)
        if col is not None:
            col.pop(s, None)
            if not col:
                del g.inc[t]
        g.sorted_keys = None
        self.by_id.pop(rec.id, None)

    def outgoing(self, granularity: Granularity, name: str) -> dict[str, EdgeRec]:
        return self._graphs[granularity].out.get(name) or {}

    def incoming(self, granularity: Granularity, name: str) -> dict[str, EdgeRec]:
        return self._graphs[granularity].inc.get(name) or {}

    def sorted_keys(self, granularity: Granularity) -> list[tuple[str, str]]:
        """All (source, target) pairs of a granularity, sorted (cached until the edge set changes)."""
        g = self._graphs[granularity]
        if g.sorted_keys is None:
            g.sorted_keys = sorted((s, t) for s, row in g.out.items() for t in row)
        return g.sorted_keys

    def edge(self, granularity: Granularity, source: str, target: str) -> EdgeRec:
        return self._graphs[granularity].out[source][target]

    def all_edges(self) -> Iterator[EdgeRec]:
        return iter(list(self.by_id.values()))

    def _node_at(self, name: str, gran: Granularity) -> NodeInfo | None:
        g = self._graphs[gran]
        edges = [*(g.out.get(name) or {}).values(), *(g.inc.get(name) or {}).values()]
        if not edges:
            return None
        kinds = [r.source_kind if r.key.source == name else r.target_kind for r in edges]
        app = next((a for r in edges if (a := r.source_app if r.key.source == name else r.target_app)), None)
        bounds = [r.seen_bounds() for r in edges]
        firsts = [f for f, _ in bounds if f]
        return NodeInfo(
            name=name,
            kind=NodeKind.SERVICE if NodeKind.SERVICE in kinds else min(kinds, key=lambda k: k.value),
            granularity=gran,
            app=app,
            layers=frozenset((self.layer,)),
            first_seen=float(min(firsts)) if firsts else 0.0,
            last_seen=float(max(last for _, last in bounds)),
        )

    def node(self, name: str) -> NodeInfo | None:
        """What the edges say about a node: APP granularity preferred, seen bounds over both."""
        found = [info for gran in Granularity if (info := self._node_at(name, gran)) is not None]
        if not found:
            return None
        firsts = [f.first_seen for f in found if f.first_seen]
        return replace(
            found[0], first_seen=min(firsts) if firsts else 0.0, last_seen=max(f.last_seen for f in found)
        )

    def nodes(self, names: Iterable[str]) -> dict[str, NodeInfo]:
        out: dict[str, NodeInfo] = {}
        for n in names:
            info = self.node(n)
            if info is not None:
                out[n] = info
        return out

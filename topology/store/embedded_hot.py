"""The recent minute windows of every edge of a layer, held column-wise in numpy for fast merging.

A ring of ``R`` slots per edge (row): the window starting at ``t`` lives in slot ``(t // 60) % R`` and
replaces an older window there, never a newer one. With ``top`` the newest window start written,
every window starting at or after ``top - (R - 1) * 60`` is in the ring if it is stored at all, so a
query over such a range is answered here for any number of edges with a few vectorised
operations, and gives exactly what folding :meth:`EdgeStats.merge` over the windows in time
order gives (sums are accumulated slot by slot, in time order).

Columns: window start (int64), the numeric fields (float64/int64, allocated for a layer only once a
non-zero value shows up: a NETWORK ring has no latency columns), the latency sketches (numeric
columns and one ``bytes`` of counts per window, ``embedded_sketches.py``: merged and fed to quantiles
vectorised), health (int8), the interned
set-like fields (protocol, ports, intermediaries, endpoints, connection type: one int32 id per
window, since they rarely change from one minute to the next) and the exemplars (an object
column, TRACE only).
Memory: about ``R x (8 + 8 per numeric column + 5)`` bytes per edge plus the sketches (25 bytes and
4 per bucket, ~100-200 buckets each), ~1.2 KB per NETWORK edge.
"""

from __future__ import annotations

import marshal
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from topology.sketch import EMPTY, LatencySketch
from topology.sketch_batch import QuantileBatch
from topology.stats import (
    MAX_ENDPOINTS,
    MAX_EXEMPLARS,
    MAX_INTERMEDIARIES,
    MAX_PORTS,
    EdgeStats,
)
from topology.store.embedded_codec import stored, stored_sketch
from topology.store.embedded_sketches import ODD, REGULAR, SketchColumns
from topology.timewindow import MINUTE

_HEALTH = ("UNKNOWN", "HEALTHY", "DEGRADED", "UNHEALTHY")
_HEALTH_CODE = {h: i for i, h in enumerate(_HEALTH)}
# field -> position in the stored tuple (embedded_codec)
_FLOAT_AT = {"first_seen": 0, "last_seen": 1, "latency_sum": 11}
_INT_AT = {"connections": 4, "bytes_sent": 5, "bytes_received": 6, "requests": 8, "errors": 9}

# protocol, ports, intermediaries, endpoints, connection_type
Attrs = tuple[str | None, tuple[int, ...], tuple[str, ...], tuple[str, ...], str | None]

I64 = npt.NDArray[np.int64]
#: Larger counters (per window) are not held: 2**55 x up to 256 slots still fits in an int64 sum.
_SAFE_INT = 2**55
_COUNT_BYTES = 4  # a sketch count in SketchColumns' bytes (uint32)


def _canonical(t: tuple[Any, ...], limit: int) -> bool:
    return len(t) <= limit and all(t[i] < t[i + 1] for i in range(len(t) - 1))


def _fold_union(parts: list[tuple[Any, ...]], limit: int) -> tuple[Any, ...]:
    nonempty = [p for p in parts if p]
    if not nonempty:
        return ()
    if len(nonempty) == 1:
        return nonempty[0]
    found: set[Any] = set()
    for p in nonempty:
        found.update(p)
    return tuple(sorted(found)[:limit])


def _blob(values: list[Any]) -> npt.NDArray[np.uint8]:
    return np.frombuffer(marshal.dumps(values), np.uint8)


def _objects(values: Sequence[Any]) -> npt.NDArray[np.object_]:
    """A 1-d object array of ``values`` as they are (tuples are not unpacked into a second axis)."""
    out = np.empty(len(values), object)
    for k, v in enumerate(values):
        out[k] = v
    return out


def _unblob(blob: npt.NDArray[np.uint8]) -> list[Any]:
    values: list[Any] = marshal.loads(blob.tobytes())
    return values


class HotRing:
    def __init__(self, slots: int) -> None:
        if not 2 <= slots <= 256:
            raise ValueError("the hot ring holds 2 to 256 minutes")
        self.slots = slots
        self.capacity = 0
        self.used = 0
        self.free: list[int] = []
        self.top = 0  # newest window start written (0: none)
        self.floor = 0  # windows before this may be gone from disk (retention) or from the ring
        self.start: I64 = np.zeros((0, slots), np.int64)
        self.cols: dict[str, npt.NDArray[Any]] = {}
        self.latency: SketchColumns | None = None  # allocated once a sketch shows up
        self.health = np.zeros((0, slots), np.int8)
        self.attrs = np.zeros((0, slots), np.int32)
        self.exemplars: npt.NDArray[np.object_] | None = None
        self._attr_ids: dict[Attrs, int] = {}
        self._attr_list: list[Attrs] = []
        self._attr_canonical: list[bool] = []

    # -- rows ----------------------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = max(1024, self.capacity * 3 // 2, need)

        def grown(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            shape = (cap, *a.shape[1:])
            b = np.empty(shape, object) if a.dtype == object else np.zeros(shape, a.dtype)  # None, not 0
            b[: self.capacity] = a
            return b

        self.start = grown(self.start)
        for k in list(self.cols):
            self.cols[k] = grown(self.cols[k])
        if self.latency is not None:
            self.latency = self.latency.grown(cap)
        self.health = grown(self.health)
        self.attrs = grown(self.attrs)
        if self.exemplars is not None:
            self.exemplars = grown(self.exemplars)
        self.capacity = cap

    def new_row(self) -> int:
        if self.free:
            return self.free.pop()
        if self.used >= self.capacity:
            self._grow(self.used + 1)
        self.used += 1
        return self.used - 1

    def release(self, row: int) -> None:
        self.start[row] = 0
        self.free.append(row)

    def _intern(self, a: Attrs) -> int:
        i = self._attr_ids.get(a)
        if i is None:
            i = self._attr_ids[a] = len(self._attr_list)
            self._attr_list.append(a)
            self._attr_canonical.append(
                _canonical(a[1], MAX_PORTS)
                and _canonical(a[2], MAX_INTERMEDIARIES)
                and _canonical(a[3], MAX_ENDPOINTS)
            )
        return i

    # -- snapshot (a quick reopen after a clean close) -----------------------------------------------
    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Everything the ring holds, as plain arrays (no pickling: ``np.savez`` writes them as is)."""
        n = self.used
        out: dict[str, npt.NDArray[Any]] = {
            "meta": np.array([self.slots, n, self.top, self.floor], np.int64),
            "free": np.array(self.free, np.int64),
            "start": self.start[:n],
            "health": self.health[:n],
            "attrs": self.attrs[:n],
            "attr_list": _blob(self._attr_list),
        }
        for name, col in self.cols.items():
            out["col_" + name] = col[:n]
        lat = self.latency
        if lat is not None and not (lat.state[:n] == ODD).any():  # the columns as they are
            regular = lat.state[:n] == REGULAR
            out["sk_state"], out["sk_offset"], out["sk_zero"] = lat.state[:n], lat.offset[:n], lat.zero[:n]
            out["sk_length"] = lat.length[:n]
            out["sk_data"] = np.frombuffer(b"".join(lat.data[:n][regular].tolist()), np.uint8)
        elif lat is not None:  # a sketch at another scale: one stored tuple per cell
            out["sketches"] = _blob([None if x is None else stored(x) for x in lat.flat(n)])
        if self.exemplars is not None:
            out["exemplars"] = _blob([x or None for x in self.exemplars[:n].ravel().tolist()])
        return out

    @classmethod
    def from_arrays(cls, d: Mapping[str, npt.NDArray[Any]]) -> HotRing:
        slots, n, top, floor = (int(x) for x in d["meta"])
        ring = cls(slots)
        ring._grow(max(n, 1))
        ring.used, ring.top, ring.floor = n, top, floor
        ring.free = [int(x) for x in d["free"]]
        ring.start[:n] = d["start"]
        ring.health[:n] = d["health"]
        ring.attrs[:n] = d["attrs"]
        for name in d:
            if name.startswith("col_"):
                col = ring.cols[name[4:]] = np.zeros((ring.capacity, slots), d[name].dtype)
                col[:n] = d[name]
        if "latency" in d:
            raise ValueError("a snapshot of power-of-two latency histograms (read from disk instead)")
        if "sk_state" in d:
            lat = ring.latency = SketchColumns(ring.capacity, slots)
            lat.state[:n], lat.offset[:n], lat.zero[:n] = d["sk_state"], d["sk_offset"], d["sk_zero"]
            lat.length[:n] = d["sk_length"]
            data = d["sk_data"].tobytes()
            rows, cols = np.nonzero(lat.state[:n] == REGULAR)
            ends = np.cumsum(lat.length[rows, cols].astype(np.int64) * _COUNT_BYTES).tolist()
            if (ends[-1] if ends else 0) != len(data):
                raise ValueError("the snapshot's sketch counts do not add up")
            begin = 0
            for i, j, end in zip(rows.tolist(), cols.tolist(), ends, strict=True):
                lat.data[i, j] = data[begin:end]
                begin = end
        if "sketches" in d:
            ring.latency = SketchColumns(ring.capacity, slots)
            sketches = [None if x is None else stored_sketch(x) for x in _unblob(d["sketches"])]
            cells = np.arange(n * slots, dtype=np.int64)
            ring.latency.write(cells // slots, cells % slots, sketches)
        if "exemplars" in d:
            ring.exemplars = np.empty((ring.capacity, slots), object)
            flat = np.empty(n * slots, object)
            for i, x in enumerate(_unblob(d["exemplars"])):
                flat[i] = x
            ring.exemplars[:n] = flat.reshape(n, slots)
        for a in _unblob(d["attr_list"]):
            ring._intern(a)
        return ring

    # -- writing -------------------------------------------------------------------------------
    def write(self, rows: Sequence[int], starts: Sequence[int], stats: Sequence[EdgeStats]) -> None:
        """Store minute windows (row of the edge, window start, stats); older ones never replace newer."""
        self._write(rows, starts, stats, False)

    def write_fields(
        self, rows: Sequence[int], starts: Sequence[int], fields: Sequence[tuple[Any, ...]]
    ) -> None:
        """Like :meth:`write`, with the stats as stored on disk (``embedded_codec.decode_fields``)."""
        self._write(rows, starts, fields, True)

    def _write(self, rows: Sequence[int], starts: Sequence[int], given: Sequence[Any], stored: bool) -> None:
        if not rows:
            return
        r_all = np.asarray(rows, np.int64)
        t_all = np.asarray(starts, np.int64)
        s_all = (t_all // MINUTE) % self.slots
        # one write per (row, slot): the newest window, the last given among equals
        order = np.lexsort((np.arange(len(r_all)), t_all, s_all, r_all))
        r_o, s_o = r_all[order], s_all[order]
        last = np.ones(len(order), bool)
        last[:-1] = (r_o[1:] != r_o[:-1]) | (s_o[1:] != s_o[:-1])
        pick = order[last]
        r, s, t = r_all[pick], s_all[pick], t_all[pick]
        keep = self.start[r, s] <= t
        if not keep.all():
            pick, r, s, t = pick[keep], r[keep], s[keep], t[keep]
        if not len(pick):
            return
        items = [given[i] for i in pick.tolist()]
        n = len(items)
        if stored:
            floats = {k: np.fromiter((x[i] for x in items), np.float64, n) for k, i in _FLOAT_AT.items()}
            ints = {k: np.array([x[i] for x in items], np.int64) for k, i in _INT_AT.items()}
            sketches = [None if x[10] is None else stored_sketch(x[10]) for x in items]
            healths = [x[15] for x in items]
            attrs = [(x[2], x[3], x[7], x[12], x[14]) for x in items]
            exemplars = [x[13] for x in items]
        else:
            floats = {k: np.fromiter((getattr(x, k) for x in items), np.float64, n) for k in _FLOAT_AT}
            ints = {k: np.array([getattr(x, k) for x in items], np.int64) for k in _INT_AT}
            sketches = [x.latency if x.latency.total else None for x in items]
            healths = [x.health for x in items]
            attrs = [(x.protocol, x.ports, x.intermediaries, x.endpoints, x.connection_type) for x in items]
            exemplars = [x.exemplars for x in items]
        if any(h not in _HEALTH_CODE for h in healths):
            raise OverflowError("a health value the ring does not hold (the caller answers it from disk)")
        for vals in ints.values():
            if len(vals) and (vals.max() > _SAFE_INT or vals.min() < -_SAFE_INT):
                raise OverflowError("a counter too large to sum in int64 (the caller answers it from disk)")
        SketchColumns.check(sketches)
        # nothing can fail below this line
        self.start[r, s] = t
        columns: list[tuple[str, npt.NDArray[Any]]] = [*floats.items(), *ints.items()]
        for name, vals in columns:
            col = self.cols.get(name)
            if col is None:
                if not vals.any():
                    continue
                col = self.cols[name] = np.zeros((self.capacity, self.slots), vals.dtype)
            col[r, s] = vals
        if self.latency is not None or any(x is not None for x in sketches):
            if self.latency is None:
                self.latency = SketchColumns(self.capacity, self.slots)
            self.latency.write(r, s, sketches)
        self.health[r, s] = [_HEALTH_CODE[h] for h in healths]
        self.attrs[r, s] = [self._intern(a) for a in attrs]
        if self.exemplars is not None or any(exemplars):
            if self.exemplars is None:
                self.exemplars = np.empty((self.capacity, self.slots), object)
            self.exemplars[r, s] = _objects(exemplars)
        self.top = max(self.top, int(t.max()))

    def forget_before(self, start: int) -> None:
        """Windows before ``start`` are gone from disk (retention)."""
        self.floor = max(self.floor, start)

    def compact_attrs(self) -> None:
        """Drop interned values no slot refers to any more (called now and then, e.g. at roll-up)."""
        if len(self._attr_list) < 4096:
            return
        live = np.unique(self.attrs[: self.used])
        remap = np.zeros(len(self._attr_list), np.int32)
        remap[live] = np.arange(len(live), dtype=np.int32)
        self._attr_list = [self._attr_list[i] for i in live.tolist()]
        self._attr_canonical = [self._attr_canonical[i] for i in live.tolist()]
        self._attr_ids = {a: i for i, a in enumerate(self._attr_list)}
        self.attrs[: self.used] = remap[self.attrs[: self.used]]

    # -- reading -------------------------------------------------------------------------------
    def covers(self, lo: int) -> bool:
        """Whether every minute window starting at or after ``lo`` is answered exactly by the ring."""
        return self.top > 0 and lo >= max(self.floor, self.top - (self.slots - 1) * MINUTE)

    def calls(
        self, rows: Sequence[int], groups: Sequence[int], lo: int, end: float, batch: QuantileBatch
    ) -> tuple[list[int], list[int]]:
        """Per row, the requests and errors of its minute windows starting in [lo, end) (as
        :meth:`merged` sums them); their latency sketches go into ``batch``, row ``i``'s as group
        ``groups[i]``."""
        hi = min(int(end - 1) // MINUTE * MINUTE, self.top)
        if hi < lo or not rows:
            return [0] * len(rows), [0] * len(rows)
        targets = np.arange(lo, hi + 1, MINUTE, dtype=np.int64)
        if len(targets) > self.slots:
            raise ValueError("range longer than the hot ring")
        r = np.asarray(rows, np.int64)[:, None]
        s = ((targets // MINUTE) % self.slots)[None, :]
        mask = self.start[r, s] == targets[None, :]
        sums: list[list[int]] = []
        for name in ("requests", "errors"):
            col = self.cols.get(name)
            sums.append([0] * len(rows) if col is None else np.where(mask, col[r, s], 0).sum(axis=1).tolist())
        if self.latency is not None:
            self.latency.to_batch(r, s, mask, groups, batch)
        return sums[0], sums[1]

    def merged(self, rows: Sequence[int], lo: int, end: float) -> list[EdgeStats | None]:
        """Per row, the fold of its minute windows starting in [lo, end) (None: no window)."""
        hi = min(int(end - 1) // MINUTE * MINUTE, self.top)
        if hi < lo or not rows:
            return [None] * len(rows)
        targets = np.arange(lo, hi + 1, MINUTE, dtype=np.int64)
        if len(targets) > self.slots:
            raise ValueError("range longer than the hot ring")
        slot = (targets // MINUTE) % self.slots
        r = np.asarray(rows, np.int64)[:, None]
        s = slot[None, :]
        mask = self.start[r, s] == targets[None, :]
        n_slots = len(targets)
        e = len(rows)
        out: dict[str, list[Any]] = {}
        for name in ("latency_sum", *_INT_AT):
            col = self.cols.get(name)
            if col is None:
                continue
            vals = np.where(mask, col[r, s], 0)
            acc = vals[:, 0].copy()
            for j in range(1, n_slots):  # slot by slot, as a left fold would add them
                acc += vals[:, j]
            out[name] = acc.tolist()
        col = self.cols.get("first_seen")
        if col is not None:
            v = col[r, s]
            firsts = np.where(mask & (v != 0), v, np.inf).min(axis=1)
            out["first_seen"] = np.where(np.isinf(firsts), 0.0, firsts).tolist()
        col = self.cols.get("last_seen")
        if col is not None:
            lasts = np.where(mask, col[r, s], -np.inf).max(axis=1)
            out["last_seen"] = np.where(np.isinf(lasts), 0.0, lasts).tolist()
        latency: list[LatencySketch] = (
            [EMPTY] * e if self.latency is None else self.latency.merged(r, s, mask))
        health = np.where(mask, self.health[r, s], -1).max(axis=1).tolist()
        attrs = np.where(mask, self.attrs[r, s], -1)
        amax = attrs.max(axis=1)
        amin = np.where(mask, attrs, np.iinfo(np.int32).max).min(axis=1)
        same = (amax == amin).tolist()
        amax_l = amax.tolist()
        present = mask.any(axis=1).tolist()
        ex_rows = self.exemplars[r, s] if self.exemplars is not None else None
        mask_l = mask.tolist() if (not all(same) or ex_rows is not None) else None
        zeros = [0] * e
        zf = [0.0] * e
        first_l, last_l = out.get("first_seen", zf), out.get("last_seen", zf)
        conns, sent, recv = (
            out.get("connections", zeros),
            out.get("bytes_sent", zeros),
            out.get("bytes_received", zeros),
        )
        reqs, errs, lsum = out.get("requests", zeros), out.get("errors", zeros), out.get("latency_sum", zf)
        attr_list, canonical = self._attr_list, self._attr_canonical
        result: list[EdgeStats | None] = []
        for i in range(e):
            if not present[i]:
                result.append(None)
                continue
            if same[i] and canonical[amax_l[i]]:
                protocol, ports, inter, endpoints, ctype = attr_list[amax_l[i]]
            else:
                if mask_l is None:  # attributes not stored in canonical form (merged anyway, as merge does)
                    mask_l = mask.tolist()
                ids = [int(attrs[i, j]) for j in range(n_slots) if mask_l[i][j]]
                parts = [attr_list[a] for a in ids]
                if len(parts) == 1:
                    protocol, ports, inter, endpoints, ctype = parts[0]
                else:
                    protocol = next((p[0] for p in parts if p[0]), parts[-1][0])
                    ports = _fold_union([p[1] for p in parts], MAX_PORTS)
                    inter = _fold_union([p[2] for p in parts], MAX_INTERMEDIARIES)
                    endpoints = _fold_union([p[3] for p in parts], MAX_ENDPOINTS)
                    ctype = next((p[4] for p in parts if p[4]), parts[-1][4])
            exemplars: tuple[str, ...] = ()
            if ex_rows is not None:
                assert mask_l is not None
                exemplars = _fold_union(
                    [ex_rows[i, j] for j in range(n_slots) if mask_l[i][j]], MAX_EXEMPLARS
                )
            result.append(
                EdgeStats(
                    first_l[i],
                    last_l[i],
                    protocol,
                    ports,
                    conns[i],
                    sent[i],
                    recv[i],
                    inter,
                    reqs[i],
                    errs[i],
                    latency[i],
                    lsum[i],
                    endpoints,
                    exemplars,
                    ctype,
                    _HEALTH[max(health[i], 0)],
                )
            )
        return result

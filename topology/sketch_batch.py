"""Quantiles of many merged latency sketches at once, vectorised.

:class:`QuantileBatch` answers, for each group of sketches, exactly what
``merge_sketches(group).quantile(q)`` answers (the same floats), without building the merged
sketches: the parts of every group are laid out as (bucket, count) runs in flat arrays, summed per
group into one dense segment per group, and each quantile's rank is found with one ``searchsorted``
over the cumulative counts. Parts come as :class:`LatencySketch` objects or as stored counts (dense,
or sparse ``(gap, count)`` pairs as the embedded store writes them), so a reader never expands them.

Only sketches at :data:`~topology.sketch.SCALE` (all we write) take the vectorised road; a group
with a part at another scale is merged with :func:`merge_sketches` (its rules for mixed scales stay in
one place).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from topology.sketch import SCALE, LatencySketch, _base, _range_of, merge_sketches

__all__ = ["QuantileBatch"]

_BOTTOM, _TOP = _range_of(SCALE)
_B = _base(SCALE)
#: The value :meth:`LatencySketch.quantile` gives for each bucket (computed the same way, in Python).
_Ints = npt.NDArray[np.int64]
_Counts = npt.NDArray[np.integer[Any]]  # counts in any integer width (summed as floats)
_VALUES = np.array([float(2.0 * _B ** (b + 1) / (1.0 + _B)) for b in range(_BOTTOM, _TOP + 1)], np.float64)


class QuantileBatch:
    """Collects sketches into ``groups`` numbered groups; :meth:`quantiles` of each group's merge."""

    def __init__(self, groups: int) -> None:
        self.groups = groups
        # per part, dense parts first (in the order added), then sparse ones
        self._dense: tuple[array[int], array[int], array[int], array[int]] = (
            array("q"), array("q"), array("q"), array("q"))  # group, offset, length, zero count
        self._sparse: tuple[array[int], array[int], array[int], array[int]] = (
            array("q"), array("q"), array("q"), array("q"))
        self._dense_counts: list[Sequence[int]] = []
        self._runs: list[tuple[_Ints, _Ints, _Ints, _Ints, _Counts]] = []  # dense parts given as arrays
        self._sparse_runs: list[tuple[_Ints, _Ints, _Ints, _Ints, _Ints, _Counts]] = []  # and sparse ones
        self._pairs: list[Sequence[int]] = []  # per sparse part: (empty buckets before it, count) pairs
        self._odd: dict[int, list[LatencySketch]] = {}  # groups with a part at another scale

    def add(self, group: int, sketch: LatencySketch) -> None:
        """One sketch of ``group``."""
        if sketch.total:
            self.add_stored(group, sketch.scale, sketch.offset, sketch.zero, sketch.counts, False)

    def add_stored(self, group: int, scale: int, offset: int, zero: int, values: Sequence[int],
                   sparse: bool) -> None:
        """A sketch as stored: dense ``values`` from bucket ``offset``, or (``sparse``) pairs of
        (empty buckets skipped, count)."""
        if scale != SCALE:
            counts = _expand(values) if sparse else tuple(values)
            self._odd.setdefault(group, []).append(LatencySketch(scale, offset, counts, zero))
            return
        parts = self._sparse if sparse else self._dense
        parts[0].append(group)
        parts[1].append(offset)
        parts[3].append(zero)
        if sparse:
            parts[2].append(len(values) >> 1)
            self._pairs.append(values)
        else:
            parts[2].append(len(values))
            self._dense_counts.append(values)

    def add_runs(self, group: _Ints, offset: _Ints, length: _Ints, zero: _Ints, counts: _Counts) -> None:
        """Dense parts at SCALE as arrays: part ``i`` of group ``group[i]`` has ``length[i]`` counts from
        bucket ``offset[i]``, taken in order from ``counts``, and ``zero[i]`` observations at zero."""
        if len(group):
            self._runs.append((group, offset, length, zero, counts))

    def add_sparse_runs(self, group: _Ints, offset: _Ints, length: _Ints, zero: _Ints, gaps: _Ints,
                        counts: _Counts) -> None:
        """Sparse parts at SCALE as arrays: part ``i`` has ``length[i]`` (empty buckets skipped, count)
        pairs, taken in order from ``gaps`` and ``counts``."""
        if len(group):
            self._sparse_runs.append((group, offset, length, zero, gaps, counts))

    def quantiles(self, qs: Sequence[float]) -> list[list[float | None]]:
        """Per quantile in ``qs``, per group: the quantile of the group's merged sketch (None if empty)."""
        g = self.groups
        d_group, d_offset, d_len, d_zero = (
            np.concatenate([np.frombuffer(a, np.int64), *(run[k] for run in self._runs)])
            for k, a in enumerate(self._dense))
        listed = sum(len(c) for c in self._dense_counts)
        d_counts = _joined([_flat(self._dense_counts, listed), *(run[4] for run in self._runs)])
        s_group, s_offset, s_len, s_zero = (
            np.concatenate([np.frombuffer(a, np.int64), *(run[k] for run in self._sparse_runs)])
            for k, a in enumerate(self._sparse))
        # a sparse part's k-th pair is at its offset + the running (gap + 1) within the part, minus one
        s_ends = np.cumsum(s_len)
        listed = sum(len(p) for p in self._pairs) // 2
        pairs = _flat(self._pairs, 2 * listed).reshape(-1, 2)
        gaps = np.concatenate([pairs[:, 0], *(run[4] for run in self._sparse_runs)])
        s_counts = _joined([pairs[:, 1], *(run[5] for run in self._sparse_runs)])
        steps = np.cumsum(gaps + 1)
        s_part = np.repeat(np.arange(len(s_len)), s_len)
        s_buckets = s_offset[s_part] + steps - np.concatenate(([0], steps))[(s_ends - s_len)[s_part]] - 1
        # one dense segment of buckets per group, from the lowest to the highest bucket of its parts
        # (bounds per part, not per bucket: a run of counts is placed as a whole); the groups with a
        # part at another scale are computed too, and answered the slow way below
        has_d, has_s = d_len > 0, s_len > 0
        lo = np.full(g, _TOP, np.int64)
        hi = np.full(g, _BOTTOM - 1, np.int64)
        np.minimum.at(lo, d_group[has_d], d_offset[has_d])
        np.maximum.at(hi, d_group[has_d], (d_offset + d_len - 1)[has_d])
        np.minimum.at(lo, s_group[has_s], s_buckets[(s_ends - s_len)[has_s]])
        np.maximum.at(hi, s_group[has_s], s_buckets[s_ends[has_s] - 1])
        width = np.maximum(hi - lo + 1, 0)
        seg = np.cumsum(width) - width
        # a dense part's k-th count goes to its segment's position (offset - lo) + k
        base = seg[d_group] + d_offset - lo[d_group] - (np.cumsum(d_len) - d_len)
        d_at = np.repeat(base, d_len) + np.arange(len(d_counts), dtype=np.int64)
        s_at = seg[s_group[s_part]] + s_buckets - lo[s_group[s_part]]
        # counts summed as floats (exact below 2**53), each kind in its own integer width
        total = int(width.sum())
        flat = np.bincount(d_at, d_counts, total) if len(d_at) else np.zeros(total)
        if len(s_at):
            flat += np.bincount(s_at, s_counts, total)
        flat = flat.astype(np.int64)
        zero = np.bincount(np.concatenate((d_group, s_group)), np.concatenate((d_zero, s_zero)), g)
        zero = zero.astype(np.int64)
        cum = np.cumsum(flat)
        prior = np.concatenate(([0], cum))[seg]  # counts of the segments before each group's
        n = zero + np.where(width > 0, np.concatenate(([0], cum))[seg + width] - prior, 0)
        out: list[list[float | None]] = []
        for q in qs:
            rank = min(max(q, 0.0), 1.0) * (n - 1).astype(np.float64)
            lo_rank = np.floor(rank).astype(np.int64)
            frac = rank - lo_rank
            low = _value_at(lo_rank, zero, prior, cum, seg, lo, width)
            high = _value_at(np.minimum(lo_rank + 1, np.maximum(n - 1, 0)), zero, prior, cum, seg, lo, width)
            value = np.where(frac != 0, low + (high - low) * frac, low)
            row: list[float | None] = [None if k == 0 else v
                                       for k, v in zip(n.tolist(), value.tolist(), strict=True)]
            for grp, parts in self._odd.items():
                row[grp] = merge_sketches(parts + self._regular_parts(grp)).quantile(q)
            out.append(row)
        return out

    def _regular_parts(self, group: int) -> list[LatencySketch]:
        """The parts at SCALE of ``group`` (for a group merged the slow way)."""
        out: list[LatencySketch] = []
        dense, sparse = self._dense, self._sparse
        for i, grp in enumerate(dense[0]):
            if grp == group:
                out.append(LatencySketch(SCALE, dense[1][i], tuple(self._dense_counts[i]), dense[3][i]))
        for i, grp in enumerate(sparse[0]):
            if grp == group:
                out.append(LatencySketch(SCALE, sparse[1][i], _expand(self._pairs[i]), sparse[3][i]))
        for grp_a, offset, length, zero, counts in self._runs:
            ends = np.cumsum(length)
            for i in np.flatnonzero(grp_a == group).tolist():
                run = counts[ends[i] - length[i]:ends[i]].tolist()
                out.append(LatencySketch(SCALE, int(offset[i]), tuple(run), int(zero[i])))
        for grp_a, offset, length, zero, gaps, counts in self._sparse_runs:
            ends = np.cumsum(length)
            for i in np.flatnonzero(grp_a == group).tolist():
                at = slice(int(ends[i] - length[i]), int(ends[i]))
                pairs = np.stack((gaps[at], counts[at]), axis=1).ravel().tolist()
                out.append(LatencySketch(SCALE, int(offset[i]), _expand(pairs), int(zero[i])))
        return out


def _joined(parts: list[_Counts]) -> _Counts:
    """The non-empty ``parts`` one after the other, in their own dtype when they share it."""
    live = [p for p in parts if len(p)]
    if len(live) == 1:
        return live[0]
    return np.concatenate(live) if live else np.zeros(0, np.int64)


def _flat(runs: list[Sequence[int]], n: int) -> _Ints:
    return np.fromiter(chain.from_iterable(runs), np.int64, n)


def _value_at(rank: _Ints, zero: _Ints, prior: _Ints, cum: _Ints, seg: _Ints, lo: _Ints,
              width: _Ints) -> npt.NDArray[np.float64]:
    """Per group, ``LatencySketch._value_at(rank)`` of its merge: 0 below the zero count, else the value
    of the first bucket whose running count exceeds the rank."""
    in_zero = (rank < zero) | (width == 0)
    target = prior + np.where(in_zero, 0, rank - zero)
    at = np.searchsorted(cum, target, side="right") if len(cum) else np.zeros_like(target)
    bucket = lo + np.clip(at - seg, 0, np.maximum(width - 1, 0))
    return np.where(in_zero, 0.0, _VALUES[np.clip(bucket - _BOTTOM, 0, len(_VALUES) - 1)])


def _expand(pairs: Sequence[int]) -> tuple[int, ...]:
    out: list[int] = []
    for i in range(0, len(pairs), 2):
        out.extend([0] * pairs[i])
        out.append(pairs[i + 1])
    return tuple(out)

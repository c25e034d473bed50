"""The hot ring's latency sketches, held as numbers numpy can read without a Python loop per bucket.

Per (row, slot) of the ring: a state (none, a sketch at :data:`~topology.sketch.SCALE`, or a sketch
at another scale), the first bucket, the number of dense counts, the zero count, and the counts
themselves as one ``bytes`` of unsigned 32-bit integers (the object column). A sketch at another
scale (a client's finer one, rare) is kept as the :class:`LatencySketch` itself.

Reading many of them is then a gather of small columns, one ``b"".join`` and one ``np.frombuffer``,
whether they go into a :class:`~topology.sketch_batch.QuantileBatch` (``rootCause``'s quantiles) or
are summed into merged sketches (:meth:`SketchColumns.merged`, the same values as
:func:`~topology.sketch.merge_sketches` of the windows). The bytes are about half the size of the
tuples of Python ints they replace.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from topology.sketch import EMPTY, SCALE, LatencySketch, merge_sketches
from topology.sketch_batch import QuantileBatch

__all__ = ["SketchColumns"]

NONE, REGULAR, ODD = 0, 1, 2
_COUNT = np.dtype("<u4")
_MAX_COUNT = 2**32 - 1

I64 = npt.NDArray[np.int64]
Counts = npt.NDArray[np.int64] | npt.NDArray[np.uint32]


class SketchColumns:
    """Latency sketches of a ring of ``capacity`` rows by ``slots`` slots."""

    def __init__(self, capacity: int, slots: int) -> None:
        self.state = np.zeros((capacity, slots), np.int8)
        self.offset = np.zeros((capacity, slots), np.int32)
        self.length = np.zeros((capacity, slots), np.int32)
        self.zero = np.zeros((capacity, slots), np.int64)
        self.data = np.empty((capacity, slots), object)  # bytes (REGULAR) or LatencySketch (ODD)

    def grown(self, capacity: int) -> SketchColumns:
        out = SketchColumns(capacity, self.state.shape[1])
        n = self.state.shape[0]
        for name in ("state", "offset", "length", "zero", "data"):
            getattr(out, name)[:n] = getattr(self, name)
        return out

    # -- writing -------------------------------------------------------------------------------
    @staticmethod
    def check(sketches: Sequence[LatencySketch | None]) -> None:
        """Raise OverflowError for what the columns cannot hold (before anything is written)."""
        for x in sketches:
            if x is None:
                continue
            if type(x) is not LatencySketch:
                raise OverflowError("a latency the ring does not hold (the caller answers it from disk)")
            if x.scale == SCALE and x.counts and max(x.counts) > _MAX_COUNT:
                raise OverflowError("a latency count too large for the ring (answered from disk)")

    def write(self, r: I64, s: I64, sketches: Sequence[LatencySketch | None]) -> None:
        """Put ``sketches`` (None: unmeasured) at (``r[i]``, ``s[i]``); :meth:`check` them first."""
        n = len(sketches)
        state = np.zeros(n, np.int8)
        offset = np.zeros(n, np.int32)
        length = np.zeros(n, np.int32)
        zero = np.zeros(n, np.int64)
        data = np.empty(n, object)
        for i, x in enumerate(sketches):
            if x is None:
                continue
            if x.scale != SCALE:
                state[i], data[i] = ODD, x
                continue
            state[i], offset[i], length[i], zero[i] = REGULAR, x.offset, len(x.counts), x.zero
            data[i] = np.array(x.counts, _COUNT).tobytes()
        self.state[r, s] = state
        self.offset[r, s] = offset
        self.length[r, s] = length
        self.zero[r, s] = zero
        self.data[r, s] = data

    # -- reading -------------------------------------------------------------------------------
    def _parts(self, r: I64, s: I64, mask: npt.NDArray[np.bool_]) -> tuple[I64, I64, I64, I64, Counts, I64]:
        """The regular sketches present under ``mask`` of the (len(r) x len(s)) grid, in row then slot
        order: (row index, offset, length, zero, counts of all, and the rows with an odd part)."""
        state = np.where(mask, self.state[r, s], NONE)
        at = np.nonzero(state == REGULAR)
        rows = at[0].astype(np.int64)
        rr, ss = r[at[0], 0], s[0, at[1]]
        blobs: list[bytes] = self.data[rr, ss].tolist()
        counts = np.frombuffer(b"".join(blobs), _COUNT)  # uint32: summed as floats, exactly
        odd_rows = np.unique(np.nonzero(state == ODD)[0]).astype(np.int64)
        return (rows, self.offset[rr, ss].astype(np.int64), self.length[rr, ss].astype(np.int64),
                self.zero[rr, ss], counts, odd_rows)

    def to_batch(self, r: I64, s: I64, mask: npt.NDArray[np.bool_], groups: Sequence[int],
                 batch: QuantileBatch) -> None:
        """The sketches present under ``mask`` into ``batch``, row ``i``'s as group ``groups[i]``."""
        rows, offset, length, zero, counts, odd_rows = self._parts(r, s, mask)
        g = np.asarray(groups, np.int64)
        batch.add_runs(g[rows], offset, length, zero, counts)
        for i in odd_rows.tolist():
            for j in np.flatnonzero(mask[i] & (self.state[r[i, 0], s[0]] == ODD)).tolist():
                batch.add(groups[i], self.data[r[i, 0], s[0, j]])

    def merged(self, r: I64, s: I64, mask: npt.NDArray[np.bool_]) -> list[LatencySketch]:
        """Per row of ``r``: the merge of its sketches present under ``mask`` (EMPTY: none), exactly
        :func:`merge_sketches` of them."""
        e = len(r)
        rows, offset, length, zero, counts, odd_rows = self._parts(r, s, mask)
        out: list[LatencySketch] = [EMPTY] * e
        if len(rows):
            zeros = np.bincount(rows, zero, e).astype(np.int64)
            has = length > 0
            lo = np.full(e, np.iinfo(np.int64).max, np.int64)
            hi = np.full(e, np.iinfo(np.int64).min, np.int64)
            np.minimum.at(lo, rows[has], offset[has])
            np.maximum.at(hi, rows[has], (offset + length)[has])
            width = np.where(hi > lo, hi - lo, 0)
            seg = np.cumsum(width) - width
            part = np.repeat(np.arange(len(rows)), length)
            starts = np.cumsum(length) - length
            within = np.arange(len(counts), dtype=np.int64) - starts[part]
            at = seg[rows[part]] + offset[part] - lo[rows[part]] + within
            # exact: at most 256 slots of counts below 2**32 add up below 2**53
            acc = np.bincount(at, counts, int(width.sum())).astype(np.int64)
            present = np.zeros(e, bool)
            present[rows] = True
            acc_l, seg_l, width_l, lo_l, zeros_l = (
                acc.tolist(), seg.tolist(), width.tolist(), lo.tolist(), zeros.tolist())
            for i in np.flatnonzero(present).tolist():
                w = width_l[i]
                out[i] = (LatencySketch(SCALE, lo_l[i], tuple(acc_l[seg_l[i]:seg_l[i] + w]), zeros_l[i]) if w
                          else LatencySketch(SCALE, 0, (), zeros_l[i]))
        for i in odd_rows.tolist():  # a part at another scale: merged the general way
            parts: list[LatencySketch] = []
            for j in np.flatnonzero(mask[i]).tolist():
                parts.append(self.sketch(int(r[i, 0]), int(s[0, j])))
            out[i] = merge_sketches(parts)
        return out

    def sketch(self, row: int, slot: int) -> LatencySketch:
        """The sketch at (row, slot) (EMPTY: none)."""
        state = self.state[row, slot]
        if state == NONE:
            return EMPTY
        x = self.data[row, slot]
        if state == ODD:
            return x  # type: ignore[no-any-return]
        counts = tuple(np.frombuffer(x, _COUNT).tolist())
        return LatencySketch(SCALE, int(self.offset[row, slot]), counts, int(self.zero[row, slot]))

    # -- snapshot ------------------------------------------------------------------------------
    def flat(self, n: int) -> list[LatencySketch | None]:
        """The first ``n`` rows' sketches, row by row (None: none)."""
        slots = self.state.shape[1]
        return [None if self.state[i, j] == NONE else self.sketch(i, j)
                for i in range(n) for j in range(slots)]

"""Array steps of the columnar IPC stage 1 (:class:`topology.stages.ipc.IpcStage1`): pure numpy functions over
the point columns of many requests at once.

Every function keeps the arithmetic of the point-by-point stage (:mod:`topology.stages.ipc_points`) exactly:
integer counts stay integers, floats are combined in the same order (``numpy.add.at`` is unbuffered and
runs in index order), and sketch buckets of means are computed as :func:`topology.sketch.bucket_of`
computes them (numpy's ``log2`` is trusted only away from a bucket edge; the few values near one are
recomputed with ``math.log2``).
"""

from __future__ import annotations

import numpy as np

from topology.sketch import MAX_SECONDS, SCALE, ZERO_THRESHOLD, bucket_of

ZERO = -(1 << 40)  # the bucket key of zero-length calls (topology.stages.ipc._ZERO)


def ragged(offsets: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For slices ``[offsets[i], offsets[i] + lengths[i])``: (row of each element, its position)."""
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(lengths)), lengths)
    if not total:
        return rows, np.zeros(0, np.int64)
    starts = np.cumsum(lengths) - lengths
    within = np.arange(total) - np.repeat(starts, lengths)
    return rows, np.repeat(offsets.astype(np.int64, copy=False), lengths) + within


def buckets_of(seconds: np.ndarray) -> np.ndarray:
    """``topology.stages.ipc._bucket`` of every value: the sketch bucket, or ZERO at or below the threshold
    (and for NaN)."""
    out = np.full(len(seconds), ZERO, np.int64)
    live = seconds > ZERO_THRESHOLD
    if not live.any():
        return out
    v = np.minimum(seconds[live], MAX_SECONDS)
    m, e = np.frexp(v)
    y = np.log2(v) * (1 << SCALE)
    b = np.ceil(y).astype(np.int64) - 1
    power = m == 0.5
    b[power] = ((e[power].astype(np.int64) - 1) << SCALE) - 1
    near = ~power & (np.abs(y - np.rint(y)) < 1e-6)
    for i in np.flatnonzero(near).tolist():
        b[i] = bucket_of(float(v[i]))
    out[live] = b
    return out


def first_of_runs(keys: np.ndarray) -> np.ndarray:
    """For keys sorted so that equal keys are adjacent: True where a run of equal keys starts."""
    out = np.ones(len(keys), bool)
    out[1:] = keys[1:] != keys[:-1]
    return out


def last_of_runs(keys: np.ndarray) -> np.ndarray:
    """For keys sorted so that equal keys are adjacent: True where a run of equal keys ends."""
    out = np.ones(len(keys), bool)
    out[:-1] = keys[1:] != keys[:-1]
    return out


def sequential_sum(initial: np.ndarray, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``initial`` with ``values`` added one by one in order (float sums as a loop would make them)."""
    out = initial.astype(np.float64, copy=True)
    np.add.at(out, index, values)
    return out


def grow(a: np.ndarray, n: int, fill: float | int) -> np.ndarray:
    """``a`` with room for at least ``n`` entries (doubling), new entries ``fill``."""
    if n <= len(a):
        return a
    out = np.full(max(n, 2 * len(a), 1024), fill, a.dtype)
    out[: len(a)] = a
    return out


def window_of(t_ns: np.ndarray, window_seconds: int) -> np.ndarray:
    """Window start (seconds) of each time in nanoseconds."""
    return (t_ns // (window_seconds * 1_000_000_000)).astype(np.int64) * window_seconds


def seconds(t_ns: np.ndarray) -> np.ndarray:
    """Times in nanoseconds as float seconds, as ``t_ns / 1e9`` gives them in Python."""
    return t_ns.astype(np.float64) / 1e9



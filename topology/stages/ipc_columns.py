"""Array steps of the columnar IPC stage 1 (:class:`topology.stages.ipc.IpcStage1`): pure numpy functions over
the point columns of many requests at once.

Every function keeps the arithmetic of the point-by-point stage (:mod:`topology.stages.ipc_points`) exactly:
integer counts stay integers, floats are combined in the same order (``numpy.add.at`` is unbuffered and
runs in index order), and sketch buckets of means are computed as :func:`topology.sketch.bucket_of`
computes them (numpy's ``log2`` is trusted only away from a bucket edge; the few values near one are
recomputed with ``math.log2``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from topology.sketch import MAX_SECONDS, SCALE, ZERO_THRESHOLD, _range_of, bucket_of

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




Dense = tuple[int, tuple[int, ...], int]  # a sketch's lowest bucket, dense counts from it, zero count


class Accumulators:
    """The open (window, side, service, peer) accumulators of stage 1 as columns, numbered: calls, errors,
    latency sum, first and last point, protocol; sketch buckets and endpoints as (accumulator, value) rows
    summed when a window is emitted; exponential-histogram sketches (rare) in a dict."""

    def __init__(self) -> None:
        self.ids: dict[tuple[int, int], int] = {}  # (window, group number) -> accumulator number
        self.n = 0
        self.window = np.zeros(0, np.int64)
        self.gid = np.zeros(0, np.int64)
        self.requests = np.zeros(0, np.int64)
        self.errors = np.zeros(0, np.int64)
        self.lat = np.zeros(0, np.float64)
        self.first = np.zeros(0, np.float64)
        self.last = np.zeros(0, np.float64)
        self.protocol = np.zeros(0, np.int64)  # text number, -1: none yet
        self.buckets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # accumulator, bucket, calls
        self.endpoints: list[tuple[np.ndarray, np.ndarray]] = []  # accumulator, text number
        self.fine: dict[int, Any] = {}  # accumulator -> LatencySketch of exponential histograms

    def number(self, window: int, gid: int) -> tuple[int, bool]:
        """(number, made now) of the accumulator of (window, group)."""
        i = self.ids.get((window, gid))
        if i is not None:
            return i, False
        i = self.ids[(window, gid)] = self.n
        self.n += 1
        if self.n > len(self.window):
            self.window = grow(self.window, self.n, 0)
            self.gid = grow(self.gid, self.n, 0)
            self.requests = grow(self.requests, self.n, 0)
            self.errors = grow(self.errors, self.n, 0)
            self.lat = grow(self.lat, self.n, 0.0)
            self.first = grow(self.first, self.n, math.inf)
            self.last = grow(self.last, self.n, 0.0)
            self.protocol = grow(self.protocol, self.n, -1)
        self.window[i], self.gid[i] = window, gid
        return i, True

    def take(self, done: list[int]) -> tuple[dict[int, Dense], dict[int, list[int]]]:
        """Remove the accumulators ``done`` (numbers); return their sketch buckets (lowest bucket, dense
        counts, zero count) and endpoints (text numbers), and renumber the rest."""
        gone = np.zeros(self.n, np.bool_)
        gone[done] = True
        sketches = self._sketches(gone)
        endpoints: dict[int, list[int]] = {}
        if self.endpoints:
            a = np.concatenate([x[0] for x in self.endpoints])
            e = np.concatenate([x[1] for x in self.endpoints])
            self.endpoints = [(a[~gone[a]], e[~gone[a]])]
            sel = gone[a]
            width = int(e.max()) + 1 if len(e) else 1
            for x in np.unique(a[sel] * width + e[sel]).tolist():
                i, t = divmod(x, width)
                endpoints.setdefault(i, []).append(t)
        for i in done:
            self.fine.pop(i, None)
        for key in [k for k, i in self.ids.items() if gone[i]]:
            del self.ids[key]
        if self.n > 4 * len(self.ids) + 4096:
            self._renumber()
        return sketches, endpoints

    def _sketches(self, gone: np.ndarray) -> dict[int, Dense]:
        if not self.buckets:
            return {}
        a = np.concatenate([x[0] for x in self.buckets])
        b = np.concatenate([x[1] for x in self.buckets])
        c = np.concatenate([x[2] for x in self.buckets])
        sel = gone[a]
        self.buckets = [(a[~sel], b[~sel], c[~sel])]
        a, b, c = a[sel], b[sel], c[sel]
        out: dict[int, Dense] = {}
        zero = b == ZERO
        zsum: dict[int, int] = {}
        if zero.any():
            za, zinv = np.unique(a[zero], return_inverse=True)
            zc = np.bincount(zinv, c[zero].astype(np.float64)).astype(np.int64)
            zsum = dict(zip(za.tolist(), zc.tolist(), strict=True))
        a, b, c = a[~zero], b[~zero], c[~zero]
        if len(a):
            bottom, top = _range_of(SCALE)
            b = np.clip(b, bottom, top) - bottom
            width = top - bottom + 1
            u, inv = np.unique(a * width + b, return_inverse=True)
            sums = np.bincount(inv, c.astype(np.float64)).astype(np.int64)
            live = sums > 0
            u, sums = u[live], sums[live]
            acc, bucket = np.divmod(u, width)
            starts = np.flatnonzero(first_of_runs(acc))
            ends = np.append(starts[1:], len(acc))
            lo = bucket[starts]
            size = bucket[ends - 1] - lo + 1
            offsets = np.cumsum(size) - size
            dense = np.zeros(int(size.sum()), np.int64)
            dense[np.repeat(offsets, ends - starts) + bucket - np.repeat(lo, ends - starts)] = sums
            flat = dense.tolist()
            for i, low, o, s in zip(acc[starts].tolist(), (lo + bottom).tolist(), offsets.tolist(),
                                    size.tolist(), strict=True):
                out[i] = (low, tuple(flat[o:o + s]), zsum.pop(i, 0))
        for i, z in zsum.items():
            out[i] = (0, (), z)
        return out

    def _renumber(self) -> None:
        live = np.array(sorted(self.ids.values()), np.int64)
        new = np.full(self.n, -1, np.int64)
        new[live] = np.arange(len(live))
        for k, i in self.ids.items():
            self.ids[k] = int(new[i])
        for name in ("window", "gid", "requests", "errors", "lat", "first", "last", "protocol"):
            setattr(self, name, getattr(self, name)[live])
        self.n = len(live)
        self.buckets = [(new[a], b, c) for a, b, c in self.buckets]
        self.endpoints = [(new[a], e) for a, e in self.endpoints]
        self.fine = {int(new[i]): s for i, s in self.fine.items()}

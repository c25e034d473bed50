"""Latency sketch: an OTLP base-2 exponential histogram, mergeable, with a bounded relative error.

Bucket ``i`` at scale ``s`` holds the observations in ``(b**i, b**(i+1)]`` seconds with
``b = 2**(2**-s)``: the bucket layout of OpenTelemetry's exponential histogram, so a client's
exponential histogram maps onto ours bucket for bucket (:meth:`LatencySketch.from_otlp`), and
dropping one scale merges pairs of buckets exactly (``i >> 1``). Observations of 0 (or below
:data:`ZERO_THRESHOLD`) are counted apart, as OTLP's ``zero_count``.

Error bound: a quantile is read as the value that splits its bucket in relative terms,
``2 b**(i+1) / (1 + b)``, which is within ``(b - 1) / (b + 1)`` of every value in the bucket:
1.08% at our scale 5 (:data:`SCALE`), less at a finer one. Between two ranks the estimate is
interpolated linearly as ``numpy.quantile`` does, so it stays within that bound of numpy's figure.

Scale: what we record ourselves (span durations, means of summary points) is kept at :data:`SCALE`.
A client's histogram at a finer scale keeps it up to :data:`MAX_SCALE`; merging two sketches gives
the coarser scale of the two, and a sketch wider than :data:`MAX_BUCKETS` is coarsened down to
:data:`SCALE` (never below it). The result of a merge depends only on the observations, not on the
order of merging: merging is associative and commutative.

Observations are clamped to ``[ZERO_THRESHOLD, MAX_SECONDS]`` so a sketch never holds more than
~1,600 buckets at :data:`SCALE`.

Why written here: the index is one line (``ceil(log2(v) * 2**s) - 1``); OpenTelemetry's SDK has the
same mapping only in a private module (``_internal``), and the test suite checks ours against it. The
``ddsketch`` package's mappings use a base of ``(1 + a) / (1 - a)``, which does not line up with OTLP's
powers of two, so clients' exponential histograms could not be kept bucket for bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import ceil as _ceil
from math import frexp as _frexp
from math import log2 as _log2
from operator import add
from typing import Any

#: Our own resolution: buckets 2.19% wide, quantiles within 1.08% of the exact value.
SCALE = 5
#: The finest scale kept from a client's exponential histogram.
MAX_SCALE = 8
#: A sketch finer than SCALE with more buckets than this is coarsened.
MAX_BUCKETS = 2048
#: No sketch spans more buckets than this (MAX_SECONDS / ZERO_THRESHOLD at MAX_SCALE, rounded up).
MAX_SPAN = 1 << 14
#: Observations at or below this (seconds) count as zero.
ZERO_THRESHOLD = 1e-9
#: Larger observations are counted as this (about 12 days).
MAX_SECONDS = float(2**20)


def _base(scale: int) -> float:
    return float(2.0 ** (2.0**-scale))


def relative_error(scale: int = SCALE) -> float:
    """The largest relative error of a quantile read from a sketch at ``scale``."""
    b = _base(scale)
    return (b - 1.0) / (b + 1.0)


def bucket_of(seconds: float, scale: int = SCALE) -> int:
    """The bucket index of an observation above :data:`ZERO_THRESHOLD` (clamped to MAX_SECONDS)."""
    v = seconds if seconds < MAX_SECONDS else MAX_SECONDS
    m, e = _frexp(v)  # v = m * 2**e, 0.5 <= m < 1
    if m == 0.5:  # exact powers of two close their bucket (upper bound inclusive)
        return ((e - 1) << scale) - 1
    return _ceil(_log2(v) * (1 << scale)) - 1


def _range_of(scale: int) -> tuple[int, int]:
    """The lowest and highest bucket a sketch at ``scale`` holds."""
    r = _RANGES.get(scale)
    if r is None:
        r = _RANGES[scale] = (bucket_of(ZERO_THRESHOLD, scale), bucket_of(MAX_SECONDS, scale))
    return r


_RANGES: dict[int, tuple[int, int]] = {}


def _shrink(counts: Mapping[int, int], by: int) -> dict[int, int]:
    if by <= 0:
        return dict(counts)
    out: dict[int, int] = {}
    for i, n in counts.items():
        j = i >> by
        out[j] = out.get(j, 0) + n
    return out


def _clamp(counts: Mapping[int, int], bottom: int, top: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for i, n in counts.items():
        j = min(max(i, bottom), top)
        out[j] = out.get(j, 0) + n
    return out


@dataclass(frozen=True, slots=True)
class LatencySketch:
    """Counts per exponential bucket (dense from ``offset``, no zero at either end) and a zero count.

    Build one with :meth:`of`, :meth:`from_counts` or :meth:`from_otlp`; the empty sketch (no
    observation) is false and means "latency not measured".
    """

    scale: int = SCALE
    offset: int = 0
    counts: tuple[int, ...] = ()
    zero: int = 0
    total: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", self.zero + sum(self.counts))

    def __bool__(self) -> bool:
        return self.total > 0

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def from_counts(cls, counts: Mapping[int, int], zero: int = 0, scale: int = SCALE) -> LatencySketch:
        """A sketch of ``{bucket index: count}`` at ``scale`` (coarsened to fit MAX_SCALE/MAX_BUCKETS)."""
        if scale > MAX_SCALE:
            counts, scale = _shrink(counts, scale - MAX_SCALE), MAX_SCALE
        live = {i: n for i, n in counts.items() if n} if 0 in counts.values() else counts
        if not live:
            if zero < 0:
                raise ValueError("a latency sketch counts observations: no negative count")
            return cls(scale, 0, (), int(zero)) if zero else EMPTY
        if min(live.values()) < 0 or zero < 0:
            raise ValueError("a latency sketch counts observations: no negative count")
        lo, hi = min(live), max(live)
        bottom, top = _range_of(scale)
        if lo < bottom or hi > top:  # a client's buckets beyond what we keep: clamped
            live = _clamp(live, bottom, top)
            lo, hi = min(live), max(live)
        while scale > SCALE and hi - lo >= MAX_BUCKETS:
            live, scale = _shrink(live, 1), scale - 1
            lo, hi = min(live), max(live)
        dense = [0] * (hi - lo + 1)
        for i, n in live.items():
            dense[i - lo] = int(n)
        return cls(scale, lo, tuple(dense), int(zero))

    @classmethod
    def of(cls, samples: Iterable[float], scale: int = SCALE) -> LatencySketch:
        """A sketch of observations in seconds (non-positive or NaN ones count as zero)."""
        counts: dict[int, int] = {}
        zero = 0
        for s in samples:
            if s > ZERO_THRESHOLD:
                i = bucket_of(s, scale)
                counts[i] = counts.get(i, 0) + 1
            else:
                zero += 1
        return cls.from_counts(counts, zero, scale)

    @classmethod
    def from_otlp(
        cls, scale: int, counts: Mapping[int, int], zero: int, unit_seconds: float = 1.0
    ) -> LatencySketch:
        """An OTLP exponential histogram's buckets ``{index: count}`` at ``scale``, in a unit of
        ``unit_seconds``: kept bucket for bucket at its scale (up to :data:`MAX_SCALE`) when the unit is
        seconds and the scale is :data:`SCALE` or finer.

        Otherwise (a unit such as ms, us, ns, not a power of two apart from seconds, or a coarser scale)
        each bucket's count goes to the bucket of its middle in seconds at the finer of its scale and
        ours, which adds at most half an incoming bucket's width to the error (1.1% at scale 5).
        """
        if unit_seconds == 1.0 and scale >= SCALE:
            return cls.from_counts(counts, zero, scale)
        target = min(max(scale, SCALE), MAX_SCALE)
        base = _base(scale)
        out: dict[int, int] = {}
        for k, n in counts.items():
            if not n:
                continue
            try:
                mid = 2.0 * base ** (k + 1) / (1.0 + base) * unit_seconds
            except OverflowError:
                mid = MAX_SECONDS
            if mid > ZERO_THRESHOLD:
                i = bucket_of(mid, target)
                out[i] = out.get(i, 0) + n
            else:
                zero += n
        return cls.from_counts(out, zero, target)

    # -- combining ---------------------------------------------------------------------------------
    def merge(self, other: LatencySketch) -> LatencySketch:
        """Both sketches' observations (at the coarser scale of the two)."""
        if not other.total:
            return self
        if not self.total:
            return other
        if not (self.counts and other.counts):
            return merge_sketches((self, other))
        if self.scale == other.scale and self.offset <= other.offset:
            a, b = self, other
        elif self.scale == other.scale:
            a, b = other, self
        else:
            return merge_sketches((self, other))
        shift = b.offset - a.offset
        end = max(len(a.counts), shift + len(b.counts))
        if end - 1 >= MAX_BUCKETS and a.scale > SCALE:
            return merge_sketches((self, other))
        if shift >= len(a.counts):
            dense = a.counts + (0,) * (shift - len(a.counts)) + b.counts
            return LatencySketch(a.scale, a.offset, dense, a.zero + b.zero)
        acc = list(a.counts)
        if end > len(acc):
            acc.extend([0] * (end - len(acc)))
        stop = shift + len(b.counts)
        acc[shift:stop] = map(add, acc[shift:stop], b.counts)  # C-level loop: ~3x a Python one
        return LatencySketch(a.scale, a.offset, tuple(acc), a.zero + b.zero)

    # -- reading -----------------------------------------------------------------------------------
    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in seconds (linear between ranks as ``numpy.quantile``); None if empty."""
        n = self.total
        if not n:
            return None
        rank = min(max(q, 0.0), 1.0) * (n - 1)
        lo_rank = math.floor(rank)
        lo = self._value_at(lo_rank)
        frac = rank - lo_rank
        if not frac:
            return lo
        return lo + (self._value_at(lo_rank + 1) - lo) * frac

    def values(self) -> list[tuple[float, int]]:
        """``(seconds, count)`` of every non-empty bucket, ascending: the zero count at 0.0, then each
        bucket's count at the value a quantile reads there (within :func:`relative_error` of every
        observation in the bucket). What a fixed-bucket histogram is filled from."""
        out = [(0.0, self.zero)] if self.zero else []
        base = _base(self.scale)
        for k, c in enumerate(self.counts, self.offset):
            if c:
                out.append((float(2.0 * base ** (k + 1) / (1.0 + base)), c))
        return out

    def _value_at(self, rank: int) -> float:
        """The estimate of the observation of 0-based ``rank`` in sorted order."""
        if rank < self.zero:
            return 0.0
        seen = self.zero
        base = _base(self.scale)
        for k, c in enumerate(self.counts):
            seen += c
            if seen > rank:
                return float(2.0 * base ** (self.offset + k + 1) / (1.0 + base))
        return float(2.0 * base ** (self.offset + len(self.counts)) / (1.0 + base))  # pragma: no cover

    # -- wire --------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """``{"s": scale, "o": offset, "z": zero, "c": counts}``: the JSON form; in ``c`` a run of
        ``k`` empty buckets is written as ``-k``."""
        out: list[int] = []
        gap = 0
        for n in self.counts:
            if n:
                if gap:
                    out.append(-gap)
                    gap = 0
                out.append(n)
            else:
                gap += 1
        return {"s": self.scale, "o": self.offset, "z": self.zero, "c": out}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LatencySketch:
        """The inverse of :meth:`to_json`; raises ValueError on anything else."""
        try:
            scale, offset, zero, runs = d["s"], d["o"], d["z"], list(d["c"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"a latency sketch is {{s, o, z, c}}, got {d!r:.80}") from e
        if not all(type(x) is int for x in (scale, offset, zero, *runs)):
            raise ValueError("a latency sketch holds integers only")
        if len(runs) > MAX_SPAN or sum(-n for n in runs if n < 0) > MAX_SPAN:
            raise ValueError("a latency sketch wider than any we write")
        counts: list[int] = []
        for n in runs:
            if n < 0:
                counts.extend([0] * -n)
            else:
                counts.append(n)
        return cls.checked(scale, offset, zero, tuple(counts))

    @classmethod
    def checked(cls, scale: int, offset: int, zero: int, counts: tuple[int, ...]) -> LatencySketch:
        """A sketch from stored parts, validated as :meth:`from_counts` would have built it."""
        if not SCALE <= scale <= MAX_SCALE:
            raise ValueError(f"latency sketch scale {scale} is outside {SCALE}..{MAX_SCALE}")
        if zero < 0 or any(c < 0 for c in counts):
            raise ValueError("a latency sketch has no negative count")
        if counts and not (counts[0] and counts[-1]):
            raise ValueError("a latency sketch's counts start and end with a non-zero bucket")
        bottom, top = _range_of(scale)
        if counts and not bottom <= offset <= offset + len(counts) - 1 <= top:
            raise ValueError(f"a latency sketch's buckets lie in {bottom}..{top} at scale {scale}")
        return cls(scale, offset if counts else 0, counts, zero)

    @classmethod
    def from_power_of_two(cls, hist: Sequence[int]) -> LatencySketch:
        """The histogram layout stored before sketches: bucket ``k`` counts ``(1 ms * 2**(k-1), 1 ms * 2**k]``
        (bucket 0 from 0, the last one everything above ~17.5 min). Each count is placed at its bucket's
        geometric middle, so old windows keep their old resolution (a factor of 1.41 either way)."""
        counts: dict[int, int] = {}
        for k, n in enumerate(hist):
            if n:
                mid = 0.001 * 2.0 ** (k - 0.5)
                i = bucket_of(mid)
                counts[i] = counts.get(i, 0) + int(n)
        return cls.from_counts(counts)


EMPTY = LatencySketch()


def merge_sketches(items: Iterable[LatencySketch]) -> LatencySketch:
    """The merge of many sketches in one pass (the same result as folding :meth:`LatencySketch.merge`)."""
    live = [s for s in items if s.total]
    if not live:
        return EMPTY
    if len(live) == 1:
        return live[0]
    scale = min(s.scale for s in live)
    zero = sum(s.zero for s in live)
    live = [s for s in live if s.counts]
    if not live:
        return LatencySketch(scale, 0, (), zero)
    if all(s.scale == scale for s in live):
        lo = min(s.offset for s in live)
        hi = max(s.offset + len(s.counts) for s in live)
        if scale == SCALE or hi - lo <= MAX_BUCKETS:
            acc = [0] * (hi - lo)
            for s in live:
                i = s.offset - lo
                j = i + len(s.counts)
                acc[i:j] = map(add, acc[i:j], s.counts)
            return LatencySketch(scale, lo, tuple(acc), zero)
    counts: dict[int, int] = {}
    for s in live:
        by = s.scale - scale
        for k, n in enumerate(s.counts, s.offset):
            if n:
                j = k >> by
                counts[j] = counts.get(j, 0) + n
    return LatencySketch.from_counts(counts, zero, scale)

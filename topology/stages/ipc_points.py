"""IPC stage 1 point by point (see :mod:`topology.stages.ipc` for what it computes).

:class:`PointIpcStage1` reads the compact schema of :func:`topology.wire.otlp.metrics_view` one upb
object at a time. It is what :class:`topology.stages.ipc.IpcStage1` was before the columnar decode, kept
unchanged as the fallback when the native module is not built and as the oracle the native stage is
tested against.
"""

from __future__ import annotations

import math
import operator
import struct
from collections import OrderedDict
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from topology.model import Side
from topology.sketch import LatencySketch
from topology.stages.ipc import (
    _CUMULATIVE,
    _METRICS,
    _STAT_COUNT,
    _STAT_TOTAL,
    _UNITS,
    MAX_SERIES,
    WINDOW_SECONDS,
    IpcObservation,
    IpcStage1,
    _Acc,
    _bucket,
    _ExpCounts,
    _exponential_delta,
    _exponential_sketch,
    _Group,
    _Layout,
    _meaning,
    _observation,
    _rebucket,
)
from topology.wire.otlp import OtlpDecodeError, metrics_view


class _Series:
    """What one series means (parsed once) and, for cumulative series, its last value."""

    __slots__ = ("acc", "acc_epoch", "acc_window", "base", "bounds", "counts", "endpoint", "error", "group",
                 "join", "join_epoch", "join_window", "layout", "protocol", "run", "run_acc", "seen", "start",
                 "stat", "total", "value")

    def __init__(self, group: _Group | None, error: bool, endpoint: str | None, protocol: str | None,
                 stat: str | None, base: tuple[Any, ...] | None) -> None:
        self.group = group
        self.error = error
        self.endpoint = endpoint
        self.protocol = protocol
        self.stat = stat
        self.base = base
        self.start = -1  # -1: no baseline yet
        self.value = 0.0  # last cumulative count (histograms) or value (sums)
        self.total = 0.0  # last cumulative sum (histograms)
        self.counts: Any = None  # last cumulative buckets: packed bytes + tuple, or a target histogram
        self.seen = 0  # the flush epoch in which the series last had a point (for eviction)
        self.bounds = b""  # explicit bounds (packed) that ``layout`` was made for
        self.layout: _Layout | None = None
        # The accumulator (and statistic join) this series last added to, valid for that window until the
        # next flush: the next point of the same window skips the lookup and the per-accumulator
        # bookkeeping (endpoint, protocol) that the first point did.
        self.acc: _Acc | None = None
        self.acc_window = self.acc_epoch = -1
        self.join: _StatJoin | None = None
        self.join_window = self.join_epoch = -1
        # The cumulative bucket run this series is extending in ``run_acc`` (see ``_Acc.runs``).
        self.run: list[Any] | None = None
        self.run_acc: _Acc | None = None



class _StatJoin:
    __slots__ = ("acc", "count", "total")

    def __init__(self, acc: _Acc) -> None:
        self.acc = acc
        self.count = 0.0
        self.total = 0.0



class PointIpcStage1(IpcStage1):
    """Stage 1 point by point on upb objects (the stage before columnar decoding): the fallback when the
    native module is not built, and the oracle the native stage is tested against.

    Metric points -> :class:`IpcObservation` per (side, service, peer) per window.

    ``add(request)`` takes a decoded request; ``add_serialized(data)`` takes the protobuf bytes as they
    come from Kafka or HTTP and is the fast path (no Python objects per attribute). ``flush(watermark)``
    returns the observations of every window that ended at or before ``watermark``.
    """

    # each instance sets its own in __init__ (a plain attribute here, not the native stage's property)
    counters: dict[str, int] = {}

    def __init__(self, window_seconds: int = WINDOW_SECONDS, max_series: int = MAX_SERIES) -> None:
        if window_seconds <= 0 or max_series <= 0:
            raise ValueError("window_seconds and max_series must be positive")
        self.window_seconds = window_seconds
        self.max_series = max_series
        self.counters: dict[str, int] = dict.fromkeys(
            ("requests", "bad_requests", "points", "series", "unknown_metrics", "no_service", "no_peer",
             "baselines", "resets", "evictions", "late_points", "ignored_points", "bad_points",
             "observations"), 0)
        # ordered: eviction takes from the front, which must stay O(1) (a plain dict degrades)
        self._series: OrderedDict[tuple[Any, ...], _Series] = OrderedDict()
        self._services: dict[bytes, str | None] = {}
        self._accs: dict[tuple[int, _Group], _Acc] = {}
        self._stats: dict[tuple[int, tuple[Any, ...]], _StatJoin] = {}
        self._bucket_maps: dict[tuple[bytes, float], _Layout] = {}
        self._unpackers: dict[int, Any] = {}
        self._watermark = -math.inf
        self._epoch = 0  # flushes so far

    # -- input ------------------------------------------------------------------------------------
    def add(self, request: ExportMetricsServiceRequest) -> None:
        self.add_serialized(request.SerializeToString())

    def add_serialized(self, data: bytes) -> None:
        """Add a serialized ``ExportMetricsServiceRequest``; raises OtlpDecodeError (counted) if malformed."""
        try:
            view = metrics_view(data)
        except OtlpDecodeError:
            self.counters["bad_requests"] += 1
            raise
        self.counters["requests"] += 1
        for rm in view.resource_metrics:
            res = rm.resource
            service = self._services.get(res, "")
            if service == "":
                service = self._service_of(res)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    self._add_metric(res, service, m)

    def _add_metric(self, res: bytes, service: str | None, m: Any) -> None:
        c = self.counters
        name: str = m.name
        spec = _METRICS.get(name)
        if spec is None:
            c["unknown_metrics"] += 1
            return
        side, default_scale, default_protocol = spec
        scale = _UNITS.get(m.unit, default_scale)
        if m.HasField("histogram"):
            data, kind = m.histogram, "h"
        elif m.HasField("sum"):
            data, kind = m.sum, "n"
        elif m.HasField("gauge"):
            data, kind = m.gauge, "g"
        elif m.HasField("exponential_histogram"):
            data, kind = m.exponential_histogram, "e"
        elif m.HasField("summary"):
            data, kind = m.summary, "s"
        else:
            return  # a metric without data
        points = data.data_points
        c["points"] += len(points)
        if service is None:
            c["no_service"] += len(points)
            return
        cumulative = kind == "s" or (kind != "g" and data.aggregation_temporality == _CUMULATIVE)
        if kind == "h":
            self._histograms(res, name, service, side, default_protocol, scale, points, cumulative)
        elif kind in ("n", "g"):
            self._numbers(res, name, service, side, default_protocol, scale, points, cumulative)
        else:
            self._others(res, name, service, side, default_protocol, scale, points, cumulative, kind)

    def _new_series(self, key: tuple[Any, ...], service: str, side: Side,
                    default_protocol: str | None) -> _Series:
        """Parse a series' attributes once and remember it (evicting one if the cache is full)."""
        self.counters["series"] += 1
        m = _meaning(key[0], key[1], key[2], service, side, default_protocol)
        s = _Series(*m) if m is not None else _Series(None, False, None, None, None, None)
        series = self._series
        if len(series) >= self.max_series:
            self._evict()
        series[key] = s
        return s

    def _evict(self) -> None:
        """Evict the oldest series not seen since the last flush (or, failing that, the oldest)."""
        series = self._series
        for _ in range(8):
            key, s = series.popitem(last=False)
            if s.seen != self._epoch:
                break
            series[key] = s  # recently active: second chance, to the back of the line
        else:
            series.popitem(last=False)
        self.counters["evictions"] += 1

    def _acc(self, window: int, group: _Group) -> _Acc:
        acc = self._accs.get((window, group))
        if acc is None:
            acc = self._accs[(window, group)] = _Acc()
            if window + self.window_seconds <= self._watermark:
                self.counters["late_points"] += 1
        return acc

    # -- point kinds --------------------------------------------------------------------------------
    def _histograms(self, res: bytes, name: str, service: str, side: Side, default_protocol: str | None,
                    scale: float, points: Any, cumulative: bool) -> None:
        """Explicit-bucket histogram points: the hot path, written out in one loop."""
        series, accs, epoch, unpackers = self._series, self._accs, self._epoch, self._unpackers
        ws = self.window_seconds
        wns = ws * 1_000_000_000
        watermark = self._watermark
        no_peer = baselines = resets = late = bad = 0
        for dp in points:
            key = (res, name, tuple(dp.attributes))
            s = series.get(key)
            if s is None:
                s = self._new_series(key, service, side, default_protocol)
            s.seen = epoch
            group = s.group
            if group is None:
                no_peer += 1
                continue
            t_ns: int = dp.time_unix_nano
            if t_ns <= 0:
                bad += 1
                continue
            count: int = dp.count
            packed: bytes = dp.bucket_counts
            bounds: bytes = dp.explicit_bounds
            if bounds != s.bounds or s.layout is None:
                s.bounds, s.layout = bounds, self._bucket_map(bounds, scale)
            unpack = unpackers.get(len(packed))
            if unpack is None:
                unpack = self._unpacker(len(packed))
            if cumulative:
                start: int = dp.start_time_unix_nano
                if s.start < 0:
                    s.start, s.value, s.total, s.counts = start, count, dp.sum, (packed, unpack(packed))
                    baselines += 1
                    continue
                prev_packed, prev = s.counts
                if packed == prev_packed and count == s.value and start == s.start:
                    continue  # nothing happened since the last point
                total: float = dp.sum
                cur = unpack(packed)
                if start != s.start or count < s.value or len(cur) != len(prev):
                    d = None
                else:
                    d = list(map(operator.sub, cur, prev))
                    if d and min(d) < 0:
                        d = None
                if d is None:
                    resets += 1
                    d, dcount, dsum = list(cur), count, total
                    chained = None
                else:
                    dcount, dsum = count - int(s.value), total - s.total
                    chained = prev  # d is cur - prev
                s.start, s.value, s.total, s.counts = start, count, total, (packed, cur)
            else:
                d, dcount, dsum = list(unpack(packed)), count, dp.sum
                cur = chained = None
            if dcount <= 0:
                continue
            window = t_ns // wns * ws
            acc = s.acc
            if acc is None or s.acc_window != window or s.acc_epoch != epoch:
                acc = accs.get((window, group))
                if acc is None:
                    acc = accs[(window, group)] = _Acc()
                    if window + ws <= watermark:
                        late += 1
                if s.endpoint is not None:
                    acc.endpoints.add(s.endpoint)
                if acc.protocol is None:
                    acc.protocol = s.protocol
                s.acc, s.acc_window, s.acc_epoch = acc, window, epoch
            acc.requests += dcount
            if s.error:
                acc.errors += dcount
            acc.lat_sum += dsum * scale
            layout = s.layout
            hist = acc.hist
            if layout is None or len(layout[0]) != len(d) or len(d) < 2:
                i = _bucket(dsum * scale / dcount)
                hist[i] = hist.get(i, 0) + dcount
            elif len(d) - d.count(0) == 1:
                # One bucket: the mean is exact, if it agrees with the bucket (else inconsistent data).
                targets, edges = layout
                n = max(d)
                i = d.index(n)
                mean = dsum * scale / n
                inside = (i == 0 or mean > edges[i - 1]) and (i == len(edges) or mean <= edges[i])
                i = _bucket(mean) if inside else targets[i]
                hist[i] = hist.get(i, 0) + n
            else:
                targets = layout[0]
                run = s.run
                if chained is None:
                    raw = acc.raw.get(id(targets))
                    if raw is None:
                        acc.raw[id(targets)] = (targets, d)
                    else:
                        raw[1][:] = map(operator.add, raw[1], d)
                elif run is not None and run[2] is chained and s.run_acc is acc and run[0] is targets:
                    run[2] = cur  # the previous point of this series ended this run: extend it
                else:
                    s.run, s.run_acc = [targets, chained, cur], acc
                    acc.runs.append(s.run)
            t = t_ns / 1e9
            if t < acc.first:
                acc.first = t
            if t > acc.last:
                acc.last = t
        if no_peer or baselines or resets or late or bad:
            self._count(no_peer=no_peer, baselines=baselines, resets=resets, late_points=late, bad_points=bad)

    def _numbers(self, res: bytes, name: str, service: str, side: Side, default_protocol: str | None,
                 scale: float, points: Any, cumulative: bool) -> None:
        """Sum and Gauge points: call counts, or Spectator count/totalTime/max statistics."""
        series, epoch, accs = self._series, self._epoch, self._accs
        ws = self.window_seconds
        wns = ws * 1_000_000_000
        no_peer = baselines = resets = ignored = bad = 0
        for dp in points:
            key = (res, name, tuple(dp.attributes))
            s = series.get(key)
            if s is None:
                s = self._new_series(key, service, side, default_protocol)
            s.seen = epoch
            group = s.group
            if group is None:
                no_peer += 1
                continue
            t_ns: int = dp.time_unix_nano
            if t_ns <= 0:
                bad += 1
                continue
            v: float = dp.as_double or dp.as_int
            if cumulative:
                start: int = dp.start_time_unix_nano
                if s.start < 0:
                    s.start, s.value = start, v
                    baselines += 1
                    continue
                if start != s.start or v < s.value:
                    resets += 1
                    d = v
                else:
                    d = v - s.value
                s.start, s.value = start, v
            else:
                d = v
            stat = s.stat
            window = t_ns // wns * ws
            if stat is None or stat == _STAT_COUNT:
                n = round(d)
                if n <= 0:
                    continue
                acc = s.acc
                if acc is None or s.acc_window != window or s.acc_epoch != epoch:
                    acc = accs.get((window, group))
                    if acc is None:
                        acc = self._acc(window, group)
                    if s.endpoint is not None:
                        acc.endpoints.add(s.endpoint)
                    if acc.protocol is None:
                        acc.protocol = s.protocol
                    s.acc, s.acc_window, s.acc_epoch = acc, window, epoch
                acc.requests += n
                if s.error:
                    acc.errors += n
                if s.base is not None:
                    join = s.join
                    if join is None or s.join_window != window or s.join_epoch != epoch:
                        join = self._join(window, s.base, acc)
                        s.join, s.join_window, s.join_epoch = join, window, epoch
                    join.count += n
                t = t_ns / 1e9
                if t < acc.first:
                    acc.first = t
                if t > acc.last:
                    acc.last = t
            elif stat == _STAT_TOTAL and s.base is not None:
                if d > 0:
                    join = s.join
                    if join is None or s.join_window != window or s.join_epoch != epoch:
                        join = self._join(window, s.base, self._acc(window, group))
                        s.join, s.join_window, s.join_epoch = join, window, epoch
                    join.total += d * scale
            else:
                ignored += 1  # max, percentiles: nothing to add
        if no_peer or baselines or resets or ignored or bad:
            self._count(no_peer=no_peer, baselines=baselines, resets=resets, ignored_points=ignored,
                        bad_points=bad)

    def _others(self, res: bytes, name: str, service: str, side: Side, default_protocol: str | None,
                scale: float, points: Any, cumulative: bool, kind: str) -> None:
        """Exponential histograms and summaries (rare in practice: a plain loop)."""
        series, epoch = self._series, self._epoch
        ws = self.window_seconds
        wns = ws * 1_000_000_000
        for dp in points:
            key = (res, name, tuple(dp.attributes))
            s = series.get(key)
            if s is None:
                s = self._new_series(key, service, side, default_protocol)
            s.seen = epoch
            if s.group is None:
                self.counters["no_peer"] += 1
                continue
            t_ns: int = dp.time_unix_nano
            if t_ns <= 0:
                self.counters["bad_points"] += 1
                continue
            if kind == "e":
                n, dsum, hist = self._exponential(s, dp, cumulative, scale)
            else:
                n, dsum, hist = self._summary(s, dp, scale)
            if n <= 0:
                continue
            acc = self._acc(t_ns // wns * ws, s.group)
            acc.requests += n
            if s.error:
                acc.errors += n
            acc.lat_sum += dsum
            if hist is None:
                i = _bucket(dsum / n)
                acc.hist[i] = acc.hist.get(i, 0) + n
            else:
                acc.fine = acc.fine.merge(hist)
            t = t_ns / 1e9
            acc.first, acc.last = min(acc.first, t), max(acc.last, t)
            if s.endpoint is not None:
                acc.endpoints.add(s.endpoint)
            if acc.protocol is None:
                acc.protocol = s.protocol

    def _exponential(self, s: _Series, dp: Any, cumulative: bool,
                     scale: float) -> tuple[int, float, LatencySketch | None]:
        """(calls, seconds, sketch or None for "use the mean") of an exponential histogram point."""
        count: int = dp.count
        total: float = dp.sum
        cur = _exponential_counts(dp)
        if not cumulative:
            return count, total * scale, _exponential_sketch(cur, scale)
        start: int = dp.start_time_unix_nano
        if s.start < 0:
            s.start, s.value, s.total, s.counts = start, count, total, cur
            self.counters["baselines"] += 1
            return 0, 0.0, None
        d: _ExpCounts | None = cur
        if start != s.start or count < s.value:
            self.counters["resets"] += 1
            dcount, dsum = count, total
        else:
            dcount, dsum = count - int(s.value), total - s.total
            d = _exponential_delta(cur, s.counts)  # None: the sender changed the scale: use the mean
        s.start, s.value, s.total, s.counts = start, count, total, cur
        return dcount, dsum * scale, None if d is None else _exponential_sketch(d, scale)

    def _summary(self, s: _Series, dp: Any, scale: float) -> tuple[int, float, LatencySketch | None]:
        count: int = dp.count
        total: float = dp.sum
        start: int = dp.start_time_unix_nano
        if s.start < 0:
            s.start, s.value, s.total = start, count, total
            self.counters["baselines"] += 1
            return 0, 0.0, None
        if start != s.start or count < s.value:
            self.counters["resets"] += 1
            dcount, dsum = count, total
        else:
            dcount, dsum = count - int(s.value), total - s.total
        s.start, s.value, s.total = start, count, total
        return dcount, dsum * scale, None

    def _count(self, **deltas: int) -> None:
        c = self.counters
        for k, v in deltas.items():
            if v:
                c[k] += v

    def _join(self, window: int, base: tuple[Any, ...], acc: _Acc) -> _StatJoin:
        j = self._stats.get((window, base))
        if j is None:
            j = self._stats[(window, base)] = _StatJoin(acc)
        return j

    def _unpacker(self, nbytes: int) -> Any:
        n = nbytes >> 3
        f = self._unpackers.get(n)
        if f is None:
            f = self._unpackers[n] = struct.Struct(f"<{n}Q").unpack_from
        return f

    def _bucket_map(self, bounds: bytes, scale: float) -> _Layout | None:
        """Per OTLP bucket the shared bucket its count goes to, and the bounds in seconds (None: unusable)."""
        key = (bounds, scale)
        layout = self._bucket_maps.get(key)
        if layout is None:
            layout = _rebucket(bounds, scale)
            if len(self._bucket_maps) >= 10_000:
                self._bucket_maps.clear()
            self._bucket_maps[key] = layout
        return layout if layout[0] else None

    # -- output ------------------------------------------------------------------------------------
    def flush(self, watermark: float) -> list[IpcObservation]:
        """Observations of every window that ended at or before ``watermark`` (sorted, deterministic)."""
        ws = self.window_seconds
        self._watermark = max(self._watermark, watermark)
        self._epoch += 1
        for key in [k for k in self._stats if k[0] + ws <= watermark]:
            j = self._stats.pop(key)
            if j.count > 0 and j.total > 0:
                n = round(j.count)
                i = _bucket(j.total / j.count)
                j.acc.hist[i] = j.acc.hist.get(i, 0) + n
                j.acc.lat_sum += j.total
        out: list[IpcObservation] = []
        for key in sorted(k for k in self._accs if k[0] + ws <= watermark):
            acc = self._accs.pop(key)
            if acc.requests <= 0:
                continue  # idle series: no calls, no edge
            raws = acc.raw
            for targets, before, after in acc.runs:
                raw = raws.get(id(targets))
                if raw is None:
                    raws[id(targets)] = (targets, list(map(operator.sub, after, before)))
                else:
                    raw[1][:] = map(operator.add, raw[1], map(operator.sub, after, before))
            hist = acc.hist
            for targets, counts in raws.values():
                for i, n in enumerate(counts):
                    if n:
                        t = targets[i]
                        hist[t] = hist.get(t, 0) + n
            out.append(_observation(key[0], ws, key[1], acc))
        self.counters["observations"] += len(out)
        return out

    @property
    def open_series(self) -> int:
        return len(self._series)



def _exponential_counts(dp: Any) -> _ExpCounts:
    """An OTLP exponential histogram point's buckets (negative values count as zero)."""
    pos = dp.positive
    offset: int = pos.offset
    counts = {offset + i: n for i, n in enumerate(pos.bucket_counts) if n}
    return dp.scale, counts, dp.zero_count + sum(dp.negative.bucket_counts)

"""IPC layer: OTLP metric points -> per-window observations (stage 1) -> app-level edge partials (stage 2).

Stage 1 (:class:`IpcStage1`) reads client and server call metrics (Spectator ``ipc.client.call`` /
``ipc.server.call``, OTel ``rpc.*`` and ``http.*`` durations, old and new names), turns cumulative
series into deltas, puts latencies into a :class:`topology.sketch.LatencySketch` and sums everything
of one (side, local service, peer) into one :class:`IpcObservation` per window. The peer is kept as
observed (an app name, or an IP address still to be resolved); a DNS name is reduced to its first label.

Stage 2 (:class:`IpcStage2`) resolves peers (IP addresses through the time-ranged address book, at the
observation's time) and emits :class:`topology.model.EdgePartial` records: Layer.IPC, Granularity.APP,
Side.CLIENT for client series and Side.SERVER for server series (stage 3 takes the larger of the two).

Between them :class:`IpcObservation` travels as a dict (``to_dict``/``from_dict``), keyed by
:attr:`IpcObservation.target_key`, over a Kafka repartition topic or an in-process queue.

Cumulative temporality: the first point of a series is its baseline (no delta). A value going down, or a
changed ``start_time_unix_nano``, is a reset: the new cumulative value is the delta (what happened since the
restart). The series cache is bounded; evicting a series costs one baseline, and is counted. Series not
seen since the last flush are evicted first.

Spectator timers exported as Sum/Gauge points carry a ``statistic`` attribute (count, totalTime, max): the
count and totalTime of one series are joined per window and the count goes into the bucket of the mean.
Gauges are taken as per-interval values (delta).

Latency resolution: an exponential histogram in seconds keeps its own scale (finer than ours up to
:data:`topology.sketch.MAX_SCALE`; bucket for bucket). An explicit-bucket histogram's count goes to the
sketch bucket of its bucket's geometric middle ``sqrt(lo * hi)``: a quantile read from it is within a
factor ``sqrt(hi / lo)`` of the truth (plus the sketch's 1.1%); for the first bucket ``(0, b0]`` the
count sits at ``b0 / 2`` and for the overflow bucket ``(bn, inf)`` at ``2 bn`` (no bound: the sender
did not measure more). A point whose counts are all in one bucket, and Spectator's count/totalTime,
go to the bucket of the mean (exact up to the sketch's 1.1%).
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import operator
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from topology.address import AddressBook
from topology.catalog import NAME_MAX, AddressKind
from topology.model import EdgeKey, EdgePartial, Granularity, Layer, NodeKind, Side
from topology.sketch import EMPTY, ZERO_THRESHOLD, LatencySketch, bucket_of
from topology.stats import MAX_ENDPOINTS, EdgeStats
from topology.wire.otlp import AttrValue, OtlpDecodeError, attribute, metrics_view

WINDOW_SECONDS = 60
MAX_SERIES = 200_000

# metric name -> (side, default seconds per unit, default protocol)
_METRICS: dict[str, tuple[Side, float, str | None]] = {
    "ipc.client.call": (Side.CLIENT, 1.0, None),
    "ipc.server.call": (Side.SERVER, 1.0, None),
    "rpc.client.duration": (Side.CLIENT, 1e-3, None),
    "rpc.client.call.duration": (Side.CLIENT, 1.0, None),
    "rpc.server.duration": (Side.SERVER, 1e-3, None),
    "rpc.server.call.duration": (Side.SERVER, 1.0, None),
    "http.client.request.duration": (Side.CLIENT, 1.0, "http"),
    "http.client.duration": (Side.CLIENT, 1e-3, "http"),
    "http.server.request.duration": (Side.SERVER, 1.0, "http"),
    "http.server.duration": (Side.SERVER, 1e-3, "http"),
}
ACCEPTED_METRICS: frozenset[str] = frozenset(_METRICS)
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "ns": 1e-9, "min": 60.0}

# Where the callee's identity is, in order: names first, then addresses (DNS name or IP).
_PEER_NAMES = ("ipc.server.app", "service.peer.name", "peer.service")
_PEER_ADDRESSES = ("server.address", "net.peer.name", "network.peer.address", "net.sock.peer.addr")
_CALLER_NAMES = ("ipc.client.app",)

_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_STAT_COUNT = "count"
_STAT_TOTAL = "totalTime"
_ZERO = -(1 << 40)  # the key of zero-length calls in an accumulator's sketch buckets
# An exponential histogram point's buckets: (scale, {index: count}, zero count)
_ExpCounts = tuple[int, dict[int, int], int]


def _bucket(seconds: float) -> int:
    """The sketch bucket (at topology.sketch.SCALE) of one latency, or _ZERO."""
    return bucket_of(seconds) if seconds > ZERO_THRESHOLD else _ZERO


@dataclass(frozen=True, slots=True)
class IpcObservation:
    """Stage 1 -> stage 2: the calls of one (side, local service, peer) in one window.

    ``peer`` is the callee for client series and the caller for server series; ``peer_is_ip`` marks an
    address that stage 2 still has to resolve. ``stats`` carries requests, errors, latency, endpoints,
    protocol and first/last seen.
    """

    window_start: int
    window_seconds: int
    side: Side
    service: str
    peer: str
    peer_is_ip: bool
    stats: EdgeStats

    @property
    def target_key(self) -> str:
        """Partition key of the repartition topic: the callee as observed."""
        return self.peer if self.side is Side.CLIENT else self.service

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_start": self.window_start,
            "window_seconds": self.window_seconds,
            "side": self.side.value,
            "service": self.service,
            "peer": self.peer,
            "peer_is_ip": self.peer_is_ip,
            "stats": self.stats.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IpcObservation:
        for k in ("service", "peer"):
            if not isinstance(d.get(k), str) or not d[k]:
                raise ValueError(f"IPC observation needs a non-empty string {k!r}")
        for k in ("window_start", "window_seconds"):
            if not isinstance(d.get(k), int) or isinstance(d[k], bool):
                raise ValueError(f"IPC observation needs an integer {k!r}")
        side = Side(str(d.get("side")))
        if side is Side.PAIR:
            raise ValueError("IPC observations are CLIENT or SERVER side")
        stats = d.get("stats", {})
        if not isinstance(stats, dict):
            raise ValueError("IPC observation 'stats' must be an object")
        return cls(d["window_start"], d["window_seconds"], side, d["service"], d["peer"],
                   bool(d.get("peer_is_ip", False)), EdgeStats.from_dict(stats))


# -- stage 1 --------------------------------------------------------------------------------------
_Group = tuple[Side, str, str, bool]  # side, service, peer, peer_is_ip
_Layout = tuple[tuple[int, ...], tuple[float, ...]]  # target bucket per OTLP bucket, OTLP bounds in seconds


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


class _Acc:
    __slots__ = ("endpoints", "errors", "fine", "first", "hist", "last", "lat_sum", "protocol", "raw",
                 "requests", "runs")

    def __init__(self) -> None:
        # Explicit-bucket counts are summed as they come (per bucket layout, keyed by the id of its target
        # map) and re-bucketed into ``hist`` once, at flush.
        self.raw: dict[int, tuple[tuple[int, ...], list[int]]] = {}
        # Consecutive deltas of one cumulative series telescope: a run [targets, buckets before its first
        # point, buckets at its last point] stands for all of them and is re-bucketed at flush.
        self.runs: list[list[Any]] = []
        self.requests = 0
        self.errors = 0
        self.hist: dict[int, int] = {}  # sketch bucket (or _ZERO) -> calls
        self.fine = EMPTY  # exponential histograms, kept at their own scale
        self.lat_sum = 0.0
        self.endpoints: set[str] = set()
        self.protocol: str | None = None
        self.first = math.inf
        self.last = 0.0


class _StatJoin:
    __slots__ = ("acc", "count", "total")

    def __init__(self, acc: _Acc) -> None:
        self.acc = acc
        self.count = 0.0
        self.total = 0.0


class IpcStage1:
    """Metric points -> :class:`IpcObservation` per (side, service, peer) per window.

    ``add(request)`` takes a decoded request; ``add_serialized(data)`` takes the protobuf bytes as they
    come from Kafka or HTTP and is the fast path (no Python objects per attribute). ``flush(watermark)``
    returns the observations of every window that ended at or before ``watermark``.
    """

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

    def _service_of(self, res: bytes) -> str | None:
        service: str | None = None
        try:
            attributes = Resource.FromString(res).attributes
        except Exception:  # a resource that does not parse has no service: its points are counted
            attributes = []
        for kv in attributes:
            if kv.key == "service.name" and kv.value.string_value:
                service = kv.value.string_value
        if len(self._services) >= 10_000:
            self._services.clear()
        self._services[res] = service
        return service

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
        attrs: dict[str, AttrValue | None] = {}
        stat_raw: bytes | None = None
        s: _Series | None = None
        for raw in key[2]:
            try:
                k, v = attribute(raw)
            except Exception:  # an attribute that does not parse: this series is unusable
                s = _Series(None, False, None, None, None, None)
                break
            attrs[k] = v
            if k == "statistic":
                stat_raw = raw
        if s is None:
            peer = _peer(attrs, side)
            group: _Group | None = None if peer is None else (side, service, peer[0], peer[1])
            stat = _text(attrs.get("statistic"))
            base = None
            if stat is not None:
                base = (key[0], key[1], tuple(r for r in key[2] if r is not stat_raw))
            protocol = _text(attrs.get("ipc.protocol")) or _text(attrs.get("rpc.system.name")) \
                or _text(attrs.get("rpc.system")) or default_protocol
            s = _Series(group, _is_error(attrs), _endpoint(attrs), protocol, stat, base)
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
            window, (side, service, peer, is_ip) = key
            stats = EdgeStats(
                first_seen=acc.first,
                last_seen=acc.last,
                protocol=acc.protocol,
                requests=acc.requests,
                errors=acc.errors,
                latency=LatencySketch.from_counts(hist, hist.pop(_ZERO, 0)).merge(acc.fine),
                latency_sum=acc.lat_sum,
                endpoints=tuple(sorted(acc.endpoints)[:MAX_ENDPOINTS]),
            )
            out.append(IpcObservation(window, ws, side, service, peer, is_ip, stats))
        self.counters["observations"] += len(out)
        return out

    @property
    def open_series(self) -> int:
        return len(self._series)


def _rebucket(bounds: bytes, scale: float) -> _Layout:
    """Target sketch bucket per OTLP explicit bucket: the one holding the bucket's (geometric) middle."""
    if len(bounds) % 8:
        return (), ()
    b = tuple(x * scale for x in struct.unpack(f"<{len(bounds) // 8}d", bounds))
    if not b or any(y < x for x, y in itertools.pairwise(b)):
        return (), ()
    out = []
    for i in range(len(b) + 1):
        lo = b[i - 1] if i > 0 else 0.0
        if i == len(b):
            mid = lo * 2
        else:
            hi = b[i]
            mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        out.append(_bucket(mid))
    return tuple(out), b


def _exponential_counts(dp: Any) -> _ExpCounts:
    """An OTLP exponential histogram point's buckets (negative values count as zero)."""
    pos = dp.positive
    offset: int = pos.offset
    counts = {offset + i: n for i, n in enumerate(pos.bucket_counts) if n}
    return dp.scale, counts, dp.zero_count + sum(dp.negative.bucket_counts)


def _exponential_delta(cur: _ExpCounts, prev: _ExpCounts) -> _ExpCounts | None:
    """``cur - prev`` of one cumulative series; None if the scale changed or a count went down."""
    if cur[0] != prev[0] or cur[2] < prev[2]:
        return None
    now, before = cur[1], prev[1]
    if any(now.get(i, 0) < n for i, n in before.items()):
        return None
    delta = {i: n - before.get(i, 0) for i, n in now.items()}
    return cur[0], {i: n for i, n in delta.items() if n}, cur[2] - prev[2]


def _exponential_sketch(c: _ExpCounts, unit_seconds: float) -> LatencySketch | None:
    """The sketch of a point's (delta) buckets; None (use the mean) for a scale out of OTLP's range."""
    scale, counts, zero = c
    if not -10 <= scale <= 20:
        return None
    return LatencySketch.from_otlp(scale, counts, zero, unit_seconds)


# -- stage 2 --------------------------------------------------------------------------------------
_LEASE_KINDS = {
    AddressKind.WORKLOAD: NodeKind.SERVICE,
    AddressKind.DATABASE: NodeKind.DATABASE,
    AddressKind.MESSAGING: NodeKind.MESSAGING,
    AddressKind.EXTERNAL: NodeKind.EXTERNAL,
}


class IpcStage2:
    """:class:`IpcObservation` -> :class:`EdgePartial` (Layer.IPC, Granularity.APP, Side.CLIENT/SERVER).

    A peer address is resolved with the lease valid at the observation's first point: a WORKLOAD lease
    names the app; DATABASE / MESSAGING / EXTERNAL leases a virtual node of that kind; an intermediary
    (load balancer, gateway, proxy) an UNINSTRUMENTED node named after it; no lease ``ip:<address>``
    (UNKNOWN).
    """

    def __init__(self, addresses: AddressBook | None = None) -> None:
        self.addresses = addresses
        self.counters: dict[str, int] = dict.fromkeys(
            ("observations", "partials", "resolved", "unresolved"), 0)
        self._pending: dict[tuple[EdgeKey, int, int, Side], EdgePartial] = {}

    def resolve(self, obs: IpcObservation) -> EdgePartial:
        peer, kind = obs.peer, NodeKind.SERVICE
        if obs.peer_is_ip:
            lease = None
            if self.addresses is not None:
                lease = self.addresses.resolve(obs.peer, obs.stats.first_seen or float(obs.window_start))
            if lease is None:
                self.counters["unresolved"] += 1
                peer, kind = f"ip:{obs.peer}", NodeKind.UNKNOWN
            else:
                self.counters["resolved"] += 1
                peer, kind = lease.owner, _LEASE_KINDS.get(lease.kind, NodeKind.UNINSTRUMENTED)
        ws, side = obs.window_seconds, obs.side
        if side is Side.CLIENT:
            key = EdgeKey(Layer.IPC, Granularity.APP, obs.service, peer)
            return EdgePartial(key, obs.window_start, ws, side, obs.stats, target_kind=kind)
        key = EdgeKey(Layer.IPC, Granularity.APP, peer, obs.service)
        return EdgePartial(key, obs.window_start, ws, side, obs.stats, source_kind=kind)

    def add(self, records: Iterable[IpcObservation]) -> None:
        pending = self._pending
        for obs in records:
            self.counters["observations"] += 1
            p = self.resolve(obs)
            k = (p.key, p.window_start, p.window_seconds, p.side)
            cur = pending.get(k)
            if cur is None:
                pending[k] = p
            else:
                pending[k] = EdgePartial(
                    p.key, p.window_start, p.window_seconds, p.side, cur.stats.merge(p.stats),
                    _service_first(cur.source_kind, p.source_kind),
                    _service_first(cur.target_kind, p.target_kind))

    def flush(self, watermark: float = math.inf) -> list[EdgePartial]:
        """Partials of every window that ended at or before ``watermark`` (default: all)."""
        ready = sorted((k for k in self._pending if k[1] + k[2] <= watermark),
                       key=lambda k: (k[1], k[0].source, k[0].target, k[3].value))
        out = [self._pending.pop(k) for k in ready]
        self.counters["partials"] += len(out)
        return out

    def process(self, records: Iterable[IpcObservation]) -> list[EdgePartial]:
        """Resolve and merge ``records`` and return every partial (the in-process pipeline's call)."""
        self.add(records)
        return self.flush()


def _service_first(a: NodeKind, b: NodeKind) -> NodeKind:
    return a if a is NodeKind.SERVICE else b


# -- attribute rules ----------------------------------------------------------------------------
def _text(v: AttrValue | None) -> str | None:
    return v if isinstance(v, str) and v else None


def _int(v: AttrValue | None) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return None
    return None


def _is_error(a: dict[str, AttrValue | None]) -> bool:
    if a.get("ipc.result") == "failure":
        return True
    grpc = a.get("rpc.grpc.status_code")
    if grpc is not None and grpc not in ("OK", "ok") and _int(grpc) != 0:
        return True
    http = _int(a.get("http.response.status_code", a.get("http.status_code")))
    if http is not None and http >= 500:
        return True
    err = a.get("error.type")
    return err is not None and err != ""


def _endpoint(a: dict[str, AttrValue | None]) -> str | None:
    ep = _text(a.get("ipc.endpoint"))
    if ep:
        return ep
    svc, method = _text(a.get("rpc.service")), _text(a.get("rpc.method"))
    if svc and method:
        return f"{svc}/{method}"
    return svc or method or _text(a.get("http.route"))


def _peer(a: dict[str, AttrValue | None], side: Side) -> tuple[str, bool] | None:
    """(peer, is_ip) for a series: the callee of a client series, the caller of a server series."""
    if side is Side.SERVER:
        for k in _CALLER_NAMES:
            v = _text(a.get(k))
            if v and len(v) <= NAME_MAX:  # a longer name makes no node
                return v, False
        return None
    for k in _PEER_NAMES:
        v = _text(a.get(k))
        if v and len(v) <= NAME_MAX:
            return v, False
    for k in _PEER_ADDRESSES:
        v = _text(a.get(k))
        if v and len(v) <= NAME_MAX:
            p = address_peer(v)
            if p is not None:
                return p
    return None


def address_peer(value: str) -> tuple[str, bool] | None:
    """``server.address``-like value -> (app or ip, is_ip). A DNS name's first label is the app."""
    host = value.strip()
    if host.startswith("["):  # [v6]:port
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:  # name:port or v4:port
        host = host.split(":", 1)[0]
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        label = host.split(".", 1)[0].lower()
        return (label, False) if label else None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip), True

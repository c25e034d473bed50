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
import logging
import math
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from topology.address import AddressBook
from topology.catalog import NAME_MAX, AddressKind
from topology.model import EdgeKey, EdgePartial, Granularity, Layer, NodeKind, Side
from topology.sketch import EMPTY, SCALE, ZERO_THRESHOLD, LatencySketch, bucket_of
from topology.stages.ipc_columns import (
    Accumulators,
    buckets_of,
    first_of_runs,
    grow,
    last_of_runs,
    ragged,
    seconds,
    sequential_sum,
    window_of,
)
from topology.stats import MAX_ENDPOINTS, EdgeStats
from topology.wire.metric_columns import (
    EXPONENTIAL,
    GAUGE,
    HISTOGRAM,
    NATIVE,
    NONE,
    POINT,
    SUM,
    SUMMARY,
    key_parts,
    raw_columns,
    series_index,
)
from topology.wire.otlp import AttrValue, OtlpDecodeError, attribute

log = logging.getLogger(__name__)

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


def _exponential_sketch(c: _ExpCounts, unit_seconds: float) -> LatencySketch | None:
    """The sketch of a point's (delta) buckets; None (use the mean) for a scale out of OTLP's range."""
    scale, counts, zero = c
    if not -10 <= scale <= 20:
        return None
    return LatencySketch.from_otlp(scale, counts, zero, unit_seconds)


def _exponential_delta(cur: _ExpCounts, prev: _ExpCounts) -> _ExpCounts | None:
    """``cur - prev`` of one cumulative series; None if the scale changed or a count went down."""
    if cur[0] != prev[0] or cur[2] < prev[2]:
        return None
    now, before = cur[1], prev[1]
    if any(now.get(i, 0) < n for i, n in before.items()):
        return None
    delta = {i: n - before.get(i, 0) for i, n in now.items()}
    return cur[0], {i: n for i, n in delta.items() if n}, cur[2] - prev[2]


_Meaning = tuple[_Group | None, bool, str | None, str | None, str | None, tuple[Any, ...] | None]


def _meaning(res: bytes, name: str, raws: tuple[bytes, ...], service: str, side: Side,
             default_protocol: str | None) -> _Meaning | None:
    """(group, error, endpoint, protocol, statistic, base) of a series, parsed from its attributes once;
    None if an attribute does not parse (the series is unusable: its points count as without a peer)."""
    attrs: dict[str, AttrValue | None] = {}
    stat_raw: bytes | None = None
    for raw in raws:
        try:
            k, v = attribute(raw)
        except Exception:
            return None
        attrs[k] = v
        if k == "statistic":
            stat_raw = raw
    peer = _peer(attrs, side)
    group: _Group | None = None if peer is None else (side, service, peer[0], peer[1])
    stat = _text(attrs.get("statistic"))
    base = None
    if stat is not None:
        base = (res, name, tuple(r for r in raws if r is not stat_raw))
    protocol = _text(attrs.get("ipc.protocol")) or _text(attrs.get("rpc.system.name")) \
        or _text(attrs.get("rpc.system")) or default_protocol
    return group, _is_error(attrs), _endpoint(attrs), protocol, stat, base


def _observation(window: int, ws: int, group: _Group, acc: _Acc) -> IpcObservation:
    hist = acc.hist
    side, service, peer, is_ip = group
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
    return IpcObservation(window, ws, side, service, peer, is_ip, stats)


_STATS = {None: 0, _STAT_COUNT: 1, _STAT_TOTAL: 2}  # statistic -> code (3: any other)
_BATCH_POINTS = 1 << 18  # points decoded but not yet processed, at most
_warned = False


class IpcStage1:
    """Metric points -> :class:`IpcObservation` per (side, service, peer) per window, columnar.

    ``add(request)`` takes a decoded request; ``add_serialized(data)`` takes the protobuf bytes as they
    come from Kafka or HTTP (the fast path). ``flush(watermark)`` returns the observations of every window
    that ended at or before ``watermark``.

    A request is decoded natively into columns (:mod:`topology.wire.metric_columns`); per request, Python
    looks at its resources, metrics and distinct series only. Points wait in their columns until the next
    flush (or until :data:`_BATCH_POINTS` are waiting) and are then processed together with numpy: per series
    the cumulative values become deltas (the series' last values are kept in arrays indexed by a series
    number), and the deltas are summed per (window, side, service, peer). What a series means (peer, error,
    endpoint, protocol, statistic) is parsed once, when it is first seen. The results are the point-by-point
    stage's (:class:`topology.stages.ipc_points.PointIpcStage1`, the fallback when the native decoder is not
    built), float sums included: they are added in the points' order.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> IpcStage1:
        if cls is IpcStage1 and not NATIVE:
            global _warned
            if not _warned:
                _warned = True
                log.warning("the native OTLP metrics decoder is not built (pip install -e .): the IPC stage "
                            "reads metric points one by one, several times slower")
            from topology.stages.ipc_points import PointIpcStage1
            return object.__new__(PointIpcStage1)
        return object.__new__(cls)

    def __init__(self, window_seconds: int = WINDOW_SECONDS, max_series: int = MAX_SERIES) -> None:
        if window_seconds <= 0 or max_series <= 0:
            raise ValueError("window_seconds and max_series must be positive")
        self.window_seconds = window_seconds
        self.max_series = max_series
        # read through ``counters``, which first processes the points still waiting
        self._counters: dict[str, int] = dict.fromkeys(
            ("requests", "bad_requests", "points", "series", "unknown_metrics", "no_service", "no_peer",
             "baselines", "resets", "evictions", "late_points", "ignored_points", "bad_points",
             "observations"), 0)
        # series key -> series number; eviction takes from the front
        self._series_ids: OrderedDict[bytes, int] = OrderedDict()
        self._services: dict[bytes, str | None] = {}
        self._windows = Accumulators()  # per (window, group number)
        # (window, base number) -> [count, total, (window, group number)]
        self._joins: dict[tuple[int, int], list[Any]] = {}
        self._groups: list[_Group] = []
        self._group_ids: dict[_Group, int] = {}
        self._bases: dict[tuple[Any, ...], int] = {}
        self._texts: list[str] = []  # endpoints and protocols, numbered
        self._text_ids: dict[str, int] = {}
        self._bounds: dict[bytes, int] = {}  # explicit bounds -> number
        self._bounds_list: list[bytes] = []
        self._scales: dict[float, int] = {}
        self._layouts: dict[tuple[int, int], int] = {}  # (bounds, scale) number -> layout number
        self._layout_rows: list[tuple[bool, int, int, int]] = []  # usable, buckets, targets / edges offset
        self._targets = np.zeros(0, np.int64)
        self._edges = np.zeros(0, np.float64)
        # per series number: meaning (group -1: no peer), then the last cumulative values
        self._nseries = 0
        self._group = np.zeros(0, np.int64)
        self._error = np.zeros(0, np.bool_)
        self._stat = np.zeros(0, np.int8)
        self._base = np.zeros(0, np.int64)
        self._endpoint = np.zeros(0, np.int64)
        self._protocol = np.zeros(0, np.int64)
        self._seen = np.zeros(0, np.int64)  # the flush epoch a series last had a point in
        self._seen_from = 0  # the pending requests before this one are marked in _seen
        self._start = np.zeros(0, np.int64)  # -1: no baseline yet
        self._counts = np.zeros(0, np.int64)
        self._value = np.zeros(0, np.float64)
        self._total = np.zeros(0, np.float64)
        self._boff = np.zeros(0, np.int64)  # the last cumulative buckets: a slice of _kept
        self._blen = np.zeros(0, np.int64)
        self._kept = np.zeros(0, np.int64)
        self._exp: dict[int, _ExpCounts] = {}  # exponential histograms' last buckets
        # decoded, not yet processed: per request its columns and lengths, per metric and per key a row
        self._pending: list[tuple[bytes, bytes, int, np.ndarray | None, int, list[int]]] = []
        self._pending_points = 0
        self._m_kind: list[int] = []
        self._m_scale: list[int] = []
        self._m_cumulative: list[bool] = []
        self._index = series_index(sorted(ACCEPTED_METRICS))  # series key -> number, natively (derived)
        self._metric_infos: dict[tuple[str, str, int, int], Any] = {}  # (derived)
        self._marking: list[int] = []  # series numbers of the request being numbered one by one
        self._watermark = -math.inf
        self._epoch = 0  # flushes so far

    # -- input ------------------------------------------------------------------------------------
    def add(self, request: ExportMetricsServiceRequest) -> None:
        self.add_serialized(request.SerializeToString())

    def add_serialized(self, data: bytes) -> None:
        """Add a serialized ``ExportMetricsServiceRequest``; raises OtlpDecodeError (counted) if malformed."""
        try:
            points, buckets, resources, metrics, keys, key_metric, bounds = raw_columns(data, self._index)
        except OtlpDecodeError:
            self._counters["bad_requests"] += 1
            raise
        c = self._counters
        c["requests"] += 1
        services = self._services
        svc = []
        for res in resources:
            service = services.get(res, "")
            svc.append(self._service_of(res) if service == "" else service)
        kinds, scales, cumulative = self._m_kind, self._m_scale, self._m_cumulative
        specs: list[tuple[bytes, str, Side, str | None] | None] = []
        infos = self._metric_infos
        for name, unit, kind, temporality, ri, n in metrics:
            info = infos.get((name, unit, kind, temporality))
            if info is None:
                info = self._metric_info(name, unit, kind, temporality)
            spec, kcode, si, cum = info
            kinds.append(kcode)
            scales.append(si)
            cumulative.append(cum)
            if spec is None:
                specs.append(None)
                if kcode == -2:
                    c["unknown_metrics"] += 1
                continue
            c["points"] += n
            service = svc[ri]
            if service is None:
                c["no_service"] += n
                specs.append(None)
            else:
                specs.append((resources[ri], service, spec[0], spec[2]))
        # per point its series number (the index knows every series numbered so far), -1 for points of
        # metrics the stage does not read, -(2 + i) for the i-th key the index has not seen
        sid: np.ndarray | None = None
        if not keys:
            pass  # the usual request: every series known (the numbers are read from the records in a batch)
        elif len(self._series_ids) + len(keys) < self.max_series:  # new series, and no eviction possible
            new = [-1 if specs[mi] is None else self._number_series(key, *specs[mi])
                   for key, mi in zip(keys, np.frombuffer(key_metric, "<u4").tolist(), strict=True)]
            code = _codes(points)
            sid = np.where(code <= -2, np.array(new, np.int64)[np.maximum(-2 - code, 0)], code)
        else:
            sid = self._one_by_one(data, specs)
        bmap = [self._bounds_id(b) for b in bounds]
        self._pending.append((points, buckets, len(metrics), sid, len(points) // POINT.itemsize, bmap))
        self._pending_points += len(points) // POINT.itemsize
        if self._pending_points >= _BATCH_POINTS:
            self._process()

    def _metric_info(self, name: str, unit: str, kind: int, temporality: int,
                     ) -> tuple[tuple[Side, float, str | None] | None, int, int, bool]:
        """(spec, kind, scale number, cumulative) of a metric row; kind -2: a metric the stage does not
        read, -1: one without data."""
        spec = _METRICS.get(name)
        if spec is None or kind == NONE:
            info: tuple[tuple[Side, float, str | None] | None, int, int, bool] = \
                (None, -2 if spec is None else -1, 0, False)
        else:
            scale = _UNITS.get(unit, spec[1])
            si = self._scales.get(scale)
            if si is None:
                si = self._scales[scale] = len(self._scales)
            info = (spec, kind, si, kind == SUMMARY or (kind != GAUGE and temporality == _CUMULATIVE))
        if len(self._metric_infos) >= 10_000:
            self._metric_infos.clear()
        self._metric_infos[(name, unit, kind, temporality)] = info
        return info

    def _one_by_one(self, data: bytes, specs: list[tuple[bytes, str, Side, str | None] | None]) -> np.ndarray:
        """Series numbers of a request that may evict series: its keys numbered in order, each new one
        evicting as the cache fills, exactly as the point stage does."""
        points, _, _, _, keys, key_metric, _ = raw_columns(data)
        series, out = self._series_ids, self._marking
        for key, mi in zip(keys, np.frombuffer(key_metric, "<u4").tolist(), strict=True):
            m = specs[mi]
            if m is None:
                out.append(-1)
                continue
            sid = series.get(key)
            out.append(self._number_series(key, *m) if sid is None else sid)
        self._marking = []
        return np.array(out, np.int64)[np.frombuffer(points, POINT)["key"].astype(np.int64)]

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

    def _bounds_id(self, bounds: bytes) -> int:
        b = self._bounds.get(bounds)
        if b is None:
            if len(self._bounds) >= 10_000:  # numbers stay valid: only the lookup forgets
                self._bounds.clear()
            b = self._bounds[bounds] = len(self._bounds_list)
            self._bounds_list.append(bounds)
        return b

    def _text_id(self, text: str | None) -> int:
        if text is None:
            return -1
        i = self._text_ids.get(text)
        if i is None:
            i = self._text_ids[text] = len(self._texts)
            self._texts.append(text)
        return i

    def _number_series(self, key: bytes, res: bytes, service: str, side: Side, default_protocol: str | None,
                       ) -> int:
        """Number a new series and parse what it means (evicting one if the cache is full)."""
        self._counters["series"] += 1
        _, name, raws = key_parts(key)
        m = _meaning(res, name, raws, service, side, default_protocol)
        i = self._nseries
        self._nseries = n = i + 1
        if n > len(self._group):
            self._grow(n)
        if m is not None and m[0] is not None:
            group, error, endpoint, protocol, stat, base = m
            assert group is not None
            g = self._group_ids.get(group)
            if g is None:
                g = self._group_ids[group] = len(self._groups)
                self._groups.append(group)
            self._group[i] = g
            self._error[i] = error
            self._endpoint[i] = self._text_id(endpoint)
            self._protocol[i] = self._text_id(protocol)
            self._stat[i] = _STATS.get(stat, 3)
            if base is not None:
                b = self._bases.get(base)
                if b is None:
                    b = self._bases[base] = len(self._bases)
                self._base[i] = b
        series = self._series_ids
        if len(series) >= self.max_series:
            self._evict()
        series[key] = i
        self._index.insert(key, i)
        return i

    def _mark_seen(self) -> None:
        """Note the flush epoch in every series numbered since the last call (eviction spares those)."""
        seen, epoch = self._seen, self._epoch
        for p in self._pending[self._seen_from:]:
            sids = _codes(p[0]) if p[3] is None else p[3]
            seen[sids[sids >= 0]] = epoch
        self._seen_from = len(self._pending)
        if self._marking:  # the request being numbered one by one, up to here
            a = np.array(self._marking, np.int64)
            seen[a[a >= 0]] = epoch

    def _grow(self, n: int) -> None:
        self._group = grow(self._group, n, -1)
        self._error = grow(self._error, n, False)
        self._stat = grow(self._stat, n, 0)
        self._base = grow(self._base, n, -1)
        self._endpoint = grow(self._endpoint, n, -1)
        self._protocol = grow(self._protocol, n, -1)
        self._seen = grow(self._seen, n, -1)
        self._start = grow(self._start, n, -1)
        self._counts = grow(self._counts, n, 0)
        self._value = grow(self._value, n, 0.0)
        self._total = grow(self._total, n, 0.0)
        self._boff = grow(self._boff, n, 0)
        self._blen = grow(self._blen, n, 0)

    def _evict(self) -> None:
        """Evict the oldest series not seen since the last flush (or, failing that, the oldest)."""
        self._mark_seen()
        series, seen = self._series_ids, self._seen
        for _ in range(8):
            key, sid = series.popitem(last=False)
            if seen[sid] != self._epoch:
                break
            series[key] = sid  # recently active: second chance, to the back of the line
        else:
            key, _ = series.popitem(last=False)
        self._index.forget(key)
        self._counters["evictions"] += 1

    # -- the points, together ---------------------------------------------------------------------
    def _process(self) -> None:
        """Process every point waiting since the last call, in the order they came."""
        pending = self._pending
        if not pending:
            return
        n_points = np.array([p[4] for p in pending], np.int64)
        rec = np.frombuffer(b"".join(p[0] for p in pending), POINT)
        flat = np.frombuffer(b"".join(p[1] for p in pending), "<i8")  # counts below 2**63: the same bits
        n_buckets = np.array([len(p[1]) // 8 for p in pending], np.int64)
        m_off = np.cumsum([0] + [p[2] for p in pending[:-1]])
        b_off = np.cumsum(n_buckets) - n_buckets
        bmap = np.array([b for p in pending for b in p[5]] or [0], np.int64)
        bmap_off = np.cumsum([0] + [len(p[5]) for p in pending[:-1]])
        m_kind = np.array(self._m_kind, np.int64)
        m_scale = np.array(self._m_scale, np.int64)
        m_cum = np.array(self._m_cumulative, np.bool_)
        self._mark_seen()
        sid = np.concatenate([_codes(p[0]) if p[3] is None else p[3] for p in pending])
        self._pending, self._pending_points, self._seen_from = [], 0, 0
        self._m_kind, self._m_scale, self._m_cumulative = [], [], []

        metric = rec["metric"].astype(np.int64) + np.repeat(m_off, n_points)
        boff = rec["boff"].astype(np.int64) + np.repeat(b_off, n_points)
        req_of = np.repeat(np.arange(len(pending)), n_points)
        gid = np.full(len(sid), -1)
        if self._nseries:
            gid = np.where(sid >= 0, self._group[np.maximum(sid, 0)], -1)
        no_peer = (gid < 0) & (sid >= 0)
        bad = (sid >= 0) & ~no_peer & (rec["time"] == 0)
        c = self._counters
        c["no_peer"] += int(no_peer.sum())
        c["bad_points"] += int(bad.sum())
        ok = np.flatnonzero((gid >= 0) & (sid >= 0) & ~bad)
        if not len(ok):
            return
        if len(ok) < len(rec):
            rec, sid, metric, boff, req_of, gid = rec[ok], sid[ok], metric[ok], boff[ok], req_of[ok], gid[ok]
        kind = m_kind[metric]
        p = _Points(rec, sid, gid, boff, m_scale[metric], m_cum[metric],
                    window_of(rec["time"], self.window_seconds))
        parts: list[_Contributions] = []
        h = np.flatnonzero(kind == HISTOGRAM)
        if len(h):
            bounds = bmap[rec["bounds"][h].astype(np.int64) + bmap_off[req_of[h]]]
            parts.append(self._histogram_columns(p.take(h), bounds, flat))
        n = np.flatnonzero((kind == SUM) | (kind == GAUGE))
        joins = None
        if len(n):
            counted, joins = self._number_columns(p.take(n))
            parts.append(counted)
        o = np.flatnonzero((kind == EXPONENTIAL) | (kind == SUMMARY))
        fine: list[tuple[int, int, int, LatencySketch]] = []
        if len(o):
            parts.append(self._other_columns(p.take(o), kind[o], flat, fine))
        self._apply(parts, joins, fine)

    def _state_rows(self, sid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows of cumulative points with, before each series' first, a row for its kept state: (series
        with a state, order of all rows by series then arrival, which rows are a series' first)."""
        mark = np.zeros(self._nseries, np.bool_)
        mark[sid] = True
        mark &= self._start[: self._nseries] >= 0
        st = np.flatnonzero(mark)
        rows_sid = np.concatenate((st, sid))
        order = np.argsort(rows_sid, kind="stable")  # state rows first, then the points in arrival order
        return st, order, first_of_runs(rows_sid[order])

    def _histogram_columns(self, p: _Points, bounds: np.ndarray, flat: np.ndarray) -> _Contributions:
        """Explicit-bucket histogram points -> requests, latency sums and sketch buckets. Bucket counts are
        handled as 2-D arrays, one per bucket count (usually one)."""
        c = self._counters
        rec = p.rec
        count = rec["count"].astype(np.int64)
        total = rec["sum"].astype(np.float64)
        blen = rec["blen"].astype(np.int64)
        cum = np.flatnonzero(p.cumulative)
        delta = np.flatnonzero(~p.cumulative)
        # every point that adds something: its row, count, sum, its buckets' offset in ``src`` and, for the
        # delta of two cumulative points, its row in ``diffs`` (-1: its own buckets are the delta)
        d_rows, d_count, d_sum = [delta], [count[delta]], [total[delta]]
        d_off, d_prev, d_len = [p.boff[delta]], [np.full(len(delta), -1, np.int64)], [blen[delta]]
        diffs: dict[int, np.ndarray] = {}
        src = flat
        if len(cum):
            kept = self._kept
            src = np.concatenate((flat, kept))
            st, order, first = self._state_rows(p.sid[cum])
            k = len(st)
            r_point = np.concatenate((np.full(k, -1, np.int64), cum))[order]
            r_sid = np.concatenate((st, p.sid[cum]))[order]
            r_start = np.concatenate((self._start[st], rec["start"][cum].astype(np.int64)))[order]
            r_count = np.concatenate((self._counts[st], count[cum]))[order]
            r_total = np.concatenate((self._total[st], total[cum]))[order]
            r_off = np.concatenate((self._boff[st] + len(flat), p.boff[cum]))[order]
            r_len = np.concatenate((self._blen[st], blen[cum]))[order]
            c["baselines"] += int(first.sum() - k)
            cand = np.flatnonzero(~first)
            prev = cand - 1
            same_len = r_len[cand] == r_len[prev]
            neg = np.zeros(len(cand), np.bool_)
            changed = np.zeros(len(cand), np.bool_)
            diff_row = np.full(len(cand), -1, np.int64)  # the row of a point's delta in diffs[its length]
            for width, sel in _by_length(r_len[cand], same_len):
                diff = _rows(src, r_off[cand[sel]], width)
                diff -= _rows(src, r_off[prev[sel]], width)
                neg[sel] = diff.min(axis=1, initial=0) < 0
                changed[sel] = diff.any(axis=1)
                diffs[width] = diff
                diff_row[sel] = np.arange(len(sel))
            moved = r_start[cand] != r_start[prev]
            skip = same_len & ~changed & ~moved & (r_count[cand] == r_count[prev])
            reset = ~skip & (moved | (r_count[cand] < r_count[prev]) | ~same_len | neg)
            normal = ~skip & ~reset
            c["resets"] += int(reset.sum())
            nonskip = np.ones(len(r_sid), np.bool_)
            nonskip[cand[skip]] = False
            last_set = np.maximum.accumulate(np.where(nonskip, np.arange(len(r_sid)), 0))
            rs, nm = cand[reset], cand[normal]
            d_rows += [r_point[rs], r_point[nm]]
            d_count += [r_count[rs], r_count[nm] - r_count[nm - 1]]
            d_sum += [r_total[rs], r_total[nm] - r_total[last_set[nm - 1]]]
            d_off += [r_off[rs], r_off[nm]]
            d_prev += [np.full(len(rs), -1, np.int64), diff_row[normal]]
            d_len += [r_len[rs], r_len[nm]]
            # each series' new state: its last row (a skipped row changes nothing but the sum it would set)
            last = np.flatnonzero(last_of_runs(r_sid))
            s = r_sid[last]
            self._start[s] = r_start[last]
            self._counts[s] = r_count[last]
            self._total[s] = r_total[last_set[last]]
            _, li = ragged(r_off[last], r_len[last])
            self._boff[s] = len(kept) + np.cumsum(r_len[last]) - r_len[last]
            self._blen[s] = r_len[last]
            self._kept = np.concatenate((kept, src[li]))
            if len(self._kept) > 2 * int(self._blen[: self._nseries].sum()) + 65_536:
                self._compact_kept()
        rows = np.concatenate(d_rows)
        dcount = np.concatenate(d_count)
        live = np.flatnonzero(dcount > 0)
        rows, dcount = rows[live], dcount[live]
        lat = np.concatenate(d_sum)[live] * p.scale_of(rows, self._scales)
        off, poff = np.concatenate(d_off)[live], np.concatenate(d_prev)[live]
        length = np.concatenate(d_len)[live]
        out = p.contributions(rows, dcount, lat, self._error)
        # the latency: per point the bucket of its mean, its single bucket, or its buckets re-bucketed
        lay = self._layout_of(bounds[rows], p.scale_id[rows])
        usable, n_targets, t_off, e_off = (a[lay] for a in self._layout_table())
        mean = ~usable | (n_targets != length) | (length < 2)
        m = np.flatnonzero(mean)
        out.add_buckets(m, buckets_of(lat[m] / dcount[m]), dcount[m])
        targets, edges = self._targets, self._edges
        for width, sel in _by_length(length, ~mean):
            own = poff[sel] < 0
            if own.all():
                d = _rows(src, off[sel], width)
            else:
                d = np.empty((len(sel), width), np.int64)
                d[own] = _rows(src, off[sel][own], width)
                d[~own] = diffs[width][poff[sel][~own]]
            one = np.count_nonzero(d, axis=1) == 1
            r1 = sel[one]
            i = (d[one] != 0).argmax(axis=1)
            n1 = d[one, i]
            mean1 = lat[r1] / n1
            lo_ok = (i == 0) | (mean1 > edges[np.maximum(e_off[r1] + i - 1, 0)])
            hi_ok = (i == width - 1) | (mean1 <= edges[np.minimum(e_off[r1] + i, len(edges) - 1)])
            out.add_buckets(r1, np.where(lo_ok & hi_ok, buckets_of(mean1), targets[t_off[r1] + i]), n1)
            many = ~one
            rm = sel[many]
            dm = d[many]
            keep = dm != 0
            t2 = targets[t_off[rm][:, None] + np.arange(width)]
            out.add_buckets(np.repeat(rm, keep.sum(axis=1)), t2[keep], dm[keep])
        return out

    def _compact_kept(self) -> None:
        n = self._nseries
        _, li = ragged(self._boff[:n], self._blen[:n])
        self._boff[:n] = np.cumsum(self._blen[:n]) - self._blen[:n]
        self._kept = self._kept[li]

    def _layout_of(self, bounds: np.ndarray, scale_id: np.ndarray) -> np.ndarray:
        """Layout number of every (bounds, scale) pair."""
        ns = max(len(self._scales), 1)
        pair = bounds * ns + scale_id
        u, inv = np.unique(pair, return_inverse=True)
        scales = list(self._scales)
        ids = []
        for x in u.tolist():
            b, s = divmod(x, ns)
            lay = self._layouts.get((b, s))
            if lay is None:
                lay = self._layouts[(b, s)] = self._new_layout(_rebucket(self._bounds_list[b], scales[s]))
            ids.append(lay)
        return np.array(ids, np.int64)[inv]

    def _new_layout(self, layout: _Layout) -> int:
        targets, edges = layout
        row = (bool(targets), len(targets), len(self._targets), len(self._edges))
        self._targets = np.concatenate((self._targets, np.array(targets, np.int64)))
        self._edges = np.concatenate((self._edges, np.array(edges, np.float64)))
        self._layout_rows.append(row)
        return len(self._layout_rows) - 1

    def _layout_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = self._layout_rows
        return (np.array([r[0] for r in rows], np.bool_), np.array([r[1] for r in rows], np.int64),
                np.array([r[2] for r in rows], np.int64), np.array([r[3] for r in rows], np.int64))

    def _number_columns(self, p: _Points) -> tuple[_Contributions, _Joins]:
        """Sum and Gauge points: call counts, or Spectator count/totalTime/max statistics."""
        c = self._counters
        v = p.rec["value"].astype(np.float64)
        d = v.copy()
        use = ~p.cumulative  # points with a value to add (not a baseline)
        cum = np.flatnonzero(p.cumulative)
        if len(cum):
            st, order, first = self._state_rows(p.sid[cum])
            k = len(st)
            r_point = np.concatenate((np.full(k, -1, np.int64), cum))[order]
            r_sid = np.concatenate((st, p.sid[cum]))[order]
            r_start = np.concatenate((self._start[st], p.rec["start"][cum].astype(np.int64)))[order]
            r_value = np.concatenate((self._value[st], v[cum]))[order]
            c["baselines"] += int(first.sum() - k)
            cand = np.flatnonzero(~first)
            reset = (r_start[cand] != r_start[cand - 1]) | (r_value[cand] < r_value[cand - 1])
            c["resets"] += int(reset.sum())
            pts = r_point[cand]
            d[pts] = np.where(reset, r_value[cand], r_value[cand] - r_value[cand - 1])
            use[pts] = True
            last = np.flatnonzero(last_of_runs(r_sid))
            self._start[r_sid[last]] = r_start[last]
            self._value[r_sid[last]] = r_value[last]
        stat = self._stat[p.sid]
        base = self._base[p.sid]
        counting = use & (stat <= 1)
        totals = use & (stat == 2) & (base >= 0)
        c["ignored_points"] += int((use & ~counting & ~totals).sum())
        with np.errstate(invalid="ignore"):
            n = np.rint(d)
            rows = np.flatnonzero(counting & np.isfinite(n) & (n > 0))
        n_int = n[rows].astype(np.int64)
        out = p.contributions(rows, n_int, np.zeros(len(rows)), self._error)
        joined = rows[base[rows] >= 0]
        with np.errstate(invalid="ignore"):
            trows = np.flatnonzero(totals & (d > 0))
        joins = _Joins(
            np.concatenate((p.pos[joined], p.pos[trows])),
            np.concatenate((p.window[joined], p.window[trows])),
            np.concatenate((base[joined], base[trows])),
            np.concatenate((p.gid[joined], p.gid[trows])),
            np.concatenate((n[joined], np.zeros(len(trows)))),
            np.concatenate((np.zeros(len(joined)), d[trows] * p.scale_of(trows, self._scales))),
            len(joined),
        )
        return out, joins

    def _other_columns(self, p: _Points, kind: np.ndarray, flat: np.ndarray,
                fine: list[tuple[int, int, int, LatencySketch]]) -> _Contributions:
        """Exponential histograms and summaries (rare in practice: a plain loop, as the point stage does)."""
        c = self._counters
        scales = list(self._scales)
        rows: list[int] = []
        calls: list[int] = []
        lat: list[float] = []
        buckets: list[int | None] = []
        rec = p.rec
        for j in range(len(rec)):
            r = rec[j]
            s = int(p.sid[j])
            scale = scales[int(p.scale_id[j])]
            count, total, start = int(r["count"]), float(r["sum"]), int(r["start"])
            cumulative = bool(p.cumulative[j])
            hist: LatencySketch | None = None
            if kind[j] == EXPONENTIAL:
                off = int(r["bounds"])
                pos = flat[int(p.boff[j]):int(p.boff[j]) + int(r["blen"])].tolist()
                cur: _ExpCounts = (int(r["scale"]), {off + i: x for i, x in enumerate(pos) if x},
                                   int(r["zero"]))
            if not cumulative:
                dcount, dsum = count, total
                if kind[j] == EXPONENTIAL:
                    hist = _exponential_sketch(cur, scale)
            elif self._start[s] < 0:
                self._start[s], self._counts[s], self._total[s] = start, count, total
                if kind[j] == EXPONENTIAL:
                    self._exp[s] = cur
                c["baselines"] += 1
                continue
            else:
                delta: _ExpCounts | None = None
                if start != self._start[s] or count < self._counts[s]:
                    c["resets"] += 1
                    dcount, dsum = count, total
                    delta = cur if kind[j] == EXPONENTIAL else None
                else:
                    dcount, dsum = count - int(self._counts[s]), total - float(self._total[s])
                    if kind[j] == EXPONENTIAL:
                        delta = _exponential_delta(cur, self._exp[s])
                self._start[s], self._counts[s], self._total[s] = start, count, total
                if kind[j] == EXPONENTIAL:
                    self._exp[s] = cur
                    hist = None if delta is None else _exponential_sketch(delta, scale)
            if dcount <= 0:
                continue
            rows.append(j)
            calls.append(dcount)
            lat.append(dsum * scale)
            if hist is None:
                buckets.append(_bucket(dsum * scale / dcount))
            else:
                buckets.append(None)
                fine.append((int(p.pos[j]), int(p.window[j]), int(p.gid[j]), hist))
        rows_a = np.array(rows, np.int64)
        out = p.contributions(rows_a, np.array(calls, np.int64), np.array(lat, np.float64), self._error)
        mean = np.array([b is not None for b in buckets], np.bool_)
        out.add_buckets(np.flatnonzero(mean), np.array([b for b in buckets if b is not None], np.int64),
                        np.array(calls, np.int64)[mean] if len(calls) else np.zeros(0, np.int64))
        return out

    def _apply(self, parts: list[_Contributions], joins: _Joins | None,
               fine: list[tuple[int, int, int, LatencySketch]]) -> None:
        """Add the contributions to their accumulators (and statistic joins), in the points' order."""
        ws = self.window_seconds
        pos = np.concatenate([x.pos for x in parts] or [np.zeros(0, np.int64)])
        window = np.concatenate([x.window for x in parts] or [np.zeros(0, np.int64)])
        gid = np.concatenate([x.gid for x in parts] or [np.zeros(0, np.int64)])
        extra_w = joins.window[joins.n_counts:] if joins is not None else np.zeros(0, np.int64)
        extra_g = joins.gid[joins.n_counts:] if joins is not None else np.zeros(0, np.int64)
        all_w = np.concatenate((window, extra_w))
        all_g = np.concatenate((gid, extra_g))
        if not len(all_w):
            return
        ng = max(len(self._groups), 1)
        w0 = int(all_w.min())
        u, inv = np.unique((all_w - w0) // ws * ng + all_g, return_inverse=True)
        accs, watermark, late = self._windows, self._watermark, 0
        numbers = []
        for k in u.tolist():
            wi, g = divmod(k, ng)
            w = w0 + wi * ws
            i, new = accs.number(w, g)
            if new and w + ws <= watermark:
                late += 1
            numbers.append(i)
        if late:
            self._counters["late_points"] += late
        number = np.array(numbers, np.int64)
        nc = len(pos)
        if nc:
            order = np.argsort(pos, kind="stable")
            ai = number[inv[:nc]][order]
            calls = np.concatenate([x.calls for x in parts])[order]
            errors = np.concatenate([x.errors for x in parts])[order]
            sids = np.concatenate([x.sid for x in parts])[order]
            np.add.at(accs.requests, ai, calls)
            np.add.at(accs.errors, ai, errors)
            np.add.at(accs.lat, ai, np.concatenate([x.lat for x in parts])[order])  # in order: as a loop adds
            t = np.concatenate([x.t for x in parts])[order]
            np.minimum.at(accs.first, ai, t)
            np.maximum.at(accs.last, ai, t)
            proto = self._protocol[sids]
            has = np.flatnonzero(proto >= 0)
            pu, pfirst = np.unique(ai[has], return_index=True)
            unset = accs.protocol[pu] < 0
            accs.protocol[pu[unset]] = proto[has][pfirst][unset]
            ep = self._endpoint[sids]
            has = ep >= 0
            accs.endpoints.append((ai[has], ep[has]))
            shifted = self._offsets(parts)
            b_acc = number[inv[:nc]][np.concatenate([x.bucket_pos for x in shifted])]
            accs.buckets.append((b_acc, np.concatenate([x.buckets for x in parts]),
                                 np.concatenate([x.bucket_calls for x in parts])))
        for _, w, g, sk in sorted(fine, key=lambda f: f[0]):
            i, _ = accs.number(w, g)
            accs.fine[i] = accs.fine.get(i, EMPTY).merge(sk)
        if joins is not None and len(joins.point):
            self._join_columns(joins)

    @staticmethod
    def _offsets(parts: list[_Contributions]) -> list[_Contributions]:
        """The parts with their bucket rows shifted to positions in the concatenated contributions."""
        out, base = [], 0
        for x in parts:
            out.append(x.shifted(base))
            base += len(x.pos)
        return out

    def _join_columns(self, j: _Joins) -> None:
        """Spectator count/totalTime: per (window, series without its statistic), in the points' order."""
        order = np.argsort(j.point, kind="stable")
        nb = max(len(self._bases), 1)
        w0 = int(j.window.min())
        keys = ((j.window - w0) // self.window_seconds * nb + j.base)[order]
        u, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        stats = self._joins
        by_u: list[list[Any]] = [[]] * len(u)
        gids = j.gid[order]
        for i in np.argsort(first, kind="stable").tolist():  # joins are made in their first point's order
            wi, b = divmod(int(u[i]), nb)
            w = w0 + wi * self.window_seconds
            row = stats.get((w, b))
            if row is None:
                row = stats[(w, b)] = [0.0, 0.0, (w, int(gids[first[i]]))]
            by_u[i] = row
        counts = np.bincount(inv, j.count[order], len(u))
        totals = sequential_sum(np.array([r[1] for r in by_u]), inv, j.total[order])
        for r, n, tot in zip(by_u, counts.tolist(), totals.tolist(), strict=True):
            r[0] += n
            r[1] = tot

    # -- output ------------------------------------------------------------------------------------
    def flush(self, watermark: float) -> list[IpcObservation]:
        """Observations of every window that ended at or before ``watermark`` (sorted, deterministic)."""
        self._process()
        ws = self.window_seconds
        self._watermark = max(self._watermark, watermark)
        self._epoch += 1
        accs = self._windows
        join_buckets: list[tuple[int, int, int]] = []
        for key in [k for k in self._joins if k[0] + ws <= watermark]:
            count, total, acc_key = self._joins.pop(key)
            if count > 0 and total > 0:
                i, _ = accs.number(*acc_key)
                join_buckets.append((i, _bucket(total / count), round(count)))
                accs.lat[i] += total
        if join_buckets:
            a, b, c = zip(*join_buckets, strict=True)
            accs.buckets.append((np.array(a, np.int64), np.array(b, np.int64), np.array(c, np.int64)))
        groups = self._groups
        done = sorted((k for k in accs.ids if k[0] + ws <= watermark), key=lambda k: (k[0], groups[k[1]]))
        numbers = [accs.ids[k] for k in done]
        fine = {i: accs.fine[i] for i in numbers if i in accs.fine}
        requests = accs.requests[numbers].tolist()
        errors = accs.errors[numbers].tolist()
        lat = accs.lat[numbers].tolist()
        first = accs.first[numbers].tolist()
        last = accs.last[numbers].tolist()
        protocol = accs.protocol[numbers].tolist()
        sketches, endpoints = accs.take(numbers)
        texts = self._texts
        out: list[IpcObservation] = []
        for n, (window, g), calls, err, total, t0, t1, proto in zip(
                numbers, done, requests, errors, lat, first, last, protocol, strict=True):
            if calls <= 0:
                continue  # idle series: no calls, no edge
            d = sketches.get(n)
            latency = EMPTY if d is None or not (d[1] or d[2]) else LatencySketch(SCALE, d[0], d[1], d[2])
            if n in fine:
                latency = latency.merge(fine[n])
            side, service, peer, is_ip = groups[g]
            stats = EdgeStats(
                first_seen=t0,
                last_seen=t1,
                protocol=texts[proto] if proto >= 0 else None,
                requests=calls,
                errors=err,
                latency=latency,
                latency_sum=total,
                endpoints=tuple(sorted(texts[e] for e in endpoints.get(n, ()))[:MAX_ENDPOINTS]),
            )
            out.append(IpcObservation(window, ws, side, service, peer, is_ip, stats))
        self._counters["observations"] += len(out)
        return out

    @property
    def counters(self) -> dict[str, int]:
        """The stage's counters, with every point added so far processed."""
        self._process()
        return self._counters

    @property
    def open_series(self) -> int:
        return len(self._series_ids)

    def _rebuild_index(self) -> None:
        """The native series index from the series keys (after a checkpoint is read)."""
        self._index = series_index(sorted(ACCEPTED_METRICS))
        for key, sid in self._series_ids.items():
            self._index.insert(key, sid)
        self._marking = []
        self._metric_infos = {}


def _codes(points: bytes) -> np.ndarray:
    """The series numbers (or codes, see metric_columns.raw_columns) in point records."""
    return np.frombuffer(points, POINT)["key"].astype(np.int32).astype(np.int64)


def _by_length(lengths: np.ndarray, mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(length, rows) for every length among the rows of ``mask``."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return []
    ls = lengths[rows]
    return [(int(w), rows[ls == w]) for w in np.unique(ls).tolist()]


def _rows(src: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """``src[offsets[i]:offsets[i] + width]`` for every i, as one 2-D array."""
    return src[offsets[:, None] + np.arange(width)]


class _Points:
    """The points of one kind in a batch (columns, row-aligned) and where each came in the batch."""

    __slots__ = ("boff", "cumulative", "gid", "pos", "rec", "scale_id", "sid", "window")

    def __init__(self, rec: np.ndarray, sid: np.ndarray, gid: np.ndarray, boff: np.ndarray,
                 scale_id: np.ndarray, cumulative: np.ndarray, window: np.ndarray,
                 pos: np.ndarray | None = None) -> None:
        self.rec, self.sid, self.gid, self.boff = rec, sid, gid, boff
        self.scale_id, self.cumulative, self.window = scale_id, cumulative, window
        self.pos = np.arange(len(rec)) if pos is None else pos

    def take(self, i: np.ndarray) -> _Points:
        return _Points(self.rec[i], self.sid[i], self.gid[i], self.boff[i], self.scale_id[i],
                       self.cumulative[i], self.window[i], self.pos[i])

    def scale_of(self, rows: np.ndarray, scales: dict[float, int]) -> np.ndarray:
        return np.array(list(scales), np.float64)[self.scale_id[rows]] if len(rows) else np.zeros(0)

    def contributions(self, rows: np.ndarray, calls: np.ndarray, lat: np.ndarray,
                      error: np.ndarray) -> _Contributions:
        sid = self.sid[rows]
        return _Contributions(self.pos[rows], self.window[rows], self.gid[rows], sid, calls,
                              np.where(error[sid], calls, 0), lat, seconds(self.rec["time"][rows]))


class _Contributions:
    """What points add to accumulators: per point calls, errors, latency sum, time; per sketch bucket its
    point (a row of these) and calls."""

    __slots__ = ("bucket_calls", "bucket_pos", "buckets", "calls", "errors", "gid", "lat", "pos", "sid",
                 "t", "window")

    def __init__(self, pos: np.ndarray, window: np.ndarray, gid: np.ndarray, sid: np.ndarray,
                 calls: np.ndarray, errors: np.ndarray, lat: np.ndarray, t: np.ndarray) -> None:
        self.pos, self.window, self.gid, self.sid = pos, window, gid, sid
        self.calls, self.errors, self.lat, self.t = calls, errors, lat, t
        self.bucket_pos: np.ndarray = np.zeros(0, np.int64)
        self.buckets: np.ndarray = np.zeros(0, np.int64)
        self.bucket_calls: np.ndarray = np.zeros(0, np.int64)

    def add_buckets(self, rows: np.ndarray, buckets: np.ndarray, calls: np.ndarray) -> None:
        self.bucket_pos = np.concatenate((self.bucket_pos, rows))
        self.buckets = np.concatenate((self.buckets, buckets))
        self.bucket_calls = np.concatenate((self.bucket_calls, calls.astype(np.int64)))

    def shifted(self, by: int) -> _Contributions:
        out = _Contributions(self.pos, self.window, self.gid, self.sid, self.calls, self.errors, self.lat,
                             self.t)
        out.bucket_pos = self.bucket_pos + by
        out.buckets, out.bucket_calls = self.buckets, self.bucket_calls
        return out


class _Joins:
    """Spectator statistic points to join: the count rows first (``n_counts``), then the totalTime rows."""

    __slots__ = ("base", "count", "gid", "n_counts", "point", "total", "window")

    def __init__(self, point: np.ndarray, window: np.ndarray, base: np.ndarray, gid: np.ndarray,
                 count: np.ndarray, total: np.ndarray, n_counts: int) -> None:
        self.point, self.window, self.base, self.gid = point, window, base, gid
        self.count, self.total, self.n_counts = count, total, n_counts


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

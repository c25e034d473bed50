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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from topology.address import AddressBook
from topology.catalog import NAME_MAX, AddressKind
from topology.model import EdgeKey, EdgePartial, Granularity, Layer, NodeKind, Side
from topology.sketch import EMPTY, SCALE, ZERO_THRESHOLD, LatencySketch, _range_of, bucket_of
from topology.stats import MAX_ENDPOINTS, EdgeStats
from topology.wire.metric_columns import NATIVE, ipc_core, key_parts, upb_decides
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


# serialized KeyValue -> (key, value): series share most of their attributes (a cache of a pure function)
_ATTRIBUTES: dict[bytes, tuple[str, AttrValue | None]] = {}


def _meaning(res: bytes, name: str, raws: tuple[bytes, ...], service: str, side: Side,
             default_protocol: str | None) -> _Meaning | None:
    """(group, error, endpoint, protocol, statistic, base) of a series, parsed from its attributes once;
    None if an attribute does not parse (the series is unusable: its points count as without a peer)."""
    attrs: dict[str, AttrValue | None] = {}
    stat_raw: bytes | None = None
    parsed = _ATTRIBUTES
    for raw in raws:
        kv = parsed.get(raw)
        if kv is None:
            try:
                kv = attribute(raw)
            except Exception:
                return None
            if len(parsed) >= 65_536:
                parsed.clear()
            parsed[raw] = kv
        k, v = kv
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
_NO_MEANING = (-1, False, 0, -1, -1, -1)  # a series without a peer
_warned = False


class IpcStage1:
    """Metric points -> :class:`IpcObservation` per (side, service, peer) per window, natively.

    ``add(request)`` takes a decoded request; ``add_serialized(data)`` takes the protobuf bytes as they
    come from Kafka or HTTP (the fast path). ``flush(watermark)`` returns the observations of every window
    that ended at or before ``watermark``.

    A request is decoded and its points are added in one native pass (``topology.wire._metrics.IpcCore``,
    Rust: topology/wire/native/metrics/src/stage.rs): series lookup, cumulative -> delta, explicit buckets ->
    sketch buckets, sums per (window, side, service, peer), Spectator count/totalTime joins. Python is
    asked only about what the core has not seen: a resource's service (``_service_known``), what a new
    series means (``_meaning_of``: peer, error, endpoint, protocol, statistic, parsed once) and a bucket
    layout (``_layout_of``); it reads one row per finished (window, side, service, peer) at flush. The
    results are the point-by-point stage's (:class:`topology.stages.ipc_points.PointIpcStage1`, the
    fallback when the native module is not built), float sums included: points are added in their order.
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

    def __init__(self, window_seconds: int = WINDOW_SECONDS, max_series: int = MAX_SERIES, *,
                 collide: bool = False) -> None:
        """``collide``: for tests (see :func:`topology.wire.metric_columns.ipc_core`)."""
        if window_seconds <= 0 or max_series <= 0:
            raise ValueError("window_seconds and max_series must be positive")
        self.window_seconds = window_seconds
        self.max_series = max_series
        self._counters: dict[str, int] = {"bad_requests": 0, "observations": 0}  # the core counts the rest
        self._services: dict[bytes, str | None] = {}
        self._groups: list[_Group] = []
        self._group_ids: dict[_Group, int] = {}
        self._bases: dict[tuple[Any, ...], int] = {}
        self._texts: list[str] = []  # endpoints and protocols, numbered
        self._text_ids: dict[str, int] = {}
        self._core = ipc_core(window_seconds, max_series, {k: v[1] for k, v in _METRICS.items()}, _UNITS,
                              *_range_of(SCALE), collide)

    # -- input ------------------------------------------------------------------------------------
    def add(self, request: ExportMetricsServiceRequest) -> None:
        self.add_serialized(request.SerializeToString())

    def add_serialized(self, data: bytes) -> None:
        """Add a serialized ``ExportMetricsServiceRequest``; raises OtlpDecodeError (counted) if malformed.

        What prost refuses, upb decides (as :func:`topology.wire.metric_columns.raw_columns` does): prost
        refuses a known field sent with another wire type, which upb keeps as an unknown field."""
        try:
            upb_decides(self._add, data)
        except OtlpDecodeError:
            self._counters["bad_requests"] += 1
            raise

    def _add(self, data: bytes) -> None:
        self._core.add(data, self)

    # the core's questions
    def _service_known(self, res: bytes) -> bool:
        service = self._services.get(res, "")
        return (self._service_of(res) if service == "" else service) is not None

    def _meaning_of(self, key: bytes, res: bytes, name: str) -> tuple[int, bool, int, int, int, int]:
        """What a new series means: (group or -1, error, statistic code, base or -1, endpoint text or -1,
        protocol text or -1)."""
        service = self._services.get(res, "")
        if service == "":
            service = self._service_of(res)
        side, _, default_protocol = _METRICS[name]
        if service is None:
            return _NO_MEANING
        m = _meaning(res, name, key_parts(key)[2], service, side, default_protocol)
        if m is None or m[0] is None:
            return _NO_MEANING
        group, error, endpoint, protocol, stat, base = m
        assert group is not None
        g = self._group_ids.get(group)
        if g is None:
            g = self._group_ids[group] = len(self._groups)
            self._groups.append(group)
        b = -1
        if base is not None:
            b = self._bases.get(base, -1)
            if b < 0:
                b = self._bases[base] = len(self._bases)
        return g, error, _STATS.get(stat, 3), b, self._text_id(endpoint), self._text_id(protocol)

    def _layout_of(self, bounds: bytes, scale: float) -> tuple[list[int], list[float]]:
        targets, edges = _rebucket(bounds, scale)
        return list(targets), list(edges)

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

    def _text_id(self, text: str | None) -> int:
        if text is None:
            return -1
        i = self._text_ids.get(text)
        if i is None:
            i = self._text_ids[text] = len(self._texts)
            self._texts.append(text)
        return i

    # -- output ------------------------------------------------------------------------------------
    def flush(self, watermark: float) -> list[IpcObservation]:
        """Observations of every window that ended at or before ``watermark`` (sorted, deterministic)."""
        ws = self.window_seconds
        groups, texts = self._groups, self._texts
        rows = self._core.flush(watermark)
        rows.sort(key=lambda r: (r[0], groups[r[1]]))
        out: list[IpcObservation] = []
        new, set_ = object.__new__, object.__setattr__
        for window, g, calls, err, total, t0, t1, proto, low, counts, zero, n, endpoints, fine in rows:
            if n:
                # LatencySketch(SCALE, low, counts, zero), its total (n) summed natively, not again here
                latency = new(LatencySketch)
                set_(latency, "scale", SCALE)
                set_(latency, "offset", low)
                set_(latency, "counts", counts)
                set_(latency, "zero", zero)
                set_(latency, "total", n)
            else:
                latency = EMPTY
            if fine is not None:
                for scale, index, fine_counts, z, unit in fine:
                    sk = _exponential_sketch((scale, dict(zip(index, fine_counts, strict=True)), z), unit)
                    if sk is not None:
                        latency = latency.merge(sk)
            side, service, peer, is_ip = groups[g]
            stats = EdgeStats(
                first_seen=t0,
                last_seen=t1,
                protocol=texts[proto] if proto >= 0 else None,
                requests=calls,
                errors=err,
                latency=latency,
                latency_sum=total,
                endpoints=(texts[endpoints[0]],) if len(endpoints) == 1 else
                tuple(sorted([texts[e] for e in endpoints])[:MAX_ENDPOINTS]),
            )
            out.append(IpcObservation(window, ws, side, service, peer, is_ip, stats))
        self._counters["observations"] += len(out)
        return out

    @property
    def counters(self) -> dict[str, int]:
        c: dict[str, int] = self._core.counters()
        c.update(self._counters)
        return c

    @property
    def open_series(self) -> int:
        return len(self._core)


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

"""TRACE layer: pair client and server spans into edges, and summarise traces.

Pairing (as the OTel ``servicegraph`` connector and Tempo do): CLIENT and PRODUCER spans wait under
(trace id, span id), SERVER and CONSUMER spans under (trace id, parent span id); when both sides of a call
are in, the call is an edge ``client service -> server service`` (connection type ``messaging_system``
for producer/consumer). Spans still unpaired ``wait_seconds`` after they arrived expire:

* a CLIENT/PRODUCER span becomes a call to a *virtual* server named by the first present of
  ``service.peer.name``, ``peer.service``, ``db.namespace``, ``db.name``, ``server.address``,
  ``db.system.name``, ``db.system`` (DATABASE when a ``db.*`` attribute is present, MESSAGING for
  ``messaging.*``, else UNINSTRUMENTED); without any of them it is counted as ``unnamed`` and dropped;
* a SERVER span becomes a call from ``user`` (as does a SERVER span without a parent, at once);
* a CONSUMER span is dropped (counted in ``expired``).

A producer may have several consumers: a paired producer stays available for further consumers until it
expires. Edges are counted per 60 s window of the client span's start (the server span's for ``user``),
at APP granularity and, when the resource carries ``k8s.deployment.name``, at CLUSTER granularity.
Latency is the server span's duration for pairs and ``user`` calls, the client span's for virtual servers.

Capacity: at most ``max_pending`` spans wait. Beyond that, spans whose wait has passed by the new span's
arrival expire first (as a flush would expire them), and only then is the oldest dropped and counted in
``dropped`` (reason ``capacity`` on ``/metrics``). The callers keep it from coming to that: the HTTP
receiver refuses spans (429, ``Retry-After``) while they could overflow it, and the capacity is sized
from memory (:func:`capacity_for`, ``TOPOLOGY_TRACE_CAPACITY``). A waiting span costs ~0.5 KiB, its
open trace about as much again (:data:`PENDING_SPAN_BYTES`). Counters: ``spans``, ``paired``,
``expired``, ``dropped``, ``total`` (edge observations), ``roots``, ``unnamed``, ``internal``,
``invalid`` and trace-summary counters. The clock is an argument.

Holding (``flush(now, close=watermark)``, what the in-process pipeline does): stage 3 emits an open
window early only for an edge new in it (:mod:`topology.stages.final`), so the pairer hands out at once
only the calls of an observation (window, source, target, clusters, shape) it has not seen in this
window or the one before; the other calls of open windows gather here, one accumulator per
observation, until their window closes (``close`` reaches its end), or, for an observation new in its
window, until a flush with ``refresh`` (stage 3's later versions of what it emitted early). A
trickle then costs one partial per edge and window, as a burst does, instead of one per flush; the
stored windows are the same (partials are summable). Without ``close`` (the Kafka stage 2) everything
observed goes out at every flush.

Trace summaries: a trace is summarised once no span of it arrived for ``wait_seconds`` (or when more
than ``max_traces`` traces are open, the oldest at once). The summary keeps the trace's first
``max_trace_spans`` spans to arrive, packed (:func:`topology.catalog.pack_spans`; ``spans`` counts them
all, so a longer trace says it was truncated), with the virtual node each unanswered CLIENT/PRODUCER
span was attributed to: what :mod:`topology.tracemap` draws the trace's calls from.

Input: ``add(request, now)`` takes a decoded request; ``add_serialized(data, now)`` the protobuf bytes as
they come from Kafka or HTTP, parsed with the compact schema of :func:`topology.wire.otlp.spans_view`
(the fast path; ``add`` re-serializes and takes it too, so there is one implementation); ``add_view``
what admission kept.

Two implementations, one behaviour: :data:`SpanPairer` is the native one
(:class:`topology.stages.trace_native.NativeSpanPairer`: a request decoded once in Rust, paired span by
span there, Python work per request and per edge) where the extension ``topology.wire._spans`` is built,
else :class:`PythonSpanPairer` below (one warning in the log). The Python one is the reference: the
tests feed both the same requests and compare every output, counter and waiting span.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from topology.catalog import NAME_MAX, PEER_RECORD, TraceSummary, pack_span
from topology.model import EdgeKey, EdgePartial, Granularity, Layer, NodeKind, Side
from topology.sketch import LatencySketch, bucket_of
from topology.stages.trace_native import NativeSpanPairer
from topology.stats import MAX_EXEMPLARS, EdgeStats
from topology.wire import spans as _native_spans
from topology.wire.otlp import OtlpDecodeError, attribute, spans_view

WINDOW_SECONDS = 60
USER = "user"

_SERVER, _CLIENT, _PRODUCER, _CONSUMER = 2, 3, 4, 5  # Span.SpanKind
_STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR
_VIRTUAL_NAME_KEYS = ("service.peer.name", "peer.service", "db.namespace", "db.name", "server.address",
                      "db.system.name", "db.system")
_MESSAGING = "messaging_system"
_DATABASE = "database"
_VIRTUAL = "virtual_node"
_VIRTUAL_NAME_KEY_BYTES = tuple(k.encode() for k in _VIRTUAL_NAME_KEYS)

# A waiting span: (arrived, service, cluster, kind, start_ns, end_ns, error, trace_id, raw attributes)
_Pending = tuple[float, str, str | None, int, int, int, bool, bytes, tuple[bytes, ...]]
# What an observation is: (source kind, target kind, connection type)
_Shape = tuple[NodeKind, NodeKind, str | None]
_PAIR: _Shape = (NodeKind.SERVICE, NodeKind.SERVICE, None)
_PAIR_MESSAGING: _Shape = (NodeKind.SERVICE, NodeKind.SERVICE, _MESSAGING)
_FROM_USER: _Shape = (NodeKind.USER, NodeKind.SERVICE, _VIRTUAL)
_TO_DATABASE: _Shape = (NodeKind.SERVICE, NodeKind.DATABASE, _DATABASE)
_TO_MESSAGING: _Shape = (NodeKind.SERVICE, NodeKind.MESSAGING, _MESSAGING)
_TO_UNINSTRUMENTED: _Shape = (NodeKind.SERVICE, NodeKind.UNINSTRUMENTED, _VIRTUAL)
#: The shapes by number (the native pairer's codes).
SHAPES: tuple[_Shape, ...] = (_PAIR, _PAIR_MESSAGING, _FROM_USER, _TO_DATABASE, _TO_MESSAGING,
                              _TO_UNINSTRUMENTED)
# An observation key: (window, source, target, source cluster, target cluster, shape); clusters are None
# when unknown (then there is no CLUSTER edge); a virtual node is its own cluster.
_ObsKey = tuple[int, str, str, str | None, str | None, _Shape]
_Edge = tuple["_Acc", _Shape, str | None, str | None]  # calls, shape, source app, target app (CLUSTER)
# The kept spans of an open trace are packed into one bytes object (topology.catalog.pack_spans'
# format), and the summary carries the bytes: bytes are invisible to the garbage collector, and an
# object per span kept alive made collections twice as frequent and slow (a third of the stage's
# throughput); nothing unpacks them before Query.trace asks.
#: Spans kept per trace by default (the summary counts the others).
MAX_TRACE_SPANS = 256
#: Memory of one waiting span with its share of open traces, measured (~540 B waiting, ~1,070 B with a
#: trace of its own; three attributes): what :func:`capacity_for` budgets.
PENDING_SPAN_BYTES = 1536
#: Bounds of :func:`capacity_for`: the old fixed capacity at least, and never more than this.
MIN_CAPACITY, MAX_CAPACITY = 10_000, 4_000_000


def capacity_for(memory_bytes: int, share: float = 1 / 32) -> int:
    """Waiting spans that ``share`` of ``memory_bytes`` holds (:data:`PENDING_SPAN_BYTES` each), within
    [:data:`MIN_CAPACITY`, :data:`MAX_CAPACITY`]: 24 GiB of memory gives 524,288."""
    return max(MIN_CAPACITY, min(MAX_CAPACITY, int(memory_bytes * share) // PENDING_SPAN_BYTES))


class _Acc:
    """Calls observed under one key: requests, errors, latency, first/last start, exemplar trace ids."""

    __slots__ = ("errors", "exemplars", "first", "hist", "last", "lat_ns", "requests", "zero")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.hist: dict[int, int] = {}  # latency sketch bucket (topology.sketch.SCALE) -> calls
        self.zero = 0  # calls that took no time (<= 1 ns)
        self.lat_ns = 0
        self.first = 1 << 62
        self.last = 0
        self.exemplars: list[bytes] = []

    def merge(self, other: _Acc) -> None:
        self.requests += other.requests
        self.errors += other.errors
        hist = self.hist
        for i, n in other.hist.items():
            hist[i] = hist.get(i, 0) + n
        self.zero += other.zero
        self.lat_ns += other.lat_ns
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        for t in other.exemplars:
            if len(self.exemplars) >= MAX_EXEMPLARS:
                break
            if t not in self.exemplars:
                self.exemplars.append(t)


class PythonSpanPairer:
    """Spans in (``add``), edge partials (``flush``) and trace summaries (``take_trace_summaries``) out.

    The Python implementation: what runs where the native module is not built, and the reference the
    native pairer (:class:`topology.stages.trace_native.NativeSpanPairer`) is tested against."""

    def __init__(self, wait_seconds: float = 10.0, max_pending: int = 10_000,
                 window_seconds: int = WINDOW_SECONDS, max_traces: int = 100_000,
                 max_trace_spans: int = MAX_TRACE_SPANS) -> None:
        if (wait_seconds < 0 or max_pending <= 0 or window_seconds <= 0 or max_traces <= 0
                or max_trace_spans < 0):
            raise ValueError("wait_seconds must be >= 0; max_pending, window_seconds, max_traces > 0; "
                             "max_trace_spans >= 0")
        self.wait_seconds = float(wait_seconds)
        self.max_pending = max_pending
        self.window_seconds = window_seconds
        self._wns = window_seconds * 1_000_000_000
        self.max_traces = max_traces
        self.max_trace_spans = max_trace_spans
        self.counters: dict[str, int] = dict.fromkeys(
            ("requests", "bad_requests", "spans", "paired", "expired", "dropped", "total", "roots", "unnamed",
             "internal", "invalid", "no_service", "traces", "traces_evicted"), 0)
        # Ordered dicts: insertion order is arrival order, and removing from the front must stay O(1)
        # (a plain dict degrades to a scan over deleted slots when drained from the front).
        # trace id + span id -> CLIENT/PRODUCER span; trace id + parent span id -> SERVER/CONSUMER spans
        self._clients: OrderedDict[bytes, _Pending] = OrderedDict()
        self._servers: OrderedDict[bytes, list[_Pending]] = OrderedDict()
        self._n_servers = 0
        self._producers: OrderedDict[bytes, _Pending] = OrderedDict()  # paired producers, for more consumers
        self._obs: dict[_ObsKey, _Acc] = {}
        # trace id -> [start_ns, end_ns, spans, error, services, root service, root name, last activity,
        #              has real root, queued at, kept spans and their peers (packed), spans kept, peers kept]
        self._traces: OrderedDict[bytes, list[Any]] = OrderedDict()
        self._summaries: list[TraceSummary] = []
        self._identities: dict[bytes, tuple[str | None, str | None]] = {}

    @property
    def pending(self) -> int:
        """Spans waiting for their other side."""
        return len(self._clients) + self._n_servers

    # -- input -----------------------------------------------------------------------------------
    def add(self, request: ExportTraceServiceRequest, now: float) -> None:
        """Add the spans of one export request that arrived at ``now`` (epoch seconds)."""
        self.add_serialized(request.SerializeToString(), now)

    def add_serialized(self, data: bytes, now: float) -> None:
        """Add a serialized ``ExportTraceServiceRequest``; raises OtlpDecodeError (counted) if malformed.

        Spans with ids of the wrong length are skipped and counted (``invalid``).
        """
        try:
            view = spans_view(data)
        except OtlpDecodeError:
            self.counters["bad_requests"] += 1
            raise
        self.add_view(view, now)

    def add_view(self, view: Any, now: float) -> None:
        """Add a request already parsed with the compact schema (:func:`topology.wire.otlp.decode_spans`,
        what admission keeps): the HTTP path takes it as it is, without parsing again."""
        c = self.counters
        c["requests"] += 1
        clients, servers, producers, traces = self._clients, self._servers, self._producers, self._traces
        identities = self._identities
        max_pending, max_traces = self.max_pending, self.max_traces
        max_kept = self.max_trace_spans
        for rs in view.resource_spans:
            ident = identities.get(rs.resource)
            if ident is None:
                ident = self._identity(rs.resource)
            service, cluster = ident
            service_utf8 = b"" if service is None else service[:NAME_MAX].encode()
            for ss in rs.scope_spans:
                spans = ss.spans
                c["spans"] += len(spans)
                if service is None:
                    c["no_service"] += len(spans)
                    continue
                for span in spans:
                    tid: bytes = span.trace_id
                    sid: bytes = span.span_id
                    pid: bytes = span.parent_span_id
                    if len(tid) != 16 or len(sid) != 8 or (pid and len(pid) != 8):
                        c["invalid"] += 1
                        continue
                    start: int = span.start_time_unix_nano
                    end: int = span.end_time_unix_nano
                    err = span.status.code == _STATUS_ERROR
                    kind: int = span.kind
                    # trace summary
                    tr = traces.get(tid)
                    if tr is None:
                        name: str = span.name
                        kept = b"" if not max_kept else pack_span(sid, pid, start, end, kind, err,
                                                                  service_utf8, name)
                        traces[tid] = [start, end, 1, err, {service}, service, name, now, not pid, now, kept,
                                       1 if max_kept else 0, 0]
                        c["traces"] += 1
                        if len(traces) > max_traces:
                            self._evict_trace()
                    else:
                        if tr[11] < max_kept:
                            tr[11] += 1
                            tr[10] += pack_span(sid, pid, start, end, kind, err, service_utf8, span.name)
                        if start < tr[0]:
                            tr[0] = start
                            if not tr[8]:
                                tr[5], tr[6] = service, span.name
                        if end > tr[1]:
                            tr[1] = end
                        tr[2] += 1
                        if err:
                            tr[3] = True
                        tr[4].add(service)
                        tr[7] = now
                        if not pid and not tr[8]:
                            tr[5], tr[6], tr[8] = service, span.name, True
                    # pairing
                    if kind in (_CLIENT, _PRODUCER):
                        key = tid + sid
                        waiting = servers.pop(key, None)
                        if waiting is None:
                            clients[key] = (now, service, cluster, kind, start, end, err, tid,
                                            tuple(span.attributes))
                            if len(clients) + self._n_servers > max_pending:
                                self._make_room(now)
                        else:
                            self._n_servers -= len(waiting)
                            me: _Pending = (now, service, cluster, kind, start, end, err, tid, ())
                            for srv in waiting:
                                self._pair(me, srv)
                            if kind == _PRODUCER:
                                producers[key] = me
                                self._bound_producers()
                    elif kind in (_SERVER, _CONSUMER):
                        me = (now, service, cluster, kind, start, end, err, tid, ())
                        if not pid:
                            if kind == _SERVER:
                                c["roots"] += 1
                                self._from_user(me)
                            continue
                        key = tid + pid
                        cl = clients.pop(key, None)
                        if cl is None:
                            cl = producers.get(key)
                        if cl is None:
                            lst = servers.get(key)
                            if lst is None:
                                servers[key] = [me]
                            else:
                                lst.append(me)
                            self._n_servers += 1
                            if len(clients) + self._n_servers > max_pending:
                                self._make_room(now)
                        else:
                            self._pair(cl, me)
                            if cl[3] == _PRODUCER and key not in producers:
                                producers[key] = cl
                                self._bound_producers()
                    else:
                        c["internal"] += 1

    def _identity(self, raw: bytes) -> tuple[str | None, str | None]:
        service = cluster = None
        try:
            attributes = Resource.FromString(raw).attributes
        except Exception:  # a resource that does not parse has no service: its spans are counted
            attributes = []
        for kv in attributes:
            if kv.key == "service.name":
                service = kv.value.string_value or None
            elif kv.key == "k8s.deployment.name":
                cluster = kv.value.string_value or None
        if len(self._identities) >= 10_000:
            self._identities.clear()
        ident = self._identities[raw] = (service, cluster)
        return ident

    # -- observations -----------------------------------------------------------------------------
    def _pair(self, cl: _Pending, srv: _Pending) -> None:
        self.counters["paired"] += 1
        shape = _PAIR_MESSAGING if cl[3] == _PRODUCER or srv[3] == _CONSUMER else _PAIR
        self._record((cl[4] // self._wns * self.window_seconds, cl[1], srv[1], cl[2], srv[2], shape),
                     cl[4], srv[5] - srv[4], cl[6] or srv[6], cl[7])

    def _from_user(self, srv: _Pending) -> None:
        self._record((srv[4] // self._wns * self.window_seconds, USER, srv[1], USER if srv[2] else None,
                      srv[2], _FROM_USER), srv[4], srv[5] - srv[4], srv[6], srv[7])

    def _to_virtual(self, cl: _Pending, key: bytes) -> None:
        virtual = virtual_peer(cl[8])
        if virtual is None:
            self.counters["unnamed"] += 1
            return
        name, shape = virtual
        self._record((cl[4] // self._wns * self.window_seconds, cl[1], name, cl[2], name if cl[2] else None,
                      shape), cl[4], cl[5] - cl[4], cl[6], cl[7])
        tr = self._traces.get(cl[7])  # the trace is still open: it went quiet no earlier than its span
        if tr is not None and tr[12] < self.max_trace_spans:
            tr[12] += 1
            tr[10] += pack_span(key[16:], b"", 0, 0, PEER_RECORD, False, name.encode(), shape[1].value)

    def _record(self, key: _ObsKey, start_ns: int, dur_ns: int, error: bool, trace_id: bytes) -> None:
        acc = self._obs.get(key)
        if acc is None:
            acc = self._obs[key] = _Acc()
        acc.requests += 1
        if error:
            acc.errors += 1
        if dur_ns > 1:  # the exact duration goes into the sketch (its own error only: 1.1%)
            i = bucket_of(dur_ns * 1e-9)
            acc.hist[i] = acc.hist.get(i, 0) + 1
            acc.lat_ns += dur_ns
        else:
            acc.zero += 1
            if dur_ns > 0:
                acc.lat_ns += dur_ns
        if start_ns < acc.first:
            acc.first = start_ns
        if start_ns > acc.last:
            acc.last = start_ns
        ex = acc.exemplars
        if len(ex) < MAX_EXEMPLARS and trace_id not in ex:
            ex.append(trace_id)

    # -- capacity and expiry -------------------------------------------------------------------------
    @property
    def oldest_arrival(self) -> float | None:
        """When the span that has waited longest arrived (None: none waits): room comes by
        ``oldest_arrival + wait_seconds`` at the latest."""
        c_first = next(iter(self._clients.values()), None)
        s_first = next(iter(self._servers.values()), None)
        times = [p[0] for p in (c_first, s_first[0] if s_first else None) if p is not None]
        return min(times) if times else None

    def _make_room(self, now: float) -> None:
        """Over capacity: expire what waited past the wait by ``now``, else drop the oldest."""
        self._expire(now)
        if len(self._clients) + self._n_servers > self.max_pending:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Drop the span that has waited longest (clients or servers, whichever arrived first)."""
        c_first = next(iter(self._clients.items()), None)
        s_first = next(iter(self._servers.items()), None)
        if s_first is None or (c_first is not None and c_first[1][0] <= s_first[1][0][0]):
            assert c_first is not None
            del self._clients[c_first[0]]
        else:
            lst = s_first[1]
            lst.pop(0)
            if not lst:
                del self._servers[s_first[0]]
            self._n_servers -= 1
        self.counters["dropped"] += 1

    def _bound_producers(self) -> None:
        while len(self._producers) > self.max_pending:
            self._producers.popitem(last=False)

    def _expire(self, now: float) -> None:
        wait = self.wait_seconds
        clients = self._clients
        while clients:
            key = next(iter(clients))
            cl = clients[key]
            if now - cl[0] <= wait:
                break
            del clients[key]
            self.counters["expired"] += 1
            self._to_virtual(cl, key)
        servers = self._servers
        while servers:
            key = next(iter(servers))
            lst = servers[key]
            if now - lst[0][0] <= wait:
                break
            del servers[key]
            late = [srv for srv in lst if now - srv[0] <= wait]
            for srv in lst:
                if now - srv[0] > wait:
                    self._n_servers -= 1
                    self.counters["expired"] += 1
                    if srv[3] == _SERVER:
                        self._from_user(srv)
            if late:  # several spans under one parent that arrived at different times: wait on
                servers[key] = late
        producers = self._producers
        while producers:
            key = next(iter(producers))
            if now - producers[key][0] <= wait:
                break
            del producers[key]

    # -- trace summaries ------------------------------------------------------------------------------
    def _evict_trace(self) -> None:
        tid, tr = self._traces.popitem(last=False)
        self._summaries.append(_summary(tid, tr))
        self.counters["traces_evicted"] += 1

    def _quiet_traces(self, now: float) -> None:
        traces, wait = self._traces, self.wait_seconds
        while traces:
            tid = next(iter(traces))
            tr = traces[tid]
            if now - tr[9] <= wait:
                break  # queued (and so last active) within the wait: so is everything behind it
            if now - tr[7] > wait:
                del traces[tid]
                self._summaries.append(_summary(tid, tr))
            else:
                tr[9] = tr[7]
                traces.move_to_end(tid)

    # -- output ----------------------------------------------------------------------------------------
    def flush(self, now: float, close: float | None = None, refresh: bool = False) -> list[EdgePartial]:
        """Expire what waited longer than the wait and return the edge partials observed so far.

        Partials are Side.PAIR and summable: a window may appear in several flushes. With ``close``
        (stage 3's watermark: windows ending at or before it close), calls of windows still open are
        held here, gathering, except those of an observation new in its window (not seen in this window
        or the one before, as stage 3 decides what it emits early): see "Holding" in the module doc.
        ``refresh`` hands out what is held of observations new in their window too (stage 3's later
        versions of a window it emitted early); those known from the window before wait for the close.
        """
        self._expire(now)
        self._quiet_traces(now)
        obs = self._take_all() if close is None else self._take(close, refresh)
        # observations -> APP edges, and CLUSTER edges where both ends have a cluster
        groups: dict[tuple[int, Granularity, str, str], list[_Edge]] = {}
        for (window, source, target, s_cluster, t_cluster, shape), acc in obs.items():
            self.counters["total"] += acc.requests
            k = (window, Granularity.APP, source, target)
            g = groups.get(k)
            if g is None:
                groups[k] = [(acc, shape, None, None)]
            else:
                g.append((acc, shape, None, None))
            if s_cluster and t_cluster:
                k = (window, Granularity.CLUSTER, s_cluster, t_cluster)
                g = groups.get(k)
                if g is None:
                    groups[k] = [(acc, shape, source, target)]
                else:
                    g.append((acc, shape, source, target))
        edges: dict[tuple[int, Granularity, str, str], _Edge] = {}
        for k, g in groups.items():
            if len(g) == 1:
                edges[k] = g[0]
                continue
            merged = _Acc()
            shape, s_app, t_app = g[0][1], g[0][2], g[0][3]
            for acc, sh, sa, ta in g:
                merged.merge(acc)
                if sh[2] and not shape[2]:  # a named connection type wins over none
                    shape, s_app, t_app = sh, sa, ta
            edges[k] = (merged, shape, s_app, t_app)
        out: list[EdgePartial] = []
        ws = self.window_seconds
        for (window, gran, source, target), (acc, shape, s_app, t_app) in sorted(edges.items(),
                                                                                 key=_edge_order):
            stats = EdgeStats(
                first_seen=acc.first / 1e9,
                last_seen=acc.last / 1e9,
                requests=acc.requests,
                errors=acc.errors,
                latency=LatencySketch.from_counts(acc.hist, acc.zero),
                latency_sum=acc.lat_ns / 1e9,
                exemplars=tuple(sorted(t.hex() for t in acc.exemplars)),
                connection_type=shape[2],
            )
            out.append(EdgePartial(EdgeKey(Layer.TRACE, gran, source, target), window, ws, Side.PAIR, stats,
                                   shape[0], shape[1], s_app, t_app))
        return out

    def holds_closing(self, close: float) -> bool:
        """Whether calls of windows ending at or before ``close`` are held (a flush hands them out)."""
        ws = self.window_seconds
        return any(a.requests and k[0] + ws <= close for k, a in self._obs.items())

    def _take(self, close: float, refresh: bool) -> dict[_ObsKey, _Acc]:
        """The observations a flush with ``close`` hands out; the others stay in ``_obs`` with their
        calls. An observation seen by such a flush stays in ``_obs`` in its place (its calls handed out
        or held) until the window after its own closes, as the native pairer keeps it: the order of
        ``_obs`` is the order edges merge in. Decided on what was seen before this flush."""
        seen: set[_ObsKey] = self.__dict__.get("_seen") or set()  # (only flushes with ``close`` keep it)
        ws = self.window_seconds
        obs = self._obs
        out: dict[_ObsKey, _Acc] = {}
        for key, acc in obs.items():
            w = key[0]
            if acc.requests and (w + ws <= close
                                 or ((refresh or key not in seen) and (w - ws, *key[1:]) not in seen)):
                out[key] = acc
        for key in out:
            obs[key] = _Acc()
        seen.update(obs)
        self._seen = {k for k in seen if k[0] + 2 * ws > close}  # the next window's "before" is kept
        if any(k[0] + 2 * ws <= close for k in obs):
            self._obs = {k: a for k, a in obs.items() if k[0] + 2 * ws > close}
        return out

    def _take_all(self) -> dict[_ObsKey, _Acc]:
        """Every observation with calls; what flushes with ``close`` saw stays, without calls."""
        obs = self._obs
        seen = self.__dict__.get("_seen")
        self._obs = {k: _Acc() for k in obs if k in seen} if seen else {}
        return {k: a for k, a in obs.items() if a.requests} if seen else obs

    def take_trace_summaries(self) -> list[TraceSummary]:
        """Summaries of the traces that went quiet (no span for the wait) up to the last flush."""
        out, self._summaries = self._summaries, []
        return out


def _edge_order(item: tuple[tuple[int, Granularity, str, str], Any]) -> tuple[int, str, str, str]:
    (window, gran, source, target), _ = item
    return window, gran.value, source, target


def virtual_peer(attributes: tuple[bytes, ...] | list[bytes]) -> tuple[str, _Shape] | None:
    """The virtual server a CLIENT/PRODUCER span's serialized attributes name, and the observation's
    shape; None when nothing names it (see the module doc)."""
    keys: dict[bytes, bytes] = {}
    for raw in attributes:
        keys[_key_of(raw)] = raw
    name = None
    for k in _VIRTUAL_NAME_KEY_BYTES:
        found = keys.get(k)
        if found is not None:
            try:
                v = attribute(found)[1]
            except Exception:  # an attribute that does not parse names nothing
                continue
            if v is not None and v != "" and len(str(v)) <= NAME_MAX:  # a longer name makes no node
                name = str(v)
                break
    if name is None:
        return None
    if any(k.startswith(b"db.") for k in keys):
        return name, _TO_DATABASE
    if any(k.startswith(b"messaging.") for k in keys):
        return name, _TO_MESSAGING
    return name, _TO_UNINSTRUMENTED


def _key_of(raw: bytes) -> bytes:
    """The key of a serialized KeyValue without decoding it (field 1 first, as every encoder writes it)."""
    if len(raw) > 2 and raw[0] == 0x0A and raw[1] < 0x80:
        return raw[2 : 2 + raw[1]]
    try:
        return attribute(raw)[0].encode()
    except Exception:
        return b""


def _summary(tid: bytes, tr: list[Any]) -> TraceSummary:
    start_ns, end_ns = tr[0], tr[1]
    return TraceSummary(trace_id=tid.hex(), root_service=tr[5], root_name=tr[6], start=start_ns / 1e9,
                        duration=max(0, end_ns - start_ns) / 1e9, spans=tr[2], error=tr[3],
                        services=tuple(sorted(tr[4])), packed_spans=tr[10])


#: The stage's pairer: the native one where the extension is built (one warning in the log where not).
SpanPairer: type[PythonSpanPairer] | type[NativeSpanPairer] = (
    NativeSpanPairer if _native_spans.available() else PythonSpanPairer)

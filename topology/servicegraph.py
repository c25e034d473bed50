"""Tempo-compatible service-graph metrics, counted from the TRACE windows stage 3 emits.

Grafana draws its service graph (the Tempo data source's "Service Graph" view) from four Prometheus
families that Tempo's metrics-generator (processor ``service-graphs``) and the OpenTelemetry
Collector's ``servicegraph`` connector write. We expose the same names and labels, so that view works
unchanged with our ``/metrics`` as its Prometheus source:

==================================================  =========  ======================================
``traces_service_graph_request_total``              counter    calls, by client, server, connection_type
``traces_service_graph_request_failed_total``       counter    calls that failed (span status ERROR)
``traces_service_graph_request_server_seconds``     histogram  call duration (``_bucket{le}``, ``_sum``,
                                                               ``_count``)
``traces_service_graph_request_client_seconds``     histogram  the same figures (see below)
==================================================  =========  ======================================

``client`` and ``server`` are service names (``user`` for calls from outside, as Tempo names it; a
database, queue or uninstrumented peer by the name its callers give it); ``connection_type`` is ``""``,
``database``, ``messaging_system`` or ``virtual_node``: Tempo's values.

What is counted: the TRACE layer's APP-granularity windows (CLUSTER windows are the same calls again),
as stage 3 emits them: a provisional version of an open window (:mod:`topology.stages.final`) counts
the calls it holds, and every later version of the window (a refresh, the complete window, late data
within the grace period, or a Kafka worker's replay after a restart from its checkpoint) adds only
what grew since it was counted: each window's counted figures are remembered per source (a stage-3
partition, or the embedded pipeline) until ``retain_seconds`` after its end, so nothing is counted twice
within one process. (Stage 3 does not emit a complete window equal to its last provisional version:
its calls were all counted then.) As Tempo and the Collector count a call once its spans pair, calls
are counted within a flush or two of pairing, not at the window's close. (A partition that
moves to another worker process may be counted again there for the windows it replays: those are
separate series of separate scrape targets.) Counters only grow: a smaller re-emitted figure adds 0.

Histograms from the latency sketch (:mod:`topology.sketch`): each sketch bucket's count goes into the
first ``le`` bucket at or above the value a quantile reads in it (within 1.1% of every observation in
the sketch bucket), so only calls within 1.1% of a bucket bound can land one bucket off. Zero
durations go to the first bucket. ``_sum`` is the exact sum of durations the window carries. Stage 3
keeps one latency per call: the server span's duration for a paired call and for calls from ``user``,
the client span's for a virtual server (Tempo copies the client's into both for databases too), so
``_client_seconds`` repeats ``_server_seconds`` rather than inventing a figure. Default bounds: those of
the OpenTelemetry ``servicegraph`` connector (2 ms .. 15 s, :data:`DEFAULT_BUCKETS`); Tempo's default
(0.1 s doubling to 12.8 s) is too coarse for calls inside a data centre. Grafana reads ``_sum`` with
``request_total`` (average duration) and ``server_seconds_bucket`` (quantiles): any bounds work.

Bounded cardinality: at most ``max_edges`` distinct (client, server) pairs get series of their own; the
calls of any later pair are counted under ``client="other", server="other"`` (its connection type
kept) and the windows so folded are counted (``folded``). A series, once made, stays (counters must not
vanish).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from topology.model import EdgeKey, EdgeWindow, Granularity, Layer
from topology.sketch import LatencySketch

__all__ = ["CONNECTION_TYPES", "DEFAULT_BUCKETS", "FAILED_TOTAL", "HISTOGRAMS", "LABELS", "MAX_EDGES",
           "OTHER", "REQUEST_TOTAL", "Series", "ServiceGraph"]

#: Family names (counters as a scraper sees them; the histograms' base names).
REQUEST_TOTAL = "traces_service_graph_request_total"
FAILED_TOTAL = "traces_service_graph_request_failed_total"
SERVER_SECONDS = "traces_service_graph_request_server_seconds"
CLIENT_SECONDS = "traces_service_graph_request_client_seconds"
HISTOGRAMS = (SERVER_SECONDS, CLIENT_SECONDS)
LABELS = ("client", "server", "connection_type")
#: The values ``connection_type`` takes (Tempo's; "" when none applies).
CONNECTION_TYPES = frozenset({"", "database", "messaging_system", "virtual_node"})
#: The OpenTelemetry ``servicegraph`` connector's default latency bounds, in seconds.
DEFAULT_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0)
#: (client, server) pairs with series of their own; later ones are folded into OTHER.
MAX_EDGES = 2000
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Series:
    """One (client, server, connection_type) series: its counts since the process started."""

    client: str
    server: str
    connection_type: str
    requests: int
    failed: int
    buckets: tuple[int, ...]  # per ``le`` bound, then +Inf: *not* cumulative
    seconds: float  # the histogram's _sum

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.client, self.server, self.connection_type)


# What was counted of one window: requests, failed, buckets, seconds.
_Counted = tuple[int, int, tuple[int, ...], float]


class _Acc:
    __slots__ = ("buckets", "failed", "requests", "seconds")

    def __init__(self, width: int) -> None:
        self.requests = 0
        self.failed = 0
        self.buckets = [0] * width
        self.seconds = 0.0


class ServiceGraph:
    """The service-graph counters of one process, fed with stage 3's TRACE windows (thread-safe:
    windows come from the pipeline's side, scrapes from the metrics endpoint's)."""

    def __init__(self, buckets: Iterable[float] = DEFAULT_BUCKETS, max_edges: int = MAX_EDGES,
                 retain_seconds: float = 240.0) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        if not self.bounds or list(self.bounds) != sorted(set(self.bounds)) or self.bounds[0] <= 0:
            raise ValueError("service-graph buckets are increasing positive seconds")
        if max_edges < 1 or retain_seconds < 0:
            raise ValueError("max_edges is at least 1 and retain_seconds not negative")
        self.max_edges = max_edges
        self.retain_seconds = retain_seconds
        self.counters = {"windows": 0, "recounted": 0, "folded": 0}
        self._series: dict[tuple[str, str, str], _Acc] = {}
        self._pairs: set[tuple[str, str]] = set()
        # source -> (edge, window start) -> (window end, what was counted of it)
        self._counted: dict[str, dict[tuple[EdgeKey, int], tuple[int, _Counted]]] = {}
        self._oldest: dict[str, float] = {}  # source -> the earliest window end it remembers
        self._lock = threading.Lock()
        self._where: dict[int, dict[int, int]] = {}  # sketch scale -> bucket index -> histogram bucket

    def observe(self, windows: Iterable[EdgeWindow], watermark: float, source: str = "") -> int:
        """Count the TRACE APP windows among ``windows`` (emitted by a stage-3 flush at ``watermark``,
        provisional or complete: what grew since a window was counted; ``source`` names the stage
        instance). Returns how many windows added counts."""
        added = 0
        with self._lock:
            counted = self._counted.setdefault(source, {})
            for w in windows:
                key = w.key
                if key.layer is not Layer.TRACE or key.granularity is not Granularity.APP:
                    continue
                now = self._figures(w)
                seen = counted.get((key, w.window_start))
                counted[(key, w.window_start)] = (w.window_end, now if seen is None else _top(seen[1], now))
                if w.window_end < self._oldest.get(source, math.inf):
                    self._oldest[source] = w.window_end
                if seen is not None:
                    now = _minus(now, seen[1])
                    self.counters["recounted"] += 1
                if not (now[0] or now[1] or any(now[2])):
                    continue
                self._add(key, w.stats.connection_type or "", now)
                added += 1
            self.counters["windows"] += added
            horizon = watermark - self.retain_seconds
            if self._oldest.get(source, math.inf) <= horizon:  # a sweep once per window, not per flush
                for k in [k for k, (end, _) in counted.items() if end <= horizon]:
                    del counted[k]
                self._oldest[source] = min((end for end, _ in counted.values()), default=math.inf)
        return added

    def observe_late(self, windows: Iterable[EdgeWindow], source: str = "") -> int:
        """Count late parts (:meth:`topology.stages.final.FinalStage.take_late`): traffic of windows
        stage 3 had forgotten, new and counted whole. Returns how many windows added counts."""
        added = 0
        with self._lock:
            for w in windows:
                key = w.key
                if key.layer is not Layer.TRACE or key.granularity is not Granularity.APP:
                    continue
                self._add(key, w.stats.connection_type or "", self._figures(w))
                added += 1
            self.counters["windows"] += added
        return added

    def series(self) -> list[Series]:
        """Every series so far, sorted by labels."""
        with self._lock:
            return [Series(*labels, acc.requests, acc.failed, tuple(acc.buckets), acc.seconds)
                    for labels, acc in sorted(self._series.items())]

    def remembered(self) -> int:
        """Windows whose counted figures are kept (to count a re-emission's growth only)."""
        with self._lock:
            return sum(len(c) for c in self._counted.values())

    # -- inside ------------------------------------------------------------------------------------
    def _figures(self, w: EdgeWindow) -> _Counted:
        stats = w.stats
        lat = stats.latency
        buckets = [0] * (len(self.bounds) + 1)
        buckets[0] = lat.zero  # zero durations: the first bound (every bound is positive)
        where = self._where.get(lat.scale)
        if where is None:
            where = self._where[lat.scale] = {}
        for k, n in enumerate(lat.counts, lat.offset):
            if n:
                i = where.get(k)
                if i is None:  # the bound at or above the value a quantile reads in sketch bucket k
                    [(value, _)] = LatencySketch(lat.scale, k, (1,), 0).values()
                    i = where[k] = bisect_left(self.bounds, value)
                buckets[i] += n
        return (stats.requests, stats.errors, tuple(buckets), stats.latency_sum)

    def _add(self, key: EdgeKey, connection_type: str, figures: _Counted) -> None:
        pair = (key.source, key.target)
        if pair not in self._pairs:
            if len(self._pairs) < self.max_edges:
                self._pairs.add(pair)
            else:
                pair = (OTHER, OTHER)
                self.counters["folded"] += 1
        labels = (*pair, connection_type)
        acc = self._series.get(labels)
        if acc is None:
            acc = self._series[labels] = _Acc(len(self.bounds) + 1)
        requests, failed, buckets, seconds = figures
        acc.requests += requests
        acc.failed += failed
        acc.buckets = [a + b for a, b in zip(acc.buckets, buckets, strict=True)]
        acc.seconds += seconds


def _minus(now: _Counted, before: _Counted) -> _Counted:
    """What grew since ``before`` (never negative: a counter only grows)."""
    return (max(0, now[0] - before[0]), max(0, now[1] - before[1]),
            tuple(max(0, a - b) for a, b in zip(now[2], before[2], strict=True)),
            max(0.0, now[3] - before[3]))


def _top(a: _Counted, b: _Counted) -> _Counted:
    """The larger of each figure: what has been counted after adding ``_minus(b, a)`` to ``a``."""
    return (max(a[0], b[0]), max(a[1], b[1]), tuple(max(x, y) for x, y in zip(a[2], b[2], strict=True)),
            max(a[3], b[3]))


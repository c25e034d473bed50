"""IPC layer emission: OTLP ``ExportMetricsServiceRequest`` payloads from instrumented apps.

Requests are counted every step into *slots* (reporting cluster x edge x endpoint, client or server
side) and exported on each app's own interval (10/30/60 s, with a phase), one resource per cluster:

* Spectator: ``ipc.client.call`` naming the server with ``ipc.server.app``; some apps also publish
  ``ipc.server.call`` naming the client with ``ipc.client.app``. Either explicit-bucket histograms
  (cumulative) or Sum/Gauge points tagged ``statistic`` = count | totalTime | max (delta).
* OTel, old conventions: ``rpc.client.duration`` / ``http.client.duration`` in ms, target in
  ``peer.service`` or ``net.peer.name`` (DNS); server series without caller identity.
* OTel, new conventions: ``rpc.client.call.duration`` / ``http.client.request.duration`` in s, target in
  ``service.peer.name`` or ``server.address`` (DNS name, or an instance address of the target).

Cumulative series start at their process's start time; the first point of a series is only a
baseline, so truth is recorded when a later point of a series naming both ends grows, or when a
delta point has a nonzero count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from topology.model import Layer
from topology.sim import otlp
from topology.sim.fleet import App, CallKind, Edge, Naming, Style, ip_text
from topology.sim.world import World

AttrValue = str | int | bool
Attrs = tuple[tuple[str, AttrValue], ...]

# Explicit bucket bounds, in seconds internally (OTel old conventions export them in ms).
OTEL_OLD_BOUNDS = tuple(
    b / 1000 for b in (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)
)
OTEL_NEW_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SPECTATOR_BOUNDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
K = max(len(OTEL_OLD_BOUNDS), len(OTEL_NEW_BOUNDS), len(SPECTATOR_BOUNDS)) + 1  # slot bucket columns
LATENCY_SIGMA = 0.6
RESOURCES_PER_REQUEST = 16
SERVER_SPEEDUP = 0.9  # the server sees a little less latency than its client


FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def bounds_for(style: Style) -> tuple[float, ...]:
    if style is Style.OTEL_OLD:
        return OTEL_OLD_BOUNDS
    if style is Style.OTEL_NEW:
        return OTEL_NEW_BOUNDS
    return SPECTATOR_BOUNDS


Identity = tuple[str, str, Attrs, tuple[str, str] | None]


@dataclass(slots=True)
class _Slot:
    app: str  # the reporting app
    cluster: str  # the reporting cluster
    edge: Edge
    endpoint: str
    server: bool
    key: tuple[str, str, int, str, bool] = ("", "", 0, "", False)
    ident: list[Identity] = field(default_factory=list)  # cached (ok, failed) identities; [] = not yet
    seen: list[bool] = field(default_factory=lambda: [False, False])  # a series exists per result


@dataclass(slots=True)
class _Block:
    """The slots one edge contributes for one reporter (its clusters x the edge's endpoints)."""

    reporter: str
    slots: list[_Slot]
    lam: FloatArray
    pv: FloatArray
    rep: FloatArray
    ip_named: bool  # client slots naming the target by an instance address
    base: int = -1  # row of its first slot in the current table (-1: not in it)


@dataclass(slots=True)
class _Series:
    start_ns: int
    count: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=list)
    emitted: bool = False


@dataclass(slots=True)
class _Point:
    """One exported series value (a histogram, or Spectator statistics)."""

    metric: str
    unit: str
    attrs: Attrs
    start_ns: int
    count: int
    total: float  # seconds
    buckets: list[int]
    bounds: tuple[float, ...]  # seconds
    max: float
    delta: bool
    statistic: bool
    pair: tuple[str, str] | None  # the edge this point names both ends of (None: no caller identity)
    grew: bool  # a delta with a nonzero count or a non-first cumulative point that grew


def _pvals(median: float, bounds: tuple[float, ...]) -> tuple[list[float], list[float]]:
    """Bucket probabilities (overflow in the last of K columns) and representative values."""
    mu = math.log(max(median, 1e-6))
    cdf_prev = 0.0
    p = [0.0] * K
    rep = [0.0] * K
    lo = 0.0
    for i, b in enumerate(bounds):
        cdf = 0.0 if b <= 0 else 0.5 * (1.0 + math.erf((math.log(b) - mu) / (LATENCY_SIGMA * math.sqrt(2))))
        p[i] = max(0.0, cdf - cdf_prev)
        rep[i] = math.sqrt(lo * b) if lo > 0 else b / 2
        cdf_prev = max(cdf_prev, cdf)
        lo = b
    p[K - 1] = max(0.0, 1.0 - cdf_prev)
    rep[K - 1] = bounds[-1] * 1.5
    return p, rep


class IpcEmitter:
    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.world = world
        self.rng = rng
        self._version = -1
        self._shape = -1
        self._ip_slots: list[_Slot] = []
        self.slots: list[_Slot] = []
        self._by_app: dict[str, list[_Block]] = {}
        self._lam = np.zeros(0)
        self._pv = np.zeros((0, K))
        self._rep = np.zeros((0, K))
        self._edge_idx = np.zeros(0, np.int64)
        self._edges: list[Edge] = []
        self._pend_n = np.zeros((0, 2), np.int64)
        self._pend_b = np.zeros((0, 2, K), np.int64)
        self._pend_sum = np.zeros((0, 2))
        self._pend_max = np.zeros((0, 2))
        self._series: dict[str, dict[tuple[str, Attrs], _Series]] = {}  # cluster -> (metric, attrs) -> series
        self._last_export: dict[str, float] = {}
        self._blocks: dict[tuple[int, bool, tuple[tuple[str, int], ...]], _Block] = {}
        self._enc = otlp.AttributeCache()
        self.points_emitted = 0

    # -- slot table ------------------------------------------------------------------------------
    def _block(self, e: Edge, reporter: App, server: bool) -> _Block:
        weights = [1.0 / (j + 1) for j in range(len(e.endpoints))] or [1.0]
        total_w = sum(weights)
        n_inst = sum(len(c.instances) for c in reporter.clusters) or 1
        median = e.latency * (SERVER_SPEEDUP if server else 1.0)
        pv, rep = _pvals(median, bounds_for(reporter.style))
        slots: list[_Slot] = []
        lam: list[float] = []
        for c in reporter.clusters:
            share = len(c.instances) / n_inst
            for ep, wt in zip(e.endpoints or ("",), weights, strict=True):
                slots.append(
                    _Slot(reporter.name, c.name, e, ep, server, (reporter.name, c.name, e.id, ep, server))
                )
                lam.append(e.rate * share * wt / total_w)
        m = len(slots)
        return _Block(
            reporter.name,
            slots,
            np.array(lam, np.float64),
            np.tile(np.array(pv), (m, 1)),
            np.tile(np.array(rep), (m, 1)),
            e.naming is Naming.IP and not server,
        )

    def _rebuild(self) -> None:
        """The slot table for the current edges and clusters. Blocks of unchanged (edge, reporter
        clusters) are reused with their pending counts; a reporter whose clusters changed (a redeploy
        restarted its processes) starts from zero."""
        w = self.world
        apps = w.fleet.apps
        sigs = {a.name: tuple((c.name, len(c.instances)) for c in a.clusters) for a in apps.values()}
        reports_client = {a.name for a in apps.values() if a.instrumented}
        reports_server = {
            a.name
            for a in apps.values()
            if a.instrumented and (a.style is not Style.SPECTATOR or a.spectator_server)
        }
        blocks: dict[tuple[int, bool, tuple[tuple[str, int], ...]], _Block] = {}
        chosen: list[_Block] = []
        block_edge: list[int] = []
        edges = [e for e in w.active_edges() if e.kind is CallKind.RPC and e.dst in apps]
        old_blocks = self._blocks
        for ei, e in enumerate(edges):
            for name, server in ((e.src, False), (e.dst, True)):
                if name not in (reports_server if server else reports_client):
                    continue
                key = (e.id, server, sigs[name])
                blk = old_blocks.get(key)
                if blk is None:
                    blk = self._block(e, apps[name], server)
                blocks[key] = blk
                chosen.append(blk)
                block_edge.append(ei)
        for key, blk in old_blocks.items():
            if key not in blocks:
                blk.base = -1  # dropped
        self._blocks = blocks
        lengths = np.array([len(b.slots) for b in chosen], np.int64)
        starts = np.cumsum(lengths) - lengths
        n = int(lengths.sum())
        old_starts = np.array([b.base for b in chosen], np.int64)
        by_app: dict[str, list[_Block]] = {}
        slots: list[_Slot] = []
        ip_slots: list[_Slot] = []
        for b, base in zip(chosen, starts.tolist(), strict=True):
            by_app.setdefault(b.reporter, []).append(b)
            b.base = base
            slots.extend(b.slots)
            if b.ip_named:
                for s in b.slots:
                    s.ident = []  # the target's addresses may have changed
                ip_slots.extend(b.slots)
        # Carry pending counts of reused blocks over to their new rows.
        kept = old_starts >= 0
        k_len = lengths[kept]
        offsets = np.arange(int(k_len.sum())) - np.repeat(np.cumsum(k_len) - k_len, k_len)
        new_i = np.repeat(starts[kept], k_len) + offsets
        old_i = np.repeat(old_starts[kept], k_len) + offsets
        pend_n = np.zeros((n, 2), np.int64)
        pend_b = np.zeros((n, 2, K), np.int64)
        pend_sum = np.zeros((n, 2))
        pend_max = np.zeros((n, 2))
        if new_i.size:
            pend_n[new_i] = self._pend_n[old_i]
            pend_b[new_i] = self._pend_b[old_i]
            pend_sum[new_i] = self._pend_sum[old_i]
            pend_max[new_i] = self._pend_max[old_i]
        self.slots = slots
        self._by_app = by_app
        if chosen:
            self._lam = np.concatenate([b.lam for b in chosen])
            self._pv = np.concatenate([b.pv for b in chosen])
            self._rep = np.concatenate([b.rep for b in chosen])
            self._edge_idx = np.repeat(np.array(block_edge, np.int64), lengths)
        else:
            self._lam, self._pv, self._rep = np.zeros(0), np.zeros((0, K)), np.zeros((0, K))
            self._edge_idx = np.zeros(0, np.int64)
        self._edges = edges
        self._pend_n, self._pend_b, self._pend_sum, self._pend_max = pend_n, pend_b, pend_sum, pend_max
        self._ip_slots = ip_slots
        live = {c.name for a in apps.values() for c in a.clusters}
        for cluster in [c for c in self._series if c not in live]:
            del self._series[cluster]  # its processes are gone; so are their series
        self._shape = w.shape_version

    # -- per step --------------------------------------------------------------------------------
    def step(self, t0: float, t1: float) -> list[bytes]:
        w = self.world
        if self._shape != w.shape_version:
            self._rebuild()
        elif self._version != w.version:  # instances replaced: addresses named by IP may have changed
            for s in self._ip_slots:
                s.ident = []
        self._version = w.version
        self._count(t1 - t0)
        return self._export(t0, t1)

    def _count(self, dt: float) -> None:
        if not self.slots:
            return
        rng = self.rng
        n = rng.poisson(self._lam * dt)
        nz = np.nonzero(n)[0]
        if nz.size == 0:
            return
        err_edge = np.array([self.world.error_rate(e) for e in self._edges], np.float64)
        n = n[nz]
        f = rng.binomial(n, err_edge[self._edge_idx[nz]])
        ok = n - f
        pv = self._pv[nz]
        rep = self._rep[nz]
        for col, cnt in ((0, ok), (1, f)):
            has = cnt > 0
            if not has.any():
                continue
            rows = nz[has]
            b = rng.multinomial(cnt[has], pv[has])
            self._pend_n[rows, col] += cnt[has]
            self._pend_b[rows, col] += b
            self._pend_sum[rows, col] += (b * rep[has]).sum(axis=1)
            top = K - 1 - np.argmax(b[:, ::-1] > 0, axis=1)
            self._pend_max[rows, col] = np.maximum(
                self._pend_max[rows, col], rep[has][np.arange(rows.size), top]
            )

    def _due(self, app: App, t0: float, t1: float) -> bool:
        i, ph = app.export_interval, app.export_phase
        return math.floor((t1 - ph) / i) > math.floor((t0 - ph) / i)

    def _export(self, t0: float, t1: float) -> list[bytes]:
        w = self.world
        t_point = t1 - 0.001
        now_ns = round(t_point * 1e9)
        resources: list[bytes] = []
        for name, blocks in self._by_app.items():
            app = w.fleet.apps[name]
            if not self._due(app, t0, t1):
                continue
            prev = self._last_export.get(name, w.start)
            self._last_export[name] = t_point
            idxs = [b.base + k for b in blocks for k in range(len(b.slots))]
            by_cluster: dict[str, list[_Point]] = {}
            for cluster, pt in self._points(app, idxs, prev):
                by_cluster.setdefault(cluster, []).append(pt)
                if pt.grew and pt.pair is not None:
                    w.truth.observe(Layer.IPC, pt.pair[0], pt.pair[1], t_point)
            self._pend_n[idxs] = 0
            self._pend_b[idxs] = 0
            self._pend_sum[idxs] = 0.0
            self._pend_max[idxs] = 0.0
            for cluster, points in by_cluster.items():
                resources.append(self._resource(app, cluster, points, now_ns))
        out: list[bytes] = []
        for k in range(0, len(resources), RESOURCES_PER_REQUEST):
            out.append(otlp.export_metrics(resources[k : k + RESOURCES_PER_REQUEST]))
        return out

    def _points(self, app: App, idxs: list[int], prev: float) -> list[tuple[str, _Point]]:
        """Fold an app's pending slot counts into its series; the points to export now."""
        bounds = bounds_for(app.style)
        nb = len(bounds)
        pend_n = self._pend_n[idxs].tolist()
        out: list[tuple[str, _Point]] = []
        # Server series without caller identity are fed by several slots (one per caller): sum first.
        shared: dict[tuple[str, str, Attrs], tuple[str, int, float, list[int]]] = {}
        for row, i in enumerate(idxs):
            slot = self.slots[i]
            for col in (0, 1):
                cnt = pend_n[row][col]
                if cnt == 0 and (app.delta or not slot.seen[col]):
                    continue
                if not slot.ident:
                    slot.ident = [self._identity(app, slot, False), self._identity(app, slot, True)]
                metric, unit, attrs, pair = slot.ident[col]
                buckets = [0] * (nb + 1)
                total = 0.0
                if cnt:
                    pb = self._pend_b[i, col]
                    buckets = [*pb[:nb].tolist(), int(pb[K - 1])]
                    total = float(self._pend_sum[i, col])
                if app.delta:
                    out.append(
                        (
                            slot.cluster,
                            _Point(
                                metric,
                                unit,
                                attrs,
                                round(prev * 1e9),
                                cnt,
                                total,
                                buckets,
                                bounds,
                                float(self._pend_max[i, col]),
                                True,
                                app.statistic,
                                pair,
                                True,
                            ),
                        )
                    )
                    continue
                slot.seen[col] = True
                key = (slot.cluster, metric, attrs)
                if pair is None:
                    have = shared.get(key)
                    if have is not None:
                        cnt += have[1]
                        total += have[2]
                        buckets = [a + b for a, b in zip(have[3], buckets, strict=True)]
                    shared[key] = (unit, cnt, total, buckets)
                    continue
                pt = self._cumulative(key, unit, pair, cnt, total, buckets, bounds)
                if pt is not None:
                    out.append((slot.cluster, pt))
        for key, (unit, cnt, total, buckets) in shared.items():
            pt = self._cumulative(key, unit, None, cnt, total, buckets, bounds)
            if pt is not None:
                out.append((key[0], pt))
        return out

    def _cumulative(
        self,
        key: tuple[str, str, Attrs],
        unit: str,
        pair: tuple[str, str] | None,
        cnt: int,
        total: float,
        buckets: list[int],
        bounds: tuple[float, ...],
    ) -> _Point | None:
        per_cluster = self._series.setdefault(key[0], {})
        s = per_cluster.get(key[1:])
        if s is None:
            if cnt == 0:
                return None
            start = self.world.cluster_start.get(key[0], self.world.start)
            s = per_cluster[key[1:]] = _Series(round(start * 1e9), buckets=[0] * len(buckets))
        grew = s.emitted and cnt > 0
        if cnt:
            s.count += cnt
            s.total += total
            s.buckets = [a + b for a, b in zip(s.buckets, buckets, strict=True)]
        s.emitted = True
        return _Point(
            key[1],
            unit,
            key[2],
            s.start_ns,
            s.count,
            s.total,
            list(s.buckets),
            bounds,
            0.0,
            False,
            False,
            pair,
            grew,
        )

    def _identity(
        self, app: App, slot: _Slot, failed: bool
    ) -> tuple[str, str, Attrs, tuple[str, str] | None]:
        """Metric name, unit, point attributes and the (client, server) pair they name (if any)."""
        e = slot.edge
        fleet = self.world.fleet
        dst = fleet.apps[e.dst]
        grpc = dst.protocol == "grpc"
        ep = slot.endpoint
        style = app.style
        if style is Style.SPECTATOR:
            status = "unexpected_error" if failed else "success"
            common: Attrs = (
                ("ipc.endpoint", ep),
                ("ipc.protocol", "grpc" if grpc else "http"),
                ("ipc.result", "failure" if failed else "success"),
                ("ipc.status", status),
            )
            if slot.server:
                return "ipc.server.call", "s", (("ipc.client.app", e.src), *common), (e.src, e.dst)
            return (
                "ipc.client.call",
                "s",
                (
                    ("ipc.server.app", e.dst),
                    ("ipc.vip", f"{e.dst}:{dst.port}"),
                    *common,
                    ("ipc.attempt", "initial"),
                ),
                (e.src, e.dst),
            )
        old = style is Style.OTEL_OLD
        if grpc:
            svc, _, method = ep.partition("/")
            attrs: list[tuple[str, AttrValue]] = [
                ("rpc.system" if old else "rpc.system.name", "grpc"),
                ("rpc.service", svc),
                ("rpc.method", method),
                ("rpc.grpc.status_code", 14 if failed else 0),
            ]
            if failed and not old:
                attrs.append(("error.type", "UNAVAILABLE"))
        else:
            code = 503 if failed else 200
            attrs = [
                (
                    "http.method" if old else "http.request.method",
                    "GET" if "get" in ep or "list" in ep else "POST",
                ),
                ("http.status_code" if old else "http.response.status_code", code),
                ("http.route", ep),
            ]
            if failed and not old:
                attrs.append(("error.type", "503"))
        if slot.server:
            if old:
                name = "rpc.server.duration" if grpc else "http.server.duration"
            else:
                name = "rpc.server.call.duration" if grpc else "http.server.request.duration"
            return name, "ms" if old else "s", tuple(attrs), None
        if e.naming is Naming.PEER:
            attrs.insert(0, ("peer.service" if old else "service.peer.name", e.dst))
        elif e.naming is Naming.IP and not old and e.via is None:
            attrs.insert(0, ("server.address", self._target_ip(e.dst)))
            attrs.insert(1, ("server.port", dst.port))
        else:
            host = f"{e.dst}.{dst.domain}.svc.cluster.local"
            attrs.insert(0, ("net.peer.name" if old else "server.address", host))
        if old:
            name = "rpc.client.duration" if grpc else "http.client.duration"
        else:
            name = "rpc.client.call.duration" if grpc else "http.client.request.duration"
        return name, "ms" if old else "s", tuple(attrs), (e.src, e.dst)

    def _target_ip(self, app: str) -> str:
        """The address a client dials: the first current instance of the target (leased to it now)."""
        for c in self.world.fleet.apps[app].clusters:
            if c.instances:
                return ip_text(c.instances[0].ip)
        raise RuntimeError(f"{app} has no instances")

    # -- protobuf --------------------------------------------------------------------------------
    # -- protobuf --------------------------------------------------------------------------------
    def _resource(self, app: App, cluster: str, points: list[_Point], now_ns: int) -> bytes:
        """One encoded ResourceMetrics: the cluster's resource, one scope, a metric per name and kind."""
        enc = self._enc
        res_attrs: list[tuple[str, AttrValue]] = [
            ("service.name", app.name),
            ("service.instance.id", cluster),
            ("service.namespace", app.domain),
        ]
        if app.k8s:
            res_attrs += [("k8s.deployment.name", cluster), ("k8s.namespace.name", app.domain)]
        if app.style is Style.SPECTATOR:
            scope = otlp.scope("com.netflix.spectator.ipc", "1.7.12")
        else:
            scope = otlp.scope(
                "io.opentelemetry." + ("grpc-1.6" if app.protocol == "grpc" else "java-http-client"),
                "1.32.0-alpha" if app.style is Style.OTEL_OLD else "2.9.0-alpha",
            )
        hist: dict[tuple[str, str, bool], list[bytes]] = {}
        sums: dict[tuple[str, str], list[bytes]] = {}
        gauges: dict[tuple[str, str], list[bytes]] = {}
        for p in points:
            self.points_emitted += 1
            if p.statistic:
                for stat, val in (("count", float(p.count)), ("totalTime", p.total)):
                    a = enc.field(7, (*p.attrs, ("statistic", stat)))
                    sums.setdefault((p.metric, p.unit), []).append(
                        otlp.number_point(a, p.start_ns, now_ns, val)
                    )
                a = enc.field(7, (*p.attrs, ("statistic", "max")))
                gauges.setdefault((p.metric, p.unit), []).append(otlp.number_point(a, 0, now_ns, p.max))
                continue
            scale = 1000.0 if p.unit == "ms" else 1.0
            hist.setdefault((p.metric, p.unit, p.delta), []).append(
                otlp.histogram_point(
                    enc.field(9, p.attrs),
                    p.start_ns,
                    now_ns,
                    p.count,
                    p.total * scale,
                    p.buckets,
                    _exported_bounds(p.bounds, scale),
                )
            )
        metrics = [
            otlp.histogram_metric(m, u, pts, otlp.TEMPORALITY_DELTA if d else otlp.TEMPORALITY_CUMULATIVE)
            for (m, u, d), pts in hist.items()
        ]
        metrics += [otlp.sum_metric(m, u, pts, otlp.TEMPORALITY_DELTA, True) for (m, u), pts in sums.items()]
        metrics += [otlp.gauge_metric(m, u, pts) for (m, u), pts in gauges.items()]
        return otlp.resource_metrics(otlp.resource(enc.field(1, res_attrs)), scope, metrics)


_BOUNDS_CACHE: dict[tuple[tuple[float, ...], float], bytes] = {}


def _exported_bounds(bounds: tuple[float, ...], scale: float) -> bytes:
    """The encoded explicit_bounds field (7) of a histogram point."""
    hit = _BOUNDS_CACHE.get((bounds, scale))
    if hit is None:
        hit = _BOUNDS_CACHE[(bounds, scale)] = otlp.packed_double(7, [round(b * scale, 9) for b in bounds])
    return hit

"""TRACE layer emission: OTLP ``ExportTraceServiceRequest`` payloads with multi-hop sampled traces.

About ``trace_ratio`` of requests are traced. A trace starts with a SERVER span without a parent in
an edge gateway (a user request) or in an instrumented app called by an uninstrumented one (which
propagates no context). It follows the call graph: a CLIENT span in the caller and, when the callee
is instrumented, a SERVER span in the callee whose parent is that CLIENT span. Calls to databases
are CLIENT spans with ``db.*`` attributes; calls to uninstrumented apps and external hosts name the
peer (``peer.service`` / ``service.peer.name`` / ``server.address``); brokers get a PRODUCER span and,
when the chosen consumer is instrumented, a CONSUMER span whose parent is the PRODUCER span.
Uninstrumented apps emit nothing. Spans of several services share one export request.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from topology.model import Layer
from topology.sim import otlp
from topology.sim.fleet import App, CallKind, Edge, Instance, Style
from topology.sim.sampling import poisson
from topology.sim.world import World

AttrValue = str | int | bool
Attrs = list[tuple[str, AttrValue]]

MAX_SPANS_PER_TRACE = 200
MAX_DEPTH = 10
MAX_REPEAT = 3  # calls of one child per request (16% of calls repeat a child in real fleets)
RESOURCES_PER_REQUEST = 24
USER = "user"

SERVER = otlp.SPAN_KIND_SERVER
CLIENT = otlp.SPAN_KIND_CLIENT
PRODUCER = otlp.SPAN_KIND_PRODUCER
CONSUMER = otlp.SPAN_KIND_CONSUMER

#: Attributes naming the server of an unpaired CLIENT/PRODUCER span, first present wins (the contract).
PEER_NAME_ORDER = (
    "service.peer.name",
    "peer.service",
    "db.namespace",
    "db.name",
    "server.address",
    "db.system.name",
    "db.system",
)


def virtual_peer(attrs: Attrs) -> str | None:
    """The virtual server an unpaired client span names, per the observation contract."""
    d = dict(attrs)
    for k in PEER_NAME_ORDER:
        v = d.get(k)
        if isinstance(v, str) and v:
            return v
    return None


@dataclass(slots=True)
class _Span:
    trace_id: bytes
    span_id: bytes
    parent: bytes
    name: str
    kind: int
    start: float
    end: float
    attrs: Attrs
    error: bool
    app: str
    inst: Instance
    cluster: str


class _Trace:
    __slots__ = ("id", "spans")

    def __init__(self, trace_id: bytes) -> None:
        self.id = trace_id
        self.spans = 0


class TraceEmitter:
    def __init__(
        self, world: World, rng: random.Random, nprng: np.random.Generator, trace_ratio: float
    ) -> None:
        self.world = world
        self.rng = rng
        self.nprng = nprng
        self.ratio = trace_ratio
        self._version = -1
        self._shape = -1
        self._roots: list[tuple[str, float]] = []  # (app receiving untraced-context requests, requests/s)
        self._out: list[_Span] = []
        self._insts: dict[str, list[tuple[Instance, str]]] = {}
        self._enc = otlp.AttributeCache()
        self._res_cache: dict[str, bytes] = {}
        self.spans_emitted = 0
        self.traces_emitted = 0

    def _refresh(self) -> None:
        """Roots and instances after a shape change (edges, clusters); patch replaced instances otherwise."""
        w = self.world
        if self._shape != w.shape_version:
            self._rebuild()
        elif self._version != w.version:
            for app, old, new in w.replacements:
                insts = self._insts[app]
                for k, (inst, cluster) in enumerate(insts):
                    if inst is old:
                        insts[k] = (new, cluster)
                        break
        self._version = w.version

    def _rebuild(self) -> None:
        w = self.world
        apps = w.fleet.apps
        roots: dict[str, float] = {}
        for a in apps.values():
            if a.gateway and a.instrumented and a.user_rate > 0:
                roots[a.name] = roots.get(a.name, 0.0) + a.user_rate
        for e in w.active_edges():
            if (
                e.kind is CallKind.RPC
                and e.dst in apps
                and not apps[e.src].instrumented
                and apps[e.dst].instrumented
            ):
                roots[e.dst] = roots.get(e.dst, 0.0) + e.rate
        self._roots = list(roots.items())
        self._insts = {a.name: [(i, c.name) for c in a.clusters for i in c.instances] for a in apps.values()}
        live = {i.name for lst in self._insts.values() for i, _ in lst}
        self._res_cache = {k: v for k, v in self._res_cache.items() if k in live}
        self._shape = w.shape_version

    def step(self, t0: float, t1: float) -> list[bytes]:
        self._refresh()
        if not self._roots:
            return []
        dt = t1 - t0
        counts = self.nprng.poisson(np.array([r for _, r in self._roots]) * self.ratio * dt)
        self._out = []
        apps = self.world.fleet.apps
        rng = self.rng
        for (name, _), n in zip(self._roots, counts.tolist(), strict=True):
            for _ in range(n):
                tr = _Trace(rng.getrandbits(128).to_bytes(16, "big"))
                start = t0 + rng.random() * dt * 0.95
                app = apps[name]
                ep = rng.choice(app.endpoints) if app.endpoints else "/"
                self.world.truth.observe(Layer.TRACE, USER, name, start)
                self._serve(tr, app, b"", start, 0, ep, t1, SERVER, None)
                self.traces_emitted += 1
        self.spans_emitted += len(self._out)
        return self._encode()

    # -- the walk ----------------------------------------------------------------------------------
    def _span_id(self) -> bytes:
        return (self.rng.getrandbits(64) | 1).to_bytes(8, "big")

    def _serve(
        self,
        tr: _Trace,
        app: App,
        parent: bytes,
        start: float,
        depth: int,
        endpoint: str,
        t1: float,
        kind: int,
        via: Edge | None,
    ) -> float:
        """A SERVER (or CONSUMER) span in ``app`` and the calls it makes; returns its end time."""
        rng = self.rng
        insts = self._insts[app.name]
        inst, cluster = insts[rng.randrange(len(insts))]
        sid = self._span_id()
        tr.spans += 1
        cursor = start + rng.uniform(0.0002, 0.002)
        failed = False
        if depth < MAX_DEPTH:
            for e in self.world.out_edges(app.name):
                m = e.rate / app.rate_in if app.rate_in > 0 else 0.0
                k = min(MAX_REPEAT, poisson(rng, m))
                for _ in range(k):
                    if tr.spans >= MAX_SPANS_PER_TRACE:
                        break
                    cursor, err = self._call(tr, app, inst, cluster, sid, e, cursor, depth, t1)
                    failed = failed or (err and rng.random() < 0.5)
        end = cursor + rng.uniform(0.0005, 0.005)
        if kind == CONSUMER and via is not None:
            attrs = self._consumer_attrs(app, via)
            name = f"{via.topic} process"
        else:
            attrs, name = self._server_attrs(app, endpoint, failed)
        self._out.append(
            _Span(tr.id, sid, parent, name, kind, start, end, attrs, failed, app.name, inst, cluster)
        )
        return end

    def _call(
        self,
        tr: _Trace,
        app: App,
        inst: Instance,
        cluster: str,
        parent: bytes,
        e: Edge,
        start: float,
        depth: int,
        t1: float,
    ) -> tuple[float, bool]:
        """One call on edge ``e`` from ``app``; returns (time the caller resumes, failed)."""
        rng = self.rng
        w = self.world
        fleet = w.fleet
        start = min(start, t1 - 0.001)
        failed = rng.random() < w.error_rate(e)
        sid = self._span_id()
        tr.spans += 1
        latency = w.latency(e) * math.exp(rng.gauss(0.0, 0.6))
        new = app.new_spans
        kind = CLIENT
        if e.kind is CallKind.RPC:
            dst = fleet.apps[e.dst]
            endpoint = rng.choice(e.endpoints) if e.endpoints else "/"
            attrs, name = self._client_attrs(app, dst, endpoint, failed)
            if dst.instrumented:
                server_end = self._serve(tr, dst, sid, start + 0.0003, depth + 1, endpoint, t1, SERVER, None)
                end = max(server_end + 0.0003, start + 0.0006)
                w.truth.observe(Layer.TRACE, app.name, dst.name, start)
            else:
                attrs.append(("service.peer.name" if new else "peer.service", dst.name))
                end = start + latency
                self._observe_virtual(app.name, attrs, start)
        elif e.kind is CallKind.DATABASE:
            sink = fleet.sinks[e.dst]
            op = (
                rng.choice(("SELECT", "INSERT", "UPDATE"))
                if sink.system in ("postgresql", "mysql")
                else "GET"
            )
            if new:
                attrs = [
                    ("db.system.name", sink.system),
                    ("db.namespace", sink.name),
                    ("db.operation.name", op),
                    ("server.address", f"{sink.name}.db.internal"),
                    ("server.port", sink.port),
                ]
            else:
                attrs = [
                    ("db.system", sink.system),
                    ("db.name", sink.name),
                    ("db.operation", op),
                    ("net.peer.name", f"{sink.name}.db.internal"),
                    ("net.peer.port", sink.port),
                ]
            name = f"{op} {sink.name}"
            end = start + latency
            self._observe_virtual(app.name, attrs, start)
        elif e.kind is CallKind.EXTERNAL:
            method = rng.choice(("GET", "POST"))
            if new:
                attrs = [
                    ("http.request.method", method),
                    ("server.address", e.dst),
                    ("server.port", 443),
                    ("url.full", f"https://{e.dst}/v1/requests"),
                    ("http.response.status_code", 502 if failed else 200),
                ]
            else:
                attrs = [
                    ("http.method", method),
                    ("peer.service", e.dst),
                    ("net.peer.name", e.dst),
                    ("http.url", f"https://{e.dst}/v1/requests"),
                    ("http.status_code", 502 if failed else 200),
                ]
            name = method
            end = start + latency
            self._observe_virtual(app.name, attrs, start)
        else:  # PRODUCE
            kind = PRODUCER
            attrs = [
                ("messaging.system", "kafka"),
                ("messaging.destination.name", e.topic or e.dst),
                ("messaging.operation.type" if new else "messaging.operation", "publish"),
                ("server.address" if new else "peer.service", e.dst),
            ]
            name = f"{e.topic or e.dst} publish"
            end = start + latency
            consumer = self._consumer(e)
            if (
                consumer is not None
                and fleet.apps[consumer.src].instrumented
                and tr.spans < MAX_SPANS_PER_TRACE
            ):
                capp = fleet.apps[consumer.src]
                cstart = min(end + rng.uniform(0.001, 0.5), t1 - 0.001)
                self._serve(tr, capp, sid, cstart, depth + 1, "", t1, CONSUMER, consumer)
                w.truth.observe(Layer.TRACE, app.name, capp.name, start)
            else:
                self._observe_virtual(app.name, attrs, start)
        self._out.append(
            _Span(tr.id, sid, parent, name, kind, start, end, attrs, failed, app.name, inst, cluster)
        )
        return end + rng.uniform(0.0001, 0.001), failed

    def _observe_virtual(self, client: str, attrs: Attrs, t: float) -> None:
        peer = virtual_peer(attrs)
        if peer is None:
            raise RuntimeError(f"unpaired client span of {client} names no peer: {attrs}")
        self.world.truth.observe(Layer.TRACE, client, peer, t)

    def _consumer(self, produce: Edge) -> Edge | None:
        cs = self.world.consumers(produce.dst)
        if not cs:
            return None
        same = [c for c in cs if c.topic == produce.topic]
        pool = same or cs
        return pool[self.rng.randrange(len(pool))]

    # -- attributes ----------------------------------------------------------------------------------
    def _client_attrs(self, app: App, dst: App, endpoint: str, failed: bool) -> tuple[Attrs, str]:
        new = app.new_spans
        host = f"{dst.name}.{dst.domain}.svc.cluster.local"
        if dst.protocol == "grpc":
            svc, _, method = endpoint.partition("/")
            attrs: Attrs = [
                ("rpc.system.name" if new else "rpc.system", "grpc"),
                ("rpc.service", svc),
                ("rpc.method", method),
                ("server.address" if new else "net.peer.name", host),
                ("rpc.grpc.status_code", 14 if failed else 0),
            ]
            return attrs, endpoint
        method = "GET" if ("get" in endpoint or "list" in endpoint) else "POST"
        attrs = [
            ("http.request.method" if new else "http.method", method),
            ("server.address" if new else "net.peer.name", host),
            ("http.response.status_code" if new else "http.status_code", 503 if failed else 200),
        ]
        return attrs, method

    def _server_attrs(self, app: App, endpoint: str, failed: bool) -> tuple[Attrs, str]:
        new = app.new_spans
        if app.protocol == "grpc":
            svc, _, method = endpoint.partition("/")
            return (
                [
                    ("rpc.system.name" if new else "rpc.system", "grpc"),
                    ("rpc.service", svc),
                    ("rpc.method", method),
                    ("rpc.grpc.status_code", 14 if failed else 0),
                ],
                endpoint,
            )
        method = "GET" if ("get" in endpoint or "list" in endpoint) else "POST"
        return (
            [
                ("http.request.method" if new else "http.method", method),
                ("http.route", endpoint),
                ("http.response.status_code" if new else "http.status_code", 500 if failed else 200),
            ],
            f"{method} {endpoint}",
        )

    def _consumer_attrs(self, app: App, via: Edge) -> Attrs:
        new = app.new_spans
        return [
            ("messaging.system", "kafka"),
            ("messaging.destination.name", via.topic or via.dst),
            ("messaging.operation.type" if new else "messaging.operation", "process"),
            ("messaging.consumer.group.name" if new else "messaging.kafka.consumer.group", app.name),
        ]

    # -- protobuf ------------------------------------------------------------------------------------
    def _encode(self) -> list[bytes]:
        if not self._out:
            return []
        by_res: dict[str, list[_Span]] = {}
        for s in self._out:
            by_res.setdefault(s.inst.name, []).append(s)
        field = self._enc.field
        resources: list[bytes] = []
        for spans in by_res.values():
            first = spans[0]
            app = self.world.fleet.apps[first.app]
            scope = (
                otlp.scope("io.opentelemetry.sdk", "1.45.0")
                if app.new_spans
                else otlp.scope("io.opentelemetry.legacy", "1.12.0")
            )
            encoded = [
                otlp.span(
                    s.trace_id,
                    s.span_id,
                    s.parent,
                    s.name,
                    s.kind,
                    round(s.start * 1e9),
                    round(s.end * 1e9),
                    field(9, s.attrs),
                    "request failed" if s.error else None,
                )
                for s in spans
            ]
            resources.append(otlp.resource_spans(self._resource(app, first), scope, encoded))
        return [
            otlp.export_traces(resources[k : k + RESOURCES_PER_REQUEST])
            for k in range(0, len(resources), RESOURCES_PER_REQUEST)
        ]

    def _resource(self, app: App, span: _Span) -> bytes:
        hit = self._res_cache.get(span.inst.name)
        if hit is None:
            fleet = self.world.fleet
            attrs: Attrs = [
                ("service.name", app.name),
                ("service.instance.id", span.inst.name),
                ("host.name", fleet.hosts[span.inst.host]),
                ("telemetry.sdk.language", "java" if app.style is Style.SPECTATOR else "go"),
            ]
            if app.k8s:
                attrs += [
                    ("k8s.deployment.name", span.cluster),
                    ("k8s.pod.name", span.inst.name),
                    ("k8s.namespace.name", app.domain),
                ]
            hit = self._res_cache[span.inst.name] = otlp.resource(self._enc.field(1, attrs))
        return hit

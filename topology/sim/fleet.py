"""The simulated fleet: apps, clusters, instances, stateful sinks, intermediaries and the call graph.

Built by :func:`topology.sim.generator.generate_fleet`. Everything here is plain data. The simulator
copies a fleet and mutates its copy (redeploys, edge changes): a generated :class:`Fleet` is never
changed by simulating it.
"""

from __future__ import annotations

import copy
import enum
import ipaddress
from dataclasses import dataclass, field

from topology.catalog import AddressKind, Owner, ServiceInfo


class Role(enum.StrEnum):
    ENTRY = "entry"  # called from outside the fleet (through the edge gateways), or a gateway itself
    MIDDLE = "middle"
    LEAF = "leaf"  # calls no other app (may use databases, brokers, external hosts)


class Style(enum.StrEnum):
    """How an app is instrumented (IPC metrics and spans)."""

    NONE = "none"  # no IPC metrics, no spans
    OTEL_OLD = "otel-old"  # OpenTelemetry, old semantic conventions (ms durations, peer.service, db.name)
    OTEL_NEW = "otel-new"  # OpenTelemetry, new conventions (s durations, service.peer.name, db.namespace)
    SPECTATOR = "spectator"  # Spectator ipc.client.call / ipc.server.call; spans in OTel conventions

    @property
    def instrumented(self) -> bool:
        return self is not Style.NONE


class CallKind(enum.StrEnum):
    RPC = "rpc"  # app -> app request/response
    DATABASE = "database"  # app -> stateful sink
    PRODUCE = "produce"  # producer -> broker
    CONSUME = "consume"  # consumer -> broker (the consumer opens the connection)
    EXTERNAL = "external"  # app -> host outside the fleet


class Naming(enum.StrEnum):
    """How a client's IPC series names its target."""

    APP = "app"  # Spectator ipc.server.app
    PEER = "peer"  # peer.service (old) / service.peer.name (new)
    DNS = "dns"  # net.peer.name (old) / server.address (new) = <app>.<domain>.svc.cluster.local
    IP = "ip"  # server.address = an instance address of the target (direct paths only)


@dataclass(slots=True)
class Instance:
    name: str  # pod name
    ip: int  # IPv4 as an integer
    host: int  # index into Fleet.hosts
    pid: int


@dataclass(slots=True)
class Cluster:
    name: str  # <app>-<stack>-vNNN
    app: str
    stack: str
    version: int
    instances: list[Instance] = field(default_factory=list)


@dataclass(slots=True)
class App:
    name: str
    role: Role
    level: int  # 0 = edge gateway, 1 = entry, 2..6 = middle, 7 = leaf
    domain: str
    team: str
    tier: int
    style: Style
    protocol: str  # "http" | "grpc"
    port: int
    endpoints: tuple[str, ...]
    clusters: list[Cluster] = field(default_factory=list)
    gateway: bool = False
    broker: bool = False
    spectator_server: bool = False  # Spectator apps that also publish ipc.server.call naming the client
    statistic: bool = (
        False  # Spectator as Sum/Gauge points with a ``statistic`` tag (delta) instead of histograms
    )
    delta: bool = False  # delta temporality (else cumulative)
    export_interval: float = 60.0
    export_phase: float = 0.0
    k8s: bool = True  # resource carries k8s.deployment.name
    new_spans: bool = True  # span attributes in new (True) or old semantic conventions
    user_rate: float = 0.0  # requests/s from outside (edge gateways only)
    rate_in: float = 0.0  # requests/s received (computed)
    fanout: float = 1.0  # calls made per request received, before splitting over the out-edges
    links: dict[str, str] = field(default_factory=dict)

    @property
    def instrumented(self) -> bool:
        return self.style.instrumented


@dataclass(slots=True)
class Sink:
    """A node without our agent, seen only from its clients: database, managed broker or external host."""

    name: str
    kind: AddressKind  # DATABASE | MESSAGING | EXTERNAL
    system: str  # postgresql, redis, kafka, https …
    port: int
    ips: list[int]
    domain: str | None = None


@dataclass(slots=True)
class Intermediary:
    name: str
    kind: AddressKind  # LOAD_BALANCER | API_GATEWAY | PROXY | NAT_GATEWAY
    ip: int
    backend: str | None  # the one app it fronts (None for NAT gateways)
    port: int = 443


@dataclass(slots=True)
class Edge:
    """One dependency: ``src`` calls ``dst`` (an app, a sink, or a broker)."""

    id: int
    src: str
    dst: str
    kind: CallKind
    calls: float  # calls made per request ``src`` receives
    rate: float  # requests/s
    conn_factor: float  # new connections per request
    keepalive: float  # connections/s independent of requests (pools, health checks)
    latency: float  # median seconds
    error_rate: float  # base failure ratio
    endpoints: tuple[str, ...] = ()
    via: str | None = None  # LB / API gateway / proxy fronting dst
    nat: str | None = None  # NAT gateway the connection crosses
    naming: Naming = Naming.DNS
    topic: str | None = None  # PRODUCE / CONSUME
    back: bool = False  # goes against the DAG (a cycle)
    active_from: float | None = None  # None = from the start of the simulation
    active_until: float | None = None  # None = still active

    def active(self, t: float) -> bool:
        return (self.active_from is None or self.active_from <= t) and (
            self.active_until is None or t < self.active_until
        )


@dataclass(slots=True)
class Team:
    name: str
    domain: str
    email: str
    chat: str
    oncall: str

    def owner(self) -> Owner:
        return Owner(self.name, self.email, self.chat, self.oncall)


@dataclass(slots=True)
class Fleet:
    seed: int
    domains: list[str]
    teams: dict[str, Team]
    apps: dict[str, App]
    sinks: dict[str, Sink]
    intermediaries: dict[str, Intermediary]
    edges: list[Edge]
    hosts: list[str]
    next_ip: int  # next never-used workload address

    # -- views -------------------------------------------------------------------------------------
    @property
    def gateways(self) -> list[str]:
        return [a.name for a in self.apps.values() if a.gateway]

    def out_degree(self) -> dict[str, int]:
        """Distinct targets (apps and sinks) per app."""
        targets: dict[str, set[str]] = {a: set() for a in self.apps}
        for e in self.edges:
            if e.active_until is None:
                targets[e.src].add(e.dst)
        return {a: len(t) for a, t in targets.items()}

    def in_degree(self) -> dict[str, int]:
        callers: dict[str, set[str]] = {n: set() for n in [*self.apps, *self.sinks]}
        for e in self.edges:
            if e.active_until is None:
                callers[e.dst].add(e.src)
        return {n: len(c) for n, c in callers.items()}

    def service_info(self, app: App) -> ServiceInfo:
        return ServiceInfo(
            name=app.name,
            tier=app.tier,
            domain=app.domain,
            owner=self.teams[app.team].owner(),
            clusters=tuple(c.name for c in app.clusters),
            links=dict(app.links),
        )

    def copy(self) -> Fleet:
        """A copy the simulator may change: apps, clusters and edges are new objects; instances,
        sinks, intermediaries and teams (never changed in place) are shared."""
        apps: dict[str, App] = {}
        for name, a in self.apps.items():
            b = copy.copy(a)
            b.clusters = [Cluster(c.name, c.app, c.stack, c.version, list(c.instances)) for c in a.clusters]
            b.links = dict(a.links)
            apps[name] = b
        return Fleet(
            seed=self.seed,
            domains=list(self.domains),
            teams=dict(self.teams),
            apps=apps,
            sinks=dict(self.sinks),
            intermediaries=dict(self.intermediaries),
            edges=[copy.copy(e) for e in self.edges],
            hosts=list(self.hosts),
            next_ip=self.next_ip,
        )

    def instance_count(self) -> int:
        return sum(len(c.instances) for a in self.apps.values() for c in a.clusters)


def ip_text(ip: int) -> str:
    return str(ipaddress.IPv4Address(ip))


def ip_int(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


# Address plan (all strings in records only; nothing is ever contacted).
WORKLOAD_BASE = ip_int("10.0.0.0")  # 10.0.0.0/10: pods
INTERMEDIARY_BASE = ip_int("10.250.0.0")
SINK_BASE = ip_int("10.251.0.0")
NAT_BASE = ip_int("10.252.0.0")
EXTERNAL_BASE = ip_int("203.0.113.0")  # TEST-NET-3, documentation only


def next_workload_ip(ip: int) -> int:
    """The address after ``ip`` in the workload range, skipping .0 and .255."""
    ip += 1
    while ip & 0xFF in (0, 255):
        ip += 1
    return ip

"""Catalog, health, address ownership and trace summaries: the records beside the three graphs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class HealthState(enum.StrEnum):
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Owner:
    team: str
    email: str | None = None
    chat: str | None = None  # e.g. a Slack channel
    oncall: str | None = None  # e.g. a pager schedule name


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One catalog entry (topic ``topology.catalog``, HTTP ``POST /ingest/catalog``), keyed by app name."""

    name: str
    tier: int | None = None  # 0 = most critical
    domain: str | None = None  # business domain, e.g. "payments"
    owner: Owner | None = None
    clusters: tuple[str, ...] = ()
    links: dict[str, str] = field(default_factory=dict)  # per-service overrides of the URL templates

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tier": self.tier,
            "domain": self.domain,
            "owner": None
            if self.owner is None
            else {"team": self.owner.team, "email": self.owner.email, "chat": self.owner.chat,
                  "oncall": self.owner.oncall},
            "clusters": list(self.clusters),
            "links": dict(self.links),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceInfo:
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("catalog record needs a non-empty string 'name'")
        tier = d.get("tier")
        if tier is not None and (not isinstance(tier, int) or isinstance(tier, bool) or tier < 0):
            raise ValueError(f"catalog record {name!r}: 'tier' must be a non-negative integer")
        o = d.get("owner")
        owner = None
        if o is not None:
            if not isinstance(o, dict) or not isinstance(o.get("team"), str):
                raise ValueError(f"catalog record {name!r}: 'owner' needs a string 'team'")
            owner = Owner(o["team"], o.get("email"), o.get("chat"), o.get("oncall"))
        return cls(name=name, tier=tier, domain=d.get("domain"), owner=owner,
                   clusters=tuple(d.get("clusters") or ()), links=dict(d.get("links") or {}))


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A service's health changed at ``at`` (topic ``topology.health``, HTTP ``POST /ingest/health``)."""

    service: str
    status: HealthState
    at: float  # epoch seconds
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "status": self.status.value, "at": self.at, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HealthEvent:
        if not isinstance(d.get("service"), str) or not d["service"]:
            raise ValueError("health event needs a non-empty string 'service'")
        at = d.get("at")
        if not isinstance(at, int | float) or isinstance(at, bool):
            raise ValueError("health event needs a numeric 'at' (epoch seconds)")
        return cls(d["service"], HealthState(d.get("status", "UNKNOWN")), float(at), d.get("reason"))


@dataclass(frozen=True, slots=True)
class HealthStatus:
    status: HealthState
    since: float | None
    reason: str | None = None


class AddressKind(enum.StrEnum):
    WORKLOAD = "WORKLOAD"  # an instance of an app (cluster)
    LOAD_BALANCER = "LOAD_BALANCER"
    NAT_GATEWAY = "NAT_GATEWAY"
    API_GATEWAY = "API_GATEWAY"
    PROXY = "PROXY"  # transparent / egress proxy
    DATABASE = "DATABASE"  # a managed store without our agent
    MESSAGING = "MESSAGING"  # a managed broker without our agent
    EXTERNAL = "EXTERNAL"

    @property
    def intermediary(self) -> bool:
        return self in (AddressKind.LOAD_BALANCER, AddressKind.NAT_GATEWAY, AddressKind.API_GATEWAY,
                        AddressKind.PROXY)


@dataclass(frozen=True, slots=True)
class AddressLease:
    """``owner`` held ``ip`` during [start, end) (end None = still holds it).

    Topic ``topology.addresses`` (compacted, keyed by ip), HTTP ``POST /ingest/addresses``.
    For WORKLOAD leases ``owner`` is the app and ``cluster`` the deployment; for intermediaries,
    databases and external hosts ``owner`` is the name of that thing.
    """

    ip: str
    owner: str
    kind: AddressKind
    start: float
    end: float | None = None
    cluster: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "owner": self.owner, "kind": self.kind.value, "start": self.start,
                "end": self.end, "cluster": self.cluster}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AddressLease:
        for k in ("ip", "owner"):
            if not isinstance(d.get(k), str) or not d[k]:
                raise ValueError(f"address lease needs a non-empty string {k!r}")
        start = d.get("start")
        if not isinstance(start, int | float) or isinstance(start, bool):
            raise ValueError("address lease needs a numeric 'start'")
        end = d.get("end")
        if end is not None and (not isinstance(end, int | float) or end < start):
            raise ValueError("address lease 'end' must be null or a number >= 'start'")
        return cls(d["ip"], d["owner"], AddressKind(d.get("kind", "WORKLOAD")), float(start),
                   None if end is None else float(end), d.get("cluster"))


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One recent trace a service took part in (from the TRACE layer)."""

    trace_id: str  # hex
    root_service: str
    root_name: str  # root span name
    start: float  # epoch seconds
    duration: float  # seconds
    spans: int
    error: bool
    services: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "root_service": self.root_service, "root_name": self.root_name,
                "start": self.start, "duration": self.duration, "spans": self.spans, "error": self.error,
                "services": list(self.services)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceSummary:
        return cls(str(d["trace_id"]), str(d["root_service"]), str(d["root_name"]), float(d["start"]),
                   float(d["duration"]), int(d["spans"]), bool(d["error"]), tuple(d["services"]))

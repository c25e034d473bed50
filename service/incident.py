"""GraphQL types of the incident questions: what changed (``diff``), where the source is
(``rootCause``), who is Unknown (``unknownPeers``), tier chains (``tierViolations``) and one trace
on the map (``trace``). Each is built from the answer of its pure query in ``topology/``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from service.entity import Service, failed_layers
from service.types import (
    ChangeEvent,
    Duration,
    LayerFailure,
    Long,
    PageInfo,
    TopologyEdge,
    epoch_to_datetime,
)
from topology import diff as core_diff
from topology import peers as core_peers
from topology import rootcause as core_rc
from topology import tiers as core_tiers
from topology.catalog import AddressLease
from topology.metric import EdgeMetric
from topology.model import Layer, NodeKind

__all__ = ["DiffEdge", "Evidence", "MetricChange", "RootCauseCandidate", "RootCauseReport", "TierViolation",
           "TierViolationPage", "TopologyDiff", "UnknownPeer", "UnknownPeerPage"]

strawberry.enum(core_diff.DiffDirection, name="Direction",
                description="UPSTREAM: what a service calls; DOWNSTREAM: what calls it; BOTH.")
strawberry.enum(EdgeMetric, description="An edge metric the incident questions compare.")
strawberry.enum(core_rc.Verdict, name="RootCauseVerdict",
                description="LOCAL: the service itself is the source; UPSTREAM: something it depends on; "
                "HEALTHY: nothing is wrong; UNKNOWN: something is wrong and no candidate explains it.")
strawberry.enum(core_rc.EvidenceKind, description="What a piece of root-cause evidence is about.")


@strawberry.type(description="A metric of one layer that moved beyond its threshold (README, the diff "
                 "example): request rate per second, error rate 0..1, latency p99 in milliseconds.")
class MetricChange:
    layer: Layer
    metric: EdgeMetric
    before: float | None
    after: float | None

    @classmethod
    def from_core(cls, m: core_diff.MetricChange) -> MetricChange:
        scale = 1000.0 if m.metric is EdgeMetric.LATENCY_P99 else 1.0
        return cls(layer=m.layer, metric=m.metric,
                   before=None if m.before is None else round(m.before * scale, 6),
                   after=None if m.after is None else round(m.after * scale, 6))


@strawberry.type(description="An edge that was added, removed or changed between the two windows.")
class DiffEdge:
    source: str
    target: str
    source_kind: NodeKind
    target_kind: NodeKind
    layers: list[Layer] = strawberry.field(description="The layers that saw what this entry reports.")
    before: TopologyEdge | None = strawberry.field(description="The edge in the earlier window.")
    after: TopologyEdge | None = strawberry.field(description="The edge in the later window.")
    metrics: list[MetricChange] = strawberry.field(description="For a changed edge: what moved.")

    @classmethod
    def from_core(cls, d: core_diff.EdgeDiff, seconds: float) -> DiffEdge:
        return cls(
            source=d.source, target=d.target, source_kind=d.source_kind, target_kind=d.target_kind,
            layers=list(d.layers),
            before=None if d.before is None else TopologyEdge.from_merged(d.before, seconds),
            after=None if d.after is None else TopologyEdge.from_merged(d.after, seconds),
            metrics=[MetricChange.from_core(m) for m in d.metrics],
        )


@strawberry.type(description="What changed on a call path (or the whole graph) between two windows of the "
                 "same length: the one ending at `from` and the one ending at `to`.")
class TopologyDiff:
    service: Service | None = strawberry.field(description="The service asked about (null: the whole graph).")
    before_start: strawberry.Private[float]
    before_end: strawberry.Private[float]
    after_start: strawberry.Private[float]
    after_end: strawberry.Private[float]
    added: list[DiffEdge]
    removed: list[DiffEdge]
    changed: list[DiffEdge]
    services: list[str] = strawberry.field(description="The services compared (the call path, or the ends "
                                           "of the edges listed), by name.")
    changes: list[ChangeEvent] = strawberry.field(
        description="Change events of those services from the start of the earlier window to the end of the "
        "later one, newest first.")
    page_info: PageInfo
    layers: list[Layer]
    failed_layers: list[LayerFailure]

    @strawberry.field(name="from", description="The end of the earlier window.")
    def from_(self) -> datetime:
        return datetime.fromtimestamp(self.before_end, UTC)

    @strawberry.field(description="The end of the later window.")
    def to(self) -> datetime:
        return datetime.fromtimestamp(self.after_end, UTC)

    @strawberry.field(description="The length of each window.")
    def window(self) -> Duration:
        return Duration(self.before_end - self.before_start)

    @classmethod
    def build(cls, r: core_diff.TopologyDiff, name: str | None, asked: list[Layer],
              cursor: str | None, had_cursor: bool) -> TopologyDiff:
        seconds = r.before.seconds
        failed = {f.layer for f in r.failures}
        return cls(
            service=None if name is None else Service(name=name, at=r.after.end),
            before_start=r.before.start, before_end=r.before.end,
            after_start=r.after.start, after_end=r.after.end,
            added=[DiffEdge.from_core(d, seconds) for d in r.added],
            removed=[DiffEdge.from_core(d, seconds) for d in r.removed],
            changed=[DiffEdge.from_core(d, seconds) for d in r.changed],
            services=list(r.services),
            changes=[ChangeEvent.from_core(e) for e in r.changes],
            page_info=PageInfo(has_next_page=r.has_next, has_previous_page=had_cursor, start_cursor=None,
                               end_cursor=cursor),
            layers=[x for x in asked if x not in failed],
            failed_layers=failed_layers(r.failures),
        )


@strawberry.type(description="One fact behind a root-cause candidate, in words an engineer can check. Error "
                 "rates are 0..1, latencies in milliseconds.")
class Evidence:
    kind: core_rc.EvidenceKind
    layer: Layer | None
    metric: EdgeMetric | None
    baseline: float | None
    current: float | None
    detail: str

    @classmethod
    def from_core(cls, e: core_rc.Evidence) -> Evidence:
        scale = 1000.0 if e.metric is EdgeMetric.LATENCY_P99 else 1.0
        return cls(kind=e.kind, layer=e.layer, metric=e.metric,
                   baseline=None if e.baseline is None else round(e.baseline * scale, 6),
                   current=None if e.current is None else round(e.current * scale, 6), detail=e.detail)


@strawberry.type(description="A service that can explain the symptoms, with why.")
class RootCauseCandidate:
    rank: int
    service: Service
    score: float = strawberry.field(description="Higher is likelier; comparable within one report only.")
    path: list[str] = strawberry.field(description="From the service asked about to this one, along calls.")
    evidence: list[Evidence]
    changes: list[ChangeEvent] = strawberry.field(
        description="Its change events near the onset, newest first.")


@strawberry.type(description="Where the source of a service's symptoms is.")
class RootCauseReport:
    service: Service
    verdict: core_rc.Verdict
    candidates: list[RootCauseCandidate]
    examined: int = strawberry.field(description="Services looked at: the service and its dependencies.")
    at: datetime = strawberry.field(description="The end of the window examined.")
    window: Duration
    baseline_from: datetime = strawberry.field(description="The start of the baseline compared with.")
    layers: list[Layer]
    failed_layers: list[LayerFailure]

    @classmethod
    def build(cls, r: core_rc.RootCauseReport, asked: list[Layer]) -> RootCauseReport:
        failed = {f.layer for f in r.failures}
        at = r.current.end
        return cls(
            service=Service(name=r.service, at=at),
            verdict=r.verdict,
            candidates=[
                RootCauseCandidate(
                    rank=c.rank, service=Service(name=c.service, at=at), score=c.score, path=list(c.path),
                    evidence=[Evidence.from_core(e) for e in c.evidence],
                    changes=[ChangeEvent.from_core(e) for e in c.changes],
                )
                for c in r.candidates
            ],
            examined=r.examined,
            at=datetime.fromtimestamp(at, UTC),
            window=Duration(r.current.seconds),
            baseline_from=datetime.fromtimestamp(r.baseline.start, UTC),
            layers=[x for x in asked if x not in failed],
            failed_layers=failed_layers(r.failures),
        )


@strawberry.type(description="A dependency less critical than the service that depends on it (a larger tier "
                 "number) or of unknown tier.")
class TierViolation:
    service: Service
    service_tier: int
    dependency: Service
    dependency_tier: int | None = strawberry.field(description="Null: the catalog gives no tier.")
    path: list[str] = strawberry.field(description="The shortest chain from the service to the dependency.")
    path_layers: list[list[Layer]] = strawberry.field(
        description="For each edge of the path, in order: the layers that saw it.")


@strawberry.type(description="A page of tier violations, ordered by (service, dependency).")
class TierViolationPage:
    violations: list[TierViolation]
    page_info: PageInfo
    layers: list[Layer]
    failed_layers: list[LayerFailure]

    @classmethod
    def build(cls, r: core_tiers.TierViolations, at: float, asked: list[Layer], cursor: str | None,
              had_cursor: bool) -> TierViolationPage:
        failed = {f.layer for f in r.failures}
        return cls(
            violations=[
                TierViolation(service=Service(name=v.service, at=at), service_tier=v.service_tier,
                              dependency=Service(name=v.dependency, at=at), dependency_tier=v.dependency_tier,
                              path=list(v.path), path_layers=[list(x) for x in v.path_layers])
                for v in r.violations
            ],
            page_info=PageInfo(has_next_page=r.has_next, has_previous_page=had_cursor, start_cursor=None,
                               end_cursor=cursor),
            layers=[x for x in asked if x not in failed],
            failed_layers=failed_layers(r.failures),
        )


@strawberry.type(description="A local workload that talked to an unattributed address.")
class PeerContact:
    workload: Service
    outbound: bool = strawberry.field(description="True: the workload called the address; false: the "
                                      "address called the workload.")
    connections: Long
    bytes: Long
    first_seen: datetime | None
    last_seen: datetime | None


@strawberry.type(description="A lease of an unattributed address that did not cover its traffic: who held "
                 "the address before it, or holds it after. A hint only: the traffic stays unattributed.")
class PeerLease:
    owner: str = strawberry.field(description="The lease's owner: an app, or the database, queue, external "
                                  "host or intermediary the address belonged to.")
    kind: str = strawberry.field(description="The lease kind (WORKLOAD, DATABASE, LOAD_BALANCER, ...).")
    cluster: str | None = strawberry.field(description="The deployment, for a WORKLOAD lease.")
    start: datetime
    end: datetime | None = strawberry.field(description="Null while the lease is open.")

    @classmethod
    def of(cls, lease: AddressLease | None) -> PeerLease | None:
        if lease is None:
            return None
        return cls(owner=lease.owner, kind=lease.kind.value, cluster=lease.cluster,
                   start=epoch_to_datetime(lease.start) or datetime.fromtimestamp(lease.start, UTC),
                   end=None if lease.end is None else epoch_to_datetime(lease.end))


@strawberry.type(description="A remote address the NETWORK layer could not attribute to any owner (no lease "
                 "covered it when the traffic was seen). Traffic is never attributed to a guess.")
class UnknownPeer:
    name: str = strawberry.field(description="The node's name on the map: ip:<address>.")
    address: str
    ports: list[int] = strawberry.field(description="Ports it was reached on.")
    connections: Long
    bytes: Long
    first_seen: datetime | None
    last_seen: datetime | None
    talked_to: list[PeerContact] = strawberry.field(
        description="The local workloads, most connections first.")
    lease_before: PeerLease | None = strawberry.field(description=(
        "The nearest lease of this address that ended before its traffic: the one that ended last at or "
        "before `firstSeen` (its previous owner). Null when none is known."))
    lease_after: PeerLease | None = strawberry.field(description=(
        "The nearest lease of this address that started after its traffic: the one that started first at "
        "or after `lastSeen` (its next owner). Null when none is known."))


@strawberry.type(description="A page of unattributed addresses, ordered by name.")
class UnknownPeerPage:
    peers: list[UnknownPeer]
    page_info: PageInfo
    failed_layers: list[LayerFailure]

    @classmethod
    def build(cls, r: core_peers.UnknownPeers, at: float, cursor: str | None,
              had_cursor: bool) -> UnknownPeerPage:
        return cls(
            peers=[
                UnknownPeer(
                    name=p.name, address=p.address, ports=sorted(p.ports), connections=Long(p.connections),
                    bytes=Long(p.bytes), first_seen=epoch_to_datetime(p.first_seen),
                    last_seen=epoch_to_datetime(p.last_seen),
                    talked_to=[
                        PeerContact(workload=Service(name=c.workload, at=at), outbound=c.outbound,
                                    connections=Long(c.connections), bytes=Long(c.bytes),
                                    first_seen=epoch_to_datetime(c.first_seen),
                                    last_seen=epoch_to_datetime(c.last_seen))
                        for c in p.contacts
                    ],
                    lease_before=PeerLease.of(p.lease_before), lease_after=PeerLease.of(p.lease_after),
                )
                for p in r.peers
            ],
            page_info=PageInfo(has_next_page=r.has_next, has_previous_page=had_cursor, start_cursor=None,
                               end_cursor=cursor),
            failed_layers=failed_layers(r.failures),
        )

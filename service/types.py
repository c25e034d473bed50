"""GraphQL leaf types: enums, scalars and the value objects that carry no resolvers of their own.

The entity (``Service``) and everything that refers back to it live in :mod:`service.entity`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

from service.config import parse_duration
from service.moment import parse_moment
from topology import catalog as core_catalog
from topology.catalog import HealthState
from topology.change import ChangeEvent as CoreChangeEvent
from topology.change import ChangeKind
from topology.model import Granularity, Layer, NodeKind
from topology.query import MergedEdge
from topology.stats import EdgeStats

if TYPE_CHECKING:
    from service.traces import Trace

__all__ = [
    "DATETIME_SCALAR",
    "DURATION_SCALAR",
    "LONG_SCALAR",
    "SCALAR_MAP",
    "ChangeEvent",
    "Duration",
    "HealthStatus",
    "LayerEdge",
    "Links",
    "Long",
    "Owner",
    "PageInfo",
    "TopologyEdge",
    "TraceSummary",
    "epoch_to_datetime",
]

# The core enums are the GraphQL enums: resolvers receive and return them as they are.
strawberry.enum(Layer, description="One physically separate graph, built from one kind of signal.")
strawberry.enum(Granularity, description="APP: an application; CLUSTER: one deployment of an app.")
strawberry.enum(NodeKind, description="What a node is. Everything but SERVICE is a virtual node.")
strawberry.enum(HealthState, description="A service's health.")
strawberry.enum(ChangeKind, description="What kind of change a change event reports.")


def _parse_duration_value(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as 15m or PT15M")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value)
    else:
        raise ValueError("a duration is a number of seconds or a string such as 15m or PT15M")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


Duration = NewType("Duration", float)
"""A window length in seconds; the GraphQL scalar is :data:`DURATION_SCALAR` (see ``scalar_map``)."""

DURATION_SCALAR = strawberry.scalar(
    name="Duration",
    description="A length of time: seconds (900) or a string: 90s, 15m, 1h30m, 7d, or ISO 8601 (PT15M). "
    "Serialized as seconds.",
    serialize=float,
    parse_value=_parse_duration_value,
)



def _parse_long_value(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a Long is a whole number")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"a Long is a whole number, got {value!r}") from None
    if not -(2**63) <= n < 2**63:
        raise ValueError(f"a Long is a 64-bit signed integer, got {value!r}")
    return n


Long = NewType("Long", int)
"""A counter or byte total that can pass 2**31; the GraphQL scalar is :data:`LONG_SCALAR`."""

LONG_SCALAR = strawberry.scalar(
    name="Long",
    description="A 64-bit signed integer (counters and byte totals), serialized as a JSON number. "
    "JavaScript reads it exactly up to 2^53 (9007199254740992); GraphQL's Int stops at 2^31 - 1.",
    serialize=int,
    parse_value=_parse_long_value,
)

def _parse_datetime_value(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("a DateTime is a string: ISO 8601 (2026-01-05T03:00:00Z) or now-30m")
    try:
        return parse_moment(value)
    except ValueError:
        raise ValueError(f"not a DateTime: {value[:60]!r} (use ISO 8601, e.g. 2026-01-05T03:00:00Z, "
                         "or a time relative to now: now, now-30m, now-1h30m)") from None


DATETIME_SCALAR = strawberry.scalar(
    name="DateTime",
    description="An instant: ISO 8601 (2026-01-05T03:00:00Z; no offset means UTC) or relative to the time "
    "the query runs: now, now-30m, now-1h30m, now-PT15M. Serialized as ISO 8601.",
    serialize=datetime.isoformat,
    parse_value=_parse_datetime_value,
)

SCALAR_MAP: dict[object, ScalarDefinition] = {
    Duration: DURATION_SCALAR, Long: LONG_SCALAR, datetime: DATETIME_SCALAR,
}

#: Latencies and durations are shown in milliseconds with this many decimals (microseconds).
_MS_DECIMALS = 3


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, _MS_DECIMALS)


def epoch_to_datetime(t: float | None) -> datetime | None:
    """An epoch-seconds instant as an aware UTC datetime; 0/None (unknown) as None."""
    if not t:
        return None
    return datetime.fromtimestamp(t, tz=UTC)


@strawberry.federation.type(shareable=True, description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="The team that owns a service, and how to reach it.")
class Owner:
    team: str
    email: str | None
    chat: str | None
    oncall: str | None

    @classmethod
    def from_core(cls, o: core_catalog.Owner) -> Owner:
        return cls(team=o.team, email=o.email, chat=o.chat, oncall=o.oncall)


@strawberry.type(description="A service's latest health at the time asked about.")
class HealthStatus:
    status: HealthState
    reason: str | None
    since: datetime | None


@strawberry.type(description="Something about a service changed: a deploy, a configuration change, ...")
class ChangeEvent:
    service: str
    kind: ChangeKind
    at: datetime
    description: str | None
    version: str | None
    author: str | None
    link: str | None

    @classmethod
    def from_core(cls, e: CoreChangeEvent) -> ChangeEvent:
        return cls(service=e.service, kind=e.kind, at=datetime.fromtimestamp(e.at, tz=UTC),
                   description=e.description, version=e.version, author=e.author, link=e.link)


@strawberry.type(description="Where to look at a service's logs, traces and metrics.")
class Links:
    logs: str | None
    traces: str | None
    metrics: str | None


@strawberry.type(description="One recent trace the service took part in.")
class TraceSummary:
    trace_id: str
    root_service: str
    root_name: str
    start: datetime
    duration_ms: float = strawberry.field(description="Milliseconds, rounded to the microsecond.")
    spans: int
    error: bool
    services: list[str]

    @strawberry.field(description="The trace on the map (its nodes, calls and spans; the same as "
                      "`Query.trace(traceId)`), or null once the store of recent traces dropped it.")
    async def trace(
        self, info: strawberry.Info
    ) -> Annotated[Trace, strawberry.lazy("service.traces")] | None:
        from service.traces import load_trace  # service.traces uses the enums registered here

        return await load_trace(info, self.trace_id)

    @classmethod
    def from_core(cls, t: core_catalog.TraceSummary) -> TraceSummary:
        return cls(
            trace_id=t.trace_id,
            root_service=t.root_service,
            root_name=t.root_name,
            start=datetime.fromtimestamp(t.start, tz=UTC),
            duration_ms=round(t.duration * 1000.0, _MS_DECIMALS),
            spans=t.spans,
            error=t.error,
            services=list(t.services),
        )


_LATENCY_DOC = (
    "{} latency in milliseconds (rounded to the microsecond), within 2% of the exact figure: "
    "latencies are kept in exponential histograms with buckets at most 2.2% wide."
)


@strawberry.type(description="What one layer saw of an edge over the time range asked about.")
class LayerEdge:
    layer: Layer
    protocol: str | None
    ports: list[int]
    endpoints: list[str]
    requests: Long
    errors: Long
    request_rate: float | None = strawberry.field(description="Requests per second over the range.")
    error_rate: float | None = strawberry.field(description="Errors / requests (0..1).")
    latency_p50: float | None = strawberry.field(description=_LATENCY_DOC.format("Median"))
    latency_p90: float | None = strawberry.field(description=_LATENCY_DOC.format("90th percentile"))
    latency_p99: float | None = strawberry.field(description=_LATENCY_DOC.format("99th percentile"))
    bytes: Long = strawberry.field(description="Bytes in both directions.")
    bytes_sent: Long
    bytes_received: Long
    connections: Long
    first_seen: datetime | None
    last_seen: datetime | None
    intermediaries: list[str] = strawberry.field(
        description="Load balancers, NAT gateways, API gateways and proxies the traffic went through."
    )
    exemplar_trace_ids: list[str]
    connection_type: str | None
    health: HealthState

    @classmethod
    def from_stats(cls, layer: Layer, s: EdgeStats, range_seconds: float) -> LayerEdge:
        try:
            health = HealthState(s.health)
        except ValueError:
            health = HealthState.UNKNOWN
        return cls(
            layer=layer,
            protocol=s.protocol,
            ports=list(s.ports),
            endpoints=list(s.endpoints),
            requests=Long(s.requests),
            errors=Long(s.errors),
            request_rate=s.requests / range_seconds if s.requests and range_seconds > 0 else None,
            error_rate=s.error_rate,
            latency_p50=_ms(s.latency_quantile(0.5)),
            latency_p90=_ms(s.latency_quantile(0.9)),
            latency_p99=_ms(s.latency_quantile(0.99)),
            bytes=Long(s.bytes_sent + s.bytes_received),
            bytes_sent=Long(s.bytes_sent),
            bytes_received=Long(s.bytes_received),
            connections=Long(s.connections),
            first_seen=epoch_to_datetime(s.first_seen),
            last_seen=epoch_to_datetime(s.last_seen),
            intermediaries=list(s.intermediaries),
            exemplar_trace_ids=list(s.exemplars),
            connection_type=s.connection_type,
            health=health,
        )


@strawberry.type(description="An edge (source calls target) merged over the layers asked for.")
class TopologyEdge:
    source: str
    target: str
    source_kind: NodeKind
    target_kind: NodeKind
    layers: list[Layer] = strawberry.field(description="The layers that saw this edge.")
    merged: strawberry.Private[MergedEdge]
    range_seconds: strawberry.Private[float]

    @strawberry.field(description="Each layer's view, side by side.")
    def per_layer(self) -> list[LayerEdge]:
        return [LayerEdge.from_stats(layer, s, self.range_seconds) for layer, s in self.merged.per_layer]

    @classmethod
    def from_merged(cls, e: MergedEdge, range_seconds: float) -> TopologyEdge:
        return cls(
            source=e.source,
            target=e.target,
            source_kind=e.source_kind,
            target_kind=e.target_kind,
            layers=list(e.layers),
            merged=e,
            range_seconds=range_seconds,
        )


@strawberry.type(description="A layer that could not answer (the response also carries an error).")
class LayerFailure:
    layer: Layer
    message: str

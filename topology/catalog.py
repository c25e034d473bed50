"""Catalog, health, address ownership and trace summaries: the records beside the three graphs.

The ``from_dict`` parsers of the records that come from outside (:class:`ServiceInfo`,
:class:`HealthEvent`, :class:`AddressLease`) check every field and raise ``ValueError`` naming the
field, so admission (:mod:`topology.admit`) refuses a record before anything is stored:

* names (a service, a team, a cluster, an owner, a domain) are non-empty strings of at most
  :data:`NAME_MAX` characters (the longest DNS name; a name becomes a node, a label, a cache key);
* other text (an e-mail, a chat channel, a pager schedule, a health reason) is a string of at most
  :data:`TEXT_MAX` characters;
* ``tier`` is an integer from 0 to :data:`TIER_MAX`;
* ``links`` maps kinds of :data:`LINK_KINDS` to ``http``/``https`` URLs of at most :data:`URL_MAX`
  characters (``{service}`` is the one placeholder; no ``javascript:`` or other schemes);
* times are finite numbers; a lease's ``ip`` is checked by admission (``topology.wire.flow``).
"""

from __future__ import annotations

import base64
import enum
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import urlsplit

#: Longest name (service, cluster, team, domain, lease owner): the longest DNS name.
NAME_MAX: Final = 253
#: Longest free text (e-mail, chat, oncall, health reason).
TEXT_MAX: Final = 1000
#: Longest link URL.
URL_MAX: Final = 2048
#: Highest tier (0 is the most critical).
TIER_MAX: Final = 9
#: The kinds of per-service links a catalog entry may set.
LINK_KINDS: Final = ("logs", "traces", "metrics")
#: Most clusters one catalog entry may list.
CLUSTERS_MAX: Final = 1000


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a name (a non-empty string of at most :data:`NAME_MAX` characters)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > NAME_MAX:
        raise ValueError(f"{what} is longer than {NAME_MAX} characters ({len(value)})")
    return value


def _text(value: Any, what: str, limit: int = TEXT_MAX) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string or null, not {_type(value)}")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters ({len(value)})")
    return value


class BadTime(ValueError):
    """A time field is a number but not a finite one (admission's ``timestamp`` class)."""


def _time(value: Any, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{what} must be a number (epoch seconds), not {_type(value)}")
    try:
        t = float(value)
    except OverflowError:  # an integer beyond any float
        raise BadTime(f"{what} is not a finite number") from None
    if not math.isfinite(t):
        raise BadTime(f"{what} {t!r} is not a finite number")
    return t


def _type(value: Any) -> str:
    return "null" if value is None else {dict: "an object", list: "an array", str: "a string",
                                         bool: "a boolean"}.get(type(value), "a number")


def _links(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: 'links' must be an object of {', '.join(LINK_KINDS)}")
    out: dict[str, str] = {}
    for kind, url in value.items():
        if kind not in LINK_KINDS:
            kinds = ", ".join(LINK_KINDS)
            raise ValueError(f"{where}: unknown link kind {str(kind)[:40]!r} (one of {kinds})")
        text = _text(url, f"{where}: link {kind!r}", URL_MAX)
        if text is None:
            continue
        try:
            parts = urlsplit(text)
        except ValueError as e:
            raise ValueError(f"{where}: link {kind!r} is not a URL: {e}") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{where}: link {kind!r} must be an http or https URL")
        out[kind] = text
    return out


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
        """Parse and check a catalog record (the rules in the module docstring)."""
        name = check_name(d.get("name"), "catalog record 'name'")
        where = f"catalog record {name[:100]!r}"
        tier = d.get("tier")
        if tier is not None and (not isinstance(tier, int) or isinstance(tier, bool)
                                 or not 0 <= tier <= TIER_MAX):
            raise ValueError(f"{where}: 'tier' must be an integer from 0 to {TIER_MAX}")
        domain = d.get("domain")
        if domain is not None:
            domain = check_name(domain, f"{where}: 'domain'")
        o = d.get("owner")
        owner = None
        if o is not None:
            if not isinstance(o, dict):
                raise ValueError(f"{where}: 'owner' must be an object with a string 'team'")
            owner = Owner(check_name(o.get("team"), f"{where}: owner 'team'"),
                          *(_text(o.get(k), f"{where}: owner {k!r}") for k in ("email", "chat", "oncall")))
        clusters = d.get("clusters")
        if clusters is None:
            clusters = []
        if not isinstance(clusters, list) or len(clusters) > CLUSTERS_MAX:
            raise ValueError(f"{where}: 'clusters' must be an array of at most {CLUSTERS_MAX} names")
        return cls(name=name, tier=tier, domain=domain, owner=owner,
                   clusters=tuple(check_name(c, f"{where}: a cluster") for c in clusters),
                   links=_links(d.get("links"), where))

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> ServiceInfo:
        """A record read back from a store: as :meth:`from_dict`, but a field that fails today's checks
        (stored before they existed) is left out instead of failing the whole store."""
        try:
            return cls.from_dict(d)
        except ValueError:
            pass
        keep: dict[str, Any] = {"name": "stored"}
        for key in ("tier", "domain", "owner", "clusters", "links"):
            try:
                cls.from_dict({"name": "stored", key: d.get(key)})
            except ValueError:
                continue
            keep[key] = d.get(key)
        return replace(cls.from_dict(keep), name=str(d.get("name")))


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
        """Parse and check a health event; ``at`` is finite here, plausible in admission."""
        service = check_name(d.get("service"), "health event 'service'")
        where = f"health event for {service[:100]!r}"
        status = d.get("status", "UNKNOWN")
        if not isinstance(status, str) or status not in HealthState.__members__:
            raise ValueError(f"{where}: 'status' must be one of {', '.join(HealthState.__members__)}")
        return cls(service, HealthState(status), _time(d.get("at"), f"{where}: 'at'"),
                   _text(d.get("reason"), f"{where}: 'reason'"))


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
        """Parse and check a lease (times finite, names bounded); the ip is checked by admission."""
        ip = d.get("ip")
        if not isinstance(ip, str) or not ip or len(ip) > 64:
            raise ValueError("address lease needs a string 'ip' (an address)")
        owner = check_name(d.get("owner"), "address lease 'owner'")
        where = f"address lease of {ip!r}"
        kind = d.get("kind", "WORKLOAD")
        if not isinstance(kind, str) or kind not in AddressKind.__members__:
            raise ValueError(f"{where}: 'kind' must be one of {', '.join(AddressKind.__members__)}")
        start = _time(d.get("start"), f"{where}: 'start'")
        end = None if d.get("end") is None else _time(d["end"], f"{where}: 'end'")
        if end is not None and end < start:
            raise ValueError(f"{where}: 'end' must be null or a number >= 'start'")
        cluster = d.get("cluster")
        return cls(ip, owner, AddressKind(kind), start, end,
                   None if cluster is None else check_name(cluster, f"{where}: 'cluster'"))


#: The span kinds of OTLP (``Span.SpanKind``), by number.
SPAN_KINDS: Final = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")

#: One packed span (:func:`pack_spans`): span id, parent span id (zeros: none), start and end (ns),
#: kind (a SPAN_KINDS index; PEER_RECORD: the peer of the span with that id), error, then the lengths
#: of the two UTF-8 strings that follow (service and name; for a peer record its name and node kind).
SPAN_RECORD: Final = struct.Struct("<8s8sQQBBHH")
PEER_RECORD: Final = 255
NO_PARENT: Final = bytes(8)
_STRING_CHARS = 256  # longer names are cut so that every string fits its 16-bit length


@dataclass(frozen=True, slots=True)
class TraceSpan:
    """One span of a kept trace: what drawing the trace's calls needs, nothing more.

    ``peer`` and ``peer_kind`` name the virtual node a CLIENT or PRODUCER span called when no server
    span answered it (``peer.service``, ``db.name``...: the TRACE stage's rule for virtual servers).
    """

    span_id: str  # hex, 16 characters
    parent_span_id: str | None  # hex; None for a root span
    service: str
    name: str
    kind: str  # one of SPAN_KINDS
    start: float  # epoch seconds
    duration: float  # seconds
    error: bool
    peer: str | None = None
    peer_kind: str | None = None  # a NodeKind value


def pack_span(span_id: bytes, parent: bytes, start_ns: int, end_ns: int, kind: int, error: bool,
              service: bytes, name: str) -> bytes:
    """One span record (``service`` already UTF-8, at most 64 KiB; the name is cut to 256 chars)."""
    name_utf8 = name[:_STRING_CHARS].encode()
    return (SPAN_RECORD.pack(span_id, parent, start_ns, end_ns, kind, error, len(service), len(name_utf8))
            + service + name_utf8)


def pack_spans(spans: Sequence[TraceSpan]) -> bytes:
    """The packed form of ``spans`` (what :attr:`TraceSummary.packed_spans` holds)."""
    out = []
    for s in spans:
        start = round(s.start * 1e9)
        parent = bytes.fromhex(s.parent_span_id) if s.parent_span_id else NO_PARENT
        out.append(pack_span(bytes.fromhex(s.span_id), parent, start, start + round(s.duration * 1e9),
                             SPAN_KINDS.index(s.kind), s.error, s.service[:_STRING_CHARS].encode(), s.name))
    for s in spans:
        if s.peer is not None:
            out.append(pack_span(bytes.fromhex(s.span_id), NO_PARENT, 0, 0, PEER_RECORD, False,
                                 s.peer[:_STRING_CHARS].encode(), s.peer_kind or "UNINSTRUMENTED"))
    return b"".join(out)


def unpack_spans(packed: bytes) -> tuple[TraceSpan, ...]:
    """The spans of :func:`pack_spans`, by start (then span id). Raises ValueError if malformed."""
    rows = []
    peers: dict[bytes, tuple[str, str]] = {}
    at, size = 0, SPAN_RECORD.size
    try:
        while at < len(packed):
            sid, pid, start, end, kind, err, n1, n2 = SPAN_RECORD.unpack_from(packed, at)
            at += size
            first = packed[at:at + n1].decode(errors="replace")
            second = packed[at + n1:at + n1 + n2].decode(errors="replace")
            at += n1 + n2
            if at > len(packed):
                raise ValueError("packed spans end inside a record")
            if kind == PEER_RECORD:
                peers[sid] = (first, second)
            else:
                rows.append((sid, pid, start, end, kind, err, first, second))
    except struct.error as e:
        raise ValueError(f"packed spans are malformed: {e}") from None
    out = []
    for sid, pid, start, end, kind, err, service, name in rows:
        peer, peer_kind = peers.get(sid, (None, None))
        out.append(TraceSpan(sid.hex(), None if pid == NO_PARENT else pid.hex(), service, name,
                             SPAN_KINDS[kind] if kind < len(SPAN_KINDS) else SPAN_KINDS[0], start / 1e9,
                             max(0, end - start) / 1e9, bool(err), peer, peer_kind))
    out.sort(key=lambda s: (s.start, s.span_id))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One recent trace (from the TRACE layer): its summary and, when the stage kept them, its spans.

    ``spans`` counts every span the stage saw; ``packed_spans`` holds at most the stage's per-trace
    bound of them, packed (:func:`pack_spans`: the stage makes no object per span, the stores keep the
    bytes as they are); :attr:`kept_spans` unpacks them. ``truncated``: fewer kept than seen.
    """

    trace_id: str  # hex
    root_service: str
    root_name: str  # root span name
    start: float  # epoch seconds
    duration: float  # seconds
    spans: int
    error: bool
    services: tuple[str, ...]
    packed_spans: bytes = b""

    @property
    def kept_spans(self) -> tuple[TraceSpan, ...]:
        return unpack_spans(self.packed_spans)

    @property
    def truncated(self) -> bool:
        return len(self.kept_spans) < self.spans

    def to_dict(self) -> dict[str, Any]:
        d = {"trace_id": self.trace_id, "root_service": self.root_service, "root_name": self.root_name,
             "start": self.start, "duration": self.duration, "spans": self.spans, "error": self.error,
             "services": list(self.services)}
        if self.packed_spans:
            d["packed_spans"] = base64.b64encode(self.packed_spans).decode("ascii")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceSummary:
        packed = d.get("packed_spans")
        return cls(str(d["trace_id"]), str(d["root_service"]), str(d["root_name"]), float(d["start"]),
                   float(d["duration"]), int(d["spans"]), bool(d["error"]), tuple(d["services"]),
                   base64.b64decode(packed, validate=True) if packed else b"")

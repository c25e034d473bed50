"""A small, slow, obviously-correct reading of the simulator's payloads, per the observation contract.

Used to check that the simulator's ground truth matches what it actually emitted: each function
decodes the real wire bytes (flow batches, OTLP protobuf) and derives the app-level pairs a layer
should observe, without any of the simulator's internal knowledge except the address leases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from topology.catalog import AddressKind, AddressLease
from topology.timewindow import MINUTE, align
from topology.wire import flow

Pair = tuple[str, str]
Observed = dict[Pair, set[int]]  # pair -> one-minute windows
Owner = Callable[[str, float], AddressLease | None]

CLIENT_METRICS = {
    "ipc.client.call",
    "rpc.client.duration",
    "rpc.client.call.duration",
    "http.client.request.duration",
    "http.client.duration",
}
PEER_ORDER = (
    "service.peer.name",
    "peer.service",
    "db.namespace",
    "db.name",
    "server.address",
    "db.system.name",
    "db.system",
)


def _add(out: Observed, pair: Pair, t: float) -> None:
    out.setdefault(pair, set()).add(align(t, MINUTE))


def attrs(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        out[kv.key] = getattr(v, which) if which else None
    return out


# -- NETWORK ---------------------------------------------------------------------------------------
def network_pairs(
    batches: Iterable[bytes], owner: Owner, backends: dict[str, str]
) -> tuple[Observed, list[tuple[str, str, float]]]:
    """Pairs from client-side records (remote resolved at start_ms; intermediaries -> the app they
    front), and every (record's local app, resolved remote owner, time) for server-side records."""
    out: Observed = {}
    server_side: list[tuple[str, str, float]] = []
    for data in batches:
        b = flow.decode(data)
        for r in b.records.tolist():
            start_ms, remote, role, local_app = r[0], r[3], r[7], r[9]
            t = start_ms / 1000.0
            lease = owner(flow.unpack_ip(remote), t)
            assert lease is not None, f"no lease for {flow.unpack_ip(remote)} at {t}"
            if role == flow.ROLE_SERVER:
                server_side.append((b.strings[local_app], lease.owner, t))
                continue
            dst = (
                backends[lease.owner]
                if lease.kind in (AddressKind.LOAD_BALANCER, AddressKind.API_GATEWAY, AddressKind.PROXY)
                else lease.owner
            )
            _add(out, (b.strings[local_app], dst), t)
    return out, server_side


# -- IPC ---------------------------------------------------------------------------------------------
def ipc_pairs(payloads: Iterable[bytes], owner: Owner) -> Observed:
    out: Observed = {}
    last: dict[tuple[Any, ...], float] = {}
    for data in payloads:
        req = ExportMetricsServiceRequest.FromString(data)
        for rm in req.resource_metrics:
            res = attrs(rm.resource.attributes)
            rkey = tuple(sorted(res.items()))
            svc = res["service.name"]
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind == "histogram":
                        points = [
                            (attrs(p.attributes), p.count, p.time_unix_nano) for p in m.histogram.data_points
                        ]
                        delta = m.histogram.aggregation_temporality == 1
                    elif kind == "sum":
                        points = [
                            (attrs(p.attributes), p.as_double, p.time_unix_nano) for p in m.sum.data_points
                        ]
                        points = [p for p in points if p[0].get("statistic") == "count"]
                        delta = m.sum.aggregation_temporality == 1
                    else:
                        continue
                    for a, count, t_ns in points:
                        t = t_ns / 1e9
                        skey = (rkey, m.name, tuple(sorted(a.items())))
                        if delta:
                            grew = count > 0
                        else:
                            prev = last.get(skey)
                            last[skey] = count
                            grew = prev is not None and count > prev
                        if not grew:
                            continue
                        if m.name == "ipc.server.call" and "ipc.client.app" in a:
                            _add(out, (a["ipc.client.app"], svc), t)
                        elif m.name in CLIENT_METRICS:
                            _add(out, (svc, _ipc_target(a, t, owner)), t)
    return out


def _ipc_target(a: dict[str, Any], t: float, owner: Owner) -> str:
    for k in ("ipc.server.app", "service.peer.name", "peer.service"):
        if a.get(k):
            return str(a[k])
    host = str(a.get("server.address") or a.get("net.peer.name"))
    if host[0].isdigit():
        lease = owner(host, t)
        assert lease is not None and lease.kind is AddressKind.WORKLOAD, f"{host} not a workload at {t}"
        return lease.owner
    return host.split(".")[0]


# -- TRACE ---------------------------------------------------------------------------------------------
def trace_pairs(payloads: Iterable[bytes]) -> tuple[Observed, list[tuple[str, Span]]]:
    """Pairs by the pairing rules over all spans (no expiry); also every (service, span) seen."""
    spans: list[tuple[str, Span]] = []
    for data in payloads:
        req = ExportTraceServiceRequest.FromString(data)
        for rs in req.resource_spans:
            svc = attrs(rs.resource.attributes)["service.name"]
            for ss in rs.scope_spans:
                spans.extend((svc, s) for s in ss.spans)
    clients = {
        (s.trace_id, s.span_id): (svc, s)
        for svc, s in spans
        if s.kind in (Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER)
    }
    out: Observed = {}
    matched: set[tuple[bytes, bytes]] = set()
    for svc, s in spans:
        if s.kind not in (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CONSUMER):
            continue
        parent = clients.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
        if parent is None:
            _add(out, ("user", svc), s.start_time_unix_nano / 1e9)
        else:
            matched.add((s.trace_id, s.parent_span_id))
            _add(out, (parent[0], svc), parent[1].start_time_unix_nano / 1e9)
    for key, (svc, s) in clients.items():
        if key in matched:
            continue
        a = attrs(s.attributes)
        peer = next(str(a[k]) for k in PEER_ORDER if a.get(k))
        _add(out, (svc, peer), s.start_time_unix_nano / 1e9)
    return out, spans

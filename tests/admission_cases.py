"""One table of inputs, good and bad, with the verdict admission must give them on either road.

``tests/integration/test_admission.py`` posts each payload to the HTTP receiver (the real ASGI app
and runtime); ``tests/kafka/test_admission.py`` produces it to its topic on a real broker and reads
the dead-letter topic. Both assert the same :class:`Case` verdict and reason class, so a policy
change that reaches one road only fails one of them.

Verdicts: ``kept`` (nothing rejected), ``partial`` (records cut out, the rest goes on: HTTP 200 with
the rejected count, Kafka dead-letters the cut-out part) and ``rejected`` (HTTP 400, Kafka
dead-letters the record itself). Payloads are built against ``now`` (epoch seconds), the time the
input is produced: the HTTP arrival time or the Kafka record timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from topology.wire import flow

Y2100 = 4_102_444_800  # 2100-01-01T00:00:00Z
Y2500 = 16_725_225_600  # 2500-01-01T00:00:00Z

#: kind -> (HTTP route, content type, Kafka topic attribute of ingest.topics.Topics)
ROADS: dict[str, tuple[str, str, str]] = {
    "spans": ("/v1/traces", "application/x-protobuf", "otlp_spans"),
    "metrics": ("/v1/metrics", "application/x-protobuf", "otlp_metrics"),
    "flows": ("/ingest/flows", "application/x-topology-flows", "flows"),
    "vpcflows": ("/ingest/vpcflows", "text/plain", "vpcflows"),
    "catalog": ("/ingest/catalog", "application/json", "catalog"),
    "health": ("/ingest/health", "application/json", "health"),
    "addresses": ("/ingest/addresses", "application/json", "addresses"),
    "changes": ("/ingest/changes", "application/json", "changes"),
}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # a key of ROADS
    payload: Callable[[float], bytes]  # built against the time it is produced (epoch seconds)
    verdict: str  # kept | partial | rejected
    reason_class: str | None = None  # the class of the first rejection (None when kept)

    def __str__(self) -> str:
        return self.name


# -- builders -------------------------------------------------------------------------------------
LONG_NAME = "x" * 100_000  # far beyond the name limit (topology.catalog.NAME_MAX), within a Kafka record


def spans(*times: tuple[float, float], pair: bool = False, trace_id: bytes = b"\x0a" * 16,
          client_name: str = "checkout") -> bytes:
    """Client spans of ``client_name`` with (start, end) times in seconds; ``pair``: each client span's
    server side in ``payments`` too (a call that pairs into an edge)."""
    req = ExportTraceServiceRequest()
    client = _resource_spans(req, client_name)
    server = _resource_spans(req, "payments") if pair else None
    for i, (start, end) in enumerate(times):
        sid = bytes([i + 1]) * 8
        _span(client, trace_id, sid, b"", 3, start, end)
        if server is not None:
            _span(server, trace_id, bytes([i + 101]) * 8, sid, 2, start, end)
    data: bytes = req.SerializeToString()
    return data


def _resource_spans(req: ExportTraceServiceRequest, service: str) -> object:
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    return rs.scope_spans.add()


def _span(scope: object, tid: bytes, sid: bytes, parent: bytes, kind: int, start: float, end: float) -> None:
    sp = scope.spans.add()  # type: ignore[attr-defined]
    sp.trace_id, sp.span_id, sp.parent_span_id, sp.kind, sp.name = tid, sid, parent, kind, "POST /pay"
    sp.start_time_unix_nano, sp.end_time_unix_nano = int(start * 1e9), int(end * 1e9)


def metrics(*times: float, nan_sum: bool = False, names: tuple[str, ...] = ()) -> bytes:
    """One resource per time, each with one delta histogram point of ``checkout-<i>`` (or ``names[i]``)
    calling payments."""
    req = ExportMetricsServiceRequest()
    for i, t in enumerate(times):
        rm = req.resource_metrics.add()
        kv = rm.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", names[i] if i < len(names) else f"checkout-{i}"
        m = rm.scope_metrics.add().metrics.add()
        m.name, m.unit = "http.client.request.duration", "s"
        m.histogram.aggregation_temporality = 1
        dp = m.histogram.data_points.add()
        dp.time_unix_nano, dp.count, dp.sum = int(t * 1e9), 3, float("nan") if nan_sum else 0.3
        a = dp.attributes.add()
        a.key, a.value.string_value = "server.address", "payments.svc.local"
    data: bytes = req.SerializeToString()
    return data


def flows(now: float, *starts: float, app: int = 1, name: str = "checkout") -> bytes:
    """A flow batch emitted at ``now``: one client record per start time (seconds), 20 ms long."""
    recs = np.zeros(len(starts), dtype=flow.RECORD_V1)
    recs["start_ms"] = [int(s * 1000) for s in starts]
    recs["end_ms"] = recs["start_ms"] + 20
    recs["local_addr"], recs["remote_addr"] = flow.pack_ip("10.2.0.1"), flow.pack_ip("10.2.0.2")
    recs["local_port"], recs["remote_port"], recs["protocol"], recs["role"] = 41000, 443, 6, flow.ROLE_CLIENT
    recs["local_app"], recs["local_cluster"] = app, 2
    recs["bytes_sent"], recs["bytes_received"], recs["connections"] = 10, 20, 1
    return flow.encode(recs, ["", name, "checkout-prod"], host="host-1", emitted_ms=int(now * 1000))


def vpc_line(start: float, src: str = "10.0.0.1") -> str:
    s = int(start)
    return f"2 123456789012 eni-1 {src} 10.0.0.2 40000 443 6 20 100 {s} {s + 9} ACCEPT OK"


def js(value: object) -> bytes:
    return json.dumps(value).encode()  # json.dumps writes NaN as the literal NaN, as loads reads it


CUSTOM_VPC = "version srcaddr dstaddr srcport dstport protocol bytes start end tcp-flags log-status"

# -- the table ------------------------------------------------------------------------------------
CASES: tuple[Case, ...] = (
    # spans
    Case("a span pair in the present", "spans", lambda t: spans((t - 2, t - 1), pair=True), "kept"),
    Case("a client/server span pair dated 2100-01-01", "spans",
         lambda t: spans((Y2100, Y2100 + 0.01), pair=True), "rejected", "timestamp"),
    Case("spans in the year 2500", "spans", lambda t: spans((Y2500, Y2500 + 1), (Y2500, Y2500 + 2)),
         "rejected", "timestamp"),
    Case("spans at time 0", "spans", lambda t: spans((0, 0)), "rejected", "timestamp"),
    Case("a good span beside one dated 2100", "spans", lambda t: spans((t - 2, t - 1), (Y2100, Y2100 + 1)),
         "partial", "timestamp"),
    Case("an empty span request", "spans", lambda t: b"", "rejected", "empty"),
    Case("random bytes as spans", "spans", lambda t: b"\xff\x00garbage" * 10, "rejected", "decode"),
    Case("a span with a 3-byte trace id", "spans", lambda t: spans((t - 2, t - 1), trace_id=b"abc"),
         "rejected", "schema"),
    # metrics
    Case("metric points in the present", "metrics", lambda t: metrics(t - 1), "kept"),
    Case("a histogram point with a NaN sum", "metrics", lambda t: metrics(t - 1, nan_sum=True), "kept"),
    Case("a metric point at time 0", "metrics", lambda t: metrics(0), "rejected", "timestamp"),
    Case("a metric point in the year 2500", "metrics", lambda t: metrics(Y2500), "rejected", "timestamp"),
    Case("a good resource beside one dated 2100", "metrics", lambda t: metrics(t - 1, Y2100), "partial",
         "timestamp"),
    Case("an empty metrics request", "metrics", lambda t: b"", "rejected", "empty"),
    # flow batches
    Case("flow records in the present", "flows", lambda t: flows(t, t - 3, t - 2), "kept"),
    Case("a flow record dated 2100 between good ones", "flows", lambda t: flows(t, t - 3, Y2100, t - 2),
         "partial", "timestamp"),
    Case("flow records in the year 2500", "flows", lambda t: flows(t, Y2500, Y2500), "rejected", "timestamp"),
    Case("a flow record at time 0", "flows", lambda t: flows(t, 0), "rejected", "timestamp"),
    Case("an empty flow batch payload", "flows", lambda t: b"", "rejected", "empty"),
    Case("a flow batch with a bad magic", "flows", lambda t: b"XXXX" + flows(t, t - 1)[4:], "rejected",
         "decode"),
    Case("a flow record without an app", "flows", lambda t: flows(t, t - 1, app=0), "rejected", "schema"),
    # VPC flow logs
    Case("flow-log lines in the present, custom format", "vpcflows",
         lambda t: f"{CUSTOM_VPC}\n5 10.0.0.1 10.0.0.2 40000 443 6 100 {int(t) - 9} {int(t)} 2 OK".encode(),
         "kept"),
    Case("one malformed flow-log line", "vpcflows", lambda t: vpc_line(t - 9, src="not-an-ip").encode(),
         "rejected", "decode"),
    Case("a malformed flow-log line after a good one", "vpcflows",
         lambda t: f"{vpc_line(t - 9)}\n2 123456789012 eni-1 10.0.0.1".encode(), "partial", "decode"),
    Case("a flow-log line in the year 2500", "vpcflows", lambda t: vpc_line(Y2500).encode(), "rejected",
         "timestamp"),
    Case("a flow-log line at time 0", "vpcflows", lambda t: vpc_line(0).encode(), "rejected", "timestamp"),
    Case("an empty flow-log payload", "vpcflows", lambda t: b"", "rejected", "empty"),
    Case("flow-log text that is not UTF-8", "vpcflows", lambda t: b"\xff\xfe" + vpc_line(t).encode(),
         "rejected", "decode"),
    # JSON records
    Case("a catalog entry", "catalog", lambda t: js([{"name": "checkout", "tier": 1}]), "kept"),
    Case("a catalog entry without a name", "catalog", lambda t: js([{"tier": 1}]), "rejected", "schema"),
    Case("catalog text that is not JSON", "catalog", lambda t: b"{not json", "rejected", "decode"),
    Case("an empty catalog payload", "catalog", lambda t: b"", "rejected", "empty"),
    Case("a health event at NaN", "health", lambda t: js([{"service": "x", "status": "HEALTHY",
                                                          "at": float("nan")}]), "rejected", "timestamp"),
    Case("a health event in the year 2500", "health",
         lambda t: js([{"service": "x", "status": "HEALTHY", "at": Y2500}]), "rejected", "timestamp"),
    Case("a health event in the present", "health",
         lambda t: js([{"service": "x", "status": "HEALTHY", "at": t - 1}]), "kept"),
    Case("a deploy", "changes",
         lambda t: js([{"service": "x", "kind": "DEPLOY", "at": t - 60, "version": "v2"}]), "kept"),
    Case("a change of a kind we do not know", "changes",
         lambda t: js([{"service": "x", "kind": "REBOOT", "at": t - 60}]), "rejected", "schema"),
    Case("a change event without a service", "changes",
         lambda t: js([{"kind": "CONFIG", "at": t - 60}]), "rejected", "schema"),
    Case("a change event in the year 2500", "changes",
         lambda t: js([{"service": "x", "kind": "CONFIG", "at": Y2500}]), "rejected", "timestamp"),
    Case("a change event at NaN", "changes",
         lambda t: js([{"service": "x", "kind": "CONFIG", "at": float("nan")}]), "rejected", "timestamp"),
    Case("an address lease for an ip that is not one", "addresses",
         lambda t: js([{"ip": "not-an-ip", "owner": "x", "start": t}]), "rejected", "schema"),
    Case("an address lease starting at NaN", "addresses",
         lambda t: js([{"ip": "10.0.0.9", "owner": "x", "start": float("nan")}]), "rejected", "timestamp"),
    # issue 8: inputs that were stored and then broke queries, or answered 500
    *(Case(f"a catalog entry with {what}", "catalog", lambda t, e=entry: js([{"name": "checkout", **e}]),
           "rejected", "schema") for what, entry in (
        ("tier 1e30", {"tier": 1e30}),
        ("tier 1000000", {"tier": 1_000_000}),
        ("a negative tier", {"tier": -1}),
        ("a domain that is an object", {"domain": {}}),
        ("a link that is a number", {"links": {"logs": 5}}),
        ("a javascript: link", {"links": {"logs": "javascript:alert(1)"}}),
        ("an ftp link", {"links": {"traces": "ftp://example.com/x"}}),
        ("a link of an unknown kind", {"links": {"pager": "https://example.com"}}),
        ("links that are a list", {"links": ["https://example.com"]}),
        ("an owner team that is an object", {"owner": {"team": {}}}),
        ("an owner e-mail that is a number", {"owner": {"team": "t", "email": 5}}),
        ("clusters that are a string", {"clusters": "prod"}),
        ("a cluster that is a number", {"clusters": [5]}),
    )),
    Case("a catalog entry with a 100,000-character name", "catalog", lambda t: js([{"name": LONG_NAME}]),
         "rejected", "schema"),
    Case("a catalog entry with an https link", "catalog",
         lambda t: js([{"name": "checkout", "links": {"logs": "https://logs.example.com/{service}"}}]),
         "kept"),
    Case("catalog JSON null", "catalog", lambda t: b"null", "rejected", "schema"),
    Case("catalog JSON nested 100,000 deep", "catalog", lambda t: b"[" * 100_000, "rejected", "decode"),
    Case("catalog bytes that are not UTF-8", "catalog", lambda t: b'[{"name": "\xff\xfe"}]', "rejected",
         "decode"),
    Case("a health event with a reason that is an object", "health",
         lambda t: js([{"service": "x", "status": "DEGRADED", "at": t - 1, "reason": {}}]), "rejected",
         "schema"),
    Case("a health event with an unknown status", "health",
         lambda t: js([{"service": "x", "status": "ON_FIRE", "at": t - 1}]), "rejected", "schema"),
    Case("a health event at a time that is a string", "health",
         lambda t: js([{"service": "x", "status": "HEALTHY", "at": "now"}]), "rejected", "schema"),
    Case("a health event for a 100,000-character service", "health",
         lambda t: js([{"service": LONG_NAME, "status": "HEALTHY", "at": t - 1}]), "rejected", "schema"),
    Case("health JSON null", "health", lambda t: b"null", "rejected", "schema"),
    Case("an address lease ending at infinity", "addresses",
         lambda t: js([{"ip": "10.0.0.9", "owner": "x", "start": t, "end": float("inf")}]), "rejected",
         "timestamp"),
    Case("an address lease with an owner that is a number", "addresses",
         lambda t: js([{"ip": "10.0.0.9", "owner": 5, "start": t}]), "rejected", "schema"),
    Case("an address lease of an unknown kind", "addresses",
         lambda t: js([{"ip": "10.0.0.9", "owner": "x", "kind": "BOAT", "start": t}]), "rejected", "schema"),
    Case("spans of a 100,000-character service.name", "spans",
         lambda t: spans((t - 2, t - 1), client_name=LONG_NAME), "rejected", "schema"),
    Case("metrics of a 100,000-character service.name beside a good resource", "metrics",
         lambda t: metrics(t - 1, t - 1, names=("checkout", LONG_NAME)), "partial", "schema"),
    Case("flow records of a 1,000-character app name", "flows", lambda t: flows(t, t - 1, name="a" * 1000),
         "rejected", "schema"),
)

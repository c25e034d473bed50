"""Golden cases for the IPC and TRACE stages: OTLP/JSON input -> expected edge partials.

Each ``*.json`` file here holds ``steps`` (OTLP/JSON requests to add, with their arrival time, and
flushes) and ``expected`` (per flush: the edge partials and trace summaries; at the end: the counters).
The inputs are built by the functions below; the expected parts were produced by the stages and then
checked by hand against the observation contract (``/work/brief.md``), case by case. To rebuild after a
reviewed behaviour change::

    .venv/bin/python -m tests.topology.stages.golden_otlp.cases

and review the diff of every file before committing it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.topology.stages.otlp_builders import (
    CUMULATIVE,
    DELTA,
    OTEL_MS_BOUNDS,
    OTEL_S_BOUNDS,
    gauge,
    hist_point,
    histogram,
    histogram_of,
    metrics,
    number_point,
    resource_metrics,
    resource_spans,
    span,
    sum_metric,
    traces,
)
from topology.address import AddressBook
from topology.catalog import AddressKind, AddressLease
from topology.stages.ipc import IpcObservation, IpcStage1, IpcStage2
from topology.stages.trace import SpanPairer
from topology.wire.otlp import decode_metrics, decode_traces, encode_json

HERE = Path(__file__).parent
T = 1_699_999_980.0  # a minute boundary

Step = dict[str, Any]


def _add(req: ExportTraceServiceRequest | ExportMetricsServiceRequest, now: float | None = None) -> Step:
    step: Step = {"add": json.loads(encode_json(req))}
    if now is not None:
        step["now"] = now
    return step


def _flush(at: float) -> Step:
    return {"flush": at}


# -- running a case -----------------------------------------------------------------------------------
def run_trace(doc: dict[str, Any]) -> dict[str, Any]:
    p = SpanPairer(**doc.get("config", {}))
    flushes = []
    for step in doc["steps"]:
        if "add" in step:
            p.add(decode_traces(json.dumps(step["add"]).encode(), "application/json"), step["now"])
        else:
            edges = [e.to_dict() for e in p.flush(step["flush"])]
            summaries = [t.to_dict() for t in p.take_trace_summaries()]
            flushes.append({"at": step["flush"], "edges": edges, "traces": summaries})
    return {"flushes": flushes, "counters": dict(p.counters)}


def run_ipc(doc: dict[str, Any]) -> dict[str, Any]:
    book = AddressBook(AddressLease.from_dict(d) for d in doc.get("leases", []))
    s1, s2 = IpcStage1(**doc.get("config", {})), IpcStage2(book)
    flushes = []
    for step in doc["steps"]:
        if "add" in step:
            s1.add(decode_metrics(json.dumps(step["add"]).encode(), "application/json"))
        else:
            # through the repartition topic's representation, as in production
            records = [
                IpcObservation.from_dict(json.loads(json.dumps(o.to_dict()))) for o in s1.flush(step["flush"])
            ]
            flushes.append({"at": step["flush"], "edges": [e.to_dict() for e in s2.process(records)]})
    return {"flushes": flushes, "counters": {"stage1": dict(s1.counters), "stage2": dict(s2.counters)}}


def rounded(x: Any) -> Any:
    """``x`` with floats rounded to microseconds (summation order must not break a golden file)."""
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, list):
        return [rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    return x


# -- TRACE cases ------------------------------------------------------------------------------------
def trace_client_server() -> tuple[str, list[Step], dict[str, Any]]:
    return (
        "A root SERVER span in frontend (user -> frontend), its CLIENT span paired with cart's SERVER span "
        "(frontend -> cart, latency = the server span's 30 ms, error from cart's status). Both "
        "resources carry "
        "k8s.deployment.name, so CLUSTER edges too. cart's span arrives second, in a separate request.",
        [
            _add(
                traces(
                    resource_spans(
                        "frontend",
                        [
                            span(0xA1, 1, None, "server", "GET /cart", T + 10, 0.2),
                            span(
                                0xA1,
                                2,
                                1,
                                "client",
                                "GET cart/items",
                                T + 10.01,
                                0.05,
                                attributes={"server.address": "cart", "http.request.method": "GET"},
                            ),
                        ],
                        "frontend-prod-v001",
                    )
                ),
                T + 11,
            ),
            _add(
                traces(
                    resource_spans(
                        "cart",
                        [
                            span(
                                0xA1,
                                3,
                                2,
                                "server",
                                "GET /items",
                                T + 10.015,
                                0.03,
                                error=True,
                                attributes={"http.response.status_code": 500},
                            ),
                        ],
                        "cart-prod-v003",
                    )
                ),
                T + 12,
            ),
            _flush(T + 13),
        ],
        {},
    )


def trace_producer_consumer() -> tuple[str, list[Step], dict[str, Any]]:
    return (
        "orders publishes (PRODUCER under an INTERNAL root); billing and shipping consume it "
        "(CONSUMER, parent = "
        "the producer span): two messaging_system edges, one arriving before the producer. A second PRODUCER "
        "span nobody consumes expires into a MESSAGING virtual node named by server.address.",
        [
            _add(
                traces(
                    resource_spans(
                        "billing", [span(0xB2, 11, 10, "consumer", "invoices process", T + 20.5, 0.2)]
                    )
                ),
                T + 21,
            ),
            _add(
                traces(
                    resource_spans(
                        "orders",
                        [
                            span(0xB2, 9, None, "internal", "checkout", T + 20, 0.01),
                            span(
                                0xB2,
                                10,
                                9,
                                "producer",
                                "invoices publish",
                                T + 20.001,
                                0.002,
                                attributes={
                                    "messaging.system": "kafka",
                                    "messaging.destination.name": "invoices",
                                },
                            ),
                            span(
                                0xB3,
                                20,
                                None,
                                "producer",
                                "audit publish",
                                T + 20,
                                0.004,
                                attributes={"messaging.system": "kafka", "server.address": "kafka-audit"},
                            ),
                        ],
                    )
                ),
                T + 21.5,
            ),
            _add(
                traces(
                    resource_spans(
                        "shipping", [span(0xB2, 12, 10, "consumer", "invoices process", T + 20.7, 0.5)]
                    )
                ),
                T + 22,
            ),
            _flush(T + 23),
            _flush(T + 40),
        ],
        {},
    )


def trace_database() -> tuple[str, list[Step], dict[str, Any]]:
    return (
        "CLIENT spans to databases never pair: after the wait they become DATABASE virtual nodes "
        "named by the "
        "first present of service.peer.name, peer.service, db.namespace, db.name, server.address, "
        "db.system.name, db.system. Nothing before the wait is over.",
        [
            _add(
                traces(
                    resource_spans(
                        "catalog",
                        [
                            span(
                                0xC1,
                                1,
                                9,
                                "client",
                                "SELECT",
                                T + 1,
                                0.004,
                                attributes={
                                    "db.system.name": "postgresql",
                                    "db.namespace": "products",
                                    "server.address": "pg-7",
                                },
                            ),
                            span(
                                0xC2,
                                1,
                                9,
                                "client",
                                "GET",
                                T + 2,
                                0.0005,
                                attributes={"db.system": "redis", "server.address": "cache-1.internal"},
                            ),
                            span(
                                0xC3,
                                1,
                                9,
                                "client",
                                "SELECT",
                                T + 3,
                                0.09,
                                error=True,
                                attributes={
                                    "db.system": "mysql",
                                    "db.name": "legacy",
                                    "db.statement": "SELECT 1",
                                },
                            ),
                            span(
                                0xC4,
                                1,
                                9,
                                "client",
                                "query",
                                T + 4,
                                0.02,
                                attributes={"db.system.name": "cassandra"},
                            ),
                        ],
                        "catalog-prod-v010",
                    )
                ),
                T + 5,
            ),
            _flush(T + 10),
            _flush(T + 15),
            _flush(T + 15.5),
        ],
        {},
    )


def trace_uninstrumented_peer() -> tuple[str, list[Step], dict[str, Any]]:
    return (
        "CLIENT spans to services that report no spans: named by service.peer.name (new) before peer.service "
        "(old); UNINSTRUMENTED, connection type virtual_node. A span with no naming attribute is unnamed "
        "(counted, no edge).",
        [
            _add(
                traces(
                    resource_spans(
                        "checkout",
                        [
                            span(
                                0xD1,
                                1,
                                9,
                                "client",
                                "charge",
                                T + 1,
                                0.3,
                                attributes={"peer.service": "payments-legacy"},
                            ),
                            span(
                                0xD2,
                                1,
                                9,
                                "client",
                                "geo",
                                T + 2,
                                0.01,
                                attributes={"service.peer.name": "geo-api", "peer.service": "geo-old"},
                            ),
                            span(
                                0xD3,
                                1,
                                9,
                                "client",
                                "GET",
                                T + 3,
                                0.01,
                                attributes={"http.request.method": "GET"},
                            ),
                        ],
                    )
                ),
                T + 4,
            ),
            _flush(T + 20),
        ],
        {},
    )


def trace_root_user() -> tuple[str, list[Step], dict[str, Any]]:
    return (
        "SERVER spans without a parent come from `user` at once (no wait); a SERVER span whose parent never "
        "arrives also becomes `user` after the wait. Trace summaries follow once each trace is quiet.",
        [
            _add(
                traces(
                    resource_spans(
                        "edge-gateway",
                        [
                            span(0xE1, 1, None, "server", "GET /", T + 1, 0.12),
                            span(0xE2, 1, None, "server", "POST /login", T + 2, 0.5, error=True),
                        ],
                        "edge-gateway-prod-v001",
                    ),
                    resource_spans("search", [span(0xE3, 5, 4, "server", "GET /q", T + 3, 0.03)]),
                ),
                T + 4,
            ),
            _flush(T + 5),
            _flush(T + 15),
        ],
        {},
    )


def trace_expiry_wait() -> tuple[str, list[Step], dict[str, Any]]:
    return (
        "The wait runs from arrival: an unpaired CLIENT span (arrived at +1) and an orphan SERVER "
        "span (arrived "
        "at +2) are still waiting at exactly 10 s and expire after it; a pair whose server half arrives 9 s "
        "after its client half is a pair.",
        [
            _add(
                traces(
                    resource_spans(
                        "a",
                        [
                            span(
                                0xF1, 1, 9, "client", "x", T + 1, 0.01, attributes={"peer.service": "vendor"}
                            ),
                            span(0xF3, 1, 9, "client", "y", T + 1, 0.01),
                        ],
                    )
                ),
                T + 1,
            ),
            _add(traces(resource_spans("b", [span(0xF2, 2, 1, "server", "x", T + 2, 0.01)])), T + 2),
            _add(traces(resource_spans("c", [span(0xF3, 2, 1, "server", "y", T + 1, 0.005)])), T + 10),
            _flush(T + 6),
            _flush(T + 11),
            _flush(T + 11.001),
            _flush(T + 12),
            _flush(T + 12.001),
        ],
        {},
    )


def trace_capacity() -> tuple[str, list[Step], dict[str, Any]]:
    return (
        "max_pending=3: five unpaired CLIENT spans arrive one second apart; the two oldest are "
        "dropped (counted), "
        "the other three expire into virtual nodes.",
        [
            _add(
                traces(
                    resource_spans(
                        "a",
                        [
                            span(
                                0x100 + n,
                                1,
                                9,
                                "client",
                                "x",
                                T + n,
                                0.01,
                                attributes={"peer.service": f"peer-{n}"},
                            )
                        ],
                    )
                ),
                T + n,
            )
            for n in range(5)
        ]
        + [_flush(T + 30)],
        {"max_pending": 3},
    )


def trace_several_services() -> tuple[str, list[Step], dict[str, Any]]:
    return (
        "One export request from one process hosting three services (three ResourceSpans): gateway "
        "-> auth -> "
        "users, with a server span listed before its client span.",
        [
            _add(
                traces(
                    resource_spans(
                        "auth",
                        [
                            span(0x51, 3, 2, "server", "check", T + 1.1, 0.01),
                            span(0x51, 4, 3, "client", "lookup", T + 1.102, 0.005),
                        ],
                    ),
                    resource_spans("users", [span(0x51, 5, 4, "server", "lookup", T + 1.103, 0.003)]),
                    resource_spans(
                        "gateway",
                        [
                            span(0x51, 1, None, "server", "POST /login", T + 1, 0.3),
                            span(0x51, 2, 1, "client", "check", T + 1.05, 0.2),
                        ],
                    ),
                ),
                T + 2,
            ),
            _flush(T + 2),
            _flush(T + 20),
        ],
        {},
    )


# -- IPC cases --------------------------------------------------------------------------------------
SAMPLES = [0.003, 0.007, 0.007, 0.02, 0.3]


def _semconv_point(attrs: dict[str, Any], bounds: tuple[float, ...], unit_s: float) -> Any:
    return hist_point(
        attrs, T + 65, len(SAMPLES), sum(SAMPLES) / unit_s, histogram_of(SAMPLES, bounds, unit_s), bounds
    )


def ipc_semconv_units() -> tuple[str, list[Step], dict[str, Any]]:
    variants = [
        (
            "old-rpc",
            "rpc.client.duration",
            "ms",
            OTEL_MS_BOUNDS,
            1e-3,
            {"rpc.system": "grpc", "rpc.service": "S", "rpc.method": "Get"},
        ),
        (
            "new-rpc",
            "rpc.client.call.duration",
            "s",
            OTEL_S_BOUNDS,
            1.0,
            {"rpc.system.name": "grpc", "rpc.service": "S", "rpc.method": "Get"},
        ),
        (
            "old-http",
            "http.client.duration",
            "ms",
            OTEL_MS_BOUNDS,
            1e-3,
            {"http.route": "/items/{id}", "http.status_code": 200},
        ),
        (
            "new-http",
            "http.client.request.duration",
            "s",
            OTEL_S_BOUNDS,
            1.0,
            {"http.route": "/items/{id}", "http.response.status_code": 200},
        ),
    ]
    groups = [
        resource_metrics(
            svc,
            [
                histogram(
                    name,
                    unit,
                    [
                        _semconv_point(
                            {"server.address": "inventory.prod.svc.cluster.local", **a}, bounds, unit_s
                        )
                    ],
                    DELTA,
                )
            ],
        )
        for svc, name, unit, bounds, unit_s, a in variants
    ]
    groups.append(
        resource_metrics(
            "inventory",
            [
                histogram(
                    "rpc.server.duration",
                    "ms",
                    [_semconv_point({"rpc.system": "grpc"}, OTEL_MS_BOUNDS, 1e-3)],
                    DELTA,
                )
            ],
        )
    )
    return (
        "The same five calls (3, 7, 7, 20, 300 ms) reported under old (ms) and new (s) RPC and HTTP "
        "metric names "
        "by four services: four identical edges to inventory (DNS name -> first label). The "
        "server-side metric "
        "without caller identity makes no edge (no_peer).",
        [_add(metrics(*groups)), _flush(T + 119), _flush(T + 120)],
        {},
    )


def ipc_spectator_histogram() -> tuple[str, list[Step], dict[str, Any]]:
    bounds = (0.001, 0.01, 0.1, 1.0)
    ok = {
        "ipc.server.app": "inventory",
        "ipc.server.cluster": "inventory-prod-v004",
        "ipc.endpoint": "/stock",
        "ipc.protocol": "http",
        "ipc.result": "success",
        "ipc.status": "success",
        "ipc.attempt": "initial",
    }
    bad = {**ok, "ipc.result": "failure", "ipc.status": "timeout"}
    srv = {
        "ipc.client.app": "api",
        "ipc.endpoint": "/stock",
        "ipc.protocol": "http",
        "ipc.result": "success",
        "ipc.status": "success",
    }
    return (
        "Spectator timers as OTLP histograms (seconds): api's ipc.client.call (3 successes, 1 failure) and "
        "inventory's ipc.server.call with ipc.client.app=api: one edge api -> inventory seen from "
        "both sides.",
        [
            _add(
                metrics(
                    resource_metrics(
                        "api",
                        [
                            histogram(
                                "ipc.client.call",
                                "s",
                                [
                                    hist_point(ok, T + 61, 3, 0.015, [0, 3, 0, 0, 0], bounds),
                                    hist_point(bad, T + 61, 1, 2.0, [0, 0, 0, 0, 1], bounds),
                                ],
                                DELTA,
                            )
                        ],
                    ),
                    resource_metrics(
                        "inventory",
                        [
                            histogram(
                                "ipc.server.call",
                                "s",
                                [hist_point(srv, T + 62, 3, 0.012, [0, 3, 0, 0, 0], bounds)],
                                DELTA,
                            )
                        ],
                    ),
                )
            ),
            _flush(T + 120),
        ],
        {},
    )


def _stat(
    name: str,
    base: dict[str, Any],
    t: float,
    count: float,
    total: float,
    mx: float,
    temporality: int = DELTA,
    start: float = 0.0,
) -> list[Any]:
    return [
        sum_metric(name, "", [number_point({**base, "statistic": "count"}, t, count, start)], temporality),
        sum_metric(
            name, "s", [number_point({**base, "statistic": "totalTime"}, t, total, start)], temporality
        ),
        gauge(name, "s", [number_point({**base, "statistic": "max"}, t, mx)]),
    ]


def ipc_spectator_statistic() -> tuple[str, list[Step], dict[str, Any]]:
    ok = {"ipc.server.app": "payments", "ipc.endpoint": "/pay", "ipc.result": "success"}
    bad = {**ok, "ipc.result": "failure"}
    srv = {"ipc.client.app": "web", "ipc.endpoint": "/pay", "ipc.result": "success"}
    cum = {"ipc.server.app": "ledger", "ipc.endpoint": "/post", "ipc.result": "success"}
    call = "ipc.client.call"
    web_first = resource_metrics(
        "web",
        _stat(call, ok, T + 63, 10.0, 0.5, 0.2)
        + _stat(call, bad, T + 63, 2.0, 4.0, 3.0)
        + _stat(call, cum, T + 61, 100.0, 1.0, 0.1, CUMULATIVE, T),
    )
    payments = resource_metrics("payments", _stat("ipc.server.call", srv, T + 64, 12.0, 0.6, 0.1))
    return (
        "Spectator timers as count/totalTime/max statistic points. web -> payments (delta): 10 successes in "
        "0.5 s (mean 50 ms) and 2 failures in 4 s (mean 2 s); payments' server view: 12 calls in 0.6 s. "
        "web -> ledger (cumulative): baseline, then +10 calls / 0.2 s and +20 calls / 0.2 s. max is ignored.",
        [
            _add(metrics(web_first, payments)),
            _add(metrics(resource_metrics("web", _stat(call, cum, T + 71, 110.0, 1.2, 0.1, CUMULATIVE, T)))),
            _add(metrics(resource_metrics("web", _stat(call, cum, T + 81, 130.0, 1.4, 0.1, CUMULATIVE, T)))),
            _flush(T + 120),
        ],
        {},
    )


def ipc_cumulative_resets() -> tuple[str, list[Step], dict[str, Any]]:
    bounds = (0.01, 0.1)
    a = {"ipc.server.app": "ledger", "ipc.endpoint": "/post"}

    def at(t: float, start: float, counts: list[int]) -> Step:
        total = 0.005 * counts[0] + 0.03 * counts[1] + 0.2 * counts[2]
        return _add(
            metrics(
                resource_metrics(
                    "billing",
                    [
                        histogram(
                            "ipc.client.call",
                            "s",
                            [hist_point(a, T + 60 + t, sum(counts), total, counts, bounds, start=start)],
                        )
                    ],
                )
            )
        )

    return (
        "A cumulative histogram series: baseline [10,0,0]; [20,5,0] (+10,+5); unchanged; [3,1,0] went down "
        "(reset: +3,+1); [4,1,1] with a new start time (reset: +4,+1,+1); [4,3,1] (+0,+2); [2,6,1] "
        "count up but "
        "a bucket down (reset: +2,+6,+1). 36 calls; 3 resets; the first window has only the baseline.",
        [
            at(-5, T, [10, 0, 0]),
            at(11, T, [20, 5, 0]),
            at(21, T, [20, 5, 0]),
            at(31, T, [3, 1, 0]),
            at(41, T + 90, [4, 1, 1]),
            at(51, T + 90, [4, 3, 1]),
            at(52, T + 90, [2, 6, 1]),
            _flush(T + 120),
        ],
        {},
    )


def ipc_errors() -> tuple[str, list[Step], dict[str, Any]]:
    rules = {
        "spectator-failure": {"ipc.result": "failure"},
        "spectator-success": {"ipc.result": "success"},
        "grpc-ok": {"rpc.grpc.status_code": 0},
        "grpc-unavailable": {"rpc.grpc.status_code": 14},
        "http-503": {"http.response.status_code": 503},
        "http-404": {"http.response.status_code": 404},
        "http-old-500": {"http.status_code": 500},
        "error-type": {"error.type": "java.net.SocketTimeoutException"},
    }
    points = [
        hist_point({"service.peer.name": peer, **a}, T + 61, 4, 0.04, [4, 0], (0.1,))
        for peer, a in rules.items()
    ]
    return (
        "One series per error rule, 4 calls each, to a peer named after the rule: errors = 4 for "
        "ipc.result=failure, rpc.grpc.status_code != 0, http(.response).status_code >= 500, "
        "error.type present; "
        "0 otherwise.",
        [
            _add(
                metrics(
                    resource_metrics(
                        "billing", [histogram("http.client.request.duration", "s", points, DELTA)]
                    )
                )
            ),
            _flush(T + 120),
        ],
        {},
    )


def ipc_peers() -> tuple[str, list[Step], dict[str, Any]]:
    leases = [
        AddressLease("10.0.0.5", "ledger", AddressKind.WORKLOAD, T, T + 90, "ledger-prod-v001"),
        AddressLease("10.0.0.5", "audit", AddressKind.WORKLOAD, T + 90, None, "audit-prod-v002"),
        AddressLease("10.0.0.9", "orders-db", AddressKind.DATABASE, T),
        AddressLease("10.0.0.7", "lb-payments", AddressKind.LOAD_BALANCER, T),
    ]

    def call(a: dict[str, Any], t: float) -> Any:
        return hist_point(a, T + t, 2, 0.02, [2, 0], (0.1,))

    pts = [
        call(
            {
                "ipc.server.app": "a-app",
                "service.peer.name": "b",
                "peer.service": "c",
                "server.address": "d.x",
            },
            61,
        ),
        call({"service.peer.name": "b-app", "peer.service": "c", "server.address": "d.x"}, 61),
        call({"peer.service": "c-app", "server.address": "d.x"}, 61),
        call({"server.address": "D-App.prod.svc.cluster.local", "net.peer.name": "e.x"}, 61),
        call({"net.peer.name": "e-app.svc.local"}, 61),
        call({"server.address": "10.0.0.5", "server.port": 8080}, 61),
        call({"server.address": "10.0.0.5"}, 151),
        call({"server.address": "10.0.0.9"}, 61),
        call({"server.address": "10.0.0.7"}, 61),
        call({"server.address": "10.9.9.9"}, 61),
    ]
    return (
        "Callee identity: ipc.server.app, then service.peer.name, peer.service, then server.address / "
        "net.peer.name (DNS: first label, lower case; IP: the lease valid at the point's time: 10.0.0.5 is "
        "ledger until +90 s and audit after; DATABASE and LOAD_BALANCER leases name virtual nodes; no lease: "
        "ip:<address>).",
        [
            _add(
                metrics(resource_metrics("web", [histogram("http.client.request.duration", "s", pts, DELTA)]))
            ),
            _flush(T + 180),
        ],
        {"leases": [x.to_dict() for x in leases]},
    )


TRACE_CASES: dict[str, Callable[[], tuple[str, list[Step], dict[str, Any]]]] = {
    "trace_client_server": trace_client_server,
    "trace_producer_consumer": trace_producer_consumer,
    "trace_database": trace_database,
    "trace_uninstrumented_peer": trace_uninstrumented_peer,
    "trace_root_user": trace_root_user,
    "trace_expiry_wait": trace_expiry_wait,
    "trace_capacity": trace_capacity,
    "trace_several_services": trace_several_services,
}
IPC_CASES: dict[str, Callable[[], tuple[str, list[Step], dict[str, Any]]]] = {
    "ipc_semconv_units": ipc_semconv_units,
    "ipc_spectator_histogram": ipc_spectator_histogram,
    "ipc_spectator_statistic": ipc_spectator_statistic,
    "ipc_cumulative_resets": ipc_cumulative_resets,
    "ipc_errors": ipc_errors,
    "ipc_peers": ipc_peers,
}


def _write_all() -> None:
    for cases, layer, run in ((TRACE_CASES, "TRACE", run_trace), (IPC_CASES, "IPC", run_ipc)):
        for name, build in cases.items():
            description, steps, extra = build()
            doc: dict[str, Any] = {"layer": layer, "description": description}
            if "leases" in extra:
                doc["leases"] = extra.pop("leases")
            if extra:
                doc["config"] = extra
            doc["steps"] = steps
            doc["expected"] = rounded(run(doc))
            (HERE / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            print("wrote", name)


if __name__ == "__main__":
    _write_all()

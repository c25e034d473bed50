from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Metric,
    Summary,
    SummaryDataPoint,
)

from tests.topology.sketches import lat, latencies
from tests.topology.stages.golden_otlp import cases
from tests.topology.stages.otlp_builders import (
    CUMULATIVE,
    DELTA,
    OTEL_MS_BOUNDS,
    OTEL_S_BOUNDS,
    attrs,
    gauge,
    hist_point,
    histogram,
    histogram_of,
    metrics,
    ns,
    number_point,
    resource_metrics,
    sum_metric,
)
from tests.topology.wire.test_otlp import metric_requests
from topology.address import AddressBook
from topology.catalog import AddressKind, AddressLease
from topology.model import EdgePartial, Granularity, Layer, NodeKind, Side
from topology.sim.latency import LATENCY_SHAPES, latency_samples
from topology.sketch import LatencySketch
from topology.stages.ipc import ACCEPTED_METRICS, IpcObservation, IpcStage1, IpcStage2, address_peer
from topology.stats import EdgeStats
from topology.wire.otlp import OtlpDecodeError

W0 = 1_200.0  # a window start (60 s windows)
MID = math.sqrt(0.01 * 0.1)  # the geometric middle of an OTLP bucket (10, 100] ms


def run(
    *requests: ExportMetricsServiceRequest,
    watermark: float = 10_000.0,
    addresses: AddressBook | None = None,
    **kw: Any,
) -> tuple[list[EdgePartial], IpcStage1, IpcStage2]:
    s1, s2 = IpcStage1(**kw), IpcStage2(addresses)
    for r in requests:
        s1.add(r)
    return s2.process(s1.flush(watermark)), s1, s2


def by_edge(partials: list[EdgePartial]) -> dict[tuple[str, str, Side], EdgePartial]:
    out = {(p.key.source, p.key.target, p.side): p for p in partials}
    assert len(out) == len(partials)
    return out


# -- names, units, attributes ---------------------------------------------------------------------
SAMPLES = [0.003, 0.007, 0.007, 0.02, 0.3]
# 3 ms -> OTLP (0, 5 ms] -> its middle 2.5 ms; 7 ms -> (5, 10] -> 7.1 ms; 20 ms -> (10, 25] -> 15.8 ms;
# 300 ms -> (250, 500] -> 354 ms (geometric middles).
SAMPLES_HIST = lat(
    (0.0025, 1), (math.sqrt(0.005 * 0.01), 2), (math.sqrt(0.01 * 0.025), 1), (math.sqrt(0.25 * 0.5), 1)
)


@pytest.mark.parametrize(
    ("name", "unit", "bounds", "unit_s", "attrs", "protocol", "endpoint"),
    [
        (
            "rpc.client.duration",
            "ms",
            OTEL_MS_BOUNDS,
            1e-3,
            {"rpc.system": "grpc", "rpc.service": "inventory.Stock", "rpc.method": "Get"},
            "grpc",
            "inventory.Stock/Get",
        ),
        (
            "rpc.client.duration",
            "",
            OTEL_MS_BOUNDS,
            1e-3,
            {"rpc.system": "grpc", "rpc.service": "S"},
            "grpc",
            "S",
        ),
        (
            "rpc.client.call.duration",
            "s",
            OTEL_S_BOUNDS,
            1.0,
            {"rpc.system.name": "grpc", "rpc.service": "inventory.Stock", "rpc.method": "Get"},
            "grpc",
            "inventory.Stock/Get",
        ),
        (
            "rpc.client.call.duration",
            "",
            OTEL_S_BOUNDS,
            1.0,
            {"rpc.system.name": "connect_rpc"},
            "connect_rpc",
            None,
        ),
        (
            "http.client.duration",
            "ms",
            OTEL_MS_BOUNDS,
            1e-3,
            {"http.route": "/items/{id}"},
            "http",
            "/items/{id}",
        ),
        (
            "http.client.request.duration",
            "s",
            OTEL_S_BOUNDS,
            1.0,
            {"http.route": "/items/{id}"},
            "http",
            "/items/{id}",
        ),
    ],
)
def test_old_and_new_semantic_conventions_and_units_give_the_same_edge(
    name: str,
    unit: str,
    bounds: Sequence[float],
    unit_s: float,
    attrs: dict[str, Any],
    protocol: str,
    endpoint: str | None,
) -> None:
    a = {"server.address": "inventory.prod.svc.cluster.local", **attrs}
    point = hist_point(
        a, W0 + 5, len(SAMPLES), sum(SAMPLES) / unit_s, histogram_of(SAMPLES, bounds, unit_s), bounds
    )
    partials, s1, _ = run(metrics(resource_metrics("checkout", [histogram(name, unit, [point], DELTA)])))
    [p] = partials
    assert (p.key.layer, p.key.granularity, p.key.source, p.key.target) == (
        Layer.IPC,
        Granularity.APP,
        "checkout",
        "inventory",
    )
    assert p.side is Side.CLIENT and p.window_start == W0 and p.window_seconds == 60
    assert p.stats.requests == 5 and p.stats.errors == 0
    assert p.stats.latency == SAMPLES_HIST
    assert p.stats.latency_sum == pytest.approx(sum(SAMPLES))
    assert p.stats.protocol == protocol
    assert p.stats.endpoints == (() if endpoint is None else (endpoint,))
    assert p.stats.first_seen == p.stats.last_seen == W0 + 5
    assert s1.counters["points"] == 1 and s1.counters["series"] == 1


def test_spectator_client_and_server_timers_as_histograms() -> None:
    bounds = (0.001, 0.01, 0.1, 1.0)
    client = resource_metrics(
        "api",
        [
            histogram(
                "ipc.client.call",
                "s",
                [
                    hist_point(
                        {
                            "ipc.server.app": "inventory",
                            "ipc.endpoint": "/stock",
                            "ipc.protocol": "http",
                            "ipc.result": "success",
                            "ipc.status": "success",
                        },
                        W0 + 1,
                        3,
                        0.015,
                        [0, 3, 0, 0, 0],
                        bounds,
                    ),
                    hist_point(
                        {
                            "ipc.server.app": "inventory",
                            "ipc.endpoint": "/stock",
                            "ipc.protocol": "http",
                            "ipc.result": "failure",
                            "ipc.status": "timeout",
                        },
                        W0 + 1,
                        1,
                        2.0,
                        [0, 0, 0, 0, 1],
                        bounds,
                    ),
                ],
                DELTA,
            )
        ],
    )
    server = resource_metrics(
        "inventory",
        [
            histogram(
                "ipc.server.call",
                "s",
                [
                    hist_point(
                        {"ipc.client.app": "api", "ipc.endpoint": "/stock", "ipc.result": "success"},
                        W0 + 2,
                        3,
                        0.012,
                        [0, 3, 0, 0, 0],
                        bounds,
                    ),
                ],
                DELTA,
            )
        ],
    )
    edges = by_edge(run(metrics(client, server))[0])
    c = edges[("api", "inventory", Side.CLIENT)].stats
    s = edges[("api", "inventory", Side.SERVER)].stats
    # each series used one OTLP bucket, so its mean is exact: 3 calls in 15 ms -> 5 ms;
    # 1 call of 2 s (beyond the last bound, 1 s) -> 2 s; server: 3 calls in 12 ms -> 4 ms
    assert (c.requests, c.errors, c.latency, c.endpoints, c.protocol) == (
        4,
        1,
        lat((0.005, 3), (2.0, 1)),
        ("/stock",),
        "http",
    )
    assert (s.requests, s.errors, s.latency) == (3, 0, lat((0.004, 3)))


def _stat(
    service: str,
    peer_key: str,
    peer: str,
    result: str,
    count: float,
    total: float,
    mx: float,
    t: float,
    temporality: int = DELTA,
    start: float = 0.0,
) -> list[Metric]:
    name = "ipc.client.call" if peer_key == "ipc.server.app" else "ipc.server.call"
    base = {peer_key: peer, "ipc.endpoint": "/pay", "ipc.result": result}
    return [
        sum_metric(name, "", [number_point({**base, "statistic": "count"}, t, count, start)], temporality),
        sum_metric(
            name, "s", [number_point({**base, "statistic": "totalTime"}, t, total, start)], temporality
        ),
        gauge(name, "s", [number_point({**base, "statistic": "max"}, t, mx)]),
    ]


def test_spectator_statistic_form_puts_the_count_in_the_bucket_of_the_mean() -> None:
    req = metrics(
        resource_metrics(
            "web",
            _stat("web", "ipc.server.app", "payments", "success", 10.0, 0.5, 0.2, W0 + 3)
            + _stat("web", "ipc.server.app", "payments", "failure", 2.0, 4.0, 3.0, W0 + 3),
        ),
        resource_metrics(
            "payments", _stat("payments", "ipc.client.app", "web", "success", 12.0, 0.6, 0.1, W0 + 4)
        ),
    )
    partials, s1, _ = run(req)
    edges = by_edge(partials)
    c = edges[("web", "payments", Side.CLIENT)].stats
    # mean 0.05 s, mean 2 s
    assert (c.requests, c.errors, c.latency) == (12, 2, lat((0.05, 10), (2.0, 2)))
    assert c.latency_sum == pytest.approx(4.5)
    s = edges[("web", "payments", Side.SERVER)].stats
    assert (s.requests, s.errors, s.latency) == (12, 0, lat((0.05, 12)))  # mean 0.05 s
    assert s1.counters["ignored_points"] == 3  # the max statistics


def test_spectator_statistic_form_cumulative() -> None:
    reqs = [
        metrics(
            resource_metrics(
                "web",
                _stat(
                    "web",
                    "ipc.server.app",
                    "payments",
                    "success",
                    c,
                    tt,
                    0.1,
                    W0 + t,
                    CUMULATIVE,
                    start=W0 - 100,
                ),
            )
        )
        for t, c, tt in ((1, 100.0, 1.0), (11, 110.0, 1.2), (21, 130.0, 1.4))
    ]
    [p], s1, _ = run(*reqs)
    # deltas: 10 calls / 0.2 s and 20 calls / 0.2 s -> 30 calls, 0.4 s, mean 13.3 ms
    assert (p.stats.requests, p.stats.latency, s1.counters["baselines"]) == (30, lat((0.4 / 30, 30)), 2)
    assert p.stats.latency_sum == pytest.approx(0.4)


# -- cumulative -> delta ---------------------------------------------------------------------------
def test_cumulative_histograms_become_deltas_and_resets_are_detected() -> None:
    bounds = (0.01, 0.1)  # buckets: <=10 ms (-> 5 ms), (10, 100] (-> 31.6 ms), overflow (-> 200 ms)
    a = {"ipc.server.app": "ledger"}

    def at(t: float, start: float, counts: list[int]) -> ExportMetricsServiceRequest:
        total = 0.005 * counts[0] + 0.03 * counts[1] + 0.2 * counts[2]
        return metrics(
            resource_metrics(
                "billing",
                [
                    histogram(
                        "ipc.client.call",
                        "s",
                        [hist_point(a, W0 + t, sum(counts), total, counts, bounds, start=start)],
                    )
                ],
            )
        )

    reqs = [
        at(1, 100, [10, 0, 0]),  # baseline
        at(11, 100, [20, 5, 0]),  # +10, +5
        at(21, 100, [20, 5, 0]),  # nothing new
        at(31, 100, [3, 1, 0]),  # went down: reset, the new value is the delta: +3, +1
        at(41, 900, [4, 1, 1]),  # start time changed: reset: +4, +1, +1
        at(51, 900, [4, 3, 1]),  # +2 in the second bucket only
        at(52, 900, [2, 6, 1]),  # count up but a bucket went down: reset: +2, +6, +1
    ]
    [p], s1, _ = run(*reqs)
    assert s1.counters["baselines"] == 1 and s1.counters["resets"] == 3
    assert p.stats.requests == 15 + 4 + 6 + 2 + 9
    # the +2 of t=51 is a point with one bucket: at its exact mean, 30 ms
    assert p.stats.latency == lat((0.005, 10 + 3 + 4 + 2), (MID, 5 + 1 + 1 + 6), (0.03, 2), (0.2, 1 + 1))
    assert p.stats.latency_sum == pytest.approx(0.005 * 19 + 0.03 * 15 + 0.2 * 2)
    assert p.stats.first_seen == W0 + 11 and p.stats.last_seen == W0 + 52


def test_a_series_whose_window_was_emitted_adds_its_late_points_to_a_new_observation() -> None:
    # Consecutive deltas of one cumulative series are summed per window; once the window is emitted, a late
    # point of the same series and window starts a new observation (histogram and statistic forms).
    bounds = (0.01, 0.1)
    s1 = IpcStage1()

    def add(t: float, counts: list[int], calls: float) -> None:
        total = 0.005 * counts[0] + 0.03 * counts[1] + 0.2 * counts[2]
        peer = {"ipc.server.app": "ledger"}
        point = hist_point(peer, W0 + t, sum(counts), total, counts, bounds, start=100)
        stat = _stat("billing", "ipc.server.app", "orders", "success", calls, calls * 0.02, 0.1, W0 + t,
                     CUMULATIVE, start=100)
        s1.add(metrics(resource_metrics("billing", [histogram("ipc.client.call", "s", [point]), *stat])))

    add(1, [10, 0, 0], 100.0)  # baselines
    add(11, [20, 5, 0], 110.0)  # +10, +5; 10 calls in 0.2 s
    add(21, [22, 9, 1], 130.0)  # +2, +4, +1; 20 calls in 0.4 s
    ledger, orders = sorted(s1.flush(W0 + 60), key=lambda o: o.peer)
    assert (ledger.stats.requests, ledger.stats.latency) == (22, lat((0.005, 12), (MID, 9), (0.2, 1)))
    assert (orders.stats.requests, orders.stats.latency) == (30, lat((0.02, 30)))
    add(31, [25, 10, 1], 140.0)  # late for the emitted window: +3, +1; 10 calls
    assert s1.counters["late_points"] == 2
    ledger, orders = sorted(s1.flush(W0 + 120), key=lambda o: o.peer)
    assert (ledger.window_start, ledger.stats.requests, ledger.stats.latency) == (
        W0, 4, lat((0.005, 3), (MID, 1)))
    assert (orders.window_start, orders.stats.requests, orders.stats.latency) == (W0, 10, lat((0.02, 10)))
    assert ledger.stats.latency_sum == pytest.approx(0.005 * 3 + 0.03)
    assert orders.stats.latency_sum == pytest.approx(0.2)


def test_cumulative_sums_and_resets() -> None:
    a = {"ipc.server.app": "ledger", "statistic": "count"}
    reqs = [
        metrics(
            resource_metrics(
                "billing", [sum_metric("ipc.client.call", "", [number_point(a, W0 + t, v, start=start)])]
            )
        )
        for t, v, start in ((1, 100, 50), (2, 130, 50), (3, 20, 50), (4, 25, 60), (5, 26, 60))
    ]
    [p], s1, _ = run(*reqs)
    assert p.stats.requests == 30 + 20 + 25 + 1
    assert (s1.counters["baselines"], s1.counters["resets"]) == (1, 2)


def test_series_cache_is_bounded_and_evictions_are_counted() -> None:
    def point(peer: str, t: float, n: int) -> ExportMetricsServiceRequest:
        return metrics(
            resource_metrics(
                "billing",
                [
                    sum_metric(
                        "ipc.client.call", "", [number_point({"ipc.server.app": peer}, W0 + t, n, start=W0)]
                    )
                ],
            )
        )

    reqs = [
        point("a", 1, 10),
        point("b", 2, 10),
        point("c", 3, 10),  # a is evicted by c
        point("a", 4, 15),
        point("b", 5, 15),
        point("c", 6, 15),
    ]  # a is a baseline again, evicting b, ...
    partials, s1, _ = run(*reqs, max_series=2)
    assert s1.counters["evictions"] == 4 and s1.counters["baselines"] == 6
    assert partials == []  # every delta was lost to an eviction: counted, never invented
    partials, s1, _ = run(*reqs, max_series=3)
    assert s1.counters["evictions"] == 0 and {p.key.target: p.stats.requests for p in partials} == {
        "a": 5,
        "b": 5,
        "c": 5,
    }


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attrs", "error"),
    [
        ({"ipc.result": "failure"}, True),
        ({"ipc.result": "success", "ipc.status": "success"}, False),
        ({"rpc.grpc.status_code": 0}, False),
        ({"rpc.grpc.status_code": 14}, True),
        ({"rpc.grpc.status_code": "14"}, True),
        ({"http.response.status_code": 503}, True),
        ({"http.response.status_code": "502"}, True),
        ({"http.response.status_code": 404}, False),
        ({"http.response.status_code": 200}, False),
        ({"http.status_code": 500}, True),
        ({"http.status_code": 499}, False),
        ({"error.type": "java.net.SocketTimeoutException"}, True),
        ({"error.type": "500", "http.response.status_code": 500}, True),
        ({}, False),
    ],
)
def test_error_rules(attrs: dict[str, Any], error: bool) -> None:
    a = {"service.peer.name": "ledger", **attrs}
    point = hist_point(a, W0 + 1, 4, 0.04, [4, 0], (0.1,))
    [p], _, _ = run(
        metrics(resource_metrics("billing", [histogram("http.client.request.duration", "s", [point], DELTA)]))
    )
    assert p.stats.requests == 4 and p.stats.errors == (4 if error else 0)


# -- peers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attrs", "target"),
    [
        (
            {"ipc.server.app": "a", "service.peer.name": "b", "peer.service": "c", "server.address": "d.x"},
            "a",
        ),
        ({"service.peer.name": "b", "peer.service": "c", "server.address": "d.x"}, "b"),
        ({"peer.service": "c", "server.address": "d.x", "net.peer.name": "e.x"}, "c"),
        ({"server.address": "Orders-API.prod.svc.cluster.local", "net.peer.name": "e.x"}, "orders-api"),
        ({"net.peer.name": "e.svc.local"}, "e"),
        ({"server.address": "f.internal:8443"}, "f"),
    ],
)
def test_client_target_is_the_first_present_identity(attrs: dict[str, Any], target: str) -> None:
    point = hist_point(attrs, W0 + 1, 1, 0.01, [1, 0], (0.1,))
    [p], _, _ = run(
        metrics(resource_metrics("web", [histogram("rpc.client.call.duration", "s", [point], DELTA)]))
    )
    assert p.key.target == target and p.target_kind is NodeKind.SERVICE


def test_ip_peers_are_resolved_with_the_lease_valid_at_the_point() -> None:
    book = AddressBook(
        [
            AddressLease("10.0.0.5", "ledger", AddressKind.WORKLOAD, 0.0, 1_500.0, "ledger-prod-v001"),
            AddressLease("10.0.0.5", "audit", AddressKind.WORKLOAD, 1_500.0, None, "audit-prod-v002"),
            AddressLease("10.0.0.9", "orders-db", AddressKind.DATABASE, 0.0),
            AddressLease("10.0.0.7", "lb-payments", AddressKind.LOAD_BALANCER, 0.0),
            AddressLease("10.0.0.8", "partner-bank", AddressKind.EXTERNAL, 0.0),
        ]
    )

    def call(addr: str, t: float) -> Any:
        return hist_point({"server.address": addr, "server.port": 443}, t, 2, 0.02, [2, 0], (0.1,))

    req = metrics(
        resource_metrics(
            "web",
            [
                histogram(
                    "http.client.request.duration",
                    "s",
                    [
                        call("10.0.0.5", 1_210),
                        call("10.0.0.5:8080", 1_600),
                        call("10.0.0.9", 1_210),
                        call("10.0.0.7", 1_210),
                        call("10.0.0.8", 1_210),
                        call("10.9.9.9", 1_210),
                        call("::ffff:10.0.0.9", 1_211),
                    ],
                    DELTA,
                )
            ],
        )
    )
    partials, s1, s2 = run(req, addresses=book)
    got = {(p.window_start, p.key.target, p.target_kind, p.stats.requests) for p in partials}
    assert got == {
        (1_200, "ledger", NodeKind.SERVICE, 2),
        (1_560, "audit", NodeKind.SERVICE, 2),  # the same address, a later owner
        (1_200, "orders-db", NodeKind.DATABASE, 4),
        (1_200, "lb-payments", NodeKind.UNINSTRUMENTED, 2),
        (1_200, "partner-bank", NodeKind.EXTERNAL, 2),
        (1_200, "ip:10.9.9.9", NodeKind.UNKNOWN, 2),
    }
    # the two spellings of 10.0.0.9 are one peer already in stage 1: 5 observations resolved
    assert s2.counters["unresolved"] == 1 and s2.counters["resolved"] == 5
    assert {o for o in s1.counters} >= {"points", "series", "evictions", "resets", "unknown_metrics"}


def test_address_peer_forms() -> None:
    assert address_peer("Payments.svc.local") == ("payments", False)
    assert address_peer("payments") == ("payments", False)
    assert address_peer("10.1.2.3") == ("10.1.2.3", True)
    assert address_peer("10.1.2.3:80") == ("10.1.2.3", True)
    assert address_peer("[2001:db8::1]:443") == ("2001:db8::1", True)
    assert address_peer("2001:db8::1") == ("2001:db8::1", True)
    assert address_peer("::ffff:10.1.2.3") == ("10.1.2.3", True)
    assert address_peer("  ") is None and address_peer(":80") is None


def test_what_makes_no_edge_is_counted() -> None:
    point = hist_point({"rpc.system": "grpc", "rpc.method": "Get"}, W0 + 1, 5, 0.05, [5, 0], (0.1,))
    req = metrics(
        resource_metrics(
            "inventory",
            [
                histogram("rpc.server.duration", "ms", [point], DELTA),  # no caller
                histogram("rpc.client.duration", "ms", [point], DELTA),  # no callee
                histogram("jvm.gc.duration", "s", [point], DELTA),
            ],
        ),
        resource_metrics(None, [histogram("ipc.client.call", "s", [point], DELTA)]),
    )
    partials, s1, _ = run(req)
    assert partials == []
    assert (s1.counters["no_peer"], s1.counters["unknown_metrics"], s1.counters["no_service"]) == (2, 1, 1)
    assert s1.counters["points"] == 3


def test_several_services_in_one_request_and_both_entry_points_agree() -> None:
    def req() -> ExportMetricsServiceRequest:
        return metrics(
            *[
                resource_metrics(
                    svc,
                    [
                        histogram(
                            "ipc.client.call",
                            "s",
                            [hist_point({"ipc.server.app": peer}, W0 + 1, n, 0.01 * n, [n, 0], (0.1,))],
                            DELTA,
                        )
                    ],
                    service_instance_id=f"{svc}-1",
                )
                for svc, peer, n in (("a", "b", 1), ("b", "c", 2), ("c", "a", 3))
            ]
        )

    via_request, _, _ = run(req())
    s1 = IpcStage1()
    s1.add_serialized(req().SerializeToString())
    via_bytes = IpcStage2().process(s1.flush(10_000))
    assert via_request == via_bytes
    assert {(p.key.source, p.key.target, p.stats.requests) for p in via_bytes} == {
        ("a", "b", 1),
        ("b", "c", 2),
        ("c", "a", 3),
    }


def test_malformed_bytes_raise_and_are_counted() -> None:
    s1 = IpcStage1()
    with pytest.raises(OtlpDecodeError):
        s1.add_serialized(b"\x0a\xff\xff")
    assert s1.counters["bad_requests"] == 1 and s1.counters["requests"] == 0


# -- windows ------------------------------------------------------------------------------------
def test_windows_are_emitted_once_the_watermark_passes_their_end_and_late_points_counted() -> None:
    s1 = IpcStage1()

    def add(t: float) -> None:
        s1.add(
            metrics(
                resource_metrics(
                    "a",
                    [
                        histogram(
                            "ipc.client.call",
                            "s",
                            [hist_point({"ipc.server.app": "b"}, t, 1, 0.01, [1, 0], (0.1,))],
                            DELTA,
                        )
                    ],
                )
            )
        )

    add(W0 + 10)
    add(W0 + 70)
    assert s1.flush(W0 + 59) == []
    [o] = s1.flush(W0 + 60)
    assert (o.window_start, o.stats.requests) == (W0, 1)
    add(W0 + 20)  # late for an emitted window: still delivered, and counted
    assert s1.counters["late_points"] == 1
    out = s1.flush(W0 + 120)
    assert sorted((o.window_start, o.stats.requests) for o in out) == [(W0, 1), (W0 + 60, 1)]
    assert s1.counters["observations"] == 3


def test_exponential_histograms_and_summaries() -> None:
    p = ExponentialHistogramDataPoint(
        attributes=attrs({"peer.service": "x"}),
        time_unix_nano=ns(W0 + 1),
        count=3,
        sum=12.0,
        scale=0,
        zero_count=1,
    )
    p.positive.offset = 2  # bucket (4, 8] ms -> its middle in relative terms, 16/3 ms
    p.positive.bucket_counts.extend([2])
    exp = Metric(
        name="rpc.client.duration",
        unit="ms",
        exponential_histogram=ExponentialHistogram(data_points=[p], aggregation_temporality=DELTA),
    )
    summary = Metric(
        name="rpc.client.duration",
        unit="ms",
        summary=Summary(
            data_points=[
                SummaryDataPoint(
                    attributes=p.attributes,
                    start_time_unix_nano=ns(W0),
                    time_unix_nano=ns(W0 + t),
                    count=c,
                    sum=s,
                )
                for t, c, s in ((2, 10, 100.0), (3, 14, 180.0))
            ]
        ),
    )
    [e], _, _ = run(metrics(resource_metrics("w", [exp, summary])))
    # exponential: zero bucket 1, 2 at 5.3 ms; summary delta: 4 calls, 80 ms -> mean 20 ms
    want = lat((0.016 / 3, 2), (0.02, 4), zero=1)
    assert (e.key.target, e.stats.requests, e.stats.latency) == ("x", 7, want)
    assert e.stats.latency_sum == pytest.approx(0.012 + 0.08)


def _exp_point(t: float, counts: dict[int, int], scale: int, zero: int = 0) -> ExponentialHistogramDataPoint:
    n = sum(counts.values())
    p = ExponentialHistogramDataPoint(
        attributes=attrs({"peer.service": "x"}), start_time_unix_nano=ns(W0 - 60), time_unix_nano=ns(W0 + t),
        count=n + zero, sum=0.01 * n, scale=scale, zero_count=zero,
    )
    lo = min(counts)
    p.positive.offset = lo
    p.positive.bucket_counts.extend([counts.get(i, 0) for i in range(lo, max(counts) + 1)])
    return p


def _exp_metric(*points: ExponentialHistogramDataPoint, temporality: int = DELTA) -> Metric:
    return Metric(name="rpc.client.call.duration", unit="s",
                  exponential_histogram=ExponentialHistogram(data_points=list(points),
                                                             aggregation_temporality=temporality))


def test_an_exponential_histogram_finer_than_ours_keeps_its_buckets() -> None:
    # scale 7 in seconds: kept bucket for bucket (ours is scale 5)
    counts = {-850: 3, -849: 1, -700: 2}
    [e], _, _ = run(metrics(resource_metrics("w", [_exp_metric(_exp_point(1, counts, 7, zero=1))])))
    assert e.stats.latency == LatencySketch.from_counts(counts, 1, 7)
    assert e.stats.latency.scale == 7 and e.stats.requests == 7
    # cumulative: the deltas of each bucket, still at scale 7
    later = {-850: 5, -849: 1, -700: 2, -600: 4}
    cumulative = _exp_metric(_exp_point(1, counts, 7), _exp_point(2, later, 7), temporality=CUMULATIVE)
    [e], _, _ = run(metrics(resource_metrics("w", [cumulative])))
    assert e.stats.latency == LatencySketch.from_counts({-850: 2, -600: 4}, 0, 7)
    # coarser than ours (scale 2): each bucket at its middle, at our scale
    [e], _, _ = run(metrics(resource_metrics("w", [_exp_metric(_exp_point(1, {-20: 4}, 2))])))
    assert e.stats.latency == LatencySketch.from_otlp(2, {-20: 4}, 0)
    assert e.stats.latency.scale == 5


def test_fine_explicit_buckets_keep_quantiles_within_2_percent_of_numpy() -> None:
    # bounds 1% apart from 1 ms to 10 s: the geometric middles are within 0.5%, plus the sketch's 1.1%
    bounds = tuple(0.001 * 1.01**k for k in range(926))
    for shape in LATENCY_SHAPES:
        xs = latency_samples(shape, 5000).clip(0.00101, 9.9)
        point = hist_point({"ipc.server.app": "b"}, W0 + 1, len(xs), float(xs.sum()),
                           histogram_of(xs.tolist(), bounds), bounds)
        [p], _, _ = run(metrics(resource_metrics("a", [histogram("ipc.client.call", "s", [point], DELTA)])))
        for q in (0.5, 0.9, 0.99):
            want = float(np.quantile(xs, q))
            got = p.stats.latency_quantile(q)
            assert got is not None and abs(got - want) <= 0.02 * want, (shape, q, got, want)


# -- the record between the stages ---------------------------------------------------------------
observations = st.builds(
    IpcObservation,
    window_start=st.integers(0, 2**40).map(lambda x: x * 60),
    window_seconds=st.just(60),
    side=st.sampled_from([Side.CLIENT, Side.SERVER]),
    service=st.text(min_size=1, max_size=10),
    peer=st.text(min_size=1, max_size=10),
    peer_is_ip=st.booleans(),
    stats=st.builds(
        EdgeStats,
        requests=st.integers(0, 10**9),
        errors=st.integers(0, 10**9),
        latency=latencies,
        latency_sum=st.floats(0, 1e6),
        protocol=st.one_of(st.none(), st.text(max_size=5)),
        endpoints=st.lists(st.text(max_size=5), max_size=5).map(lambda e: tuple(sorted(set(e)))),
        first_seen=st.floats(0, 2e9),
        last_seen=st.floats(0, 2e9),
    ),
)


@given(observations)
def test_observation_dict_round_trip(o: IpcObservation) -> None:
    import json

    assert IpcObservation.from_dict(json.loads(json.dumps(o.to_dict()))) == o
    assert o.target_key == (o.peer if o.side is Side.CLIENT else o.service)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"window_start": 60, "window_seconds": 60, "side": "CLIENT", "service": "", "peer": "b"},
        {"window_start": "60", "window_seconds": 60, "side": "CLIENT", "service": "a", "peer": "b"},
        {"window_start": 60, "window_seconds": 60, "side": "PAIR", "service": "a", "peer": "b"},
        {
            "window_start": 60,
            "window_seconds": 60,
            "side": "CLIENT",
            "service": "a",
            "peer": "b",
            "stats": [],
        },
    ],
)
def test_observation_from_dict_rejects_bad_records(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        IpcObservation.from_dict(bad)


def test_rebucketing_uses_the_middle_of_each_bucket_or_the_exact_mean_of_a_single_bucket() -> None:
    bounds = (0.001, 0.01, 0.1, 1.0)

    def one(counts: list[int], total: float) -> LatencySketch:
        point = hist_point({"ipc.server.app": "b"}, W0 + 1, sum(counts), total, counts, bounds)
        [p], _, _ = run(metrics(resource_metrics("a", [histogram("ipc.client.call", "s", [point], DELTA)])))
        return p.stats.latency

    # several buckets: each count at its bucket's geometric middle (3.2 ms, 31.6 ms, 316 ms)
    assert one([0, 2, 3, 1, 0], 0.5) == lat((math.sqrt(1e-5), 2), (math.sqrt(1e-3), 3), (math.sqrt(0.1), 1))
    # one bucket: the mean (9 ms) ...
    assert one([0, 4, 0, 0, 0], 0.036) == lat((0.009, 4))
    # ... unless the mean contradicts the bucket (sum says 50 ms, buckets say <= 10 ms): the middle
    assert one([0, 4, 0, 0, 0], 0.2) == lat((math.sqrt(1e-5), 4))


# -- golden files ---------------------------------------------------------------------------------------
GOLDEN = Path(__file__).parent / "golden_otlp"


@pytest.mark.parametrize("name", sorted(cases.IPC_CASES))
def test_golden(name: str) -> None:
    doc = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert doc["layer"] == "IPC"
    _, steps, _ = cases.IPC_CASES[name]()
    assert doc["steps"] == json.loads(json.dumps(steps)), "input differs from its builder: rebuild and review"
    assert cases.rounded(cases.run_ipc(doc)) == doc["expected"]


def test_eviction_prefers_series_idle_since_the_last_flush() -> None:
    s1 = IpcStage1(max_series=2)

    def point(peer: str, t: float, n: int) -> ExportMetricsServiceRequest:
        return metrics(
            resource_metrics(
                "billing",
                [
                    sum_metric(
                        "ipc.client.call", "", [number_point({"ipc.server.app": peer}, W0 + t, n, start=W0)]
                    )
                ],
            )
        )

    s1.add(point("idle", 1, 10))
    s1.add(point("busy", 2, 10))
    s1.flush(W0)  # a new epoch: neither has been seen in it
    s1.add(point("busy", 3, 15))
    s1.add(point("new", 4, 10))  # the cache is full: "idle" goes, "busy" keeps its baseline
    s1.add(point("busy", 5, 18))
    [o] = s1.flush(W0 + 60)
    assert (o.peer, o.stats.requests, s1.counters["evictions"]) == ("busy", 8, 1)


# -- bad input never escapes as anything but OtlpDecodeError -----------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_rejected_or_counted(data: bytes) -> None:
    s1 = IpcStage1()
    try:
        s1.add_serialized(data)
    except OtlpDecodeError:
        assert s1.counters["bad_requests"] == 1
    IpcStage2().process(s1.flush(float("inf")))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric_requests(), st.sampled_from(sorted(ACCEPTED_METRICS)))
def test_arbitrary_valid_requests_never_break_the_stages(req: ExportMetricsServiceRequest, name: str) -> None:
    for rm in req.resource_metrics:  # give every metric a name the stage reads, keep the rest arbitrary
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                m.name = name
    s1 = IpcStage1(max_series=3)
    s1.add(req)
    s1.add(req)
    partials = IpcStage2().process(s1.flush(float("inf")))
    assert all(p.stats.requests > 0 and p.key.layer is Layer.IPC for p in partials)

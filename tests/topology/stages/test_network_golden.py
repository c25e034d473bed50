"""Golden scenarios for the NETWORK pipeline: input JSON -> expected edge windows JSON.

Each scenario's expected file was produced by the pipeline and then checked by hand; the tests
below additionally assert the facts each scenario exists for, written from the scenario's story
and not from the output. Regenerate after an intended change with ``UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from .golden_network import GOLDEN, edges, run

SCENARIOS = sorted(p.name.removesuffix(".input.json") for p in GOLDEN.glob("*.input.json"))
T0 = 1_700_000_040


def _run(name: str) -> dict[str, Any]:
    spec = json.loads((GOLDEN / f"{name}.input.json").read_text())
    assert spec["t0"] == T0
    return run(spec)


@pytest.mark.parametrize("name", SCENARIOS)
def test_golden(name: str) -> None:
    got = _run(name)
    path = GOLDEN / f"{name}.expected.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text())


def test_every_scenario_has_an_expected_file() -> None:
    assert len(SCENARIOS) >= 9
    for name in SCENARIOS:
        assert (GOLDEN / f"{name}.expected.json").exists(), name


def _pairs(out: dict[str, Any], granularity: str = "APP") -> set[tuple[str, str]]:
    return {(s, t) for (_, s, t) in edges(out, granularity)}


def test_load_balancer_collapses_into_direct_edges() -> None:
    out = _run("lb_collapse")
    e = edges(out)
    assert _pairs(out) == {("web", "api"), ("mobile-gw", "api"), ("web", "lb-legacy"),
                           ("mobile-gw", "search")}
    web_api = e[(T0, "web", "api")]
    assert web_api["stats"]["intermediaries"] == ["lb-api"]
    assert web_api["stats"]["connections"] == 3 and web_api["stats"]["bytes_sent"] == 1500
    assert web_api["stats"]["ports"] == [8080]  # the backend's port, not the listener's 443
    assert e[(T0, "mobile-gw", "search")]["stats"]["intermediaries"] == ["gw-public"]
    legacy = e[(T0, "web", "lb-legacy")]
    assert legacy["target_kind"] == "UNINSTRUMENTED" and "intermediaries" not in legacy["stats"]
    assert _pairs(out, "CLUSTER") == {
        ("web-prod-v001", "api-prod-v007"), ("mobile-gw-prod-v003", "api-prod-v007"),
        ("web-prod-v001", "lb-legacy"), ("mobile-gw-prod-v003", "search-prod-v001"),
    }


def test_nat_server_records_only_annotate_client_edges() -> None:
    out = _run("nat_collapse")
    e = edges(out)
    assert _pairs(out) == {("batch", "billing"), ("reports", "billing")}
    assert e[(T0, "batch", "billing")]["stats"]["intermediaries"] == ["nat-egress"]
    assert e[(T0, "batch", "billing")]["stats"]["connections"] == 2
    assert e[(T0, "reports", "billing")]["stats"]["intermediaries"] == ["nat-egress"]
    assert out["counters"]["stage2"]["nat_unmatched"] == 1  # ledger's NAT record: no client edge into ledger


def test_address_reuse_resolves_with_the_owner_at_flow_start() -> None:
    out = _run("address_reuse")
    e = edges(out)
    assert set(e) == {
        (T0, "caller", "old-svc"), (T0, "caller", "legacy-svc"), (T0, "caller", "fresh-svc"),
        (T0 + 60, "caller", "old-svc"), (T0 + 60, "caller", "new-svc"),
        (T0 + 120, "caller", "new-svc"),
    }
    assert e[(T0 + 60, "caller", "old-svc")]["stats"]["connections"] == 1
    assert e[(T0 + 60, "caller", "new-svc")]["stats"]["connections"] == 1
    assert e[(T0 + 120, "caller", "new-svc")]["stats"]["connections"] == 3


def test_kafka_consumer_is_never_inverted() -> None:
    out = _run("kafka_consumer")
    e = edges(out)
    assert _pairs(out) == {("recs-consumer", "kafka-broker"), ("events-producer", "kafka-broker"),
                           ("recs-consumer", "msk-orders")}
    consumer = e[(T0, "recs-consumer", "kafka-broker")]["stats"]
    assert consumer["connections"] == 2  # both ends reported both connections: counted once
    assert consumer["bytes_received"] == 50_001_000 and consumer["bytes_sent"] == 2_100
    assert e[(T0, "recs-consumer", "msk-orders")]["target_kind"] == "MESSAGING"


def test_databases_and_external_hosts_are_virtual_nodes() -> None:
    out = _run("database_virtual")
    e = edges(out)
    assert _pairs(out) == {("orders-api", "orders-db"), ("billing", "orders-db"),
                           ("orders-api", "payments-provider"), ("billing", "session-cache")}
    assert e[(T0, "orders-api", "orders-db")]["target_kind"] == "DATABASE"
    assert e[(T0, "orders-api", "orders-db")]["stats"]["connections"] == 5  # primary + replica address
    assert e[(T0, "orders-api", "payments-provider")]["target_kind"] == "EXTERNAL"
    cluster = edges(out, "CLUSTER")[(T0, "orders-api-prod-v004", "orders-db")]
    assert cluster["target_kind"] == "DATABASE" and cluster["target_app"] is None
    assert cluster["source_app"] == "orders-api"


def test_both_sides_are_not_double_counted() -> None:
    out = _run("both_sides")
    stats = edges(out)[(T0, "checkout", "cart")]["stats"]
    assert (stats["connections"], stats["bytes_sent"], stats["bytes_received"]) == (5, 500, 5000)
    assert _pairs(out) == {("checkout", "cart")}


def test_late_data_re_emits_the_whole_window_and_grace_drops() -> None:
    out = _run("late_data")
    s = out["steps"]
    first = [w for w in s[0]["windows"] if w["granularity"] == "APP"]
    assert [(w["window_start"], w["stats"]["connections"]) for w in first] == [(T0, 2)]
    second = [w for w in s[1]["windows"] if w["granularity"] == "APP"]
    assert [(w["window_start"], w["stats"]["connections"]) for w in second] == [(T0, 5), (T0 + 60, 1)]
    assert s[2]["windows"] == [] and s[3]["windows"] == []
    assert out["counters"]["stage2"]["late_dropped"] == 1
    assert out["counters"]["final"]["re_emitted"] == 2  # APP and CLUSTER window of t0


def test_unknown_addresses_become_ip_nodes() -> None:
    out = _run("unknown_addresses")
    e = edges(out)
    assert _pairs(out) == {("web", "ip:10.9.9.9"), ("ip:10.9.9.8", "web"), ("web", "ip:10.0.19.9"),
                           ("web", "ip:2001:db8::7")}
    assert e[(T0, "ip:10.9.9.8", "web")]["source_kind"] == "UNKNOWN"
    assert e[(T0, "web", "ip:10.0.19.9")]["target_kind"] == "UNKNOWN"  # its lease starts later


def test_vpc_flow_logs_resolve_both_ends() -> None:
    out = _run("vpc_flow_logs")
    e = edges(out)
    assert _pairs(out) == {("web", "api"), ("web", "search")}
    web_api = e[(T0, "web", "api")]["stats"]
    assert (web_api["connections"], web_api["bytes_sent"], web_api["bytes_received"]) == (1, 550, 5000)
    assert e[(T0, "web", "search")]["stats"]["intermediaries"] == ["lb-search"]
    assert out["counters"]["vpc"]["nodata"] == 1 and out["counters"]["vpc"]["skipdata"] == 1
    assert out["counters"]["vpc"]["rejected"] == 1
    assert [n for n, _ in out["vpc_errors"]] == [9]

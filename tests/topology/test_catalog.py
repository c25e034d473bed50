"""The record parsers of topology/catalog.py (issue 8, validate fully): any JSON gives a record or a
ValueError naming the field, never another exception; a record that parses holds only what queries
can serve (names within NAME_MAX, tier 0-9, http(s) links of known kinds, finite times), and its
``to_dict`` parses back to itself. Admission over arbitrary JSON gives a verdict and never raises."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topology.admit import admit_catalog, admit_health, admit_leases
from topology.catalog import LINK_KINDS, NAME_MAX, TIER_MAX, AddressLease, HealthEvent, ServiceInfo

NOW = 1_800_000_000.0
TEXTS = ["x" * (NAME_MAX + 1), "https://a.example/x", "javascript:x", "HEALTHY", "LOAD_BALANCER", "10.0.0.1",
         "::1", "logs"]
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
           | st.text(max_size=8) | st.sampled_from(TEXTS))
KEYS = st.sampled_from([*LINK_KINDS, "team", "email", "x"])
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8)
FIELDS = ["name", "tier", "domain", "owner", "clusters", "links", "service", "status", "at", "reason", "ip",
          "owner", "kind", "start", "end", "cluster"]
RECORDS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _parsed(parse: Any, d: dict[str, Any]) -> Any:
    try:
        return parse(d)
    except ValueError:  # BadTime and OverflowError's cousins included: the field is named in the text
        return None


@settings(max_examples=400, deadline=None)
@given(d=RECORDS)
def test_a_catalog_record_parses_only_into_what_queries_can_serve(d: dict[str, Any]) -> None:
    info = _parsed(ServiceInfo.from_dict, d)
    if info is None:
        return
    assert 0 < len(info.name) <= NAME_MAX
    assert info.tier is None or (type(info.tier) is int and 0 <= info.tier <= TIER_MAX)
    assert info.domain is None or 0 < len(info.domain) <= NAME_MAX
    assert set(info.links) <= set(LINK_KINDS)
    assert all(u.lower().startswith(("http://", "https://")) for u in info.links.values())
    assert all(isinstance(c, str) and 0 < len(c) <= NAME_MAX for c in info.clusters)
    assert ServiceInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


@settings(max_examples=400, deadline=None)
@given(d=RECORDS)
def test_health_and_lease_records_parse_with_finite_times_and_text(d: dict[str, Any]) -> None:
    event = _parsed(HealthEvent.from_dict, d)
    if event is not None:
        assert math.isfinite(event.at) and (event.reason is None or isinstance(event.reason, str))
        assert HealthEvent.from_dict(event.to_dict()) == event
    lease = _parsed(AddressLease.from_dict, d)
    if lease is not None:
        assert math.isfinite(lease.start) and (lease.end is None or lease.start <= lease.end < math.inf)
        assert AddressLease.from_dict(lease.to_dict()) == lease


@settings(max_examples=200, deadline=None)
@given(body=st.one_of(st.binary(max_size=64), st.lists(RECORDS, max_size=3).map(_json), VALUES.map(_json)))
def test_admission_of_any_json_records_gives_a_verdict(body: bytes) -> None:
    for admit in (admit_catalog, admit_health, admit_leases):
        adm = admit(body, NOW)
        assert (adm.kept is None) == bool(adm.rejected)
        assert adm.kept is not None or adm.rejected[0].reason.split(":")[0] in (
            "decode", "schema", "timestamp", "empty")


@pytest.mark.parametrize(("d", "fragment"), [
    ({"name": "a", "tier": 10}, "'tier' must be an integer from 0 to 9"),
    ({"name": "a", "tier": True}, "'tier'"),
    ({"name": "a", "links": {"logs": "https://"}}, "http or https URL"),
    ({"name": "a", "links": {"logs": "http://[::1"}}, "not a URL"),
    ({"name": "a", "owner": {"team": "t", "oncall": "x" * 1001}}, "longer than 1000"),
    ({"name": "a" * (NAME_MAX + 1)}, f"longer than {NAME_MAX}"),
])
def test_each_rule_names_its_field(d: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        ServiceInfo.from_dict(d)
    assert fragment in str(e.value)


@pytest.mark.parametrize("seed", [1, 42])
def test_the_simulated_catalog_passes_admission_whole(seed: int) -> None:
    """simulate --http and the Kafka meta worker send the fleet's catalog as one batch: one entry the
    checks refuse (a 'runbook' link kind did) would refuse them all."""
    from topology.sim import generate_fleet

    fleet = generate_fleet(services=400, seed=seed)
    records = [fleet.service_info(a).to_dict() for a in fleet.apps.values()]
    assert any(r["links"] for r in records)
    adm = admit_catalog(_json(records), NOW)
    assert adm.reason is None and adm.items == len(records)

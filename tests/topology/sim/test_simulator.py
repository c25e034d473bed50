"""The simulator's emissions: deterministic, decodable with the real codecs, and well-formed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from topology.catalog import AddressLease, HealthEvent, HealthState, ServiceInfo
from topology.sim import SimConfig, Simulator, generate_fleet
from topology.wire import flow

from .conftest import START, STEP, Run, simulate
from .reference import attrs

ROOT = Path(__file__).resolve().parents[3]


def _digest(r: Run) -> str:
    h = hashlib.sha256()
    for em in [r.initial, *r.steps]:
        for part in (em.flow_batches, em.metrics, em.spans):
            for b in part:
                h.update(b)
        for rec in (*em.catalog, *em.health, *em.leases):
            h.update(json.dumps(rec.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(r.sim.truth(), sort_keys=True).encode())
    return h.hexdigest()


def test_same_seed_gives_identical_bytes_and_truth(run: Run) -> None:
    again = simulate()
    assert _digest(again) == _digest(run)
    assert again.sim.truth() == run.sim.truth()


def test_a_different_seed_gives_different_output(run: Run) -> None:
    other = simulate(seed=8)
    assert _digest(other) != _digest(run)


_SCRIPT = """
import hashlib, json, sys
from topology.sim import Simulator, generate_fleet
sim = Simulator(generate_fleet(40, 11), seed=11, start=1_700_000_000.0)
h = hashlib.sha256()
for i in range(6):
    em = sim.step(1_700_000_000.0 + 10 * i, 10.0)
    for b in (*em.flow_batches, *em.metrics, *em.spans):
        h.update(b)
h.update(json.dumps(sim.truth()).encode())
print(h.hexdigest())
"""


def test_output_does_not_depend_on_the_process_hash_seed() -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_every_flow_batch_decodes_with_one_host_and_local_workloads(run: Run) -> None:
    fleet = run.sim.fleet
    clusters = {c for em in [run.initial, *run.steps] for info in em.catalog for c in info.clusters}
    total = 0
    for em in run.steps:
        hosts = [flow.decode(b).host for b in em.flow_batches]
        assert len(hosts) == len(set(hosts))  # one batch per host agent per step
        for data in em.flow_batches:
            b = flow.decode(data)
            assert b.host in fleet.hosts and b.emitted_ms == round(em.end * 1000)
            recs = b.records
            assert ((recs["start_ms"] >= em.start * 1000) & (recs["end_ms"] < em.end * 1000)).all()
            for app_i, cl_i in zip(recs["local_app"].tolist(), recs["local_cluster"].tolist(), strict=True):
                assert b.strings[app_i] in fleet.apps and b.strings[cl_i] in clusters
            assert (recs["protocol"] == flow.PROTO_TCP).all()
            total += len(b)
    assert total > 1000


def test_every_otlp_payload_parses(run: Run) -> None:
    kinds: set[int] = set()
    metric_names: set[str] = set()
    for data in run.all("spans"):
        req = ExportTraceServiceRequest.FromString(data)
        assert req.resource_spans
        for rs in req.resource_spans:
            res = attrs(rs.resource.attributes)
            assert res["service.name"] in run.sim.fleet.apps and res["service.instance.id"]
            for ss in rs.scope_spans:
                for s in ss.spans:
                    assert (
                        len(s.trace_id) == 16
                        and len(s.span_id) == 8
                        and s.end_time_unix_nano >= s.start_time_unix_nano
                    )
                    kinds.add(s.kind)
    assert {Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER} <= kinds
    for data in run.all("metrics"):
        req = ExportMetricsServiceRequest.FromString(data)
        for rm in req.resource_metrics:
            assert attrs(rm.resource.attributes)["service.name"] in run.sim.fleet.apps
            for sm in rm.scope_metrics:
                metric_names.update(m.name for m in sm.metrics)
    assert {"ipc.client.call", "ipc.server.call"} <= metric_names
    assert metric_names & {"rpc.client.duration", "http.client.duration"}
    assert metric_names & {"rpc.client.call.duration", "http.client.request.duration"}


def test_several_services_share_an_export_request(run: Run) -> None:
    sizes = [
        len(
            {
                attrs(rs.resource.attributes)["service.name"]
                for rs in ExportTraceServiceRequest.FromString(d).resource_spans
            }
        )
        for d in run.all("spans")
    ]
    assert max(sizes) > 1


def test_cumulative_series_keep_their_start_time_and_never_decrease(run: Run) -> None:
    last: dict[tuple[object, ...], tuple[int, float]] = {}
    checked = 0
    for data in run.all("metrics"):
        for rm in ExportMetricsServiceRequest.FromString(data).resource_metrics:
            res = tuple(sorted(attrs(rm.resource.attributes).items()))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.WhichOneof("data") != "histogram" or m.histogram.aggregation_temporality != 2:
                        continue
                    for p in m.histogram.data_points:
                        key = (res, m.name, tuple(sorted(attrs(p.attributes).items())))
                        assert (
                            sum(p.bucket_counts) == p.count
                            and len(p.bucket_counts) == len(p.explicit_bounds) + 1
                        )
                        if key in last:
                            assert last[key][0] == p.start_time_unix_nano and p.count >= last[key][1]
                            checked += 1
                        last[key] = (p.start_time_unix_nano, p.count)
    assert checked > 100


def test_initial_records_cover_every_app_and_address(run: Run) -> None:
    init = run.initial
    assert not init.flow_batches and not init.metrics and not init.spans
    fleet = generate_fleet(60, 7)
    assert {i.name for i in init.catalog} == set(fleet.apps)
    assert all(isinstance(i, ServiceInfo) and ServiceInfo.from_dict(i.to_dict()) == i for i in init.catalog)
    assert {h.service for h in init.health} == set(fleet.apps)
    assert all(h.status is HealthState.HEALTHY for h in init.health)
    n_addresses = (
        fleet.instance_count() + len(fleet.intermediaries) + sum(len(s.ips) for s in fleet.sinks.values())
    )
    assert len(init.leases) == n_addresses
    assert all(le.end is None and le.start <= START for le in init.leases)
    assert all(AddressLease.from_dict(le.to_dict()) == le for le in init.leases)


def test_health_incidents_come_and_go_and_raise_errors(run: Run) -> None:
    events = [h for em in run.steps for h in em.health]
    assert {h.status for h in events} >= {HealthState.UNHEALTHY, HealthState.HEALTHY}
    assert all(HealthEvent.from_dict(h.to_dict()) == h for h in events)
    recovered = {h.service for h in events if h.status is HealthState.HEALTHY}
    assert recovered and recovered <= {h.service for h in events if h.status is not HealthState.HEALTHY}
    failed = sum(
        1
        for d in run.all("spans")
        for rs in ExportTraceServiceRequest.FromString(d).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
        if s.status.code == 2
    )
    assert failed > 0


def test_catalog_changes_on_redeploy(run: Run) -> None:
    changed = [i for em in run.steps for i in em.catalog]
    assert changed
    first = {i.name: i for i in run.initial.catalog}
    assert any(first[i.name].clusters != i.clusters for i in changed)


def test_steps_move_forward_only() -> None:
    sim = Simulator(generate_fleet(30, 1), seed=1, start=START)
    sim.step(START, STEP)
    with pytest.raises(ValueError, match="overlaps"):
        sim.step(START + 5, STEP)
    with pytest.raises(ValueError, match="positive"):
        sim.step(START + 10, 0)
    em = sim.step(START + 100, STEP)  # a gap is fine
    assert (em.start, em.end) == (START + 100, START + 110)
    assert sim.now == START + 110


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SimConfig(trace_ratio=2.0)
    with pytest.raises(ValueError):
        SimConfig(churn_per_hour=-1)


def test_the_generated_fleet_is_not_changed_by_simulating_it() -> None:
    f = generate_fleet(40, 2)
    before = (
        [(e.src, e.dst, e.active_until) for e in f.edges],
        [[c.name for c in a.clusters] for a in f.apps.values()],
    )
    sim = Simulator(f, seed=2, start=START, config=SimConfig(churn_per_hour=5, edge_change_per_hour=2))
    for i in range(20):
        sim.step(START + i * STEP, STEP)
    assert sim.redeploys and sim.edge_changes
    assert before == (
        [(e.src, e.dst, e.active_until) for e in f.edges],
        [[c.name for c in a.clusters] for a in f.apps.values()],
    )

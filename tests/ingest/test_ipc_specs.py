"""IPC stage specs 1 (split by resource) and 2 (deltas, peers) fed from lists: the golden IPC cases
(``tests/topology/stages/golden_otlp/ipc_*.json``, checked by hand) through the two specs give the
golden edge partials, whatever upstream partition each request took."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from ingest import otlp_items
from ingest.ipc import IpcSplitSpec, IpcStageSpec
from ingest.topics import Topics
from tests.ingest.testing import Bus, Chain, TestingStage
from tests.topology.stages.golden_otlp.cases import rounded
from tests.topology.stages.otlp_builders import hist_point, histogram, metrics, resource_metrics
from topology.admit import reason_class
from topology.catalog import AddressLease
from topology.wire.otlp import decode_metrics

GOLDEN = Path(__file__).parents[1] / "topology" / "stages" / "golden_otlp"
CASES = sorted(p.stem for p in GOLDEN.glob("ipc_*.json"))
TOPICS = Topics()


def _request(step: dict[str, Any]) -> bytes:
    return decode_metrics(json.dumps(step["add"]).encode(), "application/json").SerializeToString()


def _times(data: bytes) -> list[float]:
    req = ExportMetricsServiceRequest.FromString(data)
    return [dp.time_unix_nano / 1e9 for rm in req.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics for kind in ("gauge", "sum", "histogram", "exponential_histogram", "summary")
            if m.HasField(kind) for dp in getattr(m, kind).data_points]


def _partials(emitted: list[Any]) -> list[str]:
    return sorted(json.dumps(rounded(e.item), sort_keys=True) for e in emitted)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("partitions", [1, 2])
def test_golden_cases_through_the_two_specs(name: str, partitions: int) -> None:
    doc = json.loads((GOLDEN / f"{name}.json").read_text())
    config = doc.get("config", {})
    chain = Chain([IpcSplitSpec(TOPICS), IpcStageSpec(TOPICS, lateness=0.0, **config)], Bus(partitions))
    chain.bus.produce_json(TOPICS.addresses, _leases(doc), lambda x: x.ip)
    last = 0.0
    for step in doc["steps"]:
        if "add" in step:
            data = _request(step)
            last = max([last, *_times(data)])
            chain.bus.produce(TOPICS.otlp_metrics, data, None, int(last * 1000) + 1000)
            chain.cycle(last)
    chain.drain(last + 120)
    want = sorted(json.dumps(rounded(e), sort_keys=True)
                  for f in doc["expected"]["flushes"] for e in f["edges"])
    assert want and _partials(chain[1].emitted) == want
    assert all(not st.dead for st in chain.stages)


def _leases(doc: dict[str, Any]) -> list[AddressLease]:
    return [AddressLease.from_dict(d) for d in doc.get("leases", [])]


T = 1_800_000_000.0


def _two_services() -> bytes:
    """A request with a client histogram of web and a server histogram of api."""
    point = hist_point({"server.address": "api"}, T + 5, 3, 0.3, [1, 2], (0.1,))
    return metrics(
        resource_metrics("web", [histogram("http.client.request.duration", "s", [point])]),
        resource_metrics("api", [histogram("http.server.request.duration", "s", [point])]),
    ).SerializeToString()


def test_stage_1_cuts_a_request_by_resource_and_passes_a_single_resource_through() -> None:
    bus = Bus(1)
    stage = TestingStage(IpcSplitSpec(TOPICS), bus, wall=T)
    two = _two_services()
    one = metrics(ExportMetricsServiceRequest.FromString(two).resource_metrics[0]).SerializeToString()
    bus.produce(TOPICS.otlp_metrics, two, None, int(T * 1000))
    bus.produce(TOPICS.otlp_metrics, one, None, int(T * 1000))
    stage.step()
    requests = [ExportMetricsServiceRequest.FromString(otlp_items.payload(e.item)) for e in stage.emitted]
    assert [[rm.resource for rm in r.resource_metrics] for r in requests] == [
        [rm.resource] for rm in [*ExportMetricsServiceRequest.FromString(two).resource_metrics,
                                 ExportMetricsServiceRequest.FromString(one).resource_metrics[0]]]
    assert otlp_items.payload(stage.emitted[2].item) == one  # a single resource: the bytes as they came
    assert stage.emitted[0].key != stage.emitted[1].key  # one key per resource ...
    assert stage.emitted[0].key == stage.emitted[2].key  # ... the same for the same resource
    assert stage.counters()["resources"] == 3


def test_bad_requests_are_dead_lettered() -> None:
    bus = Bus(1)
    stage = TestingStage(IpcSplitSpec(TOPICS), bus, wall=T)
    bus.produce(TOPICS.otlp_metrics, b"", None, int(T * 1000))
    bus.produce(TOPICS.otlp_metrics, b"\xff\xff\xff", None, int(T * 1000))
    stage.step()
    assert [reason_class(d["reason"]) for d in stage.dead] == ["empty", "decode"]
    assert stage.emitted == []


def test_point_times_for_the_reorder_buffer_are_the_same_from_native_columns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.stage_ipc import generate
    from ingest import ipc as ingest_ipc

    batches, _ = generate(3_000, 12, seed=2)
    native = [ingest_ipc._times(d) for _, d in batches]
    monkeypatch.setattr(ingest_ipc, "NATIVE", False)
    assert [ingest_ipc._times(d) for _, d in batches] == native
    assert sum(map(len, native)) >= 3_000

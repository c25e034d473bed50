"""The server's ``/metrics`` in embedded mode, parsed as Prometheus reads it: conventions, bounded labels,
the same ingest names as a Kafka worker's, and the README's metrics table (both directions)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ingest.main import build_spec
from ingest.metrics import DROP_REASONS, LEVELS, SHARED, WorkerMetrics
from ingest.record import Partition
from ingest.topics import Topics
from service import observability
from service.consumers import Consumers
from service.limits import REASONS as REFUSALS
from service.observability import ERROR_CODES, MAX_OPERATIONS, runtime_families
from service.receiver import ingest_routes
from service.runtime import Runtime
from tests.ingest.payloads import flow_batch, spans_request
from tests.ingest.test_metrics import LEVELS as WORKER_LEVELS
from tests.ingest.test_metrics import bad_inputs, check_conventions, families, feed, filled_worker
from tests.service.conftest import client_for
from topology.admit import REASON_CLASSES
from topology.pipeline import Pipeline
from topology.servicegraph import CONNECTION_TYPES
from topology.store.base import Stores
from topology.store.embedded import open_stores

CONTENT_TYPES = {"/ingest/flows": "application/x-topology-flows", "/v1/traces": "application/x-protobuf",
                 "/ingest/catalog": "application/json"}  # what each ingest route takes
FLOWS = {"content-type": CONTENT_TYPES["/ingest/flows"]}

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
Families = dict[str, tuple[str, list[Sample]]]
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
#: label -> the values it may take (None: an identifier chosen by the code, e.g. a store method)
BOUNDED: dict[str, set[str] | None] = {
    "layer": {"network", "ipc", "trace", "meta", "all"},
    "stage": {"1", "2", "3"},
    "reason": set(REASON_CLASSES) | set(DROP_REASONS.values()),
    "refusal": set(REFUSALS),
    "status": {"1xx", "2xx", "3xx", "4xx", "5xx"},
    "code": {*ERROR_CODES, "OTHER"},
    "store": {"NETWORK", "IPC", "TRACE", "CATALOG"},
    "outcome": {"ok", "error"},
    "method": None,
    "event": None,
    "generation": {"0", "1", "2"},
    "connection_type": set(CONNECTION_TYPES),
}
#: Labels whose values are service names, bounded by the service graph's cap (test_servicegraph)
SERVICE_NAMES = {"client", "server"}
PYTHON_INFO = {"implementation", "major", "minor", "patchlevel", "version"}


def parse(text: str) -> Families:
    return {f.name: (f.type, list(f.samples)) for f in text_string_to_metric_families(text)}


@dataclass
class Embedded:
    http: httpx.AsyncClient
    runtime: Runtime
    stores: Stores

    async def scrape(self) -> Families:
        r = await self.http.get("/metrics")
        assert r.status_code == 200
        return parse(r.text)


@pytest.fixture
async def embedded(tmp_path: pathlib.Path) -> AsyncIterator[Embedded]:
    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline())
    try:
        async with client_for(stores, runtime=runtime, extra_routes=ingest_routes(runtime)) as http:
            yield Embedded(http, runtime, stores)
    finally:
        await stores.close()


def total(fams: Families, name: str, **labels: str) -> float:
    _, samples = fams[name]
    return sum(s.value for s in samples if s.name == name + "_total"
               and all(s.labels.get(k) == v for k, v in labels.items()))


def check_labels(fams: Families) -> None:
    for name, (_, samples) in fams.items():
        for s in samples:
            for label, value in s.labels.items():
                if name == "python_info":
                    assert label in PYTHON_INFO
                elif label == "le":
                    continue
                elif label == "operation":
                    continue  # checked by the test against the operations it sent
                elif label in SERVICE_NAMES:
                    continue
                elif label == "route":
                    assert value == "other" or value.startswith("/"), (name, value)
                else:
                    assert label in BOUNDED, f"{name}: label {label!r} has no fixed set of values"
                    allowed = BOUNDED[label]
                    ok = IDENTIFIER.fullmatch(value) if allowed is None else value in allowed
                    assert ok, f"{name}{{{label}={value!r}}}: not one of the label's fixed values"


async def test_embedded_metrics_after_known_inputs_good_and_bad(embedded: Embedded) -> None:
    http = embedded.http
    now_ms = int(time.time() * 1000)
    posts: list[tuple[str, bytes]] = [("/ingest/flows", flow_batch([now_ms - 2000, now_ms - 1000]))
                                      for _ in range(3)]
    mixed = [("/ingest/flows", flow_batch([now_ms - 1500, 4_102_444_800_000 + i])) for i in range(4)]
    bad = [("/ingest/flows", os.urandom(7 * n)) for n in range(1, 25)]
    for version in range(2, 12):
        wrong = bytearray(flow_batch([now_ms]))
        struct.pack_into("<H", wrong, 4, version)
        bad.append(("/ingest/flows", bytes(wrong)))
    bad += [("/ingest/flows", flow_batch([4_102_444_800_000 + i])) for i in range(5)]  # the year 2100
    bad += [("/v1/traces", spans_request(2)[:-n]) for n in range(1, 12)]
    bad += [("/ingest/catalog", json.dumps([{"name": f"svc-{j}"} for j in range(i)] + [{"tier": i}]).encode())
            for i in range(15)]
    bad += [("/ingest/catalog", b"[{" + b"x" * i) for i in range(5)]
    reasons = set()
    for path, body in posts + mixed + bad:
        r = await http.post(path, content=body, headers={"content-type": CONTENT_TYPES[path]})
        if (path, body) in bad:
            assert r.status_code == 400, (path, r.text)
            reasons.add(r.text)
        else:
            assert r.status_code == 200, (path, r.text)
    assert len(reasons) > 30  # many distinct reasons went in
    for i in range(MAX_OPERATIONS + 40):
        await http.post("/graphql", json={"query": f"query Op{i} {{ __typename }}"})
    await http.post("/graphql", json={"query": f"query {'Q' * 500} {{ __typename }}"})  # too long a name
    await http.post("/graphql", json={"query": "{ __typename }"})
    for i in range(12):
        assert (await http.get(f"/no/such/path/{i}")).status_code == 404

    fams = await embedded.scrape()
    check_conventions(fams, levels=set())
    check_labels(fams)
    # every rejection counted once, under one of the fixed classes
    assert total(fams, "topology_ingest_dead_letters") == len(bad) + len(mixed)
    assert total(fams, "topology_ingest_dead_letters", layer="network", reason="timestamp") == 5 + 4
    assert total(fams, "topology_ingest_dead_letters", layer="meta") == 20
    assert total(fams, "topology_ingest_dead_letters", layer="trace") == 11
    n_flows = len(posts) + len(mixed) + sum(1 for p, _ in bad if p == "/ingest/flows")
    assert total(fams, "topology_ingest_records", layer="network", stage="1") == n_flows
    assert total(fams, "topology_ingest_items_in", layer="network", stage="1") == 2 * len(posts) + len(mixed)
    # operation names: a bounded set, the rest folded into other
    ops = {s.labels["operation"]: s.value for s in fams["topology_graphql_requests"][1]}
    named = set(ops) - {"other", "anonymous"}
    assert len(named) == MAX_OPERATIONS and named <= {f"Op{i}" for i in range(MAX_OPERATIONS + 40)}
    assert ops["other"] == 40 + 1 and ops["anonymous"] == 1
    # routes: the app's route templates, unknown paths folded into other
    http_total = {(s.labels["route"], s.labels["status"]): s.value for s in fams["topology_http_requests"][1]}
    assert http_total[("other", "4xx")] == 12
    assert http_total[("/ingest/flows", "4xx")] == n_flows - len(posts) - len(mixed)
    assert http_total[("/graphql", "2xx")] == MAX_OPERATIONS + 40 + 2
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info",
            "python_gc_collections"} <= set(fams)


async def test_the_ingest_counts_have_the_kafka_workers_names(embedded: Embedded) -> None:
    now_ms = int(time.time() * 1000)
    await embedded.http.post("/ingest/flows", content=flow_batch([now_ms]), headers=FLOWS)
    await embedded.runtime.flush()
    server = {n: v for n, v in (await embedded.scrape()).items() if n.startswith("topology_ingest_")}
    worker = WorkerMetrics()
    feed(worker, bad_inputs()[:50])
    kafka = families(worker.ingest)
    assert set(server) == {f.name for f in SHARED} and set(server) <= set(kafka)
    for f in SHARED:
        assert server[f.name][0] == kafka[f.name][0] == "counter"
        for s in server[f.name][1] + kafka[f.name][1]:
            assert set(s.labels) == set(f.labels), (f.name, s.labels)


def test_embedded_stage_events_are_those_of_the_kafka_stage_running_the_same_stage(
        tmp_path: pathlib.Path) -> None:
    """Event names per (layer, stage): the embedded pipeline's, and the Kafka stage logics' counters()."""
    embedded: dict[tuple[str, str], set[str]] = {}
    for family in runtime_families({"stages": Pipeline().counters()}):
        for s in family.samples:
            if s.name == "topology_ingest_stage_events_total":
                embedded.setdefault((s.labels["layer"], s.labels["stage"]), set()).add(s.labels["event"])
    stores = open_stores(tmp_path / "store")
    topics = Topics("m")
    kafka: dict[tuple[str, str], set[str]] = {}
    for stage, layer in ((1, "network"), (2, "network"), (2, "ipc"), (2, "trace"), (3, "network")):
        logic = build_spec(stage, layer, topics, stores).new_partition(Partition("t", 0), None)
        label = ("all" if stage == 3 else layer, str(stage))  # embedded: one final stage for all layers
        kafka[label] = set(logic.counters()) - LEVELS
    assert embedded == kafka


async def test_in_process_workers_join_the_server_metrics(tmp_path: pathlib.Path) -> None:
    """serve --kafka: the runtime's and the workers' samples under one family each, added up."""
    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline())
    consumers = Consumers(stores, "127.0.0.1:9", Topics("m"))  # constructed, not started
    consumers.metrics.records_in.labels(layer="meta", stage="1").inc(2)
    consumers.metrics.records_in.labels(layer="network", stage="3").inc(5)
    try:
        async with client_for(stores, runtime=runtime, consumers=consumers,
                              extra_routes=ingest_routes(runtime)) as http:
            r = await http.post("/ingest/catalog", json=[{"name": "api"}])
            assert r.status_code == 200, r.text
            text = (await http.get("/metrics")).text
    finally:
        await stores.close()
    assert text.count("# TYPE topology_ingest_records_total counter") == 1
    assert text.count("# TYPE process_cpu_seconds_total counter") == 1  # the workers' registry adds none
    fams = parse(text)
    assert total(fams, "topology_ingest_records", layer="meta", stage="1") == 1 + 2
    assert total(fams, "topology_ingest_records", layer="network", stage="3") == 5


def readme_table() -> dict[str, tuple[str, set[str]]]:
    """The README's metrics table: name (or ``prefix*``) -> (type, labels)."""
    section = README.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            labels = {x.strip() for x in cells[2].split(",") if x.strip()}
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


async def test_the_readme_metrics_table_matches_the_registries(embedded: Embedded) -> None:
    now_ms = int(time.time() * 1000)
    await embedded.http.post("/ingest/flows", content=flow_batch([now_ms]), headers=FLOWS)
    await embedded.http.post("/graphql", json={"query": '{ service(name: "x") { name } }'})
    await embedded.http.post("/graphql", json={"query": "{"})
    from tests.service.test_servicegraph import known_traces  # (it imports this module's fixture)

    await embedded.http.post("/v1/traces", content=known_traces(time.time() - 20),
                             headers={"content-type": CONTENT_TYPES["/v1/traces"]})
    await embedded.runtime.drain()  # the TRACE windows complete: the service-graph series exist
    exposed = parse(generate_latest(filled_worker().registry).decode())
    for name, (kind, samples) in (await embedded.scrape()).items():
        assert exposed.setdefault(name, (kind, []))[0] == kind, name  # the same type in both modes
        exposed[name][1].extend(samples)
    check_conventions(exposed, WORKER_LEVELS)
    # the names as a scraper sees them: a counter family "x" is exposed as x_total
    names = {(n + "_total" if kind == "counter" else n): (kind, samples)
             for n, (kind, samples) in exposed.items()}
    table = readme_table()
    prefixes = [p[:-1] for p in table if p.endswith("*")]
    documented = {n for n in table if not n.endswith("*")}
    undocumented = {n for n in names if n not in documented and not n.startswith(tuple(prefixes))}
    assert not undocumented, f"exposed but not in the README's Metrics table: {sorted(undocumented)}"
    assert documented <= set(names), f"in the README but not exposed: {sorted(documented - set(names))}"
    for prefix in prefixes:
        assert any(n.startswith(prefix) for n in names), prefix
    for name in documented:
        kind, samples = names[name]
        assert table[name][0] == kind, (name, table[name][0], kind)
        seen = {k for s in samples for k in s.labels if k != "le"}
        assert samples and seen == table[name][1], (name, seen, table[name][1])


async def test_the_module_docstring_table_is_what_the_server_exposes(embedded: Embedded) -> None:
    """service/observability.py's table: every server metric (the ingest ones are ingest/metrics.py's)."""
    table = {}
    for line in (observability.__doc__ or "").splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if line.startswith("``topology_") and not cells[0].endswith("*``"):
            table[cells[0].strip("`")] = cells[1]
    await embedded.http.post("/graphql", json={"query": "{ __typename }"})
    scraped = await embedded.scrape()
    exposed = {(n + "_total" if kind == "counter" else n): kind for n, (kind, _) in scraped.items()
               if n.startswith("topology_") and not n.startswith("topology_ingest_")}
    assert table == exposed

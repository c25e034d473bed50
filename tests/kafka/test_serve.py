"""``topology serve`` over a Kafka pipeline, every part a real process: stage 1 and 2 workers of the
three layers, the terminal workers (inside ``serve --kafka`` with the embedded store, or as
``topology ingest --stage 3`` processes writing JanusGraph), and the GraphQL server answering over
HTTP. The merged graph it serves must equal the simulator's ground truth."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.publisher import publish_simulation
from ingest.topics import Topics
from tests.janusgraph.conftest import janusgraph_url  # noqa: F401 - the fixture
from tests.kafka.harness import ROOT, TEST_OPTIONS, Proc, free_port, prefixed_topics
from topology.model import Layer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SERVICES = 20
MINUTES = 3.0
LAYERS = ("network", "ipc", "trace")

EDGES = """query($after: String, $layers: [Layer!]) {
  topology(layers: $layers, first: 500, after: $after) {
    edges { source target layers } pageInfo { hasNextPage endCursor } } }"""


def worker(stage: int, layer: str, bootstrap: str, topics: Topics, root: Path, store: list[str]) -> Proc:
    port = free_port()
    args = ["--stage", str(stage), "--layer", layer, "--bootstrap", bootstrap,
            "--topic-prefix", topics.prefix, "--instance", f"s{stage}{layer}", "--metrics-port", str(port),
            "--partitions", "2",
            "--log-level", "WARNING", "--idle-seconds", str(TEST_OPTIONS["idle_seconds"]),
            "--min-commit-interval", str(TEST_OPTIONS["min_commit_interval"]),
            "--max-commit-interval", str(TEST_OPTIONS["max_commit_interval"]), *store]
    p = Proc(stage, layer, args, port, root / f"worker-{layer}{stage}.log")
    p.start()
    return p


class Server:
    """``python -m service.cli serve ...`` as a child process."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as f:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), *args], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"},
                stdout=f, stderr=subprocess.STDOUT)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as c:
            return await c.get(path)

    async def wait_up(self, limit: float = 60) -> None:
        deadline = time.monotonic() + limit
        while True:
            assert self.popen.poll() is None, f"serve exited: {self.log.read_text()[-3000:]}"
            try:
                if (await self.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"serve did not come up: {self.log.read_text()[-3000:]}"
            await asyncio.sleep(0.3)

    async def edges(self, layers: list[str]) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        after = None
        async with httpx.AsyncClient(base_url=self.base, timeout=60) as c:
            while True:
                variables = {"after": after, "layers": layers}
                body = (await c.post("/graphql", json={"query": EDGES, "variables": variables})).json()
                assert "errors" not in body, body["errors"]
                page = body["data"]["topology"]
                out |= {(e["source"], e["target"]) for e in page["edges"]}
                if not page["pageInfo"]["hasNextPage"]:
                    return out
                after = page["pageInfo"]["endCursor"]

    async def graphql(self, query: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base, timeout=60) as c:
            body: dict[str, Any] = (await c.post("/graphql", json={"query": query})).json()
        assert "errors" not in body, body["errors"]
        return body["data"]  # type: ignore[no-any-return]

    async def owned(self) -> set[str]:
        """The services with an owner, as the catalog says."""
        data = await self.graphql("{ services(first: 1000) { edges { node { name owner { team } } } } }")
        return {e["node"]["name"] for e in data["services"]["edges"] if e["node"]["owner"]}

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
                return -9
        return self.popen.returncode


async def until_graph(server: Server, truth: dict[str, Any], limit: float = 240) -> None:
    """Poll GraphQL until every layer and the merged graph equal the ground truth."""
    want = {layer: {(s, t) for s, t in truth["layers"][layer.value]} for layer in Layer}
    deadline = time.monotonic() + limit
    while True:
        got = {layer: await server.edges([layer.value]) for layer in Layer}
        if got == want:
            merged = await server.edges([layer.value for layer in Layer])
            assert merged == {(s, t) for s, t in truth["unified"]}
            return
        if time.monotonic() > deadline:
            diff = {layer.value: (sorted(want[layer] - got[layer])[:5], sorted(got[layer] - want[layer])[:5])
                    for layer in Layer if got[layer] != want[layer]}
            raise AssertionError(f"GraphQL did not converge to the truth in {limit}s: (missing, extra) "
                                 f"{diff}; serve log: {server.log.read_text()[-2000:]}")
        await asyncio.sleep(2)


async def test_serve_with_kafka_writes_and_answers_the_embedded_store_fed_by_worker_processes(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        procs = [worker(s, layer, kafka_bootstrap, topics, tmp_path, []) for layer in LAYERS for s in (1, 2)]
        server = Server(["--embedded", str(tmp_path / "store"), "--kafka", kafka_bootstrap,
                         "--topic-prefix", topics.prefix], tmp_path / "serve.log")
        try:
            await server.wait_up()
            res = await publish_simulation(kafka_bootstrap, services=SERVICES, minutes=MINUTES, start=start,
                                           topics=topics, partitions=2)
            await until_graph(server, res["truth"])
            # the catalog came through the meta worker inside serve: every service has its owner
            assert len(await server.owned()) == SERVICES
            ready = (await server.get("/readyz")).json()
            assert ready["status"] == "ok" and set(ready["kafka"]) == {"network-3", "ipc-3", "trace-3",
                                                                       "meta-1"}, ready
            metrics = (await server.get("/metrics")).text
            assert 'topology_ingest_items_out_total{layer="network",stage="3"}' in metrics
        finally:
            code = server.stop()
            for p in procs:
                p.terminate()
    assert code == 0, server.log.read_text()[-3000:]
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]


async def test_stage_3_processes_write_janusgraph_and_a_separate_server_answers(
        kafka_bootstrap: str, janusgraph_url: str, topic_label: str, tmp_path: Path) -> None:  # noqa: F811
    await stage_3_writes_janusgraph_and_a_separate_server_answers(
        kafka_bootstrap, janusgraph_url, topic_label, tmp_path)


async def stage_3_writes_janusgraph_and_a_separate_server_answers(
        kafka_bootstrap: str, url: str, topic_label: str, tmp_path: Path) -> None:
    """Stage 1-2 workers, stage-3 and meta worker processes writing the JanusGraph server at
    ``url`` (emptied first), and ``serve`` on the same server answering the ground truth
    (also run with the server on Cassandra: tests/cassandra/test_kafka.py)."""
    from topology.store.janusgraph import open_janusgraph_stores
    from topology.timewindow import Retention

    graph = await open_janusgraph_stores(url, Retention(), require=True)
    try:
        for layer in graph.layers.values():
            await layer.clear()
        await graph.catalog.clear()
    finally:
        await graph.close()
    store = ["--store", "janusgraph", "--janusgraph-url", url]
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        procs = [worker(s, layer, kafka_bootstrap, topics, tmp_path, store if s == 3 else [])
                 for layer in LAYERS for s in (1, 2, 3)]
        procs.append(worker(1, "meta", kafka_bootstrap, topics, tmp_path, store))
        server = Server(store, tmp_path / "serve.log")
        try:
            await server.wait_up()
            res = await publish_simulation(kafka_bootstrap, services=SERVICES, minutes=MINUTES, start=start,
                                           topics=topics, partitions=2)
            await until_graph(server, res["truth"])
        finally:
            code = server.stop()
            codes = [p.terminate() for p in procs]
    assert code == 0 and codes == [0] * len(procs), (code, codes)

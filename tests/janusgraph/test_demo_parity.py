"""The demo's answers on JanusGraph equal the embedded store's for the same seed.

The simulator (seed 42) feeds the real pipeline once; every output is written to both backends, and
the README's kinds of query run through the GraphQL app on each. The answers must be identical.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from service.app import create_app
from service.config import ServiceConfig
from topology.pipeline import Pipeline
from topology.sim import Simulator, generate_fleet
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.store.janusgraph import open_janusgraph_stores
from topology.store.janusgraph_catalog import JanusGraphCatalogStore
from topology.store.janusgraph_layer import JanusGraphLayerStore
from topology.timewindow import Retention
from topology.wire import flow, otlp

pytestmark = [pytest.mark.janusgraph, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

T0 = 1_800_000_000.0
END = T0 + 4 * 60


async def _write(stores: Stores, out: Any, em: Any | None) -> None:
    if em is not None:
        if em.catalog:
            await stores.catalog.upsert_services(list(em.catalog))
        if em.health:
            await stores.catalog.record_health(list(em.health))
    for layer, ws in out.windows.items():
        if ws:
            await stores.layers[layer].upsert_windows(ws)
    if out.nodes:
        await stores.catalog.register_nodes(out.nodes)
    if out.traces:
        await stores.catalog.record_traces(out.traces)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backends(
    janusgraph_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    embedded = open_stores(Path(tmp_path_factory.mktemp("parity")))
    graph = await open_janusgraph_stores(janusgraph_url, Retention(), pool_size=4, require=True)
    for layer in graph.layers.values():
        assert isinstance(layer, JanusGraphLayerStore)
        await layer.clear()
    assert isinstance(graph.catalog, JanusGraphCatalogStore)
    await graph.catalog.clear()

    sim = Simulator(generate_fleet(services=120, seed=42), seed=42, start=T0)
    pipe = Pipeline()
    em = sim.initial_records()
    t = T0
    while True:
        pipe.add_leases(em.leases)
        pipe.add_catalog(em.catalog)
        pipe.add_health(em.health)
        for data in em.flow_batches:
            pipe.add_flows(flow.decode(data))
        for data in em.metrics:
            pipe.add_metrics(otlp.decode_metrics(data, "application/x-protobuf"))
        for data in em.spans:
            pipe.add_spans(otlp.decode_traces(data, "application/x-protobuf"), t)
        out = pipe.flush(t)
        for stores in (embedded, graph):
            await _write(stores, out, em)
        if t >= END:
            break
        em = sim.step(t, 60.0)
        t += 60.0
    for extra in (60.0, 120.0, 180.0):
        out = pipe.flush(END + extra)
        for stores in (embedded, graph):
            await _write(stores, out, None)

    config = ServiceConfig.from_env({})
    clients = {
        name: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(stores, config, clock=lambda: END + 1)),
            base_url="http://t",
        )
        for name, stores in (("embedded", embedded), ("janusgraph", graph))
    }
    clients["_fleet"] = sim  # type: ignore[assignment]
    yield clients
    for name in ("embedded", "janusgraph"):
        await clients[name].aclose()
    await embedded.close()
    await graph.close()


def _queries(sim: Simulator) -> list[str]:
    apps = sorted(sim.fleet.apps.values(), key=lambda a: a.name)
    gateway = next(a.name for a in apps if a.gateway)
    indegree: dict[str, int] = {}
    for e in sim.fleet.edges:
        indegree[e.dst] = indegree.get(e.dst, 0) + 1
    popular = max(sorted(indegree), key=lambda n: indegree[n])
    return [
        f"""{{ service(name: "{gateway}") {{ name tier owner {{ team }} healthStatus {{ status }}
            upstream(depth: 3, first: 1000) {{ totalCount edges {{ cursor node {{
              depth via service {{ name tier kind }}
              edge {{ layers perLayer {{ layer protocol ports endpoints requests errors connections bytes
                intermediaries latencyP99 }} }} }} }} pageInfo {{ hasNextPage endCursor }} }} }} }}""",
        f"""{{ blastRadius(name: "{popular}", depth: 5) {{ total countsByTier {{ tier count }}
            teams {{ team email services }} }} }}""",
        f"""{{ service(name: "{popular}") {{
            downstream(depth: 4, tier: [0, 1], layers: [IPC, TRACE], first: 1000)
            {{ totalCount edges {{ node {{ depth via service {{ name tier }} }} }} }} }} }}""",
        """{ topology(layers: [NETWORK, IPC, TRACE], first: 1000) { nodes { name kind }
            edges { source target layers }
            truncated pageInfo { hasNextPage } } }""",
        """{ services(first: 1000) { edges { node { name tier domain layers } } } }""",
    ]


async def test_janusgraph_answers_equal_the_embedded_store(backends: dict[str, Any]) -> None:
    queries = _queries(backends["_fleet"])
    for q in queries:
        answers = {}
        for name in ("embedded", "janusgraph"):
            r = await backends[name].post("/graphql", json={"query": q})
            body = r.json()
            assert "errors" not in body, (name, body.get("errors"))
            answers[name] = body["data"]
        assert answers["janusgraph"] == answers["embedded"], q.split("(")[0]
    first = (await backends["embedded"].post("/graphql", json={"query": queries[0]})).json()["data"]
    depths = {e["node"]["depth"] for e in first["service"]["upstream"]["edges"]}
    assert {1, 2, 3} <= depths, "the comparison must cover multi-hop answers"

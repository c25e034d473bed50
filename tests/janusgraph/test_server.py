"""The JanusGraph Server the project starts: four traversal sources on four separate graphs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.graph_traversal import __

from tests.janusgraph.conftest import SOURCES

pytestmark = pytest.mark.janusgraph

# Schema for the probe vertices: the graphs run with schema.default=none, so nothing is created
# implicitly. Constant text; the graph is chosen by the request's alias (g -> g_<layer>).
PROBE_SCHEMA = """
def mgmt = g.getGraph().openManagement()
try {
  if (!mgmt.containsVertexLabel('smoke_probe')) { mgmt.makeVertexLabel('smoke_probe').make() }
  if (!mgmt.containsPropertyKey('smoke_id')) {
    mgmt.makePropertyKey('smoke_id').dataType(String.class).make()
  }
  mgmt.commit()
} catch (e) { mgmt.rollback(); throw e }
'ok'
"""


@pytest.fixture
def clients(janusgraph_url: str) -> Iterator[dict[str, Client]]:
    made = {s: Client(janusgraph_url, s, pool_size=1) for s in SOURCES}
    try:
        yield made
    finally:
        for c in made.values():
            c.close()


def _run(client: Client, message: Any, bindings: dict[str, Any] | None = None) -> list[Any]:
    return list(client.submit(message, bindings).all().result(timeout=60))


def test_every_traversal_source_answers(clients: dict[str, Client]) -> None:
    for source, client in clients.items():
        assert _run(client, "g.inject(41).math('_ + 1')") == [42.0], source


def test_unknown_traversal_source_is_refused(janusgraph_url: str) -> None:
    client = Client(janusgraph_url, "g_nope", pool_size=1)
    try:
        with pytest.raises(GremlinServerError) as err:
            _run(client, "g.inject(1)")
        assert "g_nope" in str(err.value)
    finally:
        client.close()


def test_each_source_is_a_separate_graph(clients: dict[str, Client]) -> None:
    graphs = {s: _run(c, "g.getGraph().hashCode()")[0] for s, c in clients.items()}
    assert len(set(graphs.values())) == len(SOURCES), graphs


def test_a_vertex_written_to_network_is_absent_from_the_other_layers(clients: dict[str, Client]) -> None:
    for client in clients.values():
        assert _run(client, PROBE_SCHEMA) == ["ok"]
    probe = f"probe-{uuid.uuid4()}"
    net = clients["g_network"]
    # The id travels as a bound value, never as script text.
    _run(net, "g.addV('smoke_probe').property('smoke_id', pid).count()", {"pid": probe})
    try:
        count = "g.V().has('smoke_probe', 'smoke_id', pid).count()"
        assert _run(net, count, {"pid": probe}) == [1]
        for source in ("g_ipc", "g_trace", "g_catalog"):
            assert _run(clients[source], count, {"pid": probe}) == [0], source
    finally:
        _run(net, "g.V().has('smoke_probe', 'smoke_id', pid).drop()", {"pid": probe})
    assert _run(net, "g.V().has('smoke_probe', 'smoke_id', pid).count()", {"pid": probe}) == [0]


async def test_async_submission_keeps_the_event_loop_running(janusgraph_url: str) -> None:
    # From asyncio: dispatch on a worker thread, then await the driver's futures (wrap_future).
    client = await asyncio.to_thread(Client, janusgraph_url, "g_trace", pool_size=1, max_workers=2)
    try:
        bytecode = __.inject(1, 2, 3).sum_().bytecode
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        result_set = await asyncio.wrap_future(await asyncio.to_thread(client.submit_async, bytecode))
        got = await asyncio.wrap_future(result_set.all())
        ticker.cancel()
        assert [t.object for t in got] == [6]
        assert ticks > 0
    finally:
        await asyncio.to_thread(client.close)

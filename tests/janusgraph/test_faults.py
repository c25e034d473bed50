"""JanusGraph stopped and restarted for real: a private berkeleyje server (its own port, data
directory and pid file, started with docker/janusgraph/dev.sh) is stopped during queries and
during writes."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.conftest import require
from tests.store.contract import APP, CLUSTER, DOWN, IPC, NET, TRACE, UP, win
from topology.catalog import ServiceInfo
from topology.model import EdgeWindow, Granularity, Layer
from topology.store.base import Stores, StoreUnavailable
from topology.store.embedded import open_stores
from topology.store.janusgraph import open_janusgraph_stores
from topology.store.janusgraph_layer import JanusGraphLayerStore
from topology.timewindow import DAY, HOUR, MINUTE, Retention, TimeRange

pytestmark = [pytest.mark.janusgraph, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEV_SH = ROOT / "docker" / "janusgraph" / "dev.sh"
T0 = 1_700_006_400
NOW = T0 + 3 * HOUR
RETENTION = Retention(minute=6 * HOUR, hour=14 * DAY, day=400 * DAY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """One JanusGraph Server instance owned by this test module."""

    def __init__(self, data: pathlib.Path) -> None:
        self.port = _free_port()
        self.url = f"ws://127.0.0.1:{self.port}/gremlin"
        self.env = dict(
            os.environ,
            BACKEND="berkeleyje",
            JANUSGRAPH_PORT=str(self.port),
            JANUSGRAPH_INSTANCE=f"faults{os.getpid()}",
            JANUSGRAPH_DATA=str(data),
            JANUSGRAPH_HEAP="512m",
        )

    async def _dev(self, action: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "bash", str(DEV_SH), action, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        if proc.returncode != 0:
            raise RuntimeError(f"dev.sh {action} failed ({proc.returncode}): {out.decode()[-2000:]}")

    async def start(self) -> None:
        await self._dev("start")

    async def stop(self) -> None:
        await self._dev("stop")


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    require(shutil.which("java") is not None and shutil.which("mvn") is not None, "java and maven")
    server = PrivateServer(tmp_path_factory.mktemp("janusgraph-berkeleyje"))
    try:
        asyncio.run(server.start())
    except RuntimeError as e:
        require(False, f"a private JanusGraph server ({e})")
    yield server
    asyncio.run(server.stop())
    instance = server.env["JANUSGRAPH_INSTANCE"]
    for suffix in ("log", "state", "pid"):
        (ROOT / "var" / "run" / f"janusgraph-{instance}.{suffix}").unlink(missing_ok=True)
    shutil.rmtree(ROOT / "var" / "janusgraph" / instance, ignore_errors=True)


@pytest.fixture
async def server(private_server: PrivateServer) -> AsyncIterator[PrivateServer]:
    await private_server.start()  # idempotent: a test may have left it stopped
    yield private_server
    await private_server.start()


async def _fresh(url: str, **kw: Any) -> Stores:
    stores = await open_janusgraph_stores(url, RETENTION, pool_size=2, require=True, **kw)
    for layer in stores.layers.values():
        assert isinstance(layer, JanusGraphLayerStore)
        await layer.clear()
    return stores


async def test_queries_fail_with_unavailable_while_stopped_and_recover(
    server: PrivateServer, janusgraph_url: str
) -> None:
    stores = await _fresh(server.url)
    healthy = await _fresh(janusgraph_url)  # another server: stands for layers that stay up
    try:
        live = TimeRange(NOW - 15 * MINUTE, NOW)
        for layer in (NET, IPC, TRACE):
            await stores.layers[layer].upsert_windows([win("a", "b", NOW - 5 * MINUTE, layer=layer)])
        await healthy.layers[IPC].upsert_windows([win("a", "c", NOW - 5 * MINUTE, layer=IPC)])
        await stores.catalog.upsert_services([ServiceInfo("a", tier=1)])
        before = {
            layer: await stores.layers[layer].neighbors(["a"], UP, APP, live, NOW) for layer in (NET, IPC)
        }

        await server.stop()
        for layer in (NET, IPC, TRACE):
            with pytest.raises(StoreUnavailable) as err:
                await stores.layers[layer].neighbors(["a"], UP, APP, live, NOW)
            assert err.value.layer is layer
            with pytest.raises(StoreUnavailable) as err:
                await stores.layers[layer].traverse(["b"], DOWN, 3, APP, live, NOW)
            assert err.value.layer is layer
        with pytest.raises(StoreUnavailable) as err:
            await stores.catalog.services(["a"])
        assert err.value.layer is None
        # a layer on a server that is up keeps answering meanwhile
        assert [e.key.target for e in await healthy.layers[IPC].neighbors(["a"], UP, APP, live, NOW)] == ["c"]

        await server.start()
        for layer in (NET, IPC):
            assert await stores.layers[layer].neighbors(["a"], UP, APP, live, NOW) == before[layer]
        await stores.layers[TRACE].ping()
        assert (await stores.catalog.services(["a"]))["a"].tier == 1
    finally:
        await stores.close()
        await healthy.close()


class BackgroundWriter:
    """Writes ``batches`` into the NETWORK layer in a task of its own; ``done`` counts those written."""

    def __init__(self, stores: Stores, batches: list[list[EdgeWindow]]) -> None:
        self.done = 0
        self.task = asyncio.create_task(self._write(stores, batches))

    async def _write(self, stores: Stores, batches: list[list[EdgeWindow]]) -> None:
        for b in batches:
            await stores.layers[NET].upsert_windows(b)
            self.done += 1

    async def reach(self, n: int) -> None:
        """Wait until ``n`` batches are written (the writer still going)."""
        while self.done < n:
            await asyncio.sleep(0.05)
            assert not self.task.done()


def _workload() -> list[list[EdgeWindow]]:
    """60 batches: one simulated minute each, 25 APP edges and 25 CLUSTER edges."""
    batches = []
    for m in range(60):
        start = T0 + m * MINUTE
        batch = []
        for i in range(25):
            src, dst = f"svc{i}", f"svc{(i * 7 + m % 3 + 1) % 25}"
            if src == dst:
                continue
            batch.append(win(src, dst, start, requests=i + m + 1, bytes_sent=100 * i + m))
            batch.append(win(f"{src}-prod-v1", f"{dst}-prod-v2", start, gran=CLUSTER, requests=m + 1))
        batches.append(batch)
    return batches


async def _snapshot(stores: Stores, now: float) -> list[Any]:
    net = stores.layers[NET]
    whole = TimeRange(T0, T0 + HOUR)
    out: list[Any] = [await net.window_count()]
    for gran in (Granularity.APP, Granularity.CLUSTER):
        out.append(await net.edges(gran, whole, now))
    out.append(await net.traverse(["svc0"], UP, 4, APP, whole, now))
    out.append(await net.traverse(["svc3-prod-v2"], DOWN, 3, CLUSTER, whole, now))
    out.append(await net.nodes(["svc0", "svc0-prod-v1", "svc24"]))
    return out


async def test_writers_retry_through_a_restart_and_lose_nothing(
    server: PrivateServer, tmp_path: pathlib.Path
) -> None:
    batches = _workload()
    reference = open_stores(tmp_path / "reference", RETENTION)  # an uninterrupted run
    stores = await _fresh(server.url, write_retry_seconds=300.0)
    try:
        for b in batches:
            await reference.layers[NET].upsert_windows(b)
        writing = BackgroundWriter(stores, batches)
        await writing.reach(15)
        await server.stop()
        stopped_at = writing.done
        await asyncio.sleep(1.0)
        assert writing.done <= stopped_at + 1  # nothing can be written while the server is down
        await server.start()
        await asyncio.wait_for(writing.task, 600)
        assert writing.done == len(batches)

        await server.stop()  # what is stored survives a restart of the server
        await server.start()
        got = await _snapshot(stores, NOW)
        assert got == await _snapshot(reference, NOW)
        assert got[0] == {MINUTE: sum(len(b) for b in batches)}

        # roll-ups through the same store agree with the reference too
        for s in (stores, reference):
            await s.layers[NET].rollup(NOW)
        assert await _snapshot(stores, NOW + 8 * HOUR) == await _snapshot(reference, NOW + 8 * HOUR)
    finally:
        await stores.close()
        await reference.close()


def test_layer_names_match_the_server_config() -> None:
    text = (ROOT / "docker" / "janusgraph" / "scripts" / "topology-init.groovy").read_text()
    for layer in Layer:
        assert f"g_{layer.value.lower()} : {layer.value.lower()}.traversal()" in text


async def test_an_index_added_over_existing_data_is_reindexed(server: PrivateServer) -> None:
    from topology.store.janusgraph_schema import ensure_schema, layer_spec

    stores = await _fresh(server.url)
    try:
        trace = stores.layers[TRACE]
        assert isinstance(trace, JanusGraphLayerStore)
        await trace.upsert_windows([win("a", "b", NOW - 5 * MINUTE, layer=TRACE)])
        spec = layer_spec()
        spec["composite"].append(["pair_by_src", "vertex", ["src"], "pair"])  # keys that hold data
        done = await ensure_schema(trace.pool, spec)
        assert done.count("pair_by_src") == 2  # created, then registered and reindexed
        status = await trace.pool.submit(
            "def m = g.getGraph().openManagement(); try { def i = m.getGraphIndex('pair_by_src'); "
            "i.getIndexStatus(i.getFieldKeys()[0]).toString() } finally { m.rollback() }"
        )
        assert status == ["ENABLED"]
        assert await ensure_schema(trace.pool, spec) == []  # nothing left to do
        got = await trace.neighbors(["a"], UP, APP, TimeRange(NOW - HOUR, NOW), NOW)
        assert [e.key.target for e in got] == ["b"]
    finally:
        await stores.close()

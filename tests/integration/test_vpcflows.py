"""VPC flow logs over HTTP (``POST /ingest/vpcflows``): the golden NETWORK scenario
``tests/topology/stages/golden/vpc_flow_logs`` posted to the real app gives the edges its expected
file holds (stage-1 windows differ in process, the minute windows do not), the malformed line is
cut out with the golden reason, and the default format of ``tests/topology/wire/test_vpcflow.py``
is taken too."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest_asyncio

from service.runtime import Runtime
from tests.integration.asgi import ingest_client
from tests.topology.stages.golden_network import GOLDEN, edges
from tests.topology.wire.test_vpcflow import T, v2
from topology.model import Granularity, Layer
from topology.pipeline import Pipeline
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

SCENARIO = json.loads((GOLDEN / "vpc_flow_logs.input.json").read_text())
EXPECTED = json.loads((GOLDEN / "vpc_flow_logs.expected.json").read_text())
T0: int = SCENARIO["t0"]
TEXT = {"content-type": "text/plain"}


@dataclass
class App:
    client: httpx.AsyncClient
    runtime: Runtime
    stores: Stores
    clock: list[float]

    async def post_leases(self) -> None:
        leases = [{**d, "start": d["start"] + T0, "end": None if d["end"] is None else d["end"] + T0}
                  for d in SCENARIO["leases"]]
        r = await self.client.post("/ingest/addresses", json=leases)
        assert r.json() == {"accepted": len(leases)}

    async def network_edges(self, at: float) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(source, target) -> (connections, bytes sent, bytes received) at APP granularity."""
        for extra in (0.0, 60.0, 120.0, 180.0):
            await self.runtime.flush(at + extra)
        es = await self.stores.layers[Layer.NETWORK].edges(Granularity.APP, TimeRange(at - 600, at + 600),
                                                            now=at + 200)
        return {(e.key.source, e.key.target): (e.stats.connections, e.stats.bytes_sent,
                                               e.stats.bytes_received) for e in es}


@pytest_asyncio.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    clock = [float(T0)]
    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: clock[0])
    async with ingest_client(stores, runtime) as c:
        yield App(c, runtime, stores, clock)
    await stores.close()


async def test_the_golden_flow_logs_over_http_give_the_golden_edges(app: App) -> None:
    await app.post_leases()
    [step] = SCENARIO["steps"]
    body = "\n".join(re.sub(r"\{(-?\d+)\}", lambda m: str(T0 + int(m.group(1))), x) for x in step["vpc"])
    app.clock[0] = T0 + step["flush"]
    r = await app.client.post("/ingest/vpcflows", content=body.encode(), headers=TEXT)
    [[line, reason]] = EXPECTED["vpc_errors"]
    assert r.status_code == 200
    assert r.json() == {"accepted": EXPECTED["counters"]["vpc"]["records"], "rejected": 1,
                        "reason": f"decode: flow-log line {line}: {reason}"}
    want = {(s, t): (w["stats"].get("connections", 0), w["stats"].get("bytes_sent", 0),
                     w["stats"].get("bytes_received", 0)) for (_, s, t), w in edges(EXPECTED).items()}
    assert want == {("web", "api"): (1, 550, 5000), ("web", "search"): (1, 100, 0)}  # the scenario's story
    assert await app.network_edges(app.clock[0]) == want
    assert app.runtime.pipeline.counters()["network_vpc"]["rejected"] == 1  # the REJECT record


async def test_default_format_lines_over_http(app: App) -> None:
    leases = [{"ip": ip, "owner": owner, "start": T - 3600} for ip, owner in
              (("10.0.0.1", "web"), ("10.0.0.2", "api"))]
    assert (await app.client.post("/ingest/addresses", json=leases)).status_code == 200
    app.clock[0] = T + 60
    body = "\n".join([v2(b=100), v2(src="10.0.0.2", dst="10.0.0.1", sp=443, dp=40000, b=900)])
    r = await app.client.post("/ingest/vpcflows", content=body.encode(), headers=TEXT)
    assert r.json() == {"accepted": 2}
    assert await app.network_edges(T + 60) == {("web", "api"): (1, 100, 900)}

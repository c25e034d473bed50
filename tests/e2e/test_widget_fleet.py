"""The widget's fleet view drawn from a real server, through its normal data path.

A simulated fleet (``tests.e2e.simfleet``: the simulator's traffic through the real pipeline into an
embedded store) is served by ``topology serve --embedded``; a plain page holds ``<service-topology
mode="fleet" endpoint="/graphql">``, which pages through ``Query.topology`` and draws with WebGL. What the
canvas holds (its accessible description and the graph sigma draws) must equal what the server's API
answers for the same selection (``GET /export?format=json``: the whole graph). 1,000 services here (about
15 s to simulate on 2 cores); ``bench/widget_render.py`` does the same with 10,000 and writes that
screenshot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import _DIRECT, Server, serve_embedded
from tests.e2e.simfleet import fill
from tests.e2e.test_widget import ARTEFACTS, run_widget

pytestmark = pytest.mark.browser

SERVICES = 1000


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fleet-server")
    asyncio.run(fill(root / "store", SERVICES, minutes=1.0))
    with serve_embedded(root, root / "store") as server:
        yield server


def export_json(server: Server) -> dict[str, object]:
    with _DIRECT.open(f"{server.base}/export?format=json", timeout=120) as resp:
        answer: dict[str, object] = json.loads(resp.read())
    return answer


def test_fleet_from_the_server_draws_every_service_and_call_it_answers(fleet_server: Server) -> None:
    shot = f"widget-fleet-server-{SERVICES}.png"
    r = run_widget(fleet_server.base, "fleet", "--shot", shot, "--timeout", "120000", timeout=240)
    truth = export_json(fleet_server)
    nodes, edges = truth["nodes"], truth["edges"]
    assert isinstance(nodes, list) and isinstance(edges, list)
    assert truth["truncated"] is False
    assert len(nodes) > SERVICES  # the services, and the databases, queues and hosts they call
    f = r["fleet"]
    assert f["renderer"] == "webgl" and f["truncated"] is False
    assert f["pages"] >= 2  # Query.topology answered in pages, all of them read
    # What the WebGL canvas holds and what its accessible description says, against the server.
    assert (f["drawnNodes"], f["drawnEdges"]) == (len(nodes), len(edges))
    degraded = sum(1 for n in nodes if n["health"] in ("DEGRADED", "UNHEALTHY"))
    assert f["label"] == (f"Fleet map: {len(nodes)} services, {len(edges)} calls, "
                          f"{degraded} degraded or unhealthy")
    assert (ARTEFACTS / shot).stat().st_size > 20_000

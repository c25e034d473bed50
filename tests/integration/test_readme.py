"""The README's example queries, run against the demo's fleet (1,000 services, seed 42).

The store is fed by the simulator through the real pipeline, but only for the minutes the examples
look at (the live window at the end, and the minutes before "30 minutes ago"): the simulator allows
gaps, which keeps this test quick.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from service.app import create_app
from service.config import ServiceConfig
from service.demo import feed, inject_showcase, persist_meta
from service.runtime import Runtime
from topology.pipeline import Pipeline
from topology.sim import Simulator, generate_fleet
from topology.store.embedded import open_stores

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

README = Path(__file__).resolve().parents[2] / "README.md"
T0 = 1_800_000_000.0
END = T0 + 35 * 60
SOURCE = "accounts-address-engine"  # the demo's bad deploy
SYMPTOMATIC = "commerce-checkout-plus-handler"  # two hops above it


def readme_queries() -> list[str]:
    blocks = re.findall(r"```graphql\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5, "the README must show its example queries"
    return blocks


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    data = tmp_path_factory.mktemp("readme")
    stores = open_stores(data)
    runtime = Runtime(stores, data, Pipeline(), clock=lambda: END)
    sim = Simulator(generate_fleet(services=1000, seed=42), seed=42, start=T0)
    initial = sim.initial_records()
    await persist_meta(stores, initial)
    feed(runtime, initial, T0)
    for start, end in ((T0, T0 + 180), (END - 240, END)):
        if start == END - 240:
            assert inject_showcase(sim, start) == SOURCE  # the demo's incident (README: During an incident)
        t = start
        while t < end:
            em = sim.step(t, 60.0)
            feed(runtime, em, t)
            await persist_meta(stores, em)
            t += 60.0
            await runtime.flush(t)
    for extra in (30.0, 90.0):
        await runtime.flush(END + extra)
    app = create_app(stores, ServiceConfig.from_env({}), clock=lambda: END + 1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c
    await stores.close()


async def run(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    r = await client.post("/graphql", json={"query": query})
    assert r.status_code == 200
    body = r.json()
    assert "errors" not in body, body.get("errors")
    return dict(body["data"])


async def test_every_readme_query_answers_without_errors(client: httpx.AsyncClient) -> None:
    for q in readme_queries():
        await run(client, q)


async def test_the_upstream_example_is_multi_hop_with_per_layer_details(client: httpx.AsyncClient) -> None:
    data = await run(client, readme_queries()[0])
    up = data["service"]["upstream"]
    depths = {e["node"]["depth"] for e in up["edges"]}
    assert up["totalCount"] > 20 and {1, 2} <= depths
    layers = {pl["layer"] for e in up["edges"] for pl in e["node"]["edge"]["perLayer"]}
    assert layers == {"NETWORK", "IPC", "TRACE"}


async def test_the_blast_radius_example_names_teams_and_tiers(client: httpx.AsyncClient) -> None:
    data = await run(client, readme_queries()[1])
    br = data["blastRadius"]
    assert br["total"] > 20
    assert sum(c["count"] for c in br["countsByTier"]) == br["total"]
    assert br["teams"] and all(t["services"] for t in br["teams"])


async def test_the_filtered_downstream_example_returns_only_tiers_0_and_1(client: httpx.AsyncClient) -> None:
    data = await run(client, readme_queries()[2])
    tiers = {e["node"]["service"]["tier"] for e in data["service"]["downstream"]["edges"]}
    assert tiers and tiers <= {0, 1}


async def test_the_past_example_sees_the_map_of_30_minutes_ago(client: httpx.AsyncClient) -> None:
    data = await run(client, readme_queries()[3])
    assert data["service"]["upstream"]["totalCount"] > 0


def walkthrough(field: str) -> str:
    """The README's "During an incident" query that asks ``field``."""
    (block,) = [b for b in readme_queries() if (f"{field}(name: " in b and SYMPTOMATIC in b) or
                (field == "blastRadius" and f'blastRadius(name: "{SOURCE}"' in b)]
    return block


async def test_during_an_incident_the_symptomatic_service_is_degraded(client: httpx.AsyncClient) -> None:
    data = await run(client, walkthrough("service"))
    assert data["service"]["healthStatus"]["status"] == "DEGRADED"


async def test_during_an_incident_root_cause_names_the_injected_source_and_its_on_call(
    client: httpx.AsyncClient,
) -> None:
    report = (await run(client, walkthrough("rootCause")))["rootCause"]
    assert report["verdict"] == "UPSTREAM"
    top = report["candidates"][0]
    assert top["service"]["name"] == SOURCE and top["rank"] == 1
    assert top["service"]["owner"] == {"team": "accounts-core", "oncall": "accounts-core-primary"}
    assert top["path"][0] == SYMPTOMATIC and top["path"][-1] == SOURCE and len(top["path"]) == 3
    kinds = [e["kind"] for e in top["evidence"]]
    assert {"HEALTH", "DEPENDENCIES", "CHANGE"} <= set(kinds)
    assert [c["kind"] for c in top["changes"]] == ["DEPLOY"]
    deps = next(e["detail"] for e in top["evidence"] if e["kind"] == "DEPENDENCIES")
    assert "own calls show no anomaly" in deps
    # its caller shows the errors, explained in part by the source
    second = report["candidates"][1]
    assert second["service"]["name"] == top["path"][1]
    assert any(e["kind"] == "ERRORS" and e["layer"] == "IPC" for e in second["evidence"])


async def test_during_an_incident_diff_shows_what_changed(client: httpx.AsyncClient) -> None:
    d = (await run(client, walkthrough("diff")))["diff"]
    # the calls into the source's caller on the path fail now; the source's deploy is listed
    caller = "commerce-basket-aggregator"
    moved = [m["metric"] for e in d["changed"] if e["target"] == caller for m in e["metrics"]]
    assert "ERROR_RATE" in moved
    assert (SOURCE, "DEPLOY") in [(c["service"], c["kind"]) for c in d["changes"]]


async def test_during_an_incident_the_blast_radius_of_the_source(client: httpx.AsyncClient) -> None:
    b = (await run(client, walkthrough("blastRadius")))["blastRadius"]
    assert b["total"] >= 6 and SYMPTOMATIC in {s for t in b["teams"] for s in t["services"]}


async def test_the_trace_examples_show_a_recent_trace_on_the_map(client: httpx.AsyncClient) -> None:
    (linked,) = [b for b in readme_queries() if "trace {" in b]
    (by_id,) = [b for b in readme_queries() if "trace(traceId:" in b]
    [recent] = (await run(client, linked))["service"]["traces"]
    drawn = recent["trace"]
    assert {"source": "user", "target": "edge-gateway"} in [
        {"source": e["source"], "target": e["target"]} for e in drawn["edges"]]
    ends = {x for e in drawn["edges"] for x in (e["source"], e["target"])}
    assert {n["name"] for n in drawn["nodes"]} == ends
    # the same trace asked by id, as the second example does with an id pasted from the first
    asked = (await run(client, re.sub(r'traceId: "[0-9a-f]{32}"', f'traceId: "{recent["traceId"]}"', by_id)))
    t = asked["trace"]
    assert (t["nodes"], t["edges"]) == (drawn["nodes"], drawn["edges"])
    assert t["spanCount"] == len(t["spans"]) and not t["truncated"]
    assert {s["service"] for s in t["spans"]} <= {n["name"] for n in t["nodes"]}
    assert (await run(client, by_id))["trace"] is None  # the example's id is no trace of this fleet

"""The HTTP app around the schema: GraphiQL from local assets, health, readiness, metrics, tracing."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from service.graphiql import ASSETS, missing_assets
from tests.conftest import require
from tests.service.conftest import CONFIG, Client, client_for
from topology.model import Layer
from topology.store.base import Stores

STATIC = pathlib.Path(__file__).resolve().parents[2] / "service" / "static"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_graphiql_page_uses_only_local_assets(stores: Stores) -> None:
    require(not missing_assets(), "the GraphiQL npm assets (make install-node)")
    async with client_for(stores) as http:
        page = await http.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "https://" not in page.text and "http://" not in page.text.replace("http://www.w3.org", "")
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(urls) == len(ASSETS) == 7
        for url in urls:
            assert url.startswith("/graphiql/assets/")
            r = await http.get(url)
            assert r.status_code == 200, url
            kind = "text/css" if url.endswith(".css") else "javascript"
            assert kind in r.headers["content-type"], (url, r.headers["content-type"])
            assert len(r.content) > 500
        # node_modules holds much more than these seven files: none of it is served
        assert (await http.get("/graphiql/assets/graphiql/package.json")).status_code == 404
        assert (await http.get("/graphiql/assets/../package.json")).status_code == 404


async def test_graphiql_can_be_turned_off(stores: Stores) -> None:
    from dataclasses import replace

    async with client_for(stores, replace(CONFIG, graphiql=False)) as http:
        page = await http.get("/graphql", headers={"accept": "text/html"})
        assert "GraphiQL" not in page.text


def test_lock_file_names_no_download_host() -> None:
    lock = (STATIC / "package-lock.json").read_text(encoding="utf-8")
    assert '"resolved"' not in lock
    data = json.loads(lock)
    pinned = {name.removeprefix("node_modules/"): p["version"]
              for name, p in data["packages"].items() if name}
    assert pinned["graphiql"] == "3.8.3" and pinned["react"] == "18.2.0" and pinned["react-dom"] == "18.2.0"
    assert pinned["@graphiql/plugin-explorer"] == "1.0.2" and pinned["js-cookie"] == "3.0.5"


async def test_graphql_over_get(client: Client) -> None:
    r = await client.http.get("/graphql", params={"query": '{ service(name: "api") { name } }'})
    assert r.json() == {"data": {"service": {"name": "api"}}}


async def test_health_and_readiness(stores: Stores) -> None:
    async with client_for(stores) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "stores": {"NETWORK": "ok", "IPC": "ok", "TRACE": "ok",
                                                            "CATALOG": "ok"}}
        await stores.layers[Layer.TRACE].close()
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unavailable" and body["stores"]["TRACE"].startswith("unavailable")
        assert body["stores"]["NETWORK"] == "ok"
        assert (await http.get("/healthz")).status_code == 200  # alive, just not ready


class _Ingest:
    def counters(self) -> dict[str, Any]:
        return {"received": {"flows": 4, "spans": 2}, "accepted": {"flows": 3, "spans": 2},
                "rejected": {"flows:decode": 1},
                "stages": {"network_stage2": {"late_dropped": 4}}}


async def test_metrics(stores: Stores) -> None:
    async with client_for(stores, ingest=_Ingest()) as http:
        c = Client(http)
        await c.query('query Upstream { service(name: "api") { upstream(depth: 2) { totalCount } } }')
        await c.query('query Upstream { service(name: "api") { upstream(depth: 2) { totalCount } } }')
        await c.query('query Bad { service(name: "api") { upstream(depth: 99) { totalCount } } }')
        await c.query('{ service(name: "orders") { name } }')
        r = await http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = samples(r.text)
    assert m[("topology_graphql_requests_total", (("operation", "Upstream"), ("outcome", "ok")))] == 2
    assert m[("topology_graphql_requests_total", (("operation", "Bad"), ("outcome", "error")))] == 1
    assert m[("topology_graphql_requests_total", (("operation", "anonymous"), ("outcome", "ok")))] == 1
    assert m[("topology_graphql_request_duration_seconds_count", (("operation", "Upstream"),))] == 2
    assert m[("topology_graphql_errors_total", (("code", "BAD_USER_INPUT"),))] == 1
    # two levels of upstream, per layer, once: the same request again is answered from the answer kept
    # (service/answers.py), yet counted above as the operation it answers
    for layer in ("NETWORK", "IPC", "TRACE"):
        assert m[("topology_store_duration_seconds_count", (("method", "neighbors"), ("store", layer)))] == 2
    assert ("topology_store_duration_seconds_count", (("method", "services"), ("store", "CATALOG"))) in m
    # the embedded counts under the Kafka workers' names: inputs are stage 1 of their layer
    assert m[("topology_ingest_records_total", (("layer", "network"), ("stage", "1")))] == 3 + 1
    assert m[("topology_ingest_dead_letters_total", (("layer", "network"), ("reason", "decode"),
                                                     ("stage", "1")))] == 1
    assert m[("topology_ingest_stage_events_total", (("event", "late_dropped"), ("layer", "network"),
                                                     ("stage", "2")))] == 4


async def test_store_errors_are_counted(stores: Stores) -> None:
    await stores.layers[Layer.IPC].close()
    async with client_for(stores) as http:
        await Client(http).query('{ service(name: "api") { upstream { totalCount } } }')
        m = samples((await http.get("/metrics")).text)
    assert m[("topology_store_errors_total", (("method", "neighbors"), ("store", "IPC")))] == 1
    assert m[("topology_graphql_errors_total", (("code", "UNAVAILABLE"),))] == 1
    # a partial answer is an answer with errors
    assert m[("topology_graphql_requests_total", (("operation", "anonymous"), ("outcome", "error")))] == 1


async def test_resolvers_are_traced(stores: Stores) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with client_for(stores, tracer_provider=provider) as http:
        out = await Client(http).data('query Deps { service(name: "api") { upstream { totalCount } } }')
    assert out["service"]["upstream"]["totalCount"] == 2
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["GraphQL Parsing", "GraphQL Validation", "GraphQL Resolving: service",
                     "GraphQL Resolving: upstream", "GraphQL Query: Deps"]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    operation = spans["GraphQL Query: Deps"]
    assert spans["GraphQL Resolving: upstream"].parent.span_id == operation.context.span_id  # type: ignore[union-attr]
    provider.shutdown()


async def test_no_tracing_unless_configured(stores: Stores) -> None:
    async with client_for(stores) as http:
        app: Any = http._transport.app  # type: ignore[attr-defined]
        assert "OpenTelemetryExtension" not in repr(app.state.schema.extensions)

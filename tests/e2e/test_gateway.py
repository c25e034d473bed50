"""Our subgraph composed with a second one behind a real Apollo federation gateway (Node, from npm).

The second subgraph (below, Strawberry + uvicorn) owns ``Service.catalogUrl`` and a root field
``featuredServices`` that returns bare ``Service`` references. A query through the gateway then
joins both ways: our fields on its entities (the gateway calls our ``_entities``) and its field on
our entities, down to the nested services of ``upstream``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import strawberry
from strawberry.asgi import GraphQL

from tests.e2e.conftest import (
    JS_DIR,
    UPSTREAM,
    Process,
    Server,
    ThreadedServer,
    answers_graphql,
    free_port,
    post_graphql,
    require_node_packages,
)

pytestmark = pytest.mark.gateway

FEATURED = ["payments-svc", "orders-db", "no-such-service"]


def catalog_url(name: str) -> str:
    return f"https://catalog.corp.test/services/{name}"


# -- the second subgraph ----------------------------------------------------------------------------
@strawberry.federation.type(keys=["name"], description="Our Service entity, extended with a catalog link.")
class Service:
    name: str

    @classmethod
    def resolve_reference(cls, name: str) -> Service:
        return cls(name=name)

    @strawberry.field
    def catalog_url(self) -> str:
        return catalog_url(self.name)


@strawberry.type
class Query:
    @strawberry.field(description="Services the catalog features, by reference only.")
    def featured_services(self) -> list[Service]:
        return [Service(name=n) for n in FEATURED]


catalog_schema = strawberry.federation.Schema(query=Query, types=[Service], federation_version="2.9")


@pytest.fixture(scope="session", autouse=True)  # session: before topology_server starts
def gateway_packages() -> None:
    """Node and the gateway's npm packages, checked before any server starts."""
    require_node_packages("@apollo/gateway", "@apollo/server", "graphql")


@pytest.fixture(scope="module")
def catalog_subgraph() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    with ThreadedServer(GraphQL(catalog_schema, graphql_ide=None), port):
        deadline = time.monotonic() + 10
        while not answers_graphql(url):
            assert time.monotonic() < deadline, "the catalog subgraph did not start"
            time.sleep(0.05)
        yield url


@pytest.fixture(scope="module")
def gateway(topology_server: Server, catalog_subgraph: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[str]:
    port = free_port()
    log: Path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    proc = Process("gateway", ["node", str(JS_DIR / "gateway.mjs")], log, env={
        "SUBGRAPHS": f"topology={topology_server.graphql},catalog={catalog_subgraph}",
        "GATEWAY_PORT": str(port),
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",  # subgraphs are on loopback
    })
    try:
        proc.wait_until(lambda: "ready " in proc.output())
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.stop()


# -- tests ------------------------------------------------------------------------------------------
def upstream_names(service: dict[str, object]) -> list[tuple[int, str]]:
    edges = service["upstream"]["edges"]  # type: ignore[index]
    return [(e["node"]["depth"], e["node"]["service"]["name"]) for e in edges]  # type: ignore[index]


def test_federated_query_joins_our_service_with_the_catalog_subgraph(gateway: str) -> None:
    q = """query($name: String!) { service(name: $name) {
        name tier owner { team } catalogUrl
        upstream(depth: 2) { totalCount edges { node {
            depth via service { name kind owner { team } catalogUrl } } } }
    } }"""
    answer = post_graphql(gateway, q, {"name": "web-frontend"})
    assert "errors" not in answer, answer
    svc = answer["data"]["service"]  # type: ignore[index]
    assert svc["name"] == "web-frontend"
    assert svc["tier"] == 1
    assert svc["owner"] == {"team": "web"}
    assert svc["catalogUrl"] == catalog_url("web-frontend")  # from the second subgraph
    assert upstream_names(svc) == UPSTREAM[("web-frontend", 2)]
    assert svc["upstream"]["totalCount"] == 3
    nodes = {e["node"]["service"]["name"]: e["node"] for e in svc["upstream"]["edges"]}
    assert nodes["checkout-api"]["via"] == "web-frontend"
    assert nodes["payments-svc"]["via"] == "checkout-api"
    assert nodes["payments-svc"]["service"]["owner"] == {"team": "payments"}
    assert nodes["inventory-api"]["service"]["owner"] == {"team": "supply"}
    for name, node in nodes.items():  # nested entities resolved by the second subgraph too
        assert node["service"]["catalogUrl"] == catalog_url(name)
        assert node["service"]["kind"] == "SERVICE"


def test_virtual_nodes_are_entities_too(gateway: str) -> None:
    q = """{ service(name: "checkout-api") { upstream(depth: 2) { edges { node {
        depth service { name kind virtual catalogUrl } } } } } }"""
    answer = post_graphql(gateway, q)
    assert "errors" not in answer, answer
    svc = answer["data"]["service"]  # type: ignore[index]
    assert upstream_names(svc) == UPSTREAM[("checkout-api", 2)]
    kinds = {e["node"]["service"]["name"]: e["node"]["service"] for e in svc["upstream"]["edges"]}
    assert kinds["orders-db"]["kind"] == "DATABASE" and kinds["orders-db"]["virtual"] is True
    assert kinds["stock-cache"]["catalogUrl"] == catalog_url("stock-cache")


def test_gateway_resolves_references_from_the_other_subgraph_through_our_entities(gateway: str) -> None:
    # featuredServices lives in the catalog subgraph; tier/owner/kind come from our `_entities`.
    answer = post_graphql(gateway, "{ featuredServices { name catalogUrl tier domain owner { team } } }")
    assert "errors" not in answer, answer
    featured = answer["data"]["featuredServices"]  # type: ignore[index]
    assert featured == [
        {"name": "payments-svc", "catalogUrl": catalog_url("payments-svc"), "tier": 0, "domain": "payments",
         "owner": {"team": "payments"}},
        # a virtual node: known to the store (seen in traffic) but not in the catalog
        {"name": "orders-db", "catalogUrl": catalog_url("orders-db"), "tier": None, "domain": None,
         "owner": None},
        # unknown to us: our `_entities` answers null, so our fields are null
        {"name": "no-such-service", "catalogUrl": catalog_url("no-such-service"), "tier": None,
         "domain": None, "owner": None},
    ]


def test_unknown_service_is_null_through_the_gateway(gateway: str) -> None:
    answer = post_graphql(gateway, '{ service(name: "no-such-service") { name catalogUrl } }')
    assert answer["data"] == {"service": None}  # with our NOT_FOUND error (and its suggestions) beside


def test_our_subgraph_sdl_is_what_the_gateway_composed(topology_server: Server) -> None:
    sdl = post_graphql(topology_server.graphql, "{ _service { sdl } }")["data"]["_service"]["sdl"]  # type: ignore[index]
    assert '@key(fields: "name")' in sdl
    assert "type Service" in sdl

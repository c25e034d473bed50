"""Plain objects completed in one pass (service/execution.py) answer exactly what graphql-core's
ordinary completion answers: the same data, in the same key order, and the same errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from service.context import RequestContext
from service.execution import PlainExecution
from service.loaders import Loaders
from service.schema import build_schema
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW
from topology.store.base import Stores

DOCUMENTS = [
    # Q1 of the benchmarks
    """query Q1($name: String!) { service(name: $name) { name healthStatus { status } owner { team email }
      upstream(depth: 3) { totalCount edges { node { depth via service { name } edge { layers } } } }
      downstream(depth: 3) { totalCount edges { node { depth via service { name } edge { layers } } } } }
    }""",
    # aliases, __typename, fragments, directives, cursors, page info, edges with per-layer stats
    """query Q($name: String!, $yes: Boolean = true, $no: Boolean = false) { service(name: $name) {
      __typename up: upstream(depth: 2, first: 2) { __typename totalCount layers
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        edges { cursor node { ...dep } } }
      downstream(depth: 2) { edges { node { depth @include(if: $yes) via @skip(if: $yes)
        service { name @skip(if: $no) } also: service { name kind tier } } } } } }
    fragment dep on Dependency { depth service { name virtual kind }
      edge { source target sourceKind targetKind layers
        perLayer { layer protocol ports requests errors latencyP50 bytes firstSeen intermediaries } } }""",
    # a service whose fields need resolvers below plain lists
    """{ topology(first: 5) { truncated layers nodes { name kind tier owner { team } }
      edges { source target layers } pageInfo { hasNextPage endCursor } } }""",
    """{ blastRadius(name: "orders", depth: 3) { total countsByTier { tier count }
      teams { team email services } unowned layers
      services(first: 3) { totalCount edges { cursor node { depth service { name } } } } } }""",
    # errors: bad input, an unknown name
    """{ service(name: "api") { upstream(depth: 0) { totalCount } } }""",
    """{ service(name: "nobody") { name upstream { totalCount } } }""",
]


def context(stores: Stores) -> RequestContext:
    loaders = Loaders(stores.catalog, stores.layers)
    return RequestContext(stores=stores, config=CONFIG, loaders=loaders, now=NOW)


def answer(result: Any) -> str:
    errors = [(e.message, e.path, e.extensions) for e in result.errors or []]
    return json.dumps({"data": result.data, "errors": errors})  # key order included


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("name", ["api", "orders", "edge-gateway", "orders-db"])
async def test_plain_completion_answers_what_the_ordinary_one_does(stores: Stores, document: str,
                                                                   name: str) -> None:
    plain = build_schema(CONFIG)
    assert plain.execution_context_class is PlainExecution
    ordinary = build_schema(CONFIG)
    ordinary.execution_context_class = StrawberryGraphQLCoreExecutionContext
    variables = {"name": name} if "$name" in document else None
    a = await plain.execute(document, variable_values=variables, context_value=context(stores))
    b = await ordinary.execute(document, variable_values=variables, context_value=context(stores))
    assert answer(a) == answer(b)
    if "upstream(depth: 0)" not in document and "nobody" not in document:
        assert not a.errors, a.errors


async def test_a_null_in_a_non_null_plain_field_is_reported_at_its_path(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ordinary completion reports a wrong plain value: the plain pass leaves it to it."""
    from service import entity

    plain = build_schema(CONFIG)
    ordinary = build_schema(CONFIG)
    ordinary.execution_context_class = StrawberryGraphQLCoreExecutionContext
    document = "{ service(name: \"api\") { upstream { edges { node { via depth } } } } }"
    real = entity.dependency_connection

    def broken(*args: Any, **kwargs: Any) -> Any:
        connection = real(*args, **kwargs)
        connection.edges[0].node.via = None  # type: ignore[assignment]
        return connection

    monkeypatch.setattr(entity, "dependency_connection", broken)
    a = await plain.execute(document, context_value=context(stores))
    b = await ordinary.execute(document, context_value=context(stores))
    assert answer(a) == answer(b)
    assert a.errors and a.errors[0].path[:3] == ["service", "upstream", "edges"]

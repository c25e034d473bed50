"""The store contract suite against JanusGraph Server on Cassandra: the same suite, factory and
expectations as tests/janusgraph/test_contract.py (inmemory backend), each graph in its own
keyspace on a real Cassandra node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.cassandra.conftest import CassandraNode
from tests.janusgraph.test_contract import JanusGraphFactory
from tests.store.contract import StoreContract, StoresFactory

pytestmark = pytest.mark.cassandra


class TestJanusGraphOnCassandra(StoreContract):
    @pytest.fixture
    async def stores_factory(
        self, cassandra: CassandraNode, janusgraph_cql_url: str
    ) -> AsyncIterator[StoresFactory]:
        factory = JanusGraphFactory(janusgraph_cql_url)
        yield factory
        await factory.close()

"""The Kafka pipeline end to end with the production store: stage-3 and meta worker processes write
JanusGraph on Cassandra (one keyspace per layer), a separate ``serve`` process answers from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cassandra.conftest import CassandraNode
from tests.kafka.conftest import kafka_bootstrap, topic_label  # noqa: F401 - the fixtures
from tests.kafka.test_serve import stage_3_writes_janusgraph_and_a_separate_server_answers

pytestmark = [pytest.mark.cassandra, pytest.mark.kafka, pytest.mark.slow]


async def test_stage_3_processes_write_janusgraph_on_cassandra_and_a_separate_server_answers(
        cassandra: CassandraNode, janusgraph_cql_url: str, kafka_bootstrap: str,  # noqa: F811
        topic_label: str, tmp_path: Path) -> None:  # noqa: F811
    await stage_3_writes_janusgraph_and_a_separate_server_answers(kafka_bootstrap, janusgraph_cql_url,
                                                                  topic_label, tmp_path)

"""Fixtures for tests against JanusGraph Server on a real Cassandra node (one keyspace per graph).

Once per session: ``docker/cassandra/dev.sh start`` (the node of ``make cassandra``, on
``CASSANDRA_PORT``, default 19042; a no-op when it already runs) and a JanusGraph Server instance
named ``cql`` with ``BACKEND=cql`` on ``JANUSGRAPH_CQL_PORT`` (default 18183; on another port the
instance is ``cql-<port>``), keyspaces
``topology_network``, ``topology_ipc``, ``topology_trace``, ``topology_catalog``. What the session
started it stops at the end; what already ran is left running. When either cannot start, the tests
call ``tests.conftest.require(False, ...)``: skipped on a developer machine, a failure with ``CI=true``.

The fault tests stop and start the shared node (``CassandraNode.stop``/``start``); every test that
needs it running asks for ``cassandra`` (function scope), which starts it again if a test left it down.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import require

ROOT = pathlib.Path(__file__).resolve().parents[2]
CASSANDRA_SH = ROOT / "docker" / "cassandra" / "dev.sh"
JANUSGRAPH_SH = ROOT / "docker" / "janusgraph" / "dev.sh"
LAYER_KEYSPACES = {"network": "topology_network", "ipc": "topology_ipc", "trace": "topology_trace",
                   "catalog": "topology_catalog"}


def _run(script: pathlib.Path, action: str, env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    proc = subprocess.run(["bash", str(script), action], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace")


@dataclasses.dataclass
class CassandraNode:
    """The local node of docker/cassandra/dev.sh."""

    port: int
    env: dict[str, str]

    @property
    def data_dir(self) -> pathlib.Path:
        return ROOT / "var" / "cassandra" / f"state-{self.port}" / "data"

    def running(self) -> bool:
        return _run(CASSANDRA_SH, "status", self.env, 30)[0] == 0

    def start(self) -> None:
        code, out = _run(CASSANDRA_SH, "start", self.env)
        if code != 0:
            raise RuntimeError(f"cassandra dev.sh start failed ({code}): {out[-2000:]}")

    def stop(self) -> None:
        code, out = _run(CASSANDRA_SH, "stop", self.env, 120)
        if code != 0:
            raise RuntimeError(f"cassandra dev.sh stop failed ({code}): {out[-2000:]}")


@pytest.fixture(scope="session")
def cassandra_node() -> Iterator[CassandraNode]:
    require(shutil.which("java") is not None and shutil.which("mvn") is not None, "java and maven")
    port = int(os.environ.get("CASSANDRA_PORT", "19042"))
    node = CassandraNode(port, dict(os.environ, CASSANDRA_PORT=str(port)))
    was_running = node.running()
    try:
        node.start()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        require(False, f"a Cassandra node on 127.0.0.1:{port} ({e})")
    yield node
    if not was_running:
        node.stop()


@pytest.fixture
def cassandra(cassandra_node: CassandraNode) -> Iterator[CassandraNode]:
    """The node, running (started again if an earlier test left it stopped)."""
    cassandra_node.start()
    yield cassandra_node
    cassandra_node.start()


@pytest.fixture(scope="session")
def janusgraph_cql_url(cassandra_node: CassandraNode) -> Iterator[str]:
    port = int(os.environ.get("JANUSGRAPH_CQL_PORT", "18183"))
    instance = "cql" if port == 18183 else f"cql-{port}"  # `make stop` stops the default one
    env = dict(os.environ, BACKEND="cql", JANUSGRAPH_INSTANCE=instance, JANUSGRAPH_PORT=str(port),
               CASSANDRA_HOST="127.0.0.1", CASSANDRA_PORT=str(cassandra_node.port),
               JANUSGRAPH_HEAP=os.environ.get("JANUSGRAPH_CQL_HEAP", "768m"))
    was_running = _run(JANUSGRAPH_SH, "status", env, 60)[0] == 0
    code, out = _run(JANUSGRAPH_SH, "start", env, 400)
    require(code == 0, f"a JanusGraph Server on Cassandra (BACKEND=cql, port {port}): {out[-1500:]}")
    yield f"ws://127.0.0.1:{port}/gremlin"
    if not was_running:
        _run(JANUSGRAPH_SH, "stop", env, 120)


@pytest.fixture
def cql(cassandra: CassandraNode) -> Iterator[Any]:
    """A cassandra-driver session on the node (for looking at what JanusGraph stored)."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=60)
    cluster = Cluster(["127.0.0.1"], port=cassandra.port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        session = cluster.connect()
        yield session
    finally:
        cluster.shutdown()

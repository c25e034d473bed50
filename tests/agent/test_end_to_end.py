"""End to end: the agent as a process (``python -m agent``), real connections between namespaces, the
real server over HTTP or the Kafka pipeline's worker processes; the NETWORK layer must show
``web-frontend -> cart-api`` (never reversed) over GraphQL within 10 s of the connection closing,
resolved through the leases the agent published; over HTTP, the server's address then passes to
another workload and only the new connection goes to it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import ROOT, Hosts
from tests.kafka.conftest import kafka_bootstrap, topic_label  # noqa: F401 - fixtures
from tests.kafka.harness import free_port, prefixed_topics
from tests.kafka.test_serve import Server, worker

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

WORKLOADS = [{"cmdline": "--service=(?P<svc>[a-z-]+)", "app": "{svc}", "cluster": "{svc}-e2e"}]
FRESH = 10.0  # seconds from the close to the edge in GraphQL


class AgentProcess:
    def __init__(self, args: list[str], tmp: Path) -> None:
        wl = tmp / "workloads.json"
        wl.write_text(json.dumps(WORKLOADS))
        self.metrics_port = free_port()
        self.log = tmp / "agent.log"
        with self.log.open("ab") as f:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "agent", *args, "--workloads", str(wl), "--interval", "1", "--poll",
                 "0.2", "--metrics-port", str(self.metrics_port), "--host", "e2e-node"],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=f, stderr=subprocess.STDOUT)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    async def wait_up(self, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while True:
            assert self.popen.poll() is None, f"agent exited: {self.log.read_text()[-3000:]}"
            try:
                await asyncio.to_thread(self.metrics)
                return
            except OSError:
                assert time.monotonic() < deadline, f"agent did not start: {self.log.read_text()[-3000:]}"
                await asyncio.sleep(0.3)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
                return -9
        return self.popen.returncode


async def edge_appears(server: Server, closed_at: float,
                       edge: tuple[str, str] = ("web-frontend", "cart-api")) -> set[tuple[str, str]]:
    while True:
        edges = await server.edges(["NETWORK"])
        if edge in edges:
            return edges
        assert time.monotonic() - closed_at < FRESH, f"no {edge} after {FRESH} s: {edges}"
        await asyncio.sleep(0.3)


async def traffic(h: Hosts, service: str = "cart-api", connections: int = 2) -> tuple[Any, float]:
    """``service`` in B, web-frontend in A: connections; returns the server and when the last closed."""
    proc = h.server(h.b, service, h.ip("b", 2), 7001, reply=500)
    for _ in range(connections):
        await asyncio.to_thread(h.client, h.a, "web-frontend", h.ip("b", 2), 7001, 1500)
    return proc, time.monotonic()


def check_edges(edges: set[tuple[str, str]], h: Hosts) -> None:
    assert ("cart-api", "web-frontend") not in edges
    ours = {e for e in edges if {"web-frontend", "cart-api"} & set(e)}
    assert ours == {("web-frontend", "cart-api")}, "an end left unresolved or a wrong direction"
    assert not any(h.ip("a", 1) in s or h.ip("b", 2) in s for e in edges for s in e)


async def test_http_to_topology_serve(hosts: Hosts, tmp_path: Path) -> None:
    h = hosts
    data = tmp_path / "store"
    server = Server(["--embedded", str(data)], tmp_path / "serve.log")
    agent = AgentProcess(["--http", server.base], tmp_path)
    try:
        await server.wait_up()
        await agent.wait_up()
        cart, closed_at = await traffic(h)
        check_edges(await edge_appears(server, closed_at), h)
        # The address passes to another workload: the new connection goes to it, the earlier stay.
        h.stop(cart)
        await asyncio.sleep(1.5)
        _, closed_at = await traffic(h, "checkout-api", 1)
        edges = await edge_appears(server, closed_at, ("web-frontend", "checkout-api"))
        assert ("web-frontend", "cart-api") in edges
        assert not {("checkout-api", "web-frontend"), ("cart-api", "web-frontend")} & edges
        leases = [json.loads(line) for line in (data / "addresses.jsonl").read_text().splitlines()]
        owners = {(d["ip"], d["owner"], d["cluster"], d["kind"]) for d in leases}
        assert (h.ip("b", 2), "cart-api", "cart-api-e2e", "WORKLOAD") in owners
        assert (h.ip("b", 2), "checkout-api", "checkout-api-e2e", "WORKLOAD") in owners
        assert (h.ip("a", 1), "web-frontend", "web-frontend-e2e", "WORKLOAD") in owners
        metrics = await asyncio.to_thread(agent.metrics)
        for line in ('topology_agent_ring_lost_total 0.0', 'topology_agent_dropped_total{kind="flows"} 0.0',
                     'topology_agent_untracked_connections_total{reason="table_full"} 0.0'):
            assert line in metrics, line
        for name in ('topology_agent_records_sent_total{kind="flows"}', "topology_agent_connections_tracked",
                     'topology_agent_events_total{tracepoint="sock_send_length"}',
                     "process_cpu_seconds_total", "topology_agent_unattributed_processes_total",
                     "topology_agent_sink_errors_total"):
            assert name in metrics, name
        sent = next(float(x.split()[-1]) for x in metrics.splitlines()
                    if x.startswith('topology_agent_records_sent_total{kind="flows"}'))
        assert sent >= 2
    finally:
        code = agent.stop()
        server.stop()
    assert code == 0, agent.log.read_text()[-3000:]
    lines = [json.loads(x) for x in agent.log.read_text().splitlines() if x.startswith("{")]
    assert any(x["msg"] == "agent started" for x in lines) and any(x["msg"] == "agent stopped" for x in lines)
    assert "Traceback" not in agent.log.read_text()


@pytest.mark.kafka
async def test_kafka_pipeline(hosts: Hosts, tmp_path: Path, kafka_bootstrap: str,  # noqa: F811
                              topic_label: str) -> None:  # noqa: F811
    h = hosts
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        procs = [worker(s, "network", kafka_bootstrap, topics, tmp_path, []) for s in (1, 2)]
        server = Server(["--embedded", str(tmp_path / "store"), "--kafka", kafka_bootstrap,
                         "--topic-prefix", topics.prefix], tmp_path / "serve.log")
        agent = AgentProcess(["--kafka", kafka_bootstrap, "--topic-prefix", topics.prefix], tmp_path)
        try:
            await server.wait_up()
            await agent.wait_up()
            _, closed_at = await traffic(h)
            check_edges(await edge_appears(server, closed_at), h)
        finally:
            code = agent.stop()
            server.stop()
            for p in procs:
                p.terminate()
    assert code == 0, agent.log.read_text()[-3000:]
    assert "Traceback" not in agent.log.read_text()


def test_sigterm_flushes_what_is_buffered(tmp_path: Path) -> None:
    """Stopped while its sink is down: the agent exits 0 within its shutdown timeout and says what it
    could not deliver (counted, not silently lost)."""
    from tests.agent.conftest import bpf_ready

    bpf_ready()
    agent = AgentProcess(["--http", f"http://127.0.0.1:{free_port()}", "--shutdown-timeout", "1"], tmp_path)
    try:
        asyncio.run(agent.wait_up())
        srv = socket.create_server(("127.0.0.1", 0))  # one connection for the agent to report
        with srv, socket.create_connection(srv.getsockname()) as c:
            peer, _ = srv.accept()
            c.sendall(b"x" * 100)
            peer.recv(100)
            peer.close()
        time.sleep(2.5)  # a few intervals: the batches wait for the sink
    finally:
        agent.popen.send_signal(signal.SIGTERM)
        code = agent.popen.wait(30)
    assert code == 0
    stopped = [json.loads(x) for x in agent.log.read_text().splitlines() if '"agent stopped"' in x]
    assert stopped, agent.log.read_text()[-3000:]
    assert stopped[0]["sink_errors"] >= 1 and stopped[0]["flows_sent"] == 0 and stopped[0]["dropped"] >= 2

"""Fixtures for the end-to-end tests: our real server and the Node side under ``tests/js``.

``topology_server`` seeds an embedded store with a small hand-built topology (through the store
API, as stage 3 and the catalog consumer would), then starts the real ``topology serve --embedded``
command on a free loopback port. The Node programs (the federation gateway, the GraphiQL check in
Debian's Chromium) come from ``tests/js`` (``make install-node`` runs ``npm ci`` there). A missing
Node, npm package or Chromium goes through :func:`tests.conftest.require`: skipped on a developer's
machine, a failure with ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.conftest import require
from topology.catalog import HealthEvent, HealthState, Owner, ServiceInfo, TraceSpan, TraceSummary, pack_spans
from topology.model import EdgeKey, EdgeWindow, Granularity, Layer, NodeInfo, NodeKind
from topology.stats import EdgeStats
from topology.timewindow import MINUTE, align

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
START_TIMEOUT = 20.0  # seconds for a process to answer

# -- the hand-built topology ------------------------------------------------------------------------
# APP level, "a -> b" = a calls b. Virtual nodes: orders-db and stock-cache (databases), user (root spans).
CATALOG: tuple[ServiceInfo, ...] = (
    ServiceInfo("web-frontend", tier=1, domain="storefront", owner=Owner("web", "web@corp.test")),
    ServiceInfo("checkout-api", tier=0, domain="payments", owner=Owner("payments", "pay@corp.test")),
    ServiceInfo("payments-svc", tier=0, domain="payments", owner=Owner("payments", "pay@corp.test")),
    ServiceInfo("inventory-api", tier=2, domain="supply", owner=Owner("supply", "supply@corp.test")),
)
EDGES: dict[Layer, tuple[tuple[str, str, NodeKind, NodeKind], ...]] = {
    Layer.IPC: (
        ("web-frontend", "checkout-api", NodeKind.SERVICE, NodeKind.SERVICE),
        ("checkout-api", "payments-svc", NodeKind.SERVICE, NodeKind.SERVICE),
        ("checkout-api", "inventory-api", NodeKind.SERVICE, NodeKind.SERVICE),
    ),
    Layer.NETWORK: (
        ("checkout-api", "inventory-api", NodeKind.SERVICE, NodeKind.SERVICE),
        ("payments-svc", "orders-db", NodeKind.SERVICE, NodeKind.DATABASE),
        ("inventory-api", "stock-cache", NodeKind.SERVICE, NodeKind.DATABASE),
    ),
    Layer.TRACE: (
        ("user", "web-frontend", NodeKind.USER, NodeKind.SERVICE),
        ("web-frontend", "checkout-api", NodeKind.SERVICE, NodeKind.SERVICE),
    ),
}
# Health events (recorded 100 s before the seed's now) of health_server; the others have none: UNKNOWN.
HEALTH = {"checkout-api": HealthState.HEALTHY, "payments-svc": HealthState.DEGRADED,
          "inventory-api": HealthState.UNHEALTHY}
# Known answers: (depth, name) of everything upstream of a service, all layers merged.
UPSTREAM = {
    ("web-frontend", 2): [(1, "checkout-api"), (2, "inventory-api"), (2, "payments-svc")],
    ("checkout-api", 2): [(1, "inventory-api"), (1, "payments-svc"), (2, "orders-db"), (2, "stock-cache")],
}


# One kept trace (Query.trace): user -> web-frontend -> checkout-api -> payments-svc (failing) -> orders-db,
# and checkout-api -> fraud-check, a peer the map has no edge to (the overlay draws it).
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_CALLS = {"user->web-frontend": (1, 0), "web-frontend->checkout-api": (1, 0),
               "checkout-api->payments-svc": (1, 1), "payments-svc->orders-db": (1, 0),
               "checkout-api->fraud-check": (1, 0)}


def seed_trace(now: float) -> TraceSummary:
    t = now - 150

    def span(i: int, parent: int | None, service: str, kind: str, start: float, ms: float,
             error: bool = False, peer: tuple[str, str] | None = None) -> TraceSpan:
        return TraceSpan(f"{i:016x}", None if parent is None else f"{parent:016x}", service, f"op-{i}", kind,
                         t + start, ms / 1000, error, *(peer or (None, None)))

    spans = [
        span(1, None, "web-frontend", "SERVER", 0.0, 180.0),
        span(2, 1, "web-frontend", "CLIENT", 0.01, 160.0),
        span(3, 2, "checkout-api", "SERVER", 0.02, 150.0),
        span(4, 3, "checkout-api", "CLIENT", 0.03, 90.0, True),
        span(5, 4, "payments-svc", "SERVER", 0.04, 80.0, True),
        span(6, 5, "payments-svc", "CLIENT", 0.05, 20.0, peer=("orders-db", "DATABASE")),
        span(7, 3, "checkout-api", "CLIENT", 0.1, 30.0, peer=("fraud-check", "UNINSTRUMENTED")),
    ]
    return TraceSummary(TRACE_ID, "web-frontend", "op-1", t, 0.18, len(spans), True,
                        ("checkout-api", "payments-svc", "web-frontend"), pack_spans(spans))


def seed_windows(now: float) -> list[EdgeWindow]:
    """One MINUTE window per edge, two minutes before ``now`` (inside the default live window)."""
    start = align(now, MINUTE) - 2 * MINUTE
    out = []
    for layer, edges in EDGES.items():
        for i, (src, dst, sk, tk) in enumerate(edges):
            stats = EdgeStats(first_seen=float(start), last_seen=float(start + 30), requests=100 + i,
                              connections=3 if layer is Layer.NETWORK else 0)
            out.append(EdgeWindow(EdgeKey(layer, Granularity.APP, src, dst), start, MINUTE, stats, sk, tk))
    return out


def seed_nodes(now: float) -> list[NodeInfo]:
    seen: dict[str, tuple[NodeKind, set[Layer]]] = {}
    for layer, edges in EDGES.items():
        for src, dst, sk, tk in edges:
            for name, kind in ((src, sk), (dst, tk)):
                seen.setdefault(name, (kind, set()))[1].add(layer)
    return [NodeInfo(n, k, Granularity.APP, None, frozenset(ls), now - 180, now - 90)
            for n, (k, ls) in seen.items()]


async def seed_store(data_dir: Path, now: float, health: bool = False) -> None:
    from topology.store.embedded import open_stores

    stores = open_stores(data_dir)
    try:
        if health:
            await stores.catalog.record_health([HealthEvent(s, h, now - 100) for s, h in HEALTH.items()])
        await stores.catalog.upsert_services(list(CATALOG))
        await stores.catalog.register_nodes(seed_nodes(now))
        await stores.catalog.record_traces([seed_trace(now)])
        windows = seed_windows(now)
        for layer, store in stores.layers.items():
            await store.upsert_windows([w for w in windows if w.key.layer is layer])
    finally:
        await stores.close()


# -- processes --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process with its output in a log file, stopped by its own pid (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-4000:]}",
                            pytrace=False)
            if ready():
                return
            time.sleep(0.1)
        pytest.fail(f"{self.name} did not become ready in {timeout:.0f} s:\n{self.output()[-4000:]}",
                    pytrace=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def post_graphql(url: str, query: str, variables: dict[str, object] | None = None,
                 timeout: float = 10.0) -> dict[str, object]:
    """POST a GraphQL request; the decoded JSON answer (GraphQL errors included, HTTP errors raise)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    req = urllib.request.Request(url, body, headers)
    with _DIRECT.open(req, timeout=timeout) as resp:
        answer: dict[str, object] = json.loads(resp.read())
    return answer


def answers_graphql(url: str) -> bool:
    try:
        return post_graphql(url, "{ __typename }", timeout=2.0).get("data") == {"__typename": "Query"}
    except (OSError, urllib.error.URLError, ValueError):
        return False


class ThreadedServer:
    """An ASGI app served by uvicorn in a thread of the test process (for small helper servers)."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                ws="none", log_config=None)
        self.server = uvicorn.Server(config)  # off the main thread it installs no signal handlers
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{port}", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass(frozen=True)
class Server:
    base: str
    data_dir: Path
    log: Path

    @property
    def graphql(self) -> str:
        return f"{self.base}/graphql"


@pytest.fixture(scope="session")
def topology_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``topology serve --embedded`` over a store holding the hand-built topology above."""
    root = tmp_path_factory.mktemp("e2e-server")
    data_dir = root / "store"
    asyncio.run(seed_store(data_dir, time.time()))
    with serve_embedded(root, data_dir, {"TOPOLOGY_GRAPHIQL": "true"}) as server:
        yield server


@pytest.fixture(scope="session")
def health_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same topology with health events (:data:`HEALTH`), for the widget and export tests."""
    root = tmp_path_factory.mktemp("health-server")
    data_dir = root / "store"
    asyncio.run(seed_store(data_dir, time.time(), health=True))
    with serve_embedded(root, data_dir) as server:
        yield server


@contextlib.contextmanager
def serve_embedded(root: Path, data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``topology serve --embedded data_dir`` on a free loopback port until the block ends."""
    port = free_port()
    proc = Process("topology serve", [sys.executable, "-m", "service.cli", "--log-level", "WARNING", "serve",
                                      "--embedded", str(data_dir), "--port", str(port)],
                   root / "server.log", env=env)
    server = Server(f"http://127.0.0.1:{port}", data_dir, proc.log)
    try:
        proc.wait_until(lambda: answers_graphql(server.graphql))
        yield server
    finally:
        proc.stop()


# -- the Node side ----------------------------------------------------------------------------------
def node_major() -> int:
    node = shutil.which("node")
    if node is None:
        return 0
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout
    try:
        return int(out.strip().lstrip("v").split(".")[0])
    except ValueError:
        return 0


def require_node_packages(*packages: str) -> None:
    require(node_major() >= 20, "Node.js 20 or newer (`node`)")
    for pkg in packages:
        require((JS_DIR / "node_modules" / pkg / "package.json").is_file(),
                f"npm package {pkg} in tests/js (`make install-node`)")


def require_chromium() -> None:
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM} (Debian package chromium)")

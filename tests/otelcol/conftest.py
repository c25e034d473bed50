"""A real OpenTelemetry Collector in front of Service Topology, run with the example configurations of
``docker/otelcol/`` as they are: only their endpoint and port variables are set, to free ports.

The Collector is built once by ``docker/otelcol/build.sh`` (cached outside the clone, keyed by the builder
manifest's hash; ``make test`` builds it first). When the build fails or Go is missing, the tests skip on a
developer's machine and fail with ``CI=true`` (:func:`tests.conftest.require`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.kafka.harness import ROOT, free_port

CONFIGS = ROOT / "docker" / "otelcol"
BUILD_LIMIT = 1800  # seconds for a cold build on a busy 2-core machine; a warm one prints the path at once


@pytest.fixture(scope="session")
def otelcol_binary() -> Path:
    """The Collector built from ``docker/otelcol/builder.yaml`` (built now if it is not cached yet)."""
    try:
        r = subprocess.run(["bash", str(CONFIGS / "build.sh")], capture_output=True, text=True,
                           timeout=BUILD_LIMIT, cwd=ROOT)
        lines = r.stdout.strip().splitlines()
        path = Path(lines[-1]) if r.returncode == 0 and lines else None
        why = r.stderr.strip()[-1500:]
    except subprocess.TimeoutExpired:
        path, why = None, f"the build took more than {BUILD_LIMIT} s"
    require(path is not None and path.is_file(),
            f"the OpenTelemetry Collector (docker/otelcol/build.sh failed: {why})")
    assert path is not None
    return path


class Collector:
    """``otelcol-topology --config docker/otelcol/<config>`` as a child process on free ports."""

    def __init__(self, binary: Path, config: str, env: dict[str, str], log: Path) -> None:
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log = log
        self.endpoint = f"http://127.0.0.1:{self.http_port}"
        ports = {"OTELCOL_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
                 "OTELCOL_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
                 "OTELCOL_METRICS_HOST": "127.0.0.1", "OTELCOL_METRICS_PORT": str(self.metrics_port)}
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL", "TOPOLOGY_", "KAFKA_"))}
        with log.open("ab") as f:
            self.popen = subprocess.Popen([str(binary), "--config", str(CONFIGS / config)],
                                          env={**clean, **ports, **env}, stdout=f, stderr=subprocess.STDOUT)

    def wait_up(self, limit: float = 60) -> None:
        """Until the OTLP/HTTP receiver accepts connections (polled; the limit only bounds a hang)."""
        deadline = time.monotonic() + limit
        while True:
            assert self.popen.poll() is None, f"the Collector exited: {self.log.read_text()[-3000:]}"
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=1):
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no Collector listening: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def metric(self, name: str) -> float:
        """The sum of the Collector's own counter ``name`` (with or without ``_total``, as Collector
        versions name them) over its label sets; 0 before its first count."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        starts = tuple(n + end for n in (name, name + "_total") for end in ("{", " "))
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(starts))

    def logged(self, *levels: str) -> list[str]:
        """The lines of the Collector's log so far at these levels (``warn``, ``error``)."""
        lines = self.log.read_text().splitlines()
        return [line for line in lines if len(parts := line.split("\t", 2)) > 1 and parts[1] in levels]

    def stop(self) -> int:
        """SIGTERM (the Collector drains its queues and exits 0), SIGKILL if it hangs; the exit status."""
        self.popen.terminate()  # nothing if it has exited already
        try:
            return self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)


StartCollector = Callable[[str, dict[str, str]], Collector]


@pytest.fixture
def start_collector(otelcol_binary: Path, tmp_path: Path) -> Iterator[StartCollector]:
    """``start_collector(config, env)``: a Collector running ``docker/otelcol/<config>``, listening. All
    are stopped afterwards, and each must exit with status 0."""
    started: list[Collector] = []

    def start(config: str, env: dict[str, str]) -> Collector:
        c = Collector(otelcol_binary, config, env, tmp_path / f"otelcol-{len(started)}.log")
        started.append(c)
        c.wait_up()
        return c

    yield start
    for c in started:
        assert c.stop() == 0, c.log.read_text()[-3000:]

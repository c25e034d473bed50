"""The server's command line and environment as deployed, run for real: the chart's (dev values: the
embedded store) and compose's (JanusGraph, against the dev server). Only what belongs to the machine is
changed: the listening address (loopback, a free port), the store directory and JanusGraph's host; the
process then has to answer /healthz and /readyz (every store answers)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import EXAMPLES, ROOT, Render
from tests.deploy.manifests import Container, containers
from tests.e2e.conftest import Process, free_port
from tests.janusgraph.conftest import janusgraph_url  # noqa: F401 - the fixture

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def status(url: str) -> tuple[int, dict[str, object]]:
    try:
        with _DIRECT.open(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except (urllib.error.URLError, OSError):
        return 0, {}


def on_loopback(argv: list[str], port: int) -> list[str]:
    """``argv`` with its --host and --port (either spelling) replaced by loopback and ``port``."""
    out: list[str] = []
    value_next = False
    for a in argv:
        if value_next:
            value_next = False
            continue
        if a.split("=", 1)[0] in ("--host", "--port"):
            value_next = "=" not in a
            continue
        out.append(a)
    return [*out, "--host=127.0.0.1", f"--port={port}"]


def run_server(c: Container, tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    argv = on_loopback(c.argv, port)
    server = Process("topology serve", [sys.executable, "-m", "service.cli", *argv], tmp_path / "serve.log",
                     env={**c.env, **env})
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_until(lambda: status(f"{base}/readyz")[0] == 200, timeout=120)
        assert status(f"{base}/healthz")[0] == 200
    finally:
        server.stop()


@pytest.mark.helm
def test_the_charts_dev_server_starts_and_is_ready(render: Render, tmp_path: Path) -> None:
    docs = render(EXAMPLES / "dev.yaml")
    (c,) = [c for c in containers(docs, ours={"service-topology"}) if c.spec["name"] == "server"]
    assert c.env["TOPOLOGY_DATA_DIR"] == "/data"
    run_server(c, tmp_path, {"TOPOLOGY_DATA_DIR": str(tmp_path / "data")})


@pytest.mark.janusgraph
def test_the_compose_server_starts_over_janusgraph(janusgraph_url: str, tmp_path: Path) -> None:  # noqa: F811
    service = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["topology"]
    env = {k: str(v) for k, v in service["environment"].items()}
    c = Container("compose topology", list(service["command"]), env, {}, {}, {})
    assert env["JANUSGRAPH_URL"] == "ws://janusgraph:18182/gremlin"
    run_server(c, tmp_path, {"JANUSGRAPH_URL": janusgraph_url})

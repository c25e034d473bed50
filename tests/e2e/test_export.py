"""Exports from a running server, read by the real consumers of each format, and ``topology export``.

``topology export`` (the command line) asks the server started over the hand-built topology for each
format; Cytoscape.js loads the Cytoscape JSON and Mermaid renders the flowchart in headless Chromium
(``tests/js/formats.mjs``), Graphviz renders the DOT, networkx reads the GraphML.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CHROMIUM, JS_DIR, Server, require_chromium, require_node_packages
from tests.e2e.test_widget import AROUND_CHECKOUT, KINDS
from tests.service.test_export import graphviz_svg

pytestmark = pytest.mark.browser

EDGES = {tuple(e.split("->")) for e in AROUND_CHECKOUT}


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    require_node_packages("playwright-core", "cytoscape", "mermaid")
    require_chromium()


def cli_export(server: Server, out: Path, fmt: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "service.cli", "export", "--url", server.base,
                           "--format", fmt, "--service", "checkout-api", "--depth", "2", "--output", str(out),
                           *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return out.read_text(encoding="utf-8")


def read_with(**files: Path) -> dict[str, Any]:
    argv = ["node", str(JS_DIR / "formats.mjs"), "--chromium", CHROMIUM]
    for k, v in files.items():
        argv += [f"--{k}", str(v)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and report["ok"], report["error"]
    assert report["blocked"] == []
    return report


def test_every_format_from_the_command_line_reads_back(health_server: Server, tmp_path: Path) -> None:
    cli_export(health_server, tmp_path / "g.cyjs", "cytoscape")
    cli_export(health_server, tmp_path / "g.mmd", "mermaid")
    seen = read_with(cytoscape=tmp_path / "g.cyjs", mermaid=tmp_path / "g.mmd")
    cy = seen["cytoscape"]
    assert {n["id"]: n["kind"] for n in cy["nodes"]} == KINDS
    assert {tuple(e) for e in cy["edges"]} == EDGES
    assert {n["id"]: n["health"] for n in cy["nodes"]}["payments-svc"] == "DEGRADED"
    mm = seen["mermaid"]
    assert sorted(mm["nodes"]) == sorted(KINDS)
    assert {tuple(e) for e in mm["edges"]} == EDGES

    nodes, edges = graphviz_svg(cli_export(health_server, tmp_path / "g.gv", "dot"))
    assert (nodes, edges) == (set(KINDS), EDGES)

    nx = pytest.importorskip("networkx")
    g = nx.read_graphml(io.BytesIO(cli_export(health_server, tmp_path / "g.graphml", "graphml").encode()))
    assert set(g.edges) == EDGES

    body = json.loads(cli_export(health_server, tmp_path / "g.json", "json", "--layers", "TRACE"))
    assert {(e["source"], e["target"]) for e in body["edges"]} == {("user", "web-frontend"),
                                                                   ("web-frontend", "checkout-api")}


def test_command_line_says_why_an_export_is_refused(health_server: Server, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "service.cli", "export", "--url", health_server.base,
                           "--service", "no-such-service"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "topology export: error: the server refused the export (404): no service named 'no-such-service'"]

"""GraphiQL, served by our real server from local assets, in Debian's headless Chromium.

``tests/js/graphiql.mjs`` (playwright-core) opens ``GET /graphql`` with every request that is not
for loopback aborted, waits for the editor, loads a query through the page's ``?q=`` parameter,
clicks the run button and waits for the result pane to show the expected names. It reports every
request the page made, so the test can check that the page works with no network beyond this machine.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import strawberry
from strawberry.asgi import GraphQL

from tests.e2e.conftest import (
    CHROMIUM,
    JS_DIR,
    UPSTREAM,
    Server,
    ThreadedServer,
    answers_graphql,
    free_port,
    require_chromium,
    require_node_packages,
)

pytestmark = pytest.mark.browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="session", autouse=True)  # session: before topology_server starts
def browser_tools() -> None:
    """Node, playwright-core and Chromium, checked before any server starts."""
    require_node_packages("playwright-core")
    require_chromium()


def run_graphiql(server: Server | str, query: str, expect: list[str], screenshot: Path,
                 timeout_ms: int = 15000) -> tuple[int, dict[str, Any]]:
    url = server if isinstance(server, str) else server.graphql
    argv = ["node", str(JS_DIR / "graphiql.mjs"), "--url", url, "--query", query,
            "--screenshot", str(screenshot), "--timeout", str(timeout_ms), "--chromium", CHROMIUM]
    for e in expect:
        argv += ["--expect", e]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pytest.fail(f"graphiql.mjs printed no report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.returncode, report


def test_graphiql_runs_a_query_offline(topology_server: Server, tmp_path: Path) -> None:
    shot = tmp_path / "graphiql.png"
    query = '{ service(name: "checkout-api") { name owner { team } upstream(depth: 2) { edges { node { ' \
            'depth service { name } } } } } }'
    expected = [name for _, name in UPSTREAM[("checkout-api", 2)]]
    rc, report = run_graphiql(topology_server, query, ["checkout-api", *expected], shot)
    assert rc == 0 and report["ok"], report

    # The page really came from our server and needed nothing from outside this machine.
    assert report["blocked"] == []
    hosts = {urlsplit(u).hostname for u in report["requests"]}
    assert hosts <= LOOPBACK, hosts
    paths = [urlsplit(u).path for u in report["requests"]]
    assert any(p.endswith(".js") for p in paths), paths  # GraphiQL's scripts, served locally
    assert any(p.endswith(".css") for p in paths), paths
    assert report["pageErrors"] == []
    assert report["querySource"] == "url"  # the page read `?q=` (no typing was needed)

    # The result pane shows the answer of the store, in order.
    svc = report["response"]["data"]["service"]
    assert svc["name"] == "checkout-api" and svc["owner"] == {"team": "payments"}
    got = [(e["node"]["depth"], e["node"]["service"]["name"]) for e in svc["upstream"]["edges"]]
    assert got == UPSTREAM[("checkout-api", 2)]

    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000  # a rendered page, not a blank image


def test_graphiql_check_fails_when_the_answer_is_not_there(topology_server: Server, tmp_path: Path) -> None:
    # The same check must be able to fail: a service the store does not know never shows up as data
    # (the NOT_FOUND error beside it names it, so the check looks for its owner's team instead).
    shot = tmp_path / "missing.png"
    rc, report = run_graphiql(topology_server, '{ service(name: "no-such-service") { name owner { team } } }',
                              ["team-of-no-such-service"], shot)
    assert rc != 0 and not report["ok"]
    assert report["error"] == 'the result pane lacks "team-of-no-such-service"'
    assert report["response"]["data"] == {"service": None}  # the page ran it; the answer is null (NOT_FOUND)
    assert not shot.exists()
    assert Path(report["failedScreenshot"]).read_bytes().startswith(PNG_MAGIC)
    assert report["blocked"] == []


def test_graphiql_check_catches_a_page_that_needs_a_cdn(tmp_path: Path) -> None:
    # Strawberry's stock GraphiQL page loads its scripts from a public CDN: the check must see that.
    @strawberry.type
    class Query:
        hello: str = "world"

    port = free_port()
    with ThreadedServer(GraphQL(strawberry.Schema(Query)), port):
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.monotonic() + 10
        while not answers_graphql(url):
            assert time.monotonic() < deadline, "the stock GraphiQL server did not start"
            time.sleep(0.05)
        rc, report = run_graphiql(url, "{ hello }", ["world"], tmp_path / "cdn.png", timeout_ms=3000)
    assert rc != 0 and not report["ok"]
    assert report["blocked"], report  # the CDN requests were attempted, and aborted
    assert all(urlsplit(u).hostname not in LOOPBACK for u in report["blocked"])
    assert any(urlsplit(u).path.endswith(".js") for u in report["blocked"])

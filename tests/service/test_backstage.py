"""``topology backstage import|export`` as a child process against a real ``topology serve`` with tokens:
Backstage Components into the catalog (the admin token), observed calls out as spec.dependsOn patches;
every refusal is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from service.tokens import new_token, token_line
from tests.integration.test_serve_security import _running
from tests.service.test_cli import _env, _free_port, _one_line_error, _run
from tests.topology.stages.otlp_builders import resource_spans, span, traces
from tests.topology.test_backstage import GRAPH, HERE

GOOD, BAD = str(HERE / "catalog-info.yaml"), str(HERE / "bad.yaml")
PROG = "topology backstage"


def test_import_and_export_against_a_server_with_authentication(tmp_path: Path) -> None:
    admin = new_token()
    (tmp_path / "tokens.jsonl").write_text(token_line("platform", ["admin", "ingest", "read"], admin) + "\n",
                                           encoding="utf-8")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {admin}"}
    env = _env(TOPOLOGY_TOKENS_FILE=str(tmp_path / "tokens.jsonl"))
    with _running(["--port", str(port), "--embedded", str(tmp_path / "store")], env):
        r = _run("backstage", "import", BAD, GOOD, "--url", url, env=_env(TOPOLOGY_BACKSTAGE_TOKEN=admin))
        assert r.returncode == 1 and "Traceback" not in r.stderr
        lines = r.stderr.splitlines()
        assert sum(": rejected: " in ln for ln in lines) == 11, r.stderr  # each rejection, one line
        assert lines[-1] == f"{PROG}: error: 11 of 17 entities rejected (above); nothing imported"

        r = _run("backstage", "import", GOOD, "--url", url)  # no token
        assert r.returncode == 1
        _one_line_error("\n".join(ln for ln in r.stderr.splitlines() if ": skipped: " not in ln), PROG,
                        "the server refused the catalog (401)")

        r = _run("backstage", "import", GOOD, "--url", url, env=_env(TOPOLOGY_BACKSTAGE_TOKEN=admin))
        assert r.returncode == 0, r.stderr
        assert r.stderr.splitlines()[-1] == f"imported 2 components into {url}"
        # calls 90 s ago (their window closed, within the 120 s grace): checkout -> orders-api -> a database
        start = time.time() - 90
        db = {"db.system": "postgresql", "db.name": "orders-db"}
        spans = traces(
            resource_spans("checkout", [span(1, 1, None, "server", start=start),
                                        span(1, 2, 1, "client", start=start + 0.01, duration=0.05)]),
            resource_spans("orders-api", [span(1, 3, 2, "server", start=start + 0.02, duration=0.04),
                                          span(1, 4, 3, "client", start=start + 0.03, duration=0.001,
                                               attributes=db)]))
        r2 = httpx.post(f"{url}/v1/traces?wait=true", content=spans.SerializeToString(), timeout=120,
                        headers={**auth, "content-type": "application/x-protobuf"})
        assert r2.status_code == 200 and r2.headers["topology-written"] == "true", r2.text

        deadline = time.monotonic() + 60  # the database call waits for its server span first (10 s)
        while "orders-db" not in targets(url, auth):
            assert time.monotonic() < deadline, "the database call never showed in /export"
            time.sleep(0.5)
        out = tmp_path / "patches"
        r = _run("backstage", "export", GOOD, "--url", url, "--output", str(out),
                 env=_env(TOPOLOGY_BACKSTAGE_TOKEN=admin))
        assert r.returncode == 0, r.stderr
        patches = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in out.iterdir()}
        # checkout declares component:payments-api and calls orders-api, the entity "orders"
        assert {n: p["spec"]["dependsOn"] for n, p in patches.items()} == {
            "checkout": ["component:payments-api", "component:orders"], "orders": ["resource:orders-db"]}
        assert (patches["orders"]["kind"], patches["orders"]["metadata"]) == ("Component", {"name": "orders"})
        query = '{ a: service(name: "checkout") { tier domain owner { team email } } ' \
                'b: service(name: "orders-api") { tier domain owner { team } } }'
        data = httpx.post(f"{url}/graphql", json={"query": query}, headers=auth, timeout=30).json()["data"]
        assert data == {"a": {"tier": 0, "domain": "commerce",
                              "owner": {"team": "payments-team", "email": "payments@example.com"}},
                        "b": {"tier": 2, "domain": "order-handling", "owner": {"team": "jdoe"}}}


def targets(url: str, auth: dict[str, str]) -> set[str]:
    r = httpx.get(f"{url}/export", params={"format": "json", "window": "6h"}, headers=auth, timeout=30)
    return {e["target"] for e in r.json()["edges"]}


def test_import_without_a_server_prints_the_catalog_json() -> None:
    r = _run("backstage", "import", GOOD)
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert [(d["name"], d["tier"], d["domain"], d["owner"]["team"]) for d in records] == [
        ("checkout", 0, "commerce", "payments-team"), ("orders-api", 2, "order-handling", "jdoe")]
    assert sum(": skipped: " in ln for ln in r.stderr.splitlines()) == 3  # System, API, Resource


def test_export_from_a_saved_map_writes_yaml_documents(tmp_path: Path) -> None:
    (tmp_path / "map.json").write_text(json.dumps(GRAPH), encoding="utf-8")
    r = _run("backstage", "export", "--graph", str(tmp_path / "map.json"))
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["metadata"]["name"] for d in docs] == ["checkout", "orders-api", "payments-api"]
    assert "db:10.0.0.7" in r.stderr  # the name Backstage cannot take is said, not suggested


@pytest.mark.parametrize(("argv", "words"), [
    (["import", "{tmp}/none.yaml"], ["cannot read", "none.yaml"]),
    (["import", "{tmp}/broken.yaml"], ["broken.yaml is not YAML"]),
    (["import", "{tmp}/empty.yaml"], ["no Component entity"]),
    (["export"], ["--url of a server, or --graph FILE"]),
    (["export", "--graph", "{tmp}/broken.yaml"], ["broken.yaml is not JSON"]),
    (["export", "--graph", "{tmp}/other.json"], ["not a service-topology/v1 export"]),
    (["export", "--url", f"http://127.0.0.1:{_free_port()}"], ["cannot be reached"]),
])
def test_a_refusal_is_one_line(argv: list[str], words: list[str], tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("a: [1, 2\nb: {", encoding="utf-8")
    (tmp_path / "empty.yaml").write_text("---\n", encoding="utf-8")
    (tmp_path / "other.json").write_text('{"nodes": []}', encoding="utf-8")
    r = _run("backstage", *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert r.returncode == 1, r
    _one_line_error(r.stderr, PROG, *words)


def test_a_bad_url_is_a_setting_error() -> None:
    r = _run("backstage", "import", GOOD, "--url", "ftp://x")
    assert r.returncode == 2
    _one_line_error(r.stderr, PROG, "TOPOLOGY_BACKSTAGE_URL")

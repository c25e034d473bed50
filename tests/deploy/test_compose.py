"""docker/compose.yaml: the `topology` service's command and environment are `topology serve`'s own
(parsed and resolved by its parser and settings), and what it names exists in the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from service.config import ServiceConfig
from tests.deploy.conftest import ROOT
from tests.deploy.manifests import Container, check
from topology.settings import StoreSettings

COMPOSE = ROOT / "docker" / "compose.yaml"


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items()
            if s.get("build", {}).get("dockerfile") == "docker/server/Dockerfile"}


def test_the_topology_service_runs_what_the_parser_accepts(tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = ours(compose)
    assert list(services) == ["topology"]
    for name, service in services.items():
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        c = Container(f"compose service {name}", list(service["command"]), env, {},
                      {"args": service["command"]}, {})
        s = check(c, tmp_path)
        assert s[StoreSettings].backend == "janusgraph"
        host = urlsplit(s[StoreSettings].janusgraph_url).hostname
        assert host in compose["services"] and host in service["depends_on"]
        config = s[ServiceConfig]
        published = {p.rsplit(":", 1)[1]: p.split(":")[0] for p in service["ports"]}
        assert published == {str(config.port): "127.0.0.1"}  # --insecure: on the host's loopback only
        assert (ROOT / service["build"]["dockerfile"]).is_file()

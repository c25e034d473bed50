"""The images the deployment files name: what the chart and compose assume of them is in their
Dockerfiles (entry point, user, what is copied), and the build context sends what they copy."""

from __future__ import annotations

import fnmatch
import json
import re

import yaml

from tests.deploy.conftest import CHART, ROOT
from tests.deploy.manifests import ENTRYPOINTS

SERVER = ROOT / "docker" / "server" / "Dockerfile"
AGENT = ROOT / "docker" / "agent" / "Dockerfile"


def instructions(path: str) -> list[tuple[str, str]]:
    text = (ROOT / path).read_text().replace("\\\n", " ")
    return [(m[0].upper(), m[1].strip()) for m in re.findall(r"^([A-Za-z]+)\s+(.*)$", text, re.M)
            if not m[0].startswith("#")]


def test_the_server_image_runs_topology_as_the_charts_user() -> None:
    steps = instructions("docker/server/Dockerfile")
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    assert ("ENTRYPOINT", '["topology"]') in final
    assert ("USER", "10001:10001") in final
    chart = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "runAsUser: 10001" in chart and "runAsGroup: 10001" in chart
    copied = {args.split()[0] for op, args in final if op == "COPY" and not args.startswith("--from")}
    assert {"topology", "service", "ingest", "agent"} <= copied
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "service-topology"


def test_the_build_context_sends_what_the_server_image_copies() -> None:
    lines = (ROOT / "docker/server/Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    def sent(path: str) -> bool:
        """Docker's rules: the last rule matching the path or a folder above it wins."""
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        keep = True
        for rule in ignore:
            pattern = rule.lstrip("!").rstrip("/")
            if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
                keep = rule.startswith("!")
        return keep

    for op, args in instructions("docker/server/Dockerfile"):
        if op == "COPY" and not args.startswith("--from"):
            sources = args.split()[:-1]
            for source in sources:
                assert sent(source), f"COPY {source}: left out of the build context"
                assert (ROOT / source).exists(), source
    assert not sent(".venv/bin/python") and not sent("var/demo/x") and not sent("widget/node_modules/a")


def test_the_agent_image_entry_point_is_topology_agent() -> None:
    steps = dict(instructions("docker/agent/Dockerfile"))
    assert json.loads(steps["ENTRYPOINT"]) == ["/usr/local/bin/topology-agent"]
    entry = (ROOT / "docker/agent/entrypoint.sh").read_text()
    assert entry.rstrip().endswith('exec /opt/venv/bin/topology agent "$@"')
    assert ENTRYPOINTS == {"topology-agent": ["agent"]}

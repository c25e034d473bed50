"""The deployment files agree with the agent: the DaemonSet's flags parse, and it grants and mounts what
the preflight checks for (privileges, tracefs, cgroups), with host PID and network."""

from __future__ import annotations

import re

from agent.cli import build_parser
from agent.settings import AgentSettings
from tests.agent.conftest import ROOT
from topology.settings import resolve

DOCKER = ROOT / "docker" / "agent"


def agent_args(text: str) -> list[str]:
    block = text.split("- name: agent", 1)[1].split("env:", 1)[0]
    flags = re.findall(r"^\s+- (--\S+)\s*$", block, re.M)
    return [m.strip().replace("$(NODE_NAME)", "node-1") for m in flags]


def test_daemonset_flags_parse_and_privileges_match_the_preflight() -> None:
    text = (DOCKER / "daemonset.yaml").read_text()
    s = resolve(AgentSettings, build_parser().parse_args(agent_args(text)), {})
    assert s.kafka == "kafka.topology.svc:9092" and s.pods == "/run/topology/pods.json"
    assert (s.metrics_port, s.metrics_host) == (9464, "0.0.0.0")
    assert s.workloads == "/etc/topology/workloads.json" and s.host == "node-1"
    for line in ("hostPID: true", "hostNetwork: true", 'add: ["BPF", "PERFMON"',
                 "mountPath: /sys/kernel/tracing", "path: /sys/kernel/tracing", "mountPath: /sys/fs/cgroup",
                 "mountPath: /run/topology", "kind: DaemonSet", "verbs: [\"get\", \"list\"]"):
        assert line in text, line


def test_image_has_bcc_headers_and_the_agent() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for part in ("python3-bpfcc", "linux-headers-amd64", "--system-site-packages", "COPY agent agent",
                 "ENTRYPOINT"):
        assert part in dockerfile, part
    entry = (DOCKER / "entrypoint.sh").read_text()
    assert 'exec /opt/venv/bin/topology agent "$@"' in entry and "/lib/modules/$(uname -r)" in entry

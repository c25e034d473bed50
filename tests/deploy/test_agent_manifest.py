"""docker/agent/daemonset.yaml (for `kubectl apply` without helm) and the chart's agent are the same pod:
both valid against the Kubernetes schemas, both parsed by `topology agent`'s own parser into the same
settings, with the same privileges, host namespaces, mounts and sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent.settings import AgentSettings
from tests.deploy.conftest import ROOT, Render
from tests.deploy.manifests import Container, check, containers, pod_spec
from topology.settings import KafkaSettings

DAEMONSET = ROOT / "docker" / "agent" / "daemonset.yaml"
DEV = ROOT / "docker" / "helm" / "examples" / "dev.yaml"


def manifest() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]


def agent_of(docs: list[dict[str, Any]]) -> Container:
    (c,) = containers(docs, ours={"topology-agent"})
    return c


def test_the_daemonset_file_is_valid_and_parses(tmp_path: Path) -> None:
    docs = manifest()
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)
    s = check(agent_of(docs), tmp_path)
    assert s[AgentSettings].kafka == "kafka.topology.svc:9092"
    assert s[KafkaSettings].bootstrap == "kafka.topology.svc:9092"


@pytest.mark.helm
def test_the_chart_runs_the_same_agent_pod(render: Render, tmp_path: Path) -> None:
    plain = manifest()
    charted = render(DEV, set={"kafka.enabled": "true", "kafka.bootstrap": "kafka.topology.svc:9092",
                               "agent.image.tag": "latest"})
    ours, theirs = agent_of(plain), agent_of(charted)
    mine, chart = check(ours, tmp_path), check(theirs, tmp_path)
    # --kafka=HOST:PORT there, --kafka with KAFKA_BOOTSTRAP here: the same sink and brokers
    assert mine[KafkaSettings] == chart[KafkaSettings]
    assert _without_kafka(mine[AgentSettings]) == _without_kafka(chart[AgentSettings])
    (ds_plain,) = [d for d in plain if d["kind"] == "DaemonSet"]
    (ds_chart,) = [d for d in charted if d["kind"] == "DaemonSet"]
    p, c = pod_spec(ds_plain), pod_spec(ds_chart)
    for key in ("hostPID", "hostNetwork", "dnsPolicy", "tolerations"):
        assert p[key] == c[key], key
    assert ours.spec["image"].split(":")[0] == theirs.spec["image"].split(":")[0]
    for key in ("ports", "resources"):
        assert ours.spec[key] == theirs.spec[key], key
    assert ours.spec["securityContext"] == theirs.spec["securityContext"]
    assert _mounts(p, ours.spec) == _mounts(c, theirs.spec)
    assert _sidecars(p) == _sidecars(c)
    workloads = [yaml.safe_load(d["data"]["workloads.json"]) for docs in (plain, charted) for d in docs
                 if d["kind"] == "ConfigMap"]
    assert workloads[0] == workloads[1]


def _sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("image", "command", "args", "env", "securityContext", "resources", "volumeMounts")
    return [{k: x[k] for k in keys} for x in pod["containers"] if x["name"] != "agent"]


def _without_kafka(s: AgentSettings) -> dict[str, Any]:
    return {k: getattr(s, k) for k in AgentSettings.__dataclass_fields__ if k != "kafka"}


def _mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """mount path -> (host path or volume kind, read-only, propagation)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for m in container["volumeMounts"]:
        v = volumes[m["name"]]
        source = v["hostPath"]["path"] if "hostPath" in v else next(k for k in v if k != "name")
        out[m["mountPath"]] = (source, m.get("readOnly", False), m.get("mountPropagation"))
    return out

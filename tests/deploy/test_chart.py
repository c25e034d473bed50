"""The Helm chart (docker/helm/service-topology) rendered by helm built from source, for several value
sets: every manifest valid against the Kubernetes schemas (strict: no unknown field), every container's
command line and environment accepted by `topology`'s own parser and settings, and the promises of the
chart (probes, non-root, the agent's exact capabilities, secrets only as files, one worker Deployment per
layer and stage, Prometheus scraping) held."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from agent.settings import AgentSettings
from ingest.main import IngestSettings
from service.config import ServiceConfig
from service.settings import ServeSettings
from tests.deploy.conftest import CHART, EXAMPLES, NAMESPACE, Render, RenderError, run_helm
from tests.deploy.manifests import check, containers, pod_spec
from topology.settings import KafkaSettings, StoreSettings

pytestmark = pytest.mark.helm

OURS = {"service-topology", "topology-agent"}
Rendered = tuple[str, list[dict[str, Any]]]
AGENT_CAPABILITIES = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_RESOURCE"]
# Kubernetes versions validated against: the chart's kubeVersion floor and the newest schemas.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())

DEV = EXAMPLES / "dev.yaml"
PRODUCTION = EXAMPLES / "production.yaml"
# name -> (value files, --set): the trial install, production, the embedded store fed by Kafka, tokens
# with the agent posting to a separate ingest port, and the other authentication roads (OIDC; mTLS with
# client scopes) with TLS to Kafka and JanusGraph.
VALUE_SETS: dict[str, tuple[list[Path], dict[str, str]]] = {
    "dev": ([DEV], {}),
    "production": ([PRODUCTION], {}),
    "embedded-kafka": ([DEV], {"kafka.enabled": "true", "kafka.bootstrap": "kafka.topology.svc:9092",
                               "metrics.serviceMonitor.enabled": "true"}),
    "tokens-http": ([DEV], {"auth.insecure": "false", "auth.tokensSecret.name": "topology-tokens",
                            "agent.tokenSecret.name": "topology-agent-token", "server.ingestPort": "8081"}),
    "oidc-mtls": ([PRODUCTION], {
        "auth.tokensSecret.name": "", "auth.oidc.jwks": "https://idp.example.com/jwks.json",
        "auth.oidc.issuer": "https://idp.example.com/", "auth.oidc.audience": "topology",
        "auth.oidc.scopePrefix": "topology.", "auth.tls.clientCaKey": "ca.crt",
        "auth.tls.clientScopes": "otel-collector:ingest\\,ops:read+admin",
        "kafka.securityProtocol": "SSL", "kafka.tls.clientCertSecret": "topology-kafka-client",
        "kafka.tls.checkHostname": "false",
        "store.janusgraph.clientCertSecret": "topology-janusgraph-client"}),
}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, render: Render) -> Rendered:
    files, sets = VALUE_SETS[request.param]
    return request.param, render(*files, set=sets)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_helm_lint_is_clean(helm: list[str]) -> None:
    for values in (DEV, PRODUCTION):
        done = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                        "--values", str(values))
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_manifest_is_valid_against_the_kubernetes_schemas(rendered: Rendered) -> None:
    _, docs = rendered
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            check_service_monitor(doc)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{name} (Kubernetes {version}): {e.message} at "
                                     f"{'/'.join(map(str, e.path))}") from None
        assert doc["metadata"].get("namespace") in (None, NAMESPACE), name


def check_service_monitor(doc: dict[str, Any]) -> None:
    """The fields of the Prometheus Operator's ServiceMonitor the chart uses (a CRD: no schema above)."""
    assert doc["kind"] == "ServiceMonitor" and doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    assert set(spec) == {"selector", "endpoints"} and set(spec["selector"]) == {"matchLabels"}
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scheme", "authorization"}, endpoint
        if "authorization" in endpoint:
            assert endpoint["authorization"]["type"] == "Bearer"
            assert set(endpoint["authorization"]["credentials"]) == {"name", "key"}


def test_every_command_line_and_variable_is_the_programs_own(rendered: Rendered,
                                                          tmp_path: Path) -> None:
    _, docs = rendered
    found = list(containers(docs, ours=OURS))
    assert found
    for c in found:
        check(c, tmp_path)


def test_probes_resources_and_security_contexts(rendered: Rendered) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] not in ("Deployment", "DaemonSet"):
            continue
        pod = pod_spec(doc)
        for c in pod["containers"]:
            where = f"{doc['kind']}/{doc['metadata']['name']} {c['name']}"
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert not security.get("privileged"), where
            if c["name"] == "agent":
                assert security["capabilities"]["add"] == AGENT_CAPABILITIES, where
                assert security["runAsUser"] == 0 and pod["hostPID"] and pod["hostNetwork"], where
                assert c["livenessProbe"]["httpGet"]["path"] == "/metrics", where
                continue
            assert "add" not in security["capabilities"], where
            assert security.get("runAsNonRoot") or pod["securityContext"]["runAsNonRoot"], where
            if c["name"] == "pod-metadata":
                continue
            assert security["readOnlyRootFilesystem"] is True, where
            assert pod["securityContext"]["runAsUser"] != 0, where
            assert pod["automountServiceAccountToken"] is False, where
            if c["name"] == "server":
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
                assert c["startupProbe"]["httpGet"]["path"] == "/healthz", where
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", where
                assert c["readinessProbe"]["httpGet"]["port"] == "http", where
            else:
                assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}, where


def test_services_and_monitors_reach_ports_that_exist(rendered: Rendered) -> None:
    _, docs = rendered
    pods = [(pod_spec(d), d["spec"]["template"]["metadata"]["labels"]) for d in docs
            if d["kind"] in ("Deployment", "DaemonSet")]
    services = by_kind(docs, "Service")
    for name, svc in services.items():
        selected = [p for p, labels in pods if svc["spec"]["selector"].items() <= labels.items()]
        assert selected, f"Service/{name} selects no pod"
        for port in svc["spec"]["ports"]:
            for pod in selected:
                names = {p.get("name") for c in pod["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"Service/{name} port {port['targetPort']}"
    for name, monitor in by_kind(docs, "ServiceMonitor").items():
        matched = [s for s in services.values()
                   if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(matched) == 1, f"ServiceMonitor/{name} matches {len(matched)} Services"
        ports = {p["name"] for p in matched[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports, name


def test_the_chart_never_holds_a_secret(rendered: Rendered, tmp_path: Path) -> None:
    _, docs = rendered
    assert not by_kind(docs, "Secret")
    for c in containers(docs, ours=OURS):
        for name in c.env:
            assert not name.endswith(("_PASSWORD", "_TOKEN")), f"{c.where}: {name} (use {name}_FILE)"
        settings = check(c, tmp_path)
        kafka = settings.get(KafkaSettings)
        if kafka is not None and kafka.security_protocol.startswith("SASL_"):
            assert kafka.password is None and kafka.password_file, c.where
        store = settings.get(StoreSettings)
        if store is not None and store.janusgraph_username:
            assert store.janusgraph_password is None and store.janusgraph_password_file, c.where


def test_defaults_ask_for_an_authentication_choice(render: Render) -> None:
    with pytest.raises(RenderError, match=re.escape("auth.insecure=true")):
        render()


def test_dev_is_the_embedded_store_fed_over_http(render: Render, tmp_path: Path) -> None:
    docs = render(DEV)
    assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]
    (server,) = by_kind(docs, "Deployment").values()
    assert server["spec"]["replicas"] == 1 and server["spec"]["strategy"] == {"type": "Recreate"}
    assert "store" in {v["name"] for v in pod_spec(server)["volumes"]}
    assert list(by_kind(docs, "PersistentVolumeClaim")) == ["topology-service-topology-store"]
    assert not by_kind(docs, "PodDisruptionBudget")  # one replica: a budget would block node drains
    found = {c.spec["name"]: check(c, tmp_path) for c in containers(docs, ours=OURS)}
    serve, agent = found["server"], found["agent"]
    assert serve[StoreSettings].backend == "embedded" and serve[StoreSettings].data_dir == "/data"
    assert serve[ServiceConfig].insecure and serve[ServiceConfig].host == "0.0.0.0"
    assert not serve[ServeSettings].kafka
    assert agent[AgentSettings].http == "http://topology-service-topology.topology.svc:8080"
    assert server["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8080"


def test_one_worker_deployment_per_layer_and_stage(render: Render, tmp_path: Path) -> None:
    docs = render(PRODUCTION)
    workers = {}
    for c in containers(docs, ours={"service-topology"}):
        s = check(c, tmp_path)
        if IngestSettings in s:
            workers[(s[IngestSettings].layer, s[IngestSettings].stage)] = c
            if s[IngestSettings].writes_stores:
                assert s[StoreSettings].backend == "janusgraph"
            else:
                assert StoreSettings not in s
            assert s[KafkaSettings].security_protocol == "SASL_SSL"
            assert s[IngestSettings].partitions == 12 and s[KafkaSettings].topic_prefix == "prod."
    deployments = by_kind(docs, "Deployment")
    expected = {("network", 1): 6, ("network", 2): 4, ("network", 3): 2, ("ipc", 1): 2, ("ipc", 2): 2,
                ("ipc", 3): 1, ("trace", 1): 4, ("trace", 2): 4, ("trace", 3): 2, ("meta", 1): 1}
    assert set(workers) == set(expected)
    for (layer, stage), replicas in expected.items():
        assert deployments[f"topology-service-topology-{layer}-stage{stage}"]["spec"]["replicas"] == replicas
    server = deployments["topology-service-topology"]
    assert server["spec"]["replicas"] == 3 and "strategy" not in server["spec"]
    (budget,) = by_kind(docs, "PodDisruptionBudget").values()
    assert budget["spec"]["selector"]["matchLabels"].items() <= server["spec"]["template"]["metadata"][
        "labels"].items()
    assert not by_kind(docs, "PersistentVolumeClaim")


def test_the_embedded_store_keeps_the_terminal_workers_in_the_server(render: Render, tmp_path: Path) -> None:
    docs = render(DEV, set={"kafka.enabled": "true"})
    stages = set()
    for c in containers(docs, ours={"service-topology"}):
        s = check(c, tmp_path)
        if IngestSettings in s:
            stages.add((s[IngestSettings].layer, s[IngestSettings].stage))
            assert StoreSettings not in s
        else:
            assert s[ServeSettings].kafka is True and s[KafkaSettings].bootstrap == "kafka:9092"
    assert stages == {(layer, stage) for layer in ("network", "ipc", "trace") for stage in (1, 2)}


@pytest.mark.parametrize(("sets", "message"), [
    ({"kafka.enabled": "true", "workers.replicas.trace.stage2": "5"}, "kafka.partitions=4"),
    ({"server.replicas": "2"}, "server.replicas must be 1"),
    ({"kafka.enabled": "true", "kafka.securityProtocol": "SASL_SSL"}, "kafka.sasl.username"),
    ({"store.backend": "cassandra"}, "at '/store/backend': value must be one of 'embedded', 'janusgraph'"),
    ({"kafka.bootstrapServers": "k:9092"}, "additional properties 'bootstrapServers' not allowed"),
    ({"auth.insecure": "false", "auth.tokensSecret.name": "t"}, "agent.tokenSecret.name"),
])
def test_contradicting_values_are_refused_with_the_reason(render: Render, sets: dict[str, str],
                                                          message: str) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        render(DEV, set=sets)


def test_production_secrets_scraping_and_tls(render: Render, tmp_path: Path) -> None:
    docs = render(PRODUCTION)
    server = by_kind(docs, "Deployment")["topology-service-topology"]
    assert "annotations" not in server["spec"]["template"]["metadata"]  # its /metrics needs a token
    (c,) = [c for c in containers(docs, ours={"service-topology"}) if c.spec["name"] == "server"]
    s = check(c, tmp_path)
    assert s[ServiceConfig].tokens_file and s[ServiceConfig].tls_cert and not s[ServiceConfig].insecure
    assert s[StoreSettings].janusgraph_url.startswith("wss://") and s[StoreSettings].janusgraph_ca_file
    assert c.spec["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c.secret_files["/run/secrets/topology/tokens/tokens.jsonl"] == "topology-tokens/tokens.jsonl"
    monitors = by_kind(docs, "ServiceMonitor")
    assert set(monitors) == {f"topology-service-topology-{x}" for x in ("server", "worker", "agent")}
    (endpoint,) = monitors["topology-service-topology-server"]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["authorization"]["credentials"] == {"name": "topology-scrape", "key": "token"}
    assert monitors["topology-service-topology-server"]["metadata"]["labels"]["release"] == "prometheus"


def test_with_tokens_the_agent_posts_to_the_ingest_port_with_its_own(render: Render, tmp_path: Path) -> None:
    files, sets = VALUE_SETS["tokens-http"]
    docs = render(*files, set=sets)
    found = {c.spec["name"]: (c, check(c, tmp_path)) for c in containers(docs, ours=OURS)}
    (_, serve), (agent, settings) = found["server"], found["agent"]
    assert serve[ServiceConfig].ingest_port == 8081 and not serve[ServiceConfig].insecure
    assert settings[AgentSettings].http == "http://topology-service-topology.topology.svc:8081"
    assert settings[AgentSettings].token_file  # a stand-in for the mounted key:
    assert agent.secret_files["/run/secrets/topology/agent-token/token"] == "topology-agent-token/token"
    assert "prometheus.io/scrape" not in by_kind(docs, "Deployment")["topology-service-topology"]["spec"][
        "template"]["metadata"].get("annotations", {})

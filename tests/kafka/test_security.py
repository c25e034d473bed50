"""Kafka transport security against a real broker with a SASL_SSL listener.

The module's broker is a second one, started by the project's script (``docker/kafka/dev.sh``, the
jars shared with the dev broker) on free ports, its state and certificates in a temporary directory:

* ``SASL_SSL`` on one port: SASL PLAIN (user ``bob``, in the listener's JAAS) and SCRAM-SHA-256 /
  SCRAM-SHA-512 (``alice`` / ``carol``, made when the storage is formatted: KRaft keeps SCRAM
  credentials in its metadata); also the brokers' own listener (PLAIN as ``broker``);
* ``SSL`` with client certificates required (mutual TLS) on another port.

A CA and the broker's certificate (for 127.0.0.1 and localhost) are made here (trustme, on
``cryptography``), the key in PKCS#8 as Kafka's PEM key store wants it. The clients under test are
the project's own: topics by ``ensure_topics``, records by the publisher (and ``simulate --kafka``, and
the agent's sink), read by the stage workers, the terminal workers as ``serve --kafka`` makes them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trustme
from aiokafka.errors import KafkaConnectionError
from cryptography.hazmat.primitives import serialization

from agent.outbox import FLOWS, Message, SinkError
from agent.sink import KafkaSink as AgentSink
from ingest.publisher import publish_simulation
from ingest.security import explain
from ingest.topics import Topics, delete_prefixed, ensure_topics
from ingest.worker import WorkerOptions
from service.consumers import TERMINAL, Consumers
from tests.conftest import require
from tests.kafka.harness import TEST_OPTIONS, InProcess, app_edges, free_port, truth_pairs, until
from topology.model import Layer
from topology.settings import KafkaSettings
from topology.store.embedded import open_stores

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
DEV_SH = ROOT / "docker" / "kafka" / "dev.sh"
JARS = ROOT / "var" / "kafka" / "lib"
SERVICES = 20  # the smallest simulated fleet
FAIL_WITHIN = 60.0  # a refused client must say so within this (it never hangs)
NETWORK = [(1, "network"), (2, "network"), (3, "network")]
RECORDS = "topology_ingest_records_total"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class SecureBroker:
    sasl_ssl: str  # bootstrap of the SASL_SSL listener
    mtls: str  # bootstrap of the SSL listener that requires client certificates
    dir: Path
    ca_file: str
    client_cert: str
    client_key: str
    passwords: dict[str, str]

    def password_file(self, user: str, password: str | None = None) -> str:
        path = self.dir / f"{user}-{secrets.token_hex(3)}.password"
        path.write_text((password or self.passwords[user]) + "\n")  # a trailing newline, as editors leave
        return str(path)

    def sasl(self, mechanism: str, user: str, **changes: object) -> KafkaSettings:
        kafka = KafkaSettings(bootstrap=self.sasl_ssl, security_protocol="SASL_SSL", sasl_mechanism=mechanism,
                              username=user, password_file=self.password_file(user), ca_file=self.ca_file)
        return replace(kafka, **changes)  # type: ignore[arg-type]


def _write_certs(d: Path) -> tuple[trustme.CA, dict[str, str]]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), None)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    files = {"ca": d / "ca.pem", "server": d / "server.pem", "client": d / "client.pem",
             "client_key": d / "client.key"}
    files["ca"].write_bytes(ca.cert_pem.bytes())
    files["server"].write_bytes(pkcs8 + b"".join(c.bytes() for c in server.cert_chain_pems))
    client = ca.issue_cert("topology-client")
    files["client"].write_bytes(b"".join(c.bytes() for c in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return ca, {k: str(v) for k, v in files.items()}


def _broker_config(port: int, mtls_port: int, controller: int, files: dict[str, str],
                   passwords: dict[str, str]) -> str:
    plain = " ".join(f'user_{u}="{passwords[u]}"' for u in ("broker", "bob"))
    return f"""
listeners=SASL_SSL://127.0.0.1:{port},SSL://127.0.0.1:{mtls_port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_SSL://127.0.0.1:{port},SSL://127.0.0.1:{mtls_port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
required username="broker" password="{passwords['broker']}" {plain};
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={SCRAM_LOGIN}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={SCRAM_LOGIN}
listener.name.ssl.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location={files['server']}
ssl.truststore.type=PEM
ssl.truststore.location={files['ca']}
"""


def _dev_sh(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DEV_SH), command], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A broker with SASL_SSL and mutual-TLS listeners (see the module docstring), stopped at the end."""
    require(shutil.which("java") is not None and any(JARS.glob("kafka_2.13-*.jar")),
            f"java and the Kafka jars in {JARS} (make kafka)")
    d = tmp_path_factory.mktemp("kafka-secure")
    _, files = _write_certs(d)
    passwords = {u: secrets.token_urlsafe(12) for u in ("broker", "bob", "alice", "carol")}
    port, mtls_port, controller = free_port(), free_port(), free_port()
    (d / "secure.properties").write_text(_broker_config(port, mtls_port, controller, files, passwords))
    (d / "scram").write_text(f"SCRAM-SHA-256=[name=alice,password={passwords['alice']}]\n"
                             f"SCRAM-SHA-512=[name=carol,password={passwords['carol']}]\n")
    env = {"KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
           "KAFKA_STATE_DIR": str(d / "state"), "KAFKA_RUN_DIR": str(d / "run"),
           "KAFKA_EXTRA_CONFIG": str(d / "secure.properties"), "KAFKA_SCRAM_FILE": str(d / "scram")}
    started = _dev_sh("start", env)
    try:
        if started.returncode != 0:
            pytest.fail(f"the SASL_SSL broker did not start: {started.stdout}{started.stderr}", pytrace=False)
        yield SecureBroker(f"127.0.0.1:{port}", f"127.0.0.1:{mtls_port}", d, files["ca"], files["client"],
                           files["client_key"], passwords)
    finally:
        stopped = _dev_sh("stop", env)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture
def label(request: pytest.FixtureRequest) -> str:
    return f"sec-{request.node.name[:40]}-{secrets.token_hex(3)}"


# --- (a) the data path works over SASL_SSL --------------------------------------------------------

async def _network_pipeline(kafka: KafkaSettings, label: str, tmp: Path) -> None:
    """Simulated flows published with the project's publisher and turned into the network layer by
    the stage workers, every client over ``kafka``; the stored edges equal the simulator's truth."""
    topics = Topics(f"{label}.")
    created = await ensure_topics(kafka, topics, partitions=1)
    assert topics.flows in created and topics.state("network", 3) in created
    stores = open_stores(tmp / "store")
    try:
        start = float(int(time.time()) - 180)
        res = await publish_simulation(kafka, services=SERVICES, minutes=2.0, start=start, topics=topics,
                                       partitions=1)
        assert res["publish"]["flow_records"] > 0
        async with InProcess(kafka, topics, stores, stages=NETWORK, meta=False) as run:
            await run.wait_clocks(res["end"] + 80, [(3, "network")])
            await run.wait_written()
        stored = await app_edges(stores, Layer.NETWORK, start, res["end"])
        assert stored == truth_pairs(res["truth"], Layer.NETWORK)
    finally:
        await stores.close()
        await delete_prefixed(kafka, topics.prefix)


async def test_the_network_pipeline_runs_over_sasl_ssl_with_scram(secure_broker: SecureBroker, label: str,
                                                                   tmp_path: Path) -> None:
    await _network_pipeline(secure_broker.sasl("SCRAM-SHA-256", "alice"), label, tmp_path)


async def test_plain_and_scram_sha_512_users_create_and_delete_topics(secure_broker: SecureBroker,
                                                                       label: str) -> None:
    for kafka in (secure_broker.sasl("PLAIN", "bob"), secure_broker.sasl("SCRAM-SHA-512", "carol")):
        topics = Topics(f"{label}.{kafka.username}.")
        assert await ensure_topics(kafka, topics, partitions=1, only=[topics.catalog]) == [topics.catalog]
        assert await delete_prefixed(kafka, topics.prefix) == [topics.catalog]


def test_simulate_publishes_over_sasl_plain_from_the_environment(secure_broker: SecureBroker, label: str,
                                                                 tmp_path: Path) -> None:
    """``topology simulate --kafka`` with the security in its environment (password from a file); a
    stage-1 worker over PLAIN reads what it published."""
    env = {**os.environ, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
           "KAFKA_SASL_USERNAME": "bob", "KAFKA_SASL_PASSWORD_FILE": secure_broker.password_file("bob"),
           "KAFKA_SSL_CA_FILE": secure_broker.ca_file, "TOPOLOGY_TOPIC_PREFIX": f"{label}.",
           "PYTHONPATH": str(ROOT)}
    start = int(time.time()) - 120
    done = subprocess.run([sys.executable, "-m", "service.cli", "simulate", "--kafka", secure_broker.sasl_ssl,
                           "--services", str(SERVICES), "--minutes", "1", "--start", str(start),
                           "--log-level", "WARNING"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kafka = secure_broker.sasl("PLAIN", "bob")

    async def read_back() -> None:
        topics = Topics(f"{label}.")
        stores = open_stores(tmp_path / "store")
        try:
            async with InProcess(kafka, topics, stores, stages=[(1, "network")], meta=False) as run:
                registry = run.worker(1, "network").metrics.registry
                labels = {"layer": "network", "stage": "1"}
                await until(lambda: (registry.get_sample_value(RECORDS, labels) or 0) > 0, FAIL_WITHIN,
                            "the stage-1 worker reading the published flows")
        finally:
            await stores.close()
            await delete_prefixed(kafka, topics.prefix)

    asyncio.run(read_back())


async def test_serve_kafka_workers_take_the_security_of_their_options(secure_broker: SecureBroker, label: str,
                                                                      tmp_path: Path) -> None:
    """As ``serve --kafka`` makes them (service/server.py): bare bootstrap servers, and the worker
    options built from the command's KafkaSettings."""
    kafka = secure_broker.sasl("SCRAM-SHA-512", "carol")
    topics = Topics(f"{label}.")
    stores = open_stores(tmp_path / "store")
    consumers = Consumers(stores, kafka.bootstrap, topics, partitions=1,
                          options=WorkerOptions(bootstrap=kafka, **TEST_OPTIONS))
    try:
        consumers.start()
        every = {f"{layer}-{stage}": "consuming" for stage, layer in TERMINAL}
        await until(lambda: consumers.status() == every, 90, "the terminal workers consuming over SASL_SSL")
    finally:
        await consumers.stop()
        await stores.close()
        await delete_prefixed(kafka, topics.prefix)


async def test_the_agent_sink_sends_over_sasl_ssl_and_says_why_it_cannot(secure_broker: SecureBroker,
                                                                        label: str) -> None:
    kafka = secure_broker.sasl("SCRAM-SHA-256", "alice")
    topics = Topics(f"{label}.")
    await ensure_topics(kafka, topics, partitions=1, only=[topics.flows])
    message = Message(FLOWS, b"not decoded by the sink", 1)
    try:
        sink = AgentSink(kafka, topics, "host-a", timeout=FAIL_WITHIN / 2)
        try:
            await sink(message)  # acknowledged by the broker (acks=all)
        finally:
            await sink.close()
        refused = secure_broker.sasl("SCRAM-SHA-256", "alice",
                                     password_file=secure_broker.password_file("alice", "not-it"))
        wrong = AgentSink(refused, topics, "host-a", timeout=FAIL_WITHIN / 2)
        with pytest.raises(SinkError, match="refused the credentials of 'alice'"):
            await wrong(message)
        await wrong.close()
    finally:
        await delete_prefixed(kafka, topics.prefix)


async def test_mutual_tls_with_a_client_certificate(secure_broker: SecureBroker, label: str) -> None:
    kafka = KafkaSettings(bootstrap=secure_broker.mtls, security_protocol="SSL",
                          ca_file=secure_broker.ca_file, cert_file=secure_broker.client_cert,
                          key_file=secure_broker.client_key)
    topics = Topics(f"{label}.")
    assert await ensure_topics(kafka, topics, partitions=1, only=[topics.health]) == [topics.health]
    assert await delete_prefixed(kafka, topics.prefix) == [topics.health]
    without = replace(kafka, cert_file=None, key_file=None)
    reason = await _refusal(without)
    assert "closed the connection of a TLS client without a certificate" in reason, reason
    assert "KAFKA_SSL_CERT_FILE" in reason, reason


# --- (b, c, d) refusals: clear, and bounded in time -----------------------------------------------

async def _refusal(kafka: KafkaSettings | str) -> str:
    """What a refused client says: ``ensure_topics`` must fail (not hang), explained for people."""
    with pytest.raises(KafkaConnectionError) as caught:
        await asyncio.wait_for(ensure_topics(kafka, Topics("never."), partitions=1), FAIL_WITHIN)
    return await explain(kafka, caught.value)


async def test_a_wrong_password_is_refused_clearly(secure_broker: SecureBroker) -> None:
    for mechanism, user in (("SCRAM-SHA-256", "alice"), ("PLAIN", "bob")):
        wrong = secure_broker.sasl(mechanism, user, password_file=secure_broker.password_file(user, "not-it"))
        reason = await _refusal(wrong)
        said = f"{secure_broker.sasl_ssl} refused the credentials of '{user}' ({mechanism})"
        assert reason.startswith(said), reason
        assert "SaslAuthenticationFailed" in reason and "not-it" not in reason


def test_a_wrong_password_stops_simulate_with_one_line(secure_broker: SecureBroker, label: str) -> None:
    env = {**os.environ, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
           "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": "not-it",
           "KAFKA_SSL_CA_FILE": secure_broker.ca_file, "TOPOLOGY_TOPIC_PREFIX": f"{label}.",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "service.cli", "simulate", "--kafka", secure_broker.sasl_ssl,
                           "--services", str(SERVICES), "--minutes", "1", "--log-level", "CRITICAL"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=FAIL_WITHIN * 2)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the credentials of 'alice' (SCRAM-SHA-256)" in lines[0], done.stderr
    assert "not-it" not in done.stderr


async def test_a_plaintext_client_on_the_sasl_ssl_port_fails(secure_broker: SecureBroker) -> None:
    reason = await _refusal(secure_broker.sasl_ssl)
    assert "closed the connection of a PLAINTEXT client" in reason and "KAFKA_SECURITY_PROTOCOL" in reason


async def test_a_broker_certificate_from_an_untrusted_ca_fails(secure_broker: SecureBroker,
                                                               tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    reason = await _refusal(secure_broker.sasl("SCRAM-SHA-256", "alice", ca_file=str(other)))
    assert "does not trust" in reason and "CERTIFICATE_VERIFY_FAILED" in reason, reason
    # the system's CAs do not know the test CA either
    reason = await _refusal(secure_broker.sasl("SCRAM-SHA-256", "alice", ca_file=None))
    assert "does not trust" in reason, reason

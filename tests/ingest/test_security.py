"""Kafka transport security settings: validation in one line, and the aiokafka options they make.
(The broker-backed behaviour is in tests/kafka/test_security.py.)"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from ingest.security import client_options, with_servers
from topology.settings import ConfigError, KafkaSettings, from_env

ROOT = Path(__file__).resolve().parents[2]
ANY = __file__  # a file that exists
SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": "pw"}


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def test_plaintext_by_default_and_nothing_else() -> None:
    assert client_options("b:1") == {"bootstrap_servers": "b:1", "security_protocol": "PLAINTEXT"}
    assert client_options(KafkaSettings(bootstrap="b:1")) == client_options("b:1")


def test_sasl_ssl_with_scram_from_the_environment(ca_file: str) -> None:
    env = {**SASL, "KAFKA_BOOTSTRAP": "b:9093", "KAFKA_SASL_MECHANISM": "scram-sha-512",
           "KAFKA_SSL_CA_FILE": ca_file}
    kafka = from_env(KafkaSettings, env)
    options = client_options(kafka)
    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": "b:9093", "security_protocol": "SASL_SSL",
                       "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "alice",
                       "sasl_plain_password": "pw"}
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert "pw" not in repr(kafka) and "alice" in kafka.describe() and "pw" not in kafka.describe()


def test_the_password_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    kafka = from_env(KafkaSettings, {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "b",
                                     "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw")})
    assert client_options(kafka)["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in client_options(kafka)


def test_mutual_tls_loads_the_client_certificate_and_may_skip_the_host_name(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    kafka = KafkaSettings(security_protocol="SSL", ca_file=str(tmp_path / "ca.pem"),
                          cert_file=str(tmp_path / "client.pem"), key_file=str(tmp_path / "client.key"),
                          check_hostname=False)
    context = client_options(kafka)["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    broken = KafkaSettings(security_protocol="SSL", cert_file=str(tmp_path / "ca.pem"))  # no key in it
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CERT_FILE: cannot load the client certificate"):
        client_options(broken)


@pytest.mark.parametrize(("env", "message"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME: SASL_SSL needs a SASL user name"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "a"},
     "KAFKA_SASL_PASSWORD_FILE: SASL_SSL needs a password"),
    ({**SASL, "KAFKA_SASL_PASSWORD_FILE": ANY},
     "KAFKA_SASL_PASSWORD_FILE: give the password once"),
    ({"KAFKA_SASL_USERNAME": "a", "KAFKA_SASL_PASSWORD": "p"},
     "KAFKA_SECURITY_PROTOCOL: SASL credentials are set but the protocol is PLAINTEXT"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "a", "KAFKA_SASL_PASSWORD": "p",
      "KAFKA_SSL_CA_FILE": ANY},
     "KAFKA_SECURITY_PROTOCOL: TLS files are set but the protocol is SASL_PLAINTEXT"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_FILE": ANY},
     "KAFKA_SSL_KEY_FILE: a client key needs its certificate"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/no/such/ca.pem"},
     "KAFKA_SSL_CA_FILE: no file /no/such/ca.pem"),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL: expected one of PLAINTEXT, SSL"),
    ({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"},
     "KAFKA_SASL_MECHANISM: expected one of PLAIN, SCRAM-SHA-256"),
])
def test_bad_combinations_are_one_line_errors_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_env(KafkaSettings, env)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)


def test_a_bare_address_takes_the_security_of_the_options() -> None:
    kafka = KafkaSettings(bootstrap="a:1", security_protocol="SASL_PLAINTEXT", username="u", password="p")
    assert with_servers(kafka, "b:2") == KafkaSettings(bootstrap="b:2", security_protocol="SASL_PLAINTEXT",
                                                       username="u", password="p")
    assert with_servers("a:1", "b:2") == "b:2"


def test_the_command_line_says_a_bad_combination_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "service.cli", "simulate", "--kafka", "127.0.0.1:9",
                           "--services", "20", "--kafka-security-protocol", "SASL_SSL"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "topology simulate: error: KAFKA_SASL_USERNAME: SASL_SSL needs a SASL user name (--kafka-username)"]

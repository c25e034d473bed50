"""JanusGraph over TLS with authentication, for real: a private JanusGraph Server started by
``docker/janusgraph/dev.sh`` with a PKCS12 keystore (JANUSGRAPH_KEYSTORE), client certificates
required (JANUSGRAPH_TRUSTSTORE) and one SASL user (JANUSGRAPH_AUTH_USERNAME), every certificate
signed by a CA made here. The whole store contract runs
against it over ``wss://`` with the credentials, configured the way a deployment configures it
(``StoreSettings`` from ``JANUSGRAPH_*`` variables); a wrong password, no credentials, a plain
``ws://`` client, a client that does not trust the CA and one without a trusted client certificate
are refused with one line, at once.
Configuration mistakes, which need no server: tests/store/test_janusgraph_endpoint.py."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    load_pem_private_key,
    pkcs12,
)

from tests.conftest import require
from tests.janusgraph.test_contract import JanusGraphFactory
from tests.store.contract import StoreContract, StoresFactory
from topology.settings import StoreSettings, from_env
from topology.store.base import StoreUnavailable
from topology.store.janusgraph import open_janusgraph_stores
from topology.store.janusgraph_endpoint import Endpoint, endpoint_from
from topology.timewindow import Retention

pytestmark = [pytest.mark.janusgraph, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEV_SH = ROOT / "docker" / "janusgraph" / "dev.sh"
USER = "topology"
PASSWORD = "pä55 'w\"rd: {x}"  # YAML- and shell-hostile on purpose: dev.sh must pass it through intact
# Refusals answer at once; this only keeps a regression from hanging the suite.
REFUSAL_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secret_file(path: pathlib.Path, text: str) -> str:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


@dataclass(frozen=True)
class SecureServer:
    url: str
    port: int
    ca_file: str  # the CA that signed the server's certificate
    other_ca_file: str  # a CA that signed nothing of the server's
    cert_file: str  # a client certificate the server trusts, and its key
    key_file: str
    other_cert_file: str  # a client certificate of another CA, and its key
    other_key_file: str
    password_file: str
    wrong_password_file: str

    def env(self, **changes: str | None) -> dict[str, str]:
        """The client variables of a deployment using this server; ``None`` unsets one."""
        env = {"TOPOLOGY_STORE": "janusgraph", "JANUSGRAPH_URL": self.url, "JANUSGRAPH_USERNAME": USER,
               "JANUSGRAPH_PASSWORD_FILE": self.password_file, "JANUSGRAPH_CA_FILE": self.ca_file,
               "JANUSGRAPH_CERT_FILE": self.cert_file, "JANUSGRAPH_KEY_FILE": self.key_file}
        for k, v in changes.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def endpoint(self, **changes: str | None) -> Endpoint:
        return endpoint_from(from_env(StoreSettings, self.env(**changes)))


@dataclass(frozen=True)
class Certificates:
    keystore: str  # the server's key and chain, PKCS12 as JanusGraph's ssl.keyStore takes it
    truststore: str  # the CA whose client certificates the server accepts (PKCS12 trusted entry)
    store_password_file: str  # the password of both
    ca_file: str
    other_ca_file: str
    client: tuple[str, str]  # (certificate, key) PEM files
    other_client: tuple[str, str]


def _client_certificate(ca: trustme.CA, tmp: pathlib.Path, name: str) -> tuple[str, str]:
    issued = ca.issue_cert(name)
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return str(cert), str(key)


def _make_certificates(tmp: pathlib.Path) -> Certificates:
    ca, other_ca = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    key = load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    chain = [x509.load_pem_x509_certificate(pem.bytes()) for pem in leaf.cert_chain_pems]
    store_password = "keystore-" + os.urandom(6).hex()
    encryption = BestAvailableEncryption(store_password.encode())
    keystore = tmp / "server.p12"
    keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(b"janusgraph", key, chain[0], chain[1:], encryption))
    keystore.chmod(0o600)
    truststore = tmp / "truststore.p12"
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    truststore.write_bytes(pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(ca_cert, b"topology-ca")], encryption))
    ca_file, other_ca_file = tmp / "ca.pem", tmp / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other_ca.cert_pem.write_to_path(str(other_ca_file))
    return Certificates(
        str(keystore), str(truststore), _secret_file(tmp / "keystore.pass", store_password), str(ca_file),
        str(other_ca_file), _client_certificate(ca, tmp, "topology-client"),
        _client_certificate(other_ca, tmp, "stranger"),
    )


def _dev(action: str, env: dict[str, str]) -> None:
    done = subprocess.run(["bash", str(DEV_SH), action], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"dev.sh {action} failed ({done.returncode}): {done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    require(shutil.which("java") is not None and shutil.which("mvn") is not None, "java and maven")
    tmp = tmp_path_factory.mktemp("janusgraph-secure")
    certs = _make_certificates(tmp)
    port = _free_port()
    instance = f"secure{os.getpid()}"
    server = SecureServer(
        url=f"wss://127.0.0.1:{port}/gremlin", port=port,
        ca_file=certs.ca_file, other_ca_file=certs.other_ca_file,
        cert_file=certs.client[0], key_file=certs.client[1],
        other_cert_file=certs.other_client[0], other_key_file=certs.other_client[1],
        password_file=_secret_file(tmp / "user.pass", PASSWORD),
        wrong_password_file=_secret_file(tmp / "wrong.pass", PASSWORD + "x"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANUSGRAPH_")}
    env.update(
        JANUSGRAPH_INSTANCE=instance, JANUSGRAPH_PORT=str(port), JANUSGRAPH_HEAP="512m", BACKEND="inmemory",
        JANUSGRAPH_KEYSTORE=certs.keystore, JANUSGRAPH_KEYSTORE_PASSWORD_FILE=certs.store_password_file,
        JANUSGRAPH_TRUSTSTORE=certs.truststore, JANUSGRAPH_TRUSTSTORE_PASSWORD_FILE=certs.store_password_file,
        JANUSGRAPH_AUTH_USERNAME=USER, JANUSGRAPH_AUTH_PASSWORD_FILE=server.password_file,
        # the readiness probe verifies the server with the CA and presents the client certificate
        JANUSGRAPH_CA_FILE=certs.ca_file, JANUSGRAPH_CERT_FILE=server.cert_file,
        JANUSGRAPH_KEY_FILE=server.key_file,
    )
    try:
        _dev("start", env)
    except RuntimeError as e:
        require(False, f"a JanusGraph server with TLS and authentication ({e})")
    try:
        yield server
    finally:
        _dev("stop", env)
        for suffix in ("log", "state", "pid"):
            (ROOT / "var" / "run" / f"janusgraph-{instance}.{suffix}").unlink(missing_ok=True)
        shutil.rmtree(ROOT / "var" / "janusgraph" / instance, ignore_errors=True)


# --- (a) the store contract over wss:// with credentials -----------------------------------------

class TestSecureJanusGraphStore(StoreContract):
    @pytest.fixture
    async def stores_factory(self, secure_server: SecureServer) -> AsyncIterator[StoresFactory]:
        factory = JanusGraphFactory(secure_server.url)
        factory.url = secure_server.endpoint()  # type: ignore[assignment]  # either works
        yield factory
        await factory.close()


async def test_the_settings_opener_connects_with_tls_and_credentials(secure_server: SecureServer) -> None:
    settings = from_env(StoreSettings, secure_server.env())
    assert "pä55" not in repr(settings)  # the password stays out of logs
    stores = await settings.open()
    try:
        for layer in stores.layers.values():
            await layer.ping()
        await stores.catalog.ping()
    finally:
        await stores.close()


# --- (b)-(d) refusals: one line, at once ---------------------------------------------------------

async def _refusal(endpoint: Endpoint) -> str:
    with pytest.raises(StoreUnavailable) as err:
        async with asyncio.timeout(REFUSAL_TIMEOUT):
            await open_janusgraph_stores(endpoint, Retention(), pool_size=1, require=True)
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


async def test_a_wrong_password_is_refused_clearly(secure_server: SecureServer) -> None:
    text = await _refusal(secure_server.endpoint(JANUSGRAPH_PASSWORD_FILE=secure_server.wrong_password_file))
    assert f"refused the credentials of user '{USER}'" in text
    assert "pä55" not in text


async def test_a_client_without_credentials_is_told_to_give_them(secure_server: SecureServer) -> None:
    text = await _refusal(secure_server.endpoint(JANUSGRAPH_USERNAME=None, JANUSGRAPH_PASSWORD_FILE=None))
    assert "requires a user name and password" in text


async def test_a_plain_ws_client_on_the_tls_port_fails_clearly(secure_server: SecureServer) -> None:
    plain = f"ws://127.0.0.1:{secure_server.port}/gremlin"
    text = await _refusal(secure_server.endpoint(JANUSGRAPH_URL=plain, JANUSGRAPH_CA_FILE=None,
                                                 JANUSGRAPH_CERT_FILE=None, JANUSGRAPH_KEY_FILE=None))
    assert "use a wss:// URL" in text


async def test_a_server_signed_by_an_untrusted_ca_is_refused(secure_server: SecureServer) -> None:
    text = await _refusal(secure_server.endpoint(JANUSGRAPH_CA_FILE=secure_server.other_ca_file))
    assert "TLS certificate is not trusted" in text and "JANUSGRAPH_CA_FILE" in text


async def test_without_a_ca_file_the_system_trust_store_does_not_know_the_server(
        secure_server: SecureServer) -> None:
    text = await _refusal(secure_server.endpoint(JANUSGRAPH_CA_FILE=None))
    assert "TLS certificate is not trusted" in text


async def test_a_wss_client_on_a_plain_port_gives_up_after_the_handshake_timeout(
        secure_server: SecureServer, janusgraph_url: str) -> None:
    """The plain dev server reads the TLS ClientHello as a broken HTTP request and waits for more."""
    plain_port = janusgraph_url.removeprefix("ws://").split("/")[0]
    text = await _refusal(secure_server.endpoint(JANUSGRAPH_URL=f"wss://{plain_port}/gremlin"))
    assert "no TLS/WebSocket handshake in time (a plain ws:// port?)" in text


async def test_a_client_without_a_certificate_is_refused(secure_server: SecureServer) -> None:
    text = await _refusal(secure_server.endpoint(JANUSGRAPH_CERT_FILE=None, JANUSGRAPH_KEY_FILE=None))
    assert "refused this client's TLS certificate, or its lack of one" in text


async def test_a_client_certificate_of_another_ca_is_refused(secure_server: SecureServer) -> None:
    text = await _refusal(secure_server.endpoint(JANUSGRAPH_CERT_FILE=secure_server.other_cert_file,
                                                 JANUSGRAPH_KEY_FILE=secure_server.other_key_file))
    assert "refused this client's TLS certificate" in text and "JANUSGRAPH_CERT_FILE" in text


def test_the_readiness_probe_logs_in_and_a_wrong_password_makes_it_fail(secure_server: SecureServer) -> None:
    probe = ROOT / "docker" / "janusgraph" / "probe.py"
    base = {k: v for k, v in os.environ.items() if not k.startswith("JANUSGRAPH_")}

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(probe), secure_server.url],
                              env={**base, **env}, capture_output=True, text=True, timeout=120)

    good = {k: v for k, v in secure_server.env().items() if k != "TOPOLOGY_STORE"}
    assert run(good).returncode == 0
    refused = run({**good, "JANUSGRAPH_PASSWORD_FILE": secure_server.wrong_password_file})
    assert refused.returncode == 1 and "Username and/or password are incorrect" in refused.stderr


def test_a_ca_file_makes_a_verifying_tls_context(secure_server: SecureServer) -> None:
    context = secure_server.endpoint().ssl
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

"""TLS for the server and client certificates as identities (mTLS), on a real uvicorn with
certificates made here (trustme): the options :func:`service.tls.uvicorn_tls` gives the server are
the ones ``topology serve`` uses."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trustme

from service.app import create_app
from service.tls import parse_client_scopes, uvicorn_tls
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW
from tests.service.live import serving
from topology.store.base import Stores

QUERY = {"query": "{ service(name: \"api\") { name } }"}


@dataclass
class Pki:
    ca: trustme.CA
    server_cert: Path
    server_key: Path
    ca_file: Path

    def client(self, name: str | None = None, ca: trustme.CA | None = None) -> ssl.SSLContext:
        """A client trusting our CA, presenting a certificate for ``name`` issued by ``ca`` (ours)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if name is not None:
            (ca or self.ca).issue_cert(name, common_name=name).configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    server.private_key_pem.write_to_path(str(root / "server.key"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    yield Pki(ca, root / "server.pem", root / "server.key", root / "ca.pem")


async def test_the_server_speaks_tls_with_its_certificate(stores: Stores, pki: Pki) -> None:
    app = create_app(stores, CONFIG, clock=lambda: NOW)
    async with serving(app, **uvicorn_tls(str(pki.server_cert), str(pki.server_key), None)) as [port]:
        async with httpx.AsyncClient(verify=pki.client()) as c:
            r = await c.post(f"https://127.0.0.1:{port}/graphql", json=QUERY)
            assert r.json() == {"data": {"service": {"name": "api"}}}
        async with httpx.AsyncClient() as c:  # the system's trust store does not know our CA
            with pytest.raises(httpx.ConnectError):
                await c.get(f"https://127.0.0.1:{port}/healthz")
        async with httpx.AsyncClient() as c:  # plain HTTP to the TLS port is not answered
            with pytest.raises(httpx.HTTPError):
                await c.get(f"http://127.0.0.1:{port}/healthz")


async def test_client_certificates_are_identities(stores: Stores, pki: Pki) -> None:
    config = replace(CONFIG, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                     tls_client_ca=str(pki.ca_file),
                     tls_client_scopes=parse_client_scopes("grafana:read,otel-collector:ingest"))
    app = create_app(stores, config, clock=lambda: NOW)
    options = uvicorn_tls(config.tls_cert, config.tls_key, config.tls_client_ca)
    async with serving(app, **options) as [port]:
        url = f"https://127.0.0.1:{port}"

        async def ask(ctx: ssl.SSLContext, path: str = "/graphql") -> httpx.Response:
            async with httpx.AsyncClient(verify=ctx) as c:
                return await (c.post(url + path, json=QUERY) if path == "/graphql" else c.get(url + path))

        r = await ask(pki.client("grafana"))
        assert r.status_code == 200 and r.json()["data"]["service"]["name"] == "api"
        r = await ask(pki.client("otel-collector"))  # a valid certificate without the read scope
        assert r.status_code == 403
        assert r.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        r = await ask(pki.client("someone-else"))  # signed by our CA but given no scopes
        assert r.status_code == 403
        r = await ask(pki.client())  # no certificate: connects (tokens still work), but not authenticated
        assert r.status_code == 401
        assert (await ask(pki.client(), "/healthz")).status_code == 200
        with pytest.raises(httpx.HTTPError):  # a certificate from another CA fails the handshake
            await ask(pki.client("grafana", ca=trustme.CA()))


async def test_a_header_cannot_claim_a_certificate(stores: Stores, pki: Pki) -> None:
    """Only the TLS layer writes the client certificate into the request: over plain HTTP nothing
    that a client sends makes it an identity."""
    config = replace(CONFIG, tls_cert=str(pki.server_cert), tls_client_ca=str(pki.ca_file),
                     tls_client_scopes=parse_client_scopes("*:read"))
    app = create_app(stores, config, clock=lambda: NOW)  # served without TLS
    async with serving(app) as [port], httpx.AsyncClient() as c:
        pem = pki.ca.issue_cert("grafana", common_name="grafana").cert_chain_pems[0].bytes().decode()
        r = await c.post(f"http://127.0.0.1:{port}/graphql", json=QUERY, headers={
            "x-ssl-client-cert": quote(pem), "x-client-cert-cn": "grafana"})  # as proxies forward them
        assert r.status_code == 401


def test_client_scopes_setting() -> None:
    assert parse_client_scopes("grafana:read, ops:read+admin,*:ingest") == (
        ("grafana", frozenset({"read"})), ("ops", frozenset({"read", "admin"})), ("*", frozenset({"ingest"})))
    for bad in ("grafana", ":read", "grafana:root", "grafana:"):
        with pytest.raises(ValueError):
            parse_client_scopes(bad)

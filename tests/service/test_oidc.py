"""OIDC access tokens against the real app, with keys and a JWKS made here: a good token reads, and an
expired one, one for another audience or issuer, one signed by a stranger, one using the public key as
an HMAC secret, and one without our scope are refused. The JWKS comes from a file or a URL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from service.app import create_app
from service.identity import AuthError
from service.oidc import JwtVerifier
from tests.service.conftest import CONFIG
from tests.service.fleet import NOW
from topology.store.base import Stores

ISSUER = "https://idp.example/realms/ops"
AUDIENCE = "service-topology"
QUERY = {"query": "{ service(name: \"api\") { name } }"}


class Issuer:
    """An identity provider's signing key and its JWKS."""

    def __init__(self, kid: str = "key-1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return jwk | {"kid": self.kid, "use": "sig", "alg": "RS256"}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "grafana", "iat": now, "exp": now + 300,
                "scope": "openid read"} | claims
        return jwt.encode({k: v for k, v in body.items() if v is not None}, self.key, algorithm="RS256",
                          headers={"kid": self.kid})


@pytest.fixture(scope="module")
def idp() -> Issuer:
    return Issuer()


@pytest.fixture
def jwks_file(tmp_path: Path, idp: Issuer) -> Path:
    ec_key = ec.generate_private_key(ec.SECP256R1())  # a second key in the set, of another type
    other = json.loads(ECAlgorithm.to_jwk(ec_key.public_key())) | {"kid": "key-ec", "use": "sig"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [idp.jwk(), other]}), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def client(stores: Stores, jwks: str, **extra: Any) -> AsyncIterator[httpx.AsyncClient]:
    config = replace(CONFIG, oidc_jwks=jwks, oidc_issuer=ISSUER, oidc_audience=AUDIENCE, **extra)
    app = create_app(stores, config, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


async def ask(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.post("/graphql", json=QUERY, headers={"authorization": f"Bearer {token}"})


async def test_a_valid_token_reads(stores: Stores, jwks_file: Path, idp: Issuer) -> None:
    async with client(stores, str(jwks_file)) as c:
        r = await ask(c, idp.token())
        assert r.status_code == 200, r.text
        assert r.json() == {"data": {"service": {"name": "api"}}}
        r = await ask(c, idp.token(scope=None, scp=["read"]))  # the claim as Azure AD and Okta write it
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(("claims", "reason"), [
    ({"exp": int(time.time()) - 120}, "token expired"),
    ({"aud": "another-api"}, "another audience"),
    ({"iss": "https://evil.example/"}, "another issuer"),
    ({"exp": None}, "exp"),
])
async def test_invalid_tokens_are_401(stores: Stores, jwks_file: Path, idp: Issuer, claims: dict[str, Any],
                                      reason: str) -> None:
    async with client(stores, str(jwks_file)) as c:
        r = await ask(c, idp.token(**claims))
        assert r.status_code == 401, r.text
        error = r.json()["errors"][0]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert reason in error["message"]


async def test_a_token_without_our_scope_is_403(stores: Stores, jwks_file: Path, idp: Issuer) -> None:
    async with client(stores, str(jwks_file)) as c:
        r = await ask(c, idp.token(scope="openid ingest"))
        assert r.status_code == 403
        assert r.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        r = await c.post("/ingest/flows", content=b"", headers={
            "authorization": f"Bearer {idp.token(scope='openid ingest')}",
            "content-type": "application/x-topology-flows"})
        assert r.status_code != 401 and r.status_code != 403  # ingest is what this token is for


def hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 JWT made by hand (PyJWT itself refuses to use a PEM key as an HMAC secret)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "." + part(
        json.dumps(claims).encode())
    return signing_input + "." + part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


async def test_forged_tokens_are_401(stores: Stores, jwks_file: Path, idp: Issuer) -> None:
    stranger = Issuer(kid=idp.kid)  # same kid, another key
    public_pem = idp.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60, "scope": "read"}
    async with client(stores, str(jwks_file)) as c:
        assert (await ask(c, stranger.token())).status_code == 401
        # "alg confusion": the public key (known to all) used as an HMAC secret
        hs = hs256(claims, public_pem, idp.kid)
        assert (await ask(c, hs)).status_code == 401
        unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": idp.kid})
        assert (await ask(c, unsigned)).status_code == 401
        assert (await ask(c, idp.token(scope="read")[:-4] + "AAAA")).status_code == 401


async def test_a_scope_prefix_keeps_only_our_scopes(stores: Stores, jwks_file: Path, idp: Issuer) -> None:
    async with client(stores, str(jwks_file), oidc_scope_prefix="topology.") as c:
        assert (await ask(c, idp.token(scope="topology.read"))).status_code == 200
        assert (await ask(c, idp.token(scope="read"))).status_code == 403


async def test_a_rotated_jwks_file_is_reread(jwks_file: Path, idp: Issuer) -> None:
    verifier = JwtVerifier(str(jwks_file), ISSUER, AUDIENCE)
    assert (await verifier.verify(idp.token())).scopes == {"read"}
    successor = Issuer(kid="key-2")
    rotated = json.dumps({"keys": [successor.jwk()]})
    await asyncio.to_thread(jwks_file.write_text, rotated, encoding="utf-8")
    assert (await verifier.verify(successor.token())).name == "grafana"
    with pytest.raises(AuthError, match="no signing key"):
        await verifier.verify(idp.token())


async def test_a_token_whose_algorithm_does_not_fit_its_key_is_refused(jwks_file: Path) -> None:
    """RS256 naming the set's EC key: refused (PyJWT itself would raise TypeError, a 500)."""
    verifier = JwtVerifier(str(jwks_file), ISSUER, AUDIENCE)
    with pytest.raises(AuthError, match="does not fit its key"):
        await verifier.verify(Issuer(kid="key-ec").token())


@contextlib.contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server answering ``document`` on /jwks; yields its URL and the paths it was asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_a_jwks_url_is_fetched_and_cached(stores: Stores, idp: Issuer) -> None:
    with jwks_server({"keys": [idp.jwk()]}) as (url, asked):
        async with client(stores, url) as c:
            for _ in range(3):
                assert (await ask(c, idp.token())).status_code == 200
            assert asked == ["/jwks"]  # once, then from the cache
            # An unknown kid does not make every request fetch again (PyJWKClient's cool-down).
            stranger = Issuer(kid="unknown")
            results = await asyncio.gather(*(ask(c, stranger.token()) for _ in range(5)))
            assert {r.status_code for r in results} == {401}
            assert len(asked) <= 2

"""Property tests: whatever a client puts in a credential or an operator in a token file, the
decoders answer an identity or their own error (401 / a one-line start-up error), never an exception
that would be a 500."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from service.auth import Authenticator
from service.guard import host_allowed
from service.identity import AuthError, Identity
from service.oidc import ALGORITHMS, JwtVerifier
from service.tokens import TokenFile, TokenFileError, new_token, token_line

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                               max_size=4), max_leaves=10)

# Headers that get past the first checks, so the signature and claim checks see the rest.
HEADERS = st.fixed_dictionaries({"alg": st.sampled_from([*ALGORITHMS, "none", "HS256"]),
                                 "kid": st.sampled_from(["k", "other"]) | JSON})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def authenticator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authenticator, str]:
    root = tmp_path_factory.mktemp("credentials")
    token = new_token()
    (root / "tokens.jsonl").write_text(token_line("reader", ["read"], token) + "\n", encoding="utf-8")
    (root / "jwks.json").write_text(json.dumps({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k", "use": "sig",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",  # the P-256 key of RFC 7515, A.3
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    }]}), encoding="utf-8")
    verifier = JwtVerifier(str(root / "jwks.json"), "https://idp.example", "topology")
    return Authenticator(TokenFile(root / "tokens.jsonl"), verifier, {"*": frozenset({"read"})}), token


def _identify(auth: Authenticator, header: str) -> Identity | None:
    headers = Headers(raw=[(b"authorization", header.encode("latin-1", "replace"))])
    try:
        return asyncio.run(auth.identify(headers, {"type": "http", "path": "/graphql"}))
    except AuthError as e:
        assert e.reason
        return None


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.text(max_size=200))
def test_any_authorization_header_is_an_identity_or_refused(authenticator: tuple[Authenticator, str],
                                                            header: str) -> None:
    auth, token = authenticator
    found = _identify(auth, header)
    if found is not None:  # only the one real token opens anything
        assert header.split()[-1] == token and found.name == "reader"


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=HEADERS | JSON, claims=JSON, signature=st.binary(max_size=80))
def test_any_jwt_shaped_token_is_refused_without_an_exception(authenticator: tuple[Authenticator, str],
                                                             header: object, claims: object,
                                                             signature: bytes) -> None:
    auth, _ = authenticator
    token = ".".join((_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)))
    assert _identify(auth, f"Bearer {token}") is None


@settings(max_examples=300)
@given(data=st.binary(max_size=300) | st.lists(JSON, max_size=4).map(
    lambda items: "\n".join(json.dumps(i) for i in items).encode()))
def test_any_token_file_loads_or_is_one_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path: Path = tmp_path_factory.mktemp("tokens") / "tokens.jsonl"
    path.write_bytes(data)
    try:
        tokens = TokenFile(path)
    except TokenFileError as e:
        assert str(e).startswith("TOPOLOGY_TOKENS_FILE: ")
    else:
        assert tokens.lookup("tpt_anything") is None


@given(host=st.text(max_size=60), allowed=st.lists(st.text(max_size=20), max_size=4))
def test_host_matching_never_fails(host: str, allowed: list[str]) -> None:
    assert host_allowed(host, allowed) in (True, False)
    assert host_allowed(host, ["*"]) is bool(host)

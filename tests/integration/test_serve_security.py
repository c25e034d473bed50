"""`topology serve` as a real process: it refuses to serve the open map to a network, and with a
certificate, a token file and a separate ingest port it speaks TLS, asks for tokens and splits the
routes between its two ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from service.tokens import new_token, token_line

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOPOLOGY_", "OTEL_"))}
    return base | extra


def test_serve_on_a_network_without_authentication_refuses_to_start(tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0", "--port", str(_free_port()),
         "--embedded", str(store)],
        capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "refusing to listen on 0.0.0.0 without authentication" in lines[0]
    assert "--insecure" in lines[0] and "TOPOLOGY_TOKENS_FILE" in lines[0]
    assert not store.exists()  # refused before the store was opened


@contextlib.contextmanager
def _running(args: list[str], env: dict[str, str]) -> Iterator[str]:
    """``topology serve ARGS`` until the block ends (Ctrl-C, exit status 0); yields its banner."""
    with subprocess.Popen([sys.executable, "-m", "service.cli", "serve", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            seen: list[str] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any("Press Ctrl-C" in line for line in seen):
                line = proc.stdout.readline()
                if not line:
                    raise AssertionError(f"the server did not start: {seen} {proc.stderr.read()}")
                seen.append(line)
            yield "".join(seen)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()


def test_insecure_says_so_and_serves(tmp_path: Path) -> None:
    port = _free_port()
    with _running(["--host", "0.0.0.0", "--port", str(port), "--embedded", str(tmp_path / "store"),
                   "--insecure"], _env()):
        r = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{ __typename }"})
        assert r.status_code == 200


def test_tls_tokens_and_a_separate_ingest_port(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    reader, collector = new_token(), new_token()
    (tmp_path / "tokens.jsonl").write_text(
        f"{token_line('grafana', ['read'], reader)}\n{token_line('agent', ['ingest', 'admin'], collector)}\n",
        encoding="utf-8")
    port, ingest_port = _free_port(), _free_port()
    env = _env(TOPOLOGY_TLS_CERT=str(tmp_path / "server.pem"), TOPOLOGY_TLS_KEY=str(tmp_path / "server.key"),
               TOPOLOGY_TOKENS_FILE=str(tmp_path / "tokens.jsonl"))
    args = ["--port", str(port), "--ingest-port", str(ingest_port), "--embedded", str(tmp_path / "store")]
    with _running(args, env) as banner:
        assert f"https://127.0.0.1:{port}/graphql" in banner
        assert f"https://127.0.0.1:{ingest_port}/v1/traces" in banner
        main, ingest = f"https://127.0.0.1:{port}", f"https://127.0.0.1:{ingest_port}"
        trust = ssl.create_default_context(cafile=str(_ca_file(ca, tmp_path)))
        with httpx.Client(verify=trust) as c:
            query = {"query": "{ __typename }"}
            assert c.get(main + "/healthz").status_code == 200
            assert c.post(main + "/graphql", json=query).status_code == 401
            as_reader = {"authorization": f"Bearer {reader}"}
            r = c.post(main + "/graphql", json=query, headers=as_reader)
            assert r.json() == {"data": {"__typename": "Query"}}
            auth = {"authorization": f"Bearer {collector}"}
            assert c.post(ingest + "/ingest/addresses", json=[], headers=auth).status_code == 200
            assert c.post(main + "/ingest/addresses", json=[], headers=auth).status_code == 404
            assert c.post(ingest + "/graphql", json=query, headers=auth).status_code == 404
            # The simulator feeds the ingest port over TLS with its token ...
            sim = subprocess.run(
                [sys.executable, "-m", "service.cli", "simulate", "--services", "20", "--minutes", "1",
                 "--http", ingest],
                capture_output=True, text=True, timeout=120,
                env=_env(SSL_CERT_FILE=str(tmp_path / "ca.pem"), TOPOLOGY_SIMULATE_TOKEN=collector))
            assert sim.returncode == 0, sim.stderr
            assert '"rejected"' not in sim.stderr, sim.stderr
            # ... and what it sent answers on the main port.
            services = "{ services(first: 1000) { edges { node { name } } } }"
            r = c.post(main + "/graphql", json={"query": services}, headers=as_reader)
            assert len(r.json()["data"]["services"]["edges"]) >= 20, r.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # no plain HTTP


def _ca_file(ca: trustme.CA, where: Path) -> Path:
    path = where / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path

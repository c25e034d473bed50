"""The real ``topology`` command, as a child process: every misuse is one line on stderr and a non-zero
exit, never a traceback; settings from the environment apply; the HTTP client stays quiet."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from topology.store.embedded import open_stores

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = [sys.executable, "-m", "service.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TOPOLOGY_", "KAFKA_", "JANUSGRAPH_", "LOG_LEVEL"))}
    return {**env, **extra}


def _run(*argv: str, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOPOLOGY, *argv], cwd=ROOT, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)


def _is_log(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _one_line_error(stderr: str, prog: str, *words: str) -> str:
    """The single line that is not a structured log line: ``prog: error: ...`` with ``words`` in it."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not _is_log(ln)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "env", "prog", "words"),
    [
        (["--log-level", "verbose", "schema"], {}, "topology", ["--log-level", "verbose"]),
        (["schema", "--log-level", "verbose"], {}, "topology schema", ["--log-level", "verbose"]),
        (["schema"], {"LOG_LEVEL": "verbose"}, "topology schema", ["LOG_LEVEL", "verbose"]),
        (["simulate", "--services", "5", "--out", "{tmp}"], {}, "topology simulate",
         ["--services", "at least 20"]),
        (["simulate", "--out", "{tmp}"], {"TOPOLOGY_SERVICES": "5"}, "topology simulate",
         ["TOPOLOGY_SERVICES"]),
        (["simulate", "--minutes", "1"], {}, "topology simulate", ["--out DIR, --http URL or --kafka"]),
        (["serve", "--embedded", "{tmp}"], {"TOPOLOGY_PORT": "eighty"}, "topology serve", ["TOPOLOGY_PORT"]),
        (["serve", "--embedded", "{tmp}", "--port", "70000"], {}, "topology serve",
         ["--port", "not a TCP port"]),
        (["serve"], {}, "topology serve", ["--data-dir"]),
        (["serve", "--embedded", "{tmp}"], {"TOPOLOGY_MAX_DEPTH": "0"}, "topology serve",
         ["TOPOLOGY_MAX_DEPTH"]),
        (["demo", "--backfill", "soon"], {}, "topology demo", ["--backfill", "not a duration"]),
        (["ingest", "--stage", "3"], {}, "topology ingest", ["--layer"]),
        (["ingest", "--stage", "4", "--layer", "ipc"], {}, "topology ingest", ["--stage"]),
        (["ingest", "--layer", "ipc"], {"TOPOLOGY_INGEST_STAGE": "1", "TOPOLOGY_IDLE_SECONDS": "soon"},
         "topology ingest", ["TOPOLOGY_IDLE_SECONDS"]),
        (["ingest", "--stage", "1", "--layer", "ipc", "--no-such-flag"], {}, "topology", ["--no-such-flag"]),
        (["bogus"], {}, "topology", ["bogus"]),
        ([], {}, "topology", ["COMMAND"]),
    ],
)
def test_a_bad_flag_or_variable_is_one_line(argv: list[str], env: dict[str, str], prog: str, words: list[str],
                                            tmp_path: Path) -> None:
    r = _run(*(a.replace("{tmp}", str(tmp_path / "d")) for a in argv), env=_env(**env))
    assert r.returncode == 2, r
    _one_line_error(r.stderr, prog, *words)
    assert r.stderr.count("\n") == 1  # no usage block, no log lines


def test_janusgraph_unreachable_is_one_line(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{_free_port()}/gremlin"
    r = _run("serve", "--store", "janusgraph", "--janusgraph-url", url, "--port", str(_free_port()))
    assert r.returncode == 1
    _one_line_error(r.stderr, "topology serve", "cannot be reached", url)


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _run("serve", "--embedded", str(tmp_path / "d"), env=_env(TOPOLOGY_PORT=str(port)))
    assert r.returncode == 1
    _one_line_error(r.stderr, "topology serve", f"cannot listen on 127.0.0.1:{port}")


def test_an_unreachable_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    r = _run("simulate", "--services", "20", "--minutes", "1", "--http", url)
    assert r.returncode == 1
    _one_line_error(r.stderr, "topology simulate", f"the server at {url} cannot be reached")


def test_sigterm_while_ingest_waits_for_kafka_is_one_line() -> None:
    bootstrap = f"127.0.0.1:{_free_port()}"  # nobody listens: the worker retries
    proc = subprocess.Popen([*TOPOLOGY, "ingest", "--stage", "1", "--layer", "ipc", "--metrics-port", "none"],
                            cwd=ROOT, env=_env(KAFKA_BOOTSTRAP=bootstrap), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = ""
        while '"cannot create topics yet"' not in first:  # logged on each retry: waiting for Kafka now
            line = proc.stderr.readline()
            assert line, first
            first += line
        assert json.loads(first.splitlines()[-1])["bootstrap"] == bootstrap
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 1
    _one_line_error(first + rest, "topology ingest", "stopped before Kafka", bootstrap)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``topology serve`` on a port given only by TOPOLOGY_PORT, ``--log-level`` after the command."""
    port = _free_port()
    argv = ["serve", "--embedded", str(tmp_path / "store"), "--log-level", "WARNING"]
    proc = subprocess.Popen([*TOPOLOGY, *argv],
                            cwd=ROOT, env=_env(TOPOLOGY_PORT=str(port)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.slow
def test_topology_port_applies_and_simulate_http_is_quiet(server: tuple[int, subprocess.Popen[str]],
                                                           tmp_path: Path) -> None:
    port, _ = server  # listening on TOPOLOGY_PORT (it answered /readyz there)
    r = _run("simulate", "--services", "20", "--minutes", "2", "--http", f"http://127.0.0.1:{port}",
             env=_env(LOG_LEVEL="INFO"))
    assert r.returncode == 0, r.stderr
    logs = [json.loads(ln) for ln in r.stderr.splitlines() if ln.strip()]
    assert logs, "simulate logs what it did"
    assert not [e for e in logs if e["logger"].startswith(("httpx", "httpcore"))], r.stderr
    assert logs[-1]["msg"] == "simulated" and logs[-1]["services"] == 20
    # what was posted arrived: the catalog of 20 services answers over GraphQL
    query = "{ services(first: 1000) { edges { node { name } } } }"
    body = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10).json()
    assert "errors" not in body, body
    assert len(body["data"]["services"]["edges"]) >= 20, body


def test_a_data_dir_held_by_another_process_is_one_line(tmp_path: Path) -> None:
    held = open_stores(tmp_path / "d")  # this process holds the directory
    try:
        r = _run("serve", "--embedded", str(tmp_path / "d"), "--port", str(_free_port()))
    finally:
        asyncio.run(held.close())
    assert r.returncode == 1
    _one_line_error(r.stderr, "topology serve", str(tmp_path / "d"))


def test_simulate_truth_lists_the_incidents_and_out_writes_change_events(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    r = _run("simulate", "--services", "60", "--minutes", "30", "--step", "60", "--faults", "20",
             "--out", str(tmp_path / "out"), "--truth", str(truth), timeout=120)
    assert r.returncode == 0, r.stderr
    incidents = json.loads(truth.read_text())["incidents"]
    assert incidents and all(set(i) == {"root", "kind", "start", "end", "symptomatic"} for i in incidents)
    assert all(i["symptomatic"] and i["end"] > i["start"] for i in incidents)
    changes = [json.loads(line) for line in (tmp_path / "out" / "changes.jsonl").read_text().splitlines()]
    assert {c["kind"] for c in changes} & {"DEPLOY", "CONFIG", "FEATURE_FLAG", "INFRA"}

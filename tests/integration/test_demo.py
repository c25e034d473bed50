"""`topology demo` as a real process: it answers live and past queries, stops cleanly on Ctrl-C and
keeps its history across a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.server import SHUTDOWN_LIMIT

pytestmark = pytest.mark.slow

QUERY = """query($at: DateTime, $w: Duration) { service(name: "edge-gateway") {
  owner { team } healthStatus { status }
  upstream(depth: 3, at: $at, window: $w) { totalCount edges { node { depth } } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data: Path, port: int, truth: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "demo",
        "--services",
        "120",
        "--seed",
        "3",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--backfill",
        "600",
        "--truth",
        str(truth),
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "LOG_LEVEL": "INFO"}
    )


def _ask(port: int, at: float | None, window: str | None) -> dict[str, Any] | None:
    variables = {"at": None if at is None else datetime.fromtimestamp(at, UTC).isoformat(), "w": window}
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": QUERY, "variables": variables}, timeout=10
        )
    except httpx.TransportError:
        return None
    body = r.json()
    assert "errors" not in body, body
    return body["data"]["service"]  # type: ignore[no-any-return]


def _ready(port: int) -> bool:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    except httpx.TransportError:
        return False
    assert r.status_code == 200 or r.json()["data"] == "loading", r.text  # 503 only while filling
    return r.status_code == 200


def _readyz(port: int) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
    except httpx.TransportError:
        return {}
    return answer


def _wait(pred: Any, timeout: float, what: str) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    # past SHUTDOWN_LIMIT a stuck stop exits 1 with every thread's stack in `err`, shown by the asserts
    out, err = proc.communicate(timeout=SHUTDOWN_LIMIT + 60)
    return proc.returncode, out.decode(), err.decode()


def test_demo_serves_live_and_past_answers_stops_cleanly_and_keeps_history(tmp_path: Path) -> None:
    data, truth, port = tmp_path / "data", tmp_path / "truth.json", _free_port()
    started = time.time()
    proc = _start(data, port, truth)
    try:
        _wait(lambda: _ready(port), 120, "/readyz")
        live = _ask(port, None, None)  # ready means the live map answers at once
        assert live is not None and live["upstream"]["totalCount"] > 0, live
        assert live["owner"]["team"] and live["healthStatus"]["status"] == "HEALTHY"
        assert max(e["node"]["depth"] for e in live["upstream"]["edges"]) >= 2
        past_at = started - 420  # seven minutes before start: only the history simulator wrote that
        _wait(lambda: _readyz(port).get("history") == "filled", 240, "the history fill")
        past = _ask(port, past_at, "2m")  # read once the fill is done: a restart must answer the same
        assert past is not None and past["upstream"]["totalCount"] > 0, past
        assert truth.exists() and '"NETWORK"' in truth.read_text()
    finally:
        code, out, err = _stop(proc)
    assert code == 0, err[-2000:]
    assert "GraphiQL" in out and "/graphql" in out

    proc = _start(data, port, truth)  # same directory: the history is still there, not re-simulated
    try:
        again = _wait(lambda: _ask(port, past_at, "2m"), 120, "the restarted demo to answer")
        assert again["upstream"]["totalCount"] == past["upstream"]["totalCount"]
    finally:
        code, _, err = _stop(proc)
    assert code == 0, err[-2000:]

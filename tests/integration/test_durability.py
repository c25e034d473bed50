"""Explicit durability (issue 8) against ``topology serve --embedded`` as a real process.

* SIGTERM right after a flow batch was answered 200 (its window still open) loses nothing: the
  shutdown writes every open window (``Runtime.drain``).
* ``?wait=true`` answers once the batch is written: SIGKILL right after that answer (no shutdown at
  all) loses nothing either.
* Without a wait, SIGKILL right after the answer loses the open window: the documented limit, which
  is why the wait exists.

The store is read after the process ended, as a restarted server would read it.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from tests.admission_cases import flows, js
from topology.model import Layer
from topology.store.embedded import open_stores

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(store: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``topology serve --embedded STORE`` until it answers /healthz; yields it and its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOPOLOGY_", "OTEL_"))}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port),
                             "--embedded", str(store)], env=env | {"LOG_LEVEL": "ERROR"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the server did not answer /healthz"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        if proc.stderr:
            proc.stderr.close()


def post(base: str, route: str, body: bytes, content_type: str, **params: str) -> httpx.Response:
    return httpx.post(f"{base}{route}", content=body, params=params, timeout=120,
                      headers={"content-type": content_type})


def feed(base: str, start: float, **params: str) -> httpx.Response:
    """A lease naming the server side, then one flow batch of checkout calling it from ``start``."""
    now = time.time()
    lease = js([{"ip": "10.2.0.2", "owner": "payments", "start": now - 3600}])
    assert post(base, "/ingest/addresses", lease, "application/json").status_code == 200
    return post(base, "/ingest/flows", flows(now, start, start + 1), "application/x-topology-flows", **params)


def network_windows(store: Path) -> int:
    async def count() -> int:
        stores = open_stores(store)
        try:
            return sum((await stores.layers[Layer.NETWORK].window_count()).values())
        finally:
            await stores.close()

    return asyncio.run(count())


def test_sigterm_right_after_an_accepted_flow_batch_loses_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store) as (proc, base):
        r = feed(base, time.time() + 30)  # in a window that is still open for a minute or more
        assert r.status_code == 200 and r.json() == {"accepted": 2}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert network_windows(store) > 0


def test_a_write_acknowledged_with_wait_survives_sigkill(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store) as (proc, base):
        r = feed(base, time.time() - 125, wait="true")  # a closed window: written at the next flush
        assert r.status_code == 200 and r.headers["topology-written"] == "true"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert network_windows(store) > 0


def test_without_a_wait_sigkill_loses_an_open_window(tmp_path: Path) -> None:
    """The documented limit: an answer without ``wait`` means admitted, not written."""
    store = tmp_path / "store"
    with serving(store) as (proc, base):
        r = feed(base, time.time() + 30)  # in a window that closes in a minute or more
        assert r.status_code == 200 and "topology-written" not in r.headers
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert network_windows(store) == 0


async def test_written_waits_for_the_flush_of_the_request_window(tmp_path: Path) -> None:
    """In process: the due time of a request is its window's close; a flush before it does not count."""
    from service.runtime import Runtime
    from topology.pipeline import Pipeline

    stores = open_stores(tmp_path / "store")
    try:
        runtime = Runtime(stores, tmp_path, Pipeline())
        now = 1_800_000_000.0  # a minute boundary
        runtime.begin_request()
        assert runtime.request_due() is None
        runtime.accept_flows(flows(now, now + 10, now + 20), now=now)
        due = runtime.request_due()
        assert due is not None and now + 60 < due < now + 65
        await runtime.flush(now + 30)
        assert not await runtime.written(due, 0.05)
        waiting = asyncio.create_task(runtime.written(due, 30))
        await runtime.flush(due)
        assert await waiting
        assert sum((await stores.layers[Layer.NETWORK].window_count()).values()) > 0
        runtime.begin_request()
        runtime.accept_leases(js([{"ip": "10.2.0.9", "owner": "x", "start": now}]), now=now)
        assert runtime.request_due() is None  # stored when accepted
    finally:
        await stores.close()

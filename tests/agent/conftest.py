"""Fixtures for the agent tests: hosts as network namespaces, and named peers inside them.

Three namespaces of our own, joined by veth pairs with their own addresses (nothing else on the
machine is touched; every name and subnet is random per test, so concurrent runs do not meet):

    A (clients)  10.250.N.1, fd00:250:N::1  <--veth-->  B (servers) 10.250.N.2-4, fd00:250:N::2
    C (clients)  10.251.N.1                 <--veth-->  B           10.251.N.2

Tests that load BPF call :func:`bpf_ready` (root, tracefs, headers, bcc: ``make agent-deps``); with
``CI=true`` a missing piece fails instead of skipping.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("peer.py")


def bpf_ready() -> None:
    """Require everything the agent needs to load its program here."""
    require(os.geteuid() == 0, "root (the agent loads BPF)")
    from agent.preflight import problems

    found = problems()
    require(not found, "the agent's prerequisites (" + "; ".join(found) + ")")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@dataclass
class Hosts:
    tag: str
    n: int
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def a(self) -> str:
        return f"{self.tag}a"

    @property
    def b(self) -> str:
        return f"{self.tag}b"

    @property
    def c(self) -> str:
        return f"{self.tag}c"

    def ip(self, host: str, i: int, net: int = 250) -> str:
        return f"10.{net}.{self.n}.{i}" if host != "v6" else f"fd00:250:{self.n}::{i}"

    def create(self) -> None:
        for ns in (self.a, self.b, self.c):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        t, n = self.tag, self.n
        sh("ip", "link", "add", f"{t}ab", "netns", self.a, "type", "veth", "peer", "name", f"{t}ba",
           "netns", self.b)
        sh("ip", "link", "add", f"{t}cb", "netns", self.c, "type", "veth", "peer", "name", f"{t}bc",
           "netns", self.b)
        for ns, dev, addrs in (
            (self.a, f"{t}ab", [f"10.250.{n}.1/24"]),
            (self.b, f"{t}ba", [f"10.250.{n}.2/24", f"10.250.{n}.3/24", f"10.250.{n}.4/24"]),
            (self.c, f"{t}cb", [f"10.251.{n}.1/24"]),
            (self.b, f"{t}bc", [f"10.251.{n}.2/24"]),
        ):
            for addr in addrs:
                sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", self.a, "-6", "addr", "add", f"fd00:250:{n}::1/64", "dev", f"{t}ab", "nodad")
        sh("ip", "-n", self.b, "-6", "addr", "add", f"fd00:250:{n}::2/64", "dev", f"{t}ba", "nodad")

    def destroy(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
        for ns in (self.a, self.b, self.c):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def _peer(self, ns: str, args: list[str]) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(PEER), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.procs.append(p)
        return p

    def server(self, ns: str, service: str, bind: str, port: int, reply: int) -> subprocess.Popen[str]:
        """Start a server and return once it listens."""
        args = ["serve", f"--service={service}", "--bind", bind, "--port", str(port), "--reply", str(reply)]
        p = self._peer(ns, args)
        assert p.stdout is not None
        line = p.stdout.readline()
        err = "" if line.strip() == "ready" or p.stderr is None else p.stderr.read()
        assert line.strip() == "ready", f"server {service} did not start: {line!r} {err}"
        return p

    def client(self, ns: str, service: str | None, to: str, port: int, send: int, chunks: int = 1,
               every: float = 0.0, wait: bool = True) -> subprocess.Popen[str]:
        """Run a client (to completion unless ``wait`` is False)."""
        args = ["connect", "--to", to, "--port", str(port), "--send", str(send), "--chunks", str(chunks),
                "--every", str(every)]
        if service:
            args.insert(1, f"--service={service}")
        p = self._peer(ns, args)
        if wait:
            finish(p)
        return p

    def stop(self, p: subprocess.Popen[str]) -> None:
        p.terminate()
        p.communicate(timeout=10)


def finish(p: subprocess.Popen[str], within: float = 60.0) -> str:
    out, err = p.communicate(timeout=within)
    assert p.returncode == 0, f"peer failed ({p.returncode}): {err[-2000:]}"
    return out


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    bpf_ready()
    h = Hosts(f"tpa{uuid.uuid4().hex[:5]}", random.randint(1, 254))
    try:
        h.create()
        yield h
    finally:
        h.destroy()


def wait_until(predicate: object, within: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


class RunningAgent:
    """The agent's loop (real tracer, real attribution) in a thread, its sink a list of messages."""

    def __init__(self, workloads: list[dict[str, object]], interval: float = 1.0, fold: bool = True) -> None:
        import asyncio
        import threading

        from agent.attribution import Attributor
        from agent.node import Agent, Timing
        from agent.outbox import Message
        from agent.tracer import Tracer
        from agent.workloads import parse_rules

        self.messages: list[Message] = []

        async def send(msg: Message) -> None:
            self.messages.append(msg)

        self.tracer = Tracer()
        self.agent = Agent(self.tracer, Attributor(parse_rules(workloads)), send, "test-node",
                           Timing(interval=interval, poll=0.2), fold=fold)
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self.agent.run(self.stop_event),), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the agent did not stop"
        self.loop.close()
        self.tracer.close()

    def flows(self) -> list[tuple[tuple[str, ...], object]]:
        """Every flow record sent, with its batch's string table."""
        from topology.wire import flow

        out = []
        for m in self.messages:
            if m.kind == "flows":
                batch = flow.decode(m.payload)
                out.extend((batch.strings, r) for r in batch.records)
        return out

    def leases(self) -> list[object]:
        import json

        from topology.catalog import AddressLease

        return [AddressLease.from_dict(d) for m in self.messages if m.kind == "leases"
                for d in json.loads(m.payload)]


@pytest.fixture
def agent_factory() -> Iterator[object]:
    started: list[RunningAgent] = []

    def start(workloads: list[dict[str, object]], **kw: object) -> RunningAgent:
        a = RunningAgent(workloads, **kw)  # type: ignore[arg-type]
        started.append(a)
        return a

    yield start
    for a in started:
        if a.thread.is_alive():
            a.stop()

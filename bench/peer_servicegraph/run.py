"""Running one system under the bench: its process (CPU and memory from /proc), the posting client and
what the system says it did with the spans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client.parser import text_string_to_metric_families

from bench.late_burst import counts as server_counts
from bench.late_burst import wait_up
from bench.load_http import free_port, rss_kib
from bench.otlp_http_cost import py_spy
from bench.peer_servicegraph.edges import Pair, collector_edges
from service.client import retry_wait

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TICK = os.sysconf("SC_CLK_TCK")
PB = {"content-type": "application/x-protobuf"}


# -- the process ---------------------------------------------------------------------------------------
def _tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (utime + stime, and cutime + cstime of children already reaped) of ``root`` and every
    live descendant, from /proc/<pid>/stat."""
    total = 0
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime (fields 14-17)
    return total / TICK


class Proc:
    """A system's process: started here, measured from /proc, stopped with SIGTERM."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> None:
        self.log = log
        self.p = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                  stderr=log.open("wb"), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def peak_rss_mib(self) -> float:
        """VmHWM, summed over the process and its live descendants."""
        return sum(rss_kib(pid, "VmHWM") for pid in _tree(self.pid)) / 1024

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, patience: float = 300.0) -> float:
        """SIGTERM, then wait for the exit (SIGKILL after ``patience`` s): returns the process's CPU seconds
        over its whole life including what it reaped (the rusage of the waited child). Not its ru_maxrss:
        Linux carries the forking process's peak (this bench's, with every request in memory) across
        exec into it; VmHWM (:meth:`peak_rss_mib`) starts anew at exec."""
        if self.p.returncode is not None:
            raise RuntimeError(f"the process exited early (code {self.p.returncode}); log: {self.log}")
        self.p.send_signal(signal.SIGTERM)
        end = time.monotonic() + patience
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > end:
                os.killpg(self.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(self.pid, 0)
                break
            time.sleep(0.1)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        return float(ru.ru_utime + ru.ru_stime)

    def kill(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.p.wait()

    def settle(self, quiet: float = 0.03, seconds: int = 3, patience: float = 300.0) -> float:
        """Wait until the process uses less than ``quiet`` CPU-s per second for ``seconds`` seconds in a row
        (its work on what was posted is done); returns when that quiet stretch began (monotonic)."""
        end = time.monotonic() + patience
        last, calm, since = self.cpu(), 0, time.monotonic()
        while time.monotonic() < end:
            time.sleep(1.0)
            now = self.cpu()
            if now - last < quiet:
                calm += 1
                if calm >= seconds:
                    return since
            else:
                calm, since = 0, time.monotonic()
            last = now
        return since


# -- posting -------------------------------------------------------------------------------------------
@dataclass
class Posted:
    wall: float = 0.0
    requests: int = 0
    spans: int = 0
    accepted: int = 0  # spans in requests answered 2xx, less those the answer's partial_success rejected
    rejected: int = 0  # spans a 2xx answer's partial_success said it rejected
    refused: int = 0  # spans in requests that failed in the end (after retrying 429/503)
    retries: int = 0  # 429/503 answers that were waited out and sent again
    statuses: Counter[int] = field(default_factory=Counter)


async def post(url: str, bodies: list[bytes], spans: list[int], senders: int = 4,
               rate: float | None = None) -> Posted:
    """POST every body to ``url`` over ``senders`` keep-alive connections, in order, as fast as the server
    answers or (``rate``) paced to that many spans per second overall. A 429 or 503 is sent again after its
    ``Retry-After`` (1 s if absent), as the OpenTelemetry exporters do and as ``topology simulate --http``
    does (both wait as :func:`service.client.retry_wait` says)."""
    import httpx

    out = Posted(requests=len(bodies), spans=sum(spans))
    nxt = 0
    scheduled = 0  # spans whose send time has been given out (paced)
    t0 = time.monotonic()

    async def one(client: httpx.AsyncClient, body: bytes, n: int) -> None:
        waited = 0.0
        while True:
            r = await client.post(url, content=body, headers=PB)
            wait = retry_wait(r.status_code, r.headers, waited)
            if wait is None:
                break
            out.retries += 1
            waited += wait
            await asyncio.sleep(wait)
        out.statuses[r.status_code] += 1
        if 200 <= r.status_code < 300:
            rejected = 0
            if r.content and "protobuf" in r.headers.get("content-type", ""):
                resp = ExportTraceServiceResponse()
                resp.ParseFromString(r.content)
                rejected = resp.partial_success.rejected_spans
            out.rejected += rejected
            out.accepted += n - rejected
        else:
            out.refused += n

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal nxt, scheduled
        while nxt < len(bodies):
            i = nxt
            nxt += 1
            if rate:
                due = t0 + scheduled / rate
                scheduled += spans[i]
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await one(client, bodies[i], spans[i])

    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(sender(client) for _ in range(senders)))
    out.wall = time.monotonic() - t0
    return out


# -- the systems ---------------------------------------------------------------------------------------
def _get(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


class Ours:
    """``topology serve --embedded DIR`` of the checkout ``repo`` (this one by default), on a port of its
    own, run by this interpreter with the checkout first on its path."""

    def __init__(self, work: Path, repo: Path = REPO, profile: Path | None = None) -> None:
        self.repo = repo
        self.work = work
        self.profile = profile  # a directory: py-spy samples the server from its start to its exit
        self.data = work / "store"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"

    def start(self) -> Proc:
        proc = Proc([sys.executable, "-m", "service.cli", "serve", "--embedded", str(self.data),
                     "--port", str(self.port)],
                    {"LOG_LEVEL": "WARNING", "PYTHONPATH": str(self.repo)}, self.work / "server.log",
                    cwd=self.repo)
        try:
            wait_up(self.port, patience=120)
        except SystemExit:
            proc.kill()
            raise
        if self.profile is not None:
            py_spy(proc.pid, self.profile / f"{self.repo.name}-{int(time.time())}.txt")
        return proc

    def before_stop(self, settled_at: float) -> dict[str, float]:
        c = server_counts(self.port)
        return {"dropped": c["pairing_dropped"] + c["too_late"], "late_merged": c["late_merged"]}

    def edges(self, start: float, end: float) -> dict[Pair, int]:
        """The TRACE APP edges the store holds, read by the checkout's own code (its store format)."""
        out = subprocess.run([sys.executable, "-c", _STORED, str(self.data), str(start), str(end)],
                             cwd=self.repo, env={**os.environ, "PYTHONPATH": str(self.repo)},
                             capture_output=True, text=True, check=True).stdout
        return {(a, b): n for a, b, n in json.loads(out)}


# Run in the measured checkout: prints the TRACE APP edges of the store in argv[1] between argv[2] and
# argv[3] as JSON [[source, target, requests], ...].
_STORED = """
import asyncio, json, sys, time
from topology.model import Granularity, Layer
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange
async def main(data, start, end):
    stores = open_stores(data)
    try:
        es = await stores.layers[Layer.TRACE].edges(Granularity.APP, TimeRange(start - 60, end + 120),
                                                    time.time() + 3600)
        print(json.dumps([[e.key.source, e.key.target, e.stats.requests] for e in es]))
    finally:
        await stores.close()
asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
"""


class Collector:
    """The OpenTelemetry Collector built from builder.yaml: otlp receiver (HTTP) -> servicegraph -> file."""

    def __init__(self, binary: Path, work: Path, aligned: bool) -> None:
        self.binary = binary
        self.work = work
        self.aligned = aligned
        self.port = free_port()
        self.telemetry = free_port()
        self.metrics = work / "servicegraph.jsonl"
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"

    def start(self) -> Proc:
        configs = ["--config", str(HERE / "collector.yaml")]
        if self.aligned:
            configs += ["--config", str(HERE / "aligned.yaml")]
        proc = Proc([str(self.binary), *configs],
                    {"PSG_OTLP_ENDPOINT": f"127.0.0.1:{self.port}", "PSG_METRICS_FILE": str(self.metrics),
                     "PSG_TELEMETRY_PORT": str(self.telemetry)}, self.work / "collector.log")
        end = time.monotonic() + 60
        while True:
            try:
                req = urllib.request.Request(self.url, data=b"", headers=PB, method="POST")
                with urllib.request.urlopen(req, timeout=5):
                    return proc
            except OSError:
                if not proc.alive() or time.monotonic() > end:
                    proc.kill()
                    raise SystemExit(f"the Collector did not start; its log: {proc.log}") from None
                time.sleep(0.2)

    def before_stop(self, settled_at: float) -> dict[str, float]:
        """Wait for the connector's first flush (every 10 s) after the last unanswered call expired, then
        read its counts. A client span whose server span never comes is counted as a call to a virtual
        peer when it expires: up to store.ttl (2 s) plus store_expiration_loop (2 s) after it came, when
        the CPU it costs is too little for :meth:`Proc.settle` to notice."""
        end = time.monotonic() + 40
        wall_settled = time.time() - (time.monotonic() - settled_at)
        while time.monotonic() < end:
            if self.metrics.exists() and self.metrics.stat().st_mtime > wall_settled + 5.0:
                break
            time.sleep(0.5)
        time.sleep(1.5)  # the file exporter's own flush (every second)
        out = {"dropped": 0.0, "expired": 0.0}
        for fam in text_string_to_metric_families(_get(f"http://127.0.0.1:{self.telemetry}/metrics")):
            for s in fam.samples:
                if s.name.startswith("otelcol_connector_servicegraph_dropped_spans"):
                    out["dropped"] += s.value
                elif s.name.startswith("otelcol_connector_servicegraph_expired_edges"):
                    out["expired"] += s.value
        return out

    def edges(self, start: float, end: float) -> dict[Pair, int]:
        with self.metrics.open(encoding="utf-8") as f:
            return collector_edges(f)

"""What the node agent costs: CPU (share of one core), RSS, events lost and bytes on the wire per
connection, at 1,000 and 10,000 new TCP connections a second on loopback. As root (it loads BPF).

    .venv/bin/python -m bench.agent_cost [--rates 1000 10000] [--seconds 20] [--no-fold]

The agent runs as it would in production (``python -m agent``, default settings but ``--interval 5``
so that every measured window holds several reports) and sends to a small HTTP sink in this
process, which counts the bytes of the flow batches it receives. The load is ``bench/connload.c``
(compiled here with ``cc``): a paced client and a server on 127.0.0.1, each connection 64 bytes up
and 32 down, so every connection is seen from both ends (a client and a server record).

Figures per rate, over the load window only (compilation and start-up excluded):
* agent CPU: user + system time of the agent process / wall time (1.0 = one core);
* BPF CPU: run time of the agent's BPF programs in the kernel (``kernel.bpf_stats_enabled``, read from
  the agent's program file descriptors), per connection and as a share of one core: this is paid by
  the connecting processes and softirq, not by the agent;
* RSS of the agent at the end; events lost (ring buffer full) and connections not tracked (table
  full) from the agent's /metrics; flow batch bytes per connection (HTTP headers not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.machine import header

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


class Sink(ThreadingHTTPServer):
    """A stand-in for the ingest routes of ``topology serve``: counts body bytes by route, answers 200
    (400 while ``reject`` is set), and with ``keep`` also keeps each request (tests use that)."""

    def __init__(self, port: int = 0, keep: bool = False) -> None:
        self.bytes = {"flows": 0, "leases": 0}
        self.posts = 0
        self.keep = keep
        self.reject = False
        self.requests: list[tuple[str, str, bytes, str | None]] = []  # path, type, body, Authorization
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.reject:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error": "bad input", "code": "BAD_INPUT"}')
            return
        self.server.bytes["flows" if self.path.endswith("/flows") else "leases"] += len(body)
        self.server.posts += 1
        if self.server.keep:
            self.server.requests.append((self.path, self.headers["Content-Type"], body,
                                         self.headers.get("Authorization")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        return


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bpf_run_ns(pid: int) -> tuple[int, int]:
    """Summed (run_time_ns, run_cnt) of the BPF programs the process holds."""
    total = count = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if "prog_type:" not in info:
            continue
        m = re.search(r"run_time_ns:\s+(\d+)", info)
        c = re.search(r"run_cnt:\s+(\d+)", info)
        total += int(m.group(1)) if m else 0
        count += int(c.group(1)) if c else 0
    return total, count


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def measure(rate: int, seconds: float, agent: subprocess.Popen[bytes], sink: Sink, metrics_url: str,
            connload: str, port0: int) -> dict[str, Any]:
    def scrape() -> str:
        with urllib.request.urlopen(metrics_url, timeout=10) as r:
            return str(r.read().decode())

    before_m = scrape()
    cpu0, (bpf0, runs0), wall0 = cpu_seconds(agent.pid), bpf_run_ns(agent.pid), time.monotonic()
    bytes0 = sink.bytes["flows"]
    out = subprocess.run([connload, str(rate), str(seconds), str(port0), "8"], capture_output=True, text=True,
                         check=True, timeout=seconds + 60).stdout.split()
    wall = time.monotonic() - wall0
    cpu1, (bpf1, runs1) = cpu_seconds(agent.pid), bpf_run_ns(agent.pid)
    connections, errors = int(out[1]), int(out[2])
    time.sleep(12)  # two reporting intervals: every record of the window reaches the sink
    after_m = scrape()
    ring = "topology_agent_ring_lost_total"
    table = 'topology_agent_untracked_connections_total{reason="table_full"}'
    lost = metric(after_m, ring) - metric(before_m, ring)
    full = metric(after_m, table) - metric(before_m, table)
    return {
        "rate": rate,
        "connections": connections,
        "connect_errors": errors,
        "achieved_rate": round(connections / wall, 1),
        "agent_cpu_share": round((cpu1 - cpu0) / wall, 4),
        "agent_cpu_us_per_connection": round((cpu1 - cpu0) / max(connections, 1) * 1e6, 2),
        "bpf_cpu_share": round((bpf1 - bpf0) / 1e9 / wall, 4),
        "bpf_ns_per_connection": round((bpf1 - bpf0) / max(connections, 1)),
        "bpf_runs_per_connection": round((runs1 - runs0) / max(connections, 1), 1),
        "rss_mib": round(rss_mib(agent.pid), 1),
        "ring_lost": lost,
        "table_full": full,
        "flow_bytes_per_connection": round((sink.bytes["flows"] - bytes0) / max(connections, 1), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--no-fold", action="store_true", help="run the agent with --fold false")
    p.add_argument("--port0", type=int, default=47100, help="first of 8 loopback ports for the load")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.agent_cost loads BPF: run it as root (after make agent-deps)")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench.agent_cost needs a C compiler (cc) for its load generator")
    print(header("node agent cost (bench/agent_cost.py)"))
    tmp = Path(tempfile.mkdtemp(prefix="agent-cost-"))
    connload = str(tmp / "connload")
    subprocess.run([cc, "-O2", "-o", connload, str(ROOT / "bench" / "connload.c")], check=True)
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    mport = free_port()
    cmd = [sys.executable, "-m", "agent", "--http", f"http://127.0.0.1:{sink.server_address[1]}",
           "--interval", "5", "--metrics-port", str(mport), "--host", "bench", "--log-level", "WARNING"]
    if args.no_fold:
        cmd += ["--fold", "false"]
    stats_before = STATS.read_text().strip() if STATS.exists() else None
    agent = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rows = []
    try:
        metrics_url = f"http://127.0.0.1:{mport}/metrics"
        for _ in range(120):
            try:
                urllib.request.urlopen(metrics_url, timeout=2).read()
                break
            except OSError:
                if agent.poll() is not None:
                    sys.exit("the agent exited")
                time.sleep(0.5)
        if stats_before is not None:
            STATS.write_text("1")
        time.sleep(6)  # one reporting interval after start-up
        idle0, wall0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(10)
        idle = (cpu_seconds(agent.pid) - idle0) / (time.monotonic() - wall0)
        print(f"idle agent (this machine's own traffic only): {idle:.4f} of a core, "
              f"RSS {rss_mib(agent.pid):.0f} MiB")
        for rate in args.rates:
            row = measure(rate, args.seconds, agent, sink, metrics_url, connload, args.port0)
            rows.append(row)
            print(json.dumps(row))
    finally:
        if stats_before is not None:
            STATS.write_text(stats_before)
        agent.terminate()
        agent.wait(30)
        sink.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'rate/s':>8} {'achieved':>9} {'agent CPU':>10} {'us/conn':>8} {'BPF CPU':>8} {'ns/conn':>8} "
          f"{'RSS MiB':>8} {'lost':>5} {'B/conn':>7}" + ("  (--fold false)" if args.no_fold else ""))
    for r in rows:
        lost = int(r["ring_lost"] + r["table_full"])
        print(f"{r['rate']:>8} {r['achieved_rate']:>9} {r['agent_cpu_share']:>10.2%} "
              f"{r['agent_cpu_us_per_connection']:>8} {r['bpf_cpu_share']:>8.2%} "
              f"{r['bpf_ns_per_connection']:>8} {r['rss_mib']:>8} {lost:>5} "
              f"{r['flow_bytes_per_connection']:>7}")


if __name__ == "__main__":
    main()

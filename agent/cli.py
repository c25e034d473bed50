"""``topology agent`` / ``python -m agent``: the eBPF node agent.

    topology agent --http http://127.0.0.1:8080 --workloads workloads.json
    topology agent --kafka broker:9092 --topic-prefix prod. --metrics-port 9464

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for bad arguments or a bad workloads file,
3 when the machine cannot load the program (the message says what is missing and how to fix it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("agent")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The agent's flags, on a new parser or on ``parser`` (``topology agent``, which has --log-level)."""
    own = parser is None
    p = parser or argparse.ArgumentParser(
        prog="topology agent", description="eBPF node agent: TCP connections -> flow batches and leases")
    sink = p.add_mutually_exclusive_group(required=True)
    sink.add_argument("--http", metavar="URL",
                      help="base URL of `topology serve` / `topology demo` "
                      "(POSTs /ingest/flows, /ingest/addresses)")
    sink.add_argument("--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers (topology.flows, "
                      "topology.addresses)")
    p.add_argument("--token-file", metavar="FILE",
                   help="bearer token for --http, read from FILE (default: env TOPOLOGY_AGENT_TOKEN); "
                   "it needs the ingest and admin scopes")
    p.add_argument("--topic-prefix", default=os.environ.get("TOPOLOGY_TOPIC_PREFIX", ""),
                   help="prefix of the Kafka topic names (default: env TOPOLOGY_TOPIC_PREFIX)")
    p.add_argument("--workloads", metavar="FILE", help="JSON rules naming workloads (see the README)")
    p.add_argument("--pods", metavar="FILE", help="Kubernetes PodList JSON of this node's pods")
    p.add_argument("--host", default=socket.gethostname(), help="name of this node in the batches")
    p.add_argument("--interval", type=_positive, default=10.0,
                   help="seconds between reports of open connections and batches (default 10)")
    p.add_argument("--poll", type=_positive, default=0.5, help="seconds between ring-buffer drains")
    p.add_argument("--max-batch-records", type=int, default=10_000,
                   help="send a batch as soon as this many records are pending")
    p.add_argument("--no-fold", action="store_true",
                   help="one record per connection (default: fold equal records, with a count)")
    p.add_argument("--buffer-mib", type=_positive, default=64.0,
                   help="what is kept while the sink is unavailable (oldest batches dropped beyond)")
    p.add_argument("--ring-mib", type=int, default=8, help="BPF ring buffer size (a power of two)")
    p.add_argument("--max-connections", type=int, default=65_536, help="kernel connection table size")
    p.add_argument("--lease-renew", type=_positive, default=30.0, help="seconds between lease renewals")
    p.add_argument("--shutdown-timeout", type=_positive, default=10.0,
                   help="seconds to deliver what is buffered when stopping")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port")
    if own:
        p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip() or None
    return os.environ.get("TOPOLOGY_AGENT_TOKEN") or None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace, configure_logging: bool = True) -> int:
    """Run the agent with parsed arguments (also the entry of ``topology agent``, which has set up
    logging already)."""
    if configure_logging:
        from service.logs import setup_logging

        setup_logging(args.log_level)
    from agent.attribution import Attributor
    from agent.kubernetes import Pods
    from agent.preflight import PreflightError, check
    from agent.workloads import WorkloadsError, load_rules

    try:
        rules = load_rules(args.workloads) if args.workloads else []
        if args.token_file:
            _token(args)
    except WorkloadsError as e:
        print(f"topology agent: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"topology agent: cannot read the token file {args.token_file}: {e.strerror}", file=sys.stderr)
        return 2
    ring = args.ring_mib * 1024 * 1024
    if args.ring_mib < 1 or ring & (ring - 1):
        print("topology agent: --ring-mib must be a power of two (1, 2, 4, 8, ...)", file=sys.stderr)
        return 2
    try:
        check()
    except PreflightError as e:
        print(str(e), file=sys.stderr)
        return 3
    attributor = Attributor(rules, Pods(args.pods) if args.pods else None)
    return asyncio.run(_serve(args, attributor, ring))


async def _serve(args: argparse.Namespace, attributor: object, ring: int) -> int:
    from agent import metrics
    from agent.node import Agent, Timing
    from agent.program import ProgramConfig
    from agent.sink import HttpSink, KafkaSink
    from agent.tracer import Tracer
    from ingest.topics import Topics

    sink: HttpSink | KafkaSink
    sink = (HttpSink(args.http, token=_token(args)) if args.http
            else KafkaSink(args.kafka, Topics(args.topic_prefix), args.host))
    tracer = Tracer(ProgramConfig(max_connections=args.max_connections, ring_bytes=ring))
    timing = Timing(args.interval, args.poll, args.max_batch_records, args.shutdown_timeout)
    agent = Agent(tracer, attributor, sink, args.host, timing, fold=not args.no_fold,  # type: ignore[arg-type]
                  buffer_bytes=int(args.buffer_mib * 1024 * 1024), lease_renew=args.lease_renew)
    server = metrics.serve(agent, args.metrics_port) if args.metrics_port else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("agent started", extra={"sink": args.http or args.kafka, "host": args.host,
                                     "interval": args.interval, "netns_from_kernel": tracer.netns_from_kernel,
                                     "metrics_port": args.metrics_port or None})
    try:
        await agent.run(stop)
    finally:
        await sink.close()
        tracer.close()
        if server is not None:
            with contextlib.suppress(Exception):
                server.shutdown()
    return 0

"""``topology agent`` / ``python -m agent``: the eBPF node agent.

    topology agent --http http://127.0.0.1:8080 --workloads workloads.json
    topology agent --kafka broker:9092 --topic-prefix prod. --metrics-port 9464

Every flag is also an environment variable (:class:`agent.settings.AgentSettings`; ``--help`` shows
both). Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for a bad setting or workloads file, 3
when the machine cannot load the program (the message says what is missing and how to fix it).
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
from collections.abc import Mapping, Sequence

from agent.settings import AgentSettings
from topology.settings import ConfigError, KafkaSettings, LogSettings, add_flags, read_secret, resolve

log = logging.getLogger("agent")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The agent's flags, on a new parser or on ``parser`` (``topology agent``, which has --log-level)."""
    p = parser
    if p is None:
        p = argparse.ArgumentParser(prog="topology agent",
                                    description="eBPF node agent: TCP connections -> flow batches and leases",
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_flags(p, LogSettings)
    add_flags(p, AgentSettings)
    add_flags(p, KafkaSettings)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)  # read once
    from service.logs import setup_logging

    try:
        setup_logging(resolve(LogSettings, args, env).level)
    except ConfigError as e:
        print(f"topology agent: error: {e}", file=sys.stderr)
        return 2
    return run(args, env)


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Run the agent with parsed arguments (also the entry of ``topology agent``; logging is set up)."""
    from agent.attribution import Attributor
    from agent.kubernetes import Pods
    from agent.preflight import PreflightError, check
    from agent.workloads import WorkloadsError, load_rules

    env = dict(os.environ) if env is None else env
    try:
        settings = resolve(AgentSettings, args, env)
        kafka = None
        if isinstance(settings.kafka, str):  # --kafka HOST:PORT names the servers
            kafka = resolve(KafkaSettings, args, env, bootstrap=settings.kafka)
        elif settings.kafka:
            kafka = resolve(KafkaSettings, args, env)
        rules = load_rules(settings.workloads) if settings.workloads else []
        token = _token(settings)
    except (ConfigError, WorkloadsError) as e:
        print(f"topology agent: error: {e}", file=sys.stderr)
        return 2
    try:
        check()
    except PreflightError as e:
        print(str(e), file=sys.stderr)
        return 3
    attributor = Attributor(rules, Pods(settings.pods) if settings.pods else None)
    return asyncio.run(_serve(settings, kafka, token, attributor))


def _token(settings: AgentSettings) -> str | None:
    if settings.token_file:
        return read_secret(settings.token_file, "TOPOLOGY_AGENT_TOKEN_FILE").strip() or None
    return settings.token


async def _serve(s: AgentSettings, kafka: KafkaSettings | None, token: str | None, attributor: object) -> int:
    from agent import metrics
    from agent.node import Agent, Timing
    from agent.program import ProgramConfig
    from agent.sink import HttpSink, KafkaSink
    from agent.tracer import Tracer
    from ingest.topics import Topics

    host = s.host or socket.gethostname()
    sink: HttpSink | KafkaSink
    if kafka is not None:
        sink = KafkaSink(kafka, Topics(kafka.topic_prefix), host)
    else:
        assert s.http is not None  # AgentSettings checks there is a sink
        sink = HttpSink(s.http, token=token)
    tracer = Tracer(ProgramConfig(max_connections=s.max_connections, ring_bytes=s.ring_mib * 1024 * 1024))
    timing = Timing(s.interval, s.poll, s.max_batch_records, s.shutdown_timeout)
    agent = Agent(tracer, attributor, sink, host, timing, fold=s.fold,  # type: ignore[arg-type]
                  buffer_bytes=int(s.buffer_mib * 1024 * 1024), lease_renew=s.lease_renew)
    server = metrics.serve(agent, s.metrics_port, s.metrics_host) if s.metrics_port else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("agent started", extra={"sink": s.http or (kafka.describe() if kafka else None), "host": host,
                                     "interval": s.interval, "netns_from_kernel": tracer.netns_from_kernel,
                                     "metrics_port": s.metrics_port})
    try:
        await agent.run(stop)
    finally:
        await sink.close()
        tracer.close()
        if server is not None:
            with contextlib.suppress(Exception):
                server.shutdown()
    return 0

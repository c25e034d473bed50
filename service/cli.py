"""The ``topology`` command line.

topology demo      embedded store + simulated fleet + GraphQL server (what `make demo` runs)
topology serve     GraphQL server and HTTP/OTLP ingest over an existing store
topology simulate  run the fleet simulator: write its inputs to files, POST them to a server, or
                   publish them to Kafka
topology ingest    one Kafka stage worker (see ingest/)
topology schema    print the GraphQL SDL (schema.graphql is this output)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any


def _positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s}")
    return v


def _topic_prefix_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--topic-prefix",
        default=os.environ.get("TOPOLOGY_TOPIC_PREFIX", ""),
        help="prefix of every topic and consumer group name (default: env TOPOLOGY_TOPIC_PREFIX)",
    )


def _store_options(p: argparse.ArgumentParser, default_dir: str | None) -> None:
    p.add_argument(
        "--store",
        choices=("embedded", "janusgraph"),
        default=os.environ.get("TOPOLOGY_STORE", "embedded"),
        help="layer store backend (default: embedded)",
    )
    p.add_argument("--data-dir", default=default_dir, help="embedded store directory")
    p.add_argument(
        "--janusgraph-url",
        default=os.environ.get("JANUSGRAPH_URL", "ws://127.0.0.1:18182/gremlin"),
        help="JanusGraph Gremlin endpoint (with --store janusgraph)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="topology", description="Service Topology: a living map of service dependencies"
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="embedded store + simulated fleet + GraphQL server")
    demo.add_argument("--services", type=_positive_int, default=1000)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--truth", help="rewrite the ground truth JSON here as traffic flows")
    demo.add_argument("--step", type=float, default=5.0, help="seconds of traffic per simulator step")
    demo.add_argument(
        "--backfill",
        type=float,
        default=35 * 60,
        help="seconds of history simulated at start-up (so `at: 30 min ago` answers at once)",
    )
    _store_options(demo, "var/demo")

    serve = sub.add_parser("serve", help="GraphQL server and HTTP/OTLP ingest over a store")
    serve.add_argument("--embedded", metavar="DATA_DIR", help="use the embedded store in DATA_DIR")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--kafka",
        metavar="BOOTSTRAP",
        help="also consume the Kafka pipeline: run the stage-3 and catalog workers in this process, "
        "writing the stores it serves",
    )
    _topic_prefix_option(serve)
    _store_options(serve, None)

    sim = sub.add_parser("simulate", help="run the fleet simulator")
    sim.add_argument("--services", type=_positive_int, default=1000)
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument("--minutes", type=float, default=10.0, help="simulated minutes to emit")
    sim.add_argument("--step", type=float, default=10.0)
    sim.add_argument(
        "--start", type=float, help="simulated start time (epoch seconds; default: now - minutes)"
    )
    sim.add_argument("--truth", help="write the ground truth JSON here")
    sim.add_argument("--out", help="write the emitted payloads under this directory")
    sim.add_argument("--http", help="POST the payloads to a `topology serve` at this base URL")
    sim.add_argument("--kafka", metavar="BOOTSTRAP", help="publish the payloads to Kafka topics")
    _topic_prefix_option(sim)
    sim.add_argument(
        "--rate", type=float, default=0.0, help="simulated seconds per wall second (0 = as fast as possible)"
    )

    ing = sub.add_parser("ingest", help="run one Kafka stage worker")
    ing.add_argument("--stage", type=int, required=True, choices=(1, 2, 3))
    ing.add_argument("--layer", required=True, choices=("network", "ipc", "trace", "meta"))
    ing.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    ing.add_argument("--metrics-port", type=int, default=0)
    _topic_prefix_option(ing)
    _store_options(ing, "var/kafka-store")

    sub.add_parser("schema", help="print the GraphQL SDL")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from service.logs import setup_logging

    setup_logging(args.log_level)
    try:
        if args.command == "demo":
            from service.demo import run_demo

            return asyncio.run(run_demo(args))
        if args.command == "serve":
            from service.demo import run_serve

            return asyncio.run(run_serve(args))
        if args.command == "simulate":
            from service.simulate import run_simulate

            return asyncio.run(run_simulate(args))
        if args.command == "ingest":
            return _run_ingest(args)
        if args.command == "schema":
            from service.schema import schema

            sys.stdout.write(schema.as_str() + "\n")
            return 0
    except KeyboardInterrupt:
        return 130
    return 2


def _run_ingest(args: Any) -> int:
    from ingest.main import run_worker

    return int(
        run_worker(
            stage=args.stage,
            layer=args.layer,
            bootstrap=args.bootstrap,
            store=args.store,
            data_dir=args.data_dir,
            janusgraph_url=args.janusgraph_url,
            metrics_port=args.metrics_port,
            topic_prefix=args.topic_prefix,
        )
        or 0
    )


def open_stores_from_args(args: Any) -> Any:
    """The stores selected by --store/--data-dir/--janusgraph-url (or serve's --embedded)."""
    if getattr(args, "embedded", None):
        args.store, args.data_dir = "embedded", args.embedded
    if args.store == "janusgraph":
        from topology.store.janusgraph import open_janusgraph_stores
        from topology.timewindow import Retention

        return open_janusgraph_stores(args.janusgraph_url, Retention(), require=True)
    if not args.data_dir:
        raise SystemExit("topology serve needs --embedded DATA_DIR or --store janusgraph")
    from topology.store.embedded import open_stores

    return open_stores(Path(args.data_dir))


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig()
    sys.exit(main())

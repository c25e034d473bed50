"""The ``topology`` command line.

topology demo      embedded store + simulated fleet + GraphQL server (what `make demo` runs)
topology serve     GraphQL server and HTTP/OTLP ingest over an existing store
topology simulate  run the fleet simulator: write its inputs to files, POST them to a server, or
                   publish them to Kafka
topology ingest    one Kafka stage worker (see ingest/)
topology schema    print the GraphQL SDL (schema.graphql is this output)
topology export    the graph around a service (or all of it) from a server as DOT, Mermaid, Cytoscape,
                   GraphML or JSON
topology agent     the eBPF node agent: this machine's TCP connections as flow batches (see agent/)
topology backstage import Backstage catalog-info.yaml Components into the catalog; export observed
                   dependencies as spec.dependsOn patches

Every flag falls back to an environment variable, then to its default (``--help`` shows both; the
README's configuration table lists them all). The environment is read once, here, into the typed
settings of :mod:`service.settings`. A mistake (a bad flag or variable, a store or broker that cannot be
reached) is one line on stderr and a non-zero exit: 2 for a bad setting, 1 for a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from topology.settings import (
    ConfigError,
    KafkaSettings,
    LogSettings,
    PairingSettings,
    StoreSettings,
    add_flags,
    resolve,
)

log = logging.getLogger("topology.cli")

DEMO_STORE = {"data_dir": "var/demo"}
SERVE_STORE: dict[str, str | None] = {"data_dir": None}
SERVE_ALIASES = {"data_dir": ("--embedded",)}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and the defaults in ``--help``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from ingest.main import add_arguments as add_ingest_arguments
    from service.config import ServiceConfig
    from service.settings import (
        BackstageSettings,
        DemoSettings,
        ExportSettings,
        FleetSettings,
        ServeSettings,
        SimulateSettings,
    )

    parser = _Parser(prog="topology", description="Service Topology: a living map of service dependencies")
    add_flags(parser, LogSettings)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        add_flags(p, LogSettings)  # --log-level after the command name too
        return p

    demo = command("demo", "embedded store + simulated fleet + GraphQL server")
    add_flags(demo, FleetSettings)
    add_flags(demo, DemoSettings)
    add_flags(demo, ServiceConfig)
    add_flags(demo, StoreSettings, defaults=DEMO_STORE)
    add_flags(demo, PairingSettings)

    serve = command("serve", "GraphQL server and HTTP/OTLP ingest over a store")
    add_flags(serve, ServiceConfig)
    add_flags(serve, StoreSettings, defaults=SERVE_STORE, aliases=SERVE_ALIASES)
    add_flags(serve, ServeSettings)
    add_flags(serve, PairingSettings)
    add_flags(serve, KafkaSettings)

    sim = command("simulate", "run the fleet simulator; send its traffic to files, a server or Kafka")
    add_flags(sim, FleetSettings)
    add_flags(sim, SimulateSettings)
    add_flags(sim, KafkaSettings)

    add_ingest_arguments(command("ingest", "run one Kafka stage worker"))
    command("schema", "print the GraphQL SDL")
    add_flags(command("export", "the graph of a selection from a server: dot, mermaid, cytoscape, graphml, "
                                "json"), ExportSettings)
    backstage = command("backstage", "Backstage catalog-info.yaml: import Components into the catalog, "
                                     "export observed dependencies as spec.dependsOn patches")
    actions = backstage.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help, files in (
            ("import", "Component entities of catalog-info.yaml files -> the catalog (POST /ingest/catalog)",
             "catalog-info.yaml files (multi-document YAML)"),
            ("export", "the map's dependencies -> spec.dependsOn patches, one per component",
             "the components' catalog-info.yaml files (names and declared dependencies)")):
        p = actions.add_parser(action, help=help, description=help)  # a _Parser too: one-line errors
        add_flags(p, LogSettings)
        add_flags(p, BackstageSettings)
        p.add_argument("files", nargs="+" if action == "import" else "*", metavar="FILE", help=files)
    from agent.cli import build_parser as add_agent_arguments

    add_agent_arguments(command("agent", "eBPF node agent: TCP connections -> flow batches and leases"))
    return parser


def _demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from service.config import ServiceConfig
    from service.server import run_demo
    from service.settings import DemoSettings, FleetSettings

    fleet = resolve(FleetSettings, args, env)
    demo = resolve(DemoSettings, args, env)
    config = resolve(ServiceConfig, args, env)
    store = resolve(StoreSettings, args, env, defaults=DEMO_STORE)
    return serve_loop(run_demo(fleet, demo, config, store, resolve(PairingSettings, args, env)))


def serve_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run a server's ``main`` on uvloop's event loop (libuv: its transports, timers and polling in C;
    a third less CPU per OTLP/HTTP request than asyncio's own loop, docs/benchmarks.md) when installed,
    else on asyncio's. Only this loop: the store thread's and worker threads' loops are asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _kafka(switch: bool | str, args: argparse.Namespace, env: Mapping[str, str]) -> KafkaSettings | None:
    """The Kafka settings when ``--kafka`` is on (``--kafka HOST:PORT`` names the bootstrap servers)."""
    if not switch:
        return None
    return resolve(KafkaSettings, args, env, **({"bootstrap": switch} if isinstance(switch, str) else {}))


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ingest.main import WorkerSettings, worker_options
    from service.config import ServiceConfig
    from service.server import run_serve
    from service.settings import ServeSettings

    config = resolve(ServiceConfig, args, env)
    store = resolve(StoreSettings, args, env)
    kafka = _kafka(resolve(ServeSettings, args, env).kafka, args, env)
    worker = None if kafka is None else worker_options(resolve(WorkerSettings, args, env), kafka)
    return serve_loop(run_serve(config, store, kafka, worker, resolve(PairingSettings, args, env)))


def _simulate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from service.settings import FleetSettings, SimulateSettings
    from service.simulate import run_simulate

    fleet = resolve(FleetSettings, args, env)
    simulate = resolve(SimulateSettings, args, env)
    return asyncio.run(run_simulate(fleet, simulate, _kafka(simulate.kafka, args, env)))


def _ingest(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ingest.main import run_command

    return run_command(args, env)


def _schema(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from service.schema import schema

    sys.stdout.write(schema.as_str() + "\n")
    return 0


def _export(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from service.export import run_export
    from service.settings import ExportSettings

    return run_export(resolve(ExportSettings, args, env), sys.stdout)


def _agent(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from agent.cli import run

    return run(args, env)


def _backstage(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from service.backstage import run_export, run_import
    from service.settings import BackstageSettings

    run = run_import if args.action == "import" else run_export
    return run(resolve(BackstageSettings, args, env), args.files, sys.stdout, sys.stderr)


COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "demo": _demo, "serve": _serve, "simulate": _simulate, "ingest": _ingest, "schema": _schema,
    "agent": _agent, "export": _export, "backstage": _backstage,
}


def _explain(e: BaseException) -> str:
    """One line for a person: what failed, without a traceback."""
    from ingest.main import Stopped
    from service.backstage import BackstageError
    from service.simulate import Unreachable
    from topology.store.base import StoreError, StoreUnavailable

    text = " ".join(str(e).split())
    if isinstance(e, StoreUnavailable):
        return f"a store cannot be reached: {text}"
    if isinstance(e, StoreError | Stopped | Unreachable | BackstageError | OSError) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    env = dict(os.environ)  # the environment, read once
    args = build_parser().parse_args(argv)
    prog = f"topology {args.command}"
    from service.logs import setup_logging

    try:
        setup_logging(resolve(LogSettings, args, env).level)
        return COMMANDS[args.command](args, env)
    except ConfigError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the last resort: one line, the details at DEBUG
        log.debug("failed", exc_info=True)
        sys.stderr.write(f"{prog}: error: {_explain(e)}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

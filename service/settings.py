"""The settings of the ``topology`` commands, declared once (:mod:`topology.settings` explains how).

=====================  =========================================================================
group                  used by
=====================  =========================================================================
``LogSettings``        every command (``--log-level``, before or after the command name)
``ServiceConfig``      ``demo``, ``serve``: the GraphQL server (:mod:`service.config`)
``StoreSettings``      ``demo``, ``serve``, ``ingest``
``KafkaSettings``      ``serve --kafka``, ``simulate --kafka``, ``ingest``
``FleetSettings``      ``demo``, ``simulate``: the simulated fleet
``DemoSettings``       ``demo``
``ServeSettings``      ``serve``
``SimulateSettings``   ``simulate``
``ExportSettings``     ``export``
``IngestSettings``,    ``ingest`` (:mod:`ingest.main`; the worker settings also tune the workers of
``WorkerSettings``     ``serve --kafka``)
=====================  =========================================================================

Every flag falls back to its variable, then to its default; :func:`documented` lists them all for the
README's configuration table (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.settings import AgentSettings
from ingest.main import IngestSettings, WorkerSettings
from service.config import ServiceConfig
from topology.settings import (
    ConfigError,
    KafkaSettings,
    LogSettings,
    PairingSettings,
    Row,
    StoreSettings,
    parse_bool,
    parse_duration,
    parse_not_negative,
    parse_positive,
    rows,
    setting,
)
from topology.sim.generator import MIN_SERVICES

__all__ = ["DemoSettings", "ExportSettings", "FleetSettings", "ServeSettings", "SimulateSettings",
           "documented"]


def _fleet_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"expected a number of services, got {text!r}") from None
    if n < MIN_SERVICES:
        raise ValueError(f"the simulated fleet needs at least {MIN_SERVICES} services, got {n}")
    return n


def kafka_switch(text: str) -> bool | str:
    """``--kafka`` alone (or ``true``) uses KAFKA_BOOTSTRAP; ``--kafka HOST:PORT`` names the servers."""
    try:
        return parse_bool(text)
    except ValueError:
        if ":" not in text:
            raise ValueError(f"expected true, false or bootstrap servers HOST:PORT, got {text!r}") from None
        return text


@dataclass(frozen=True, slots=True)
class FleetSettings:
    services: int = setting(1000, "TOPOLOGY_SERVICES", "services of the simulated fleet", flag="--services",
                            parse=_fleet_size, metavar="N")
    seed: int = setting(42, "TOPOLOGY_SEED", "seed of the simulated fleet and its traffic", flag="--seed",
                        metavar="S")
    truth: str | None = setting(None, "TOPOLOGY_TRUTH",
                                "write the simulator's ground truth JSON to this file", flag="--truth",
                                metavar="FILE")


@dataclass(frozen=True, slots=True)
class DemoSettings:
    step: float = setting(5.0, "TOPOLOGY_DEMO_STEP", "seconds of traffic per simulator step",
                          flag="--step", parse=parse_positive, metavar="SECONDS")
    backfill: float = setting(35 * 60.0, "TOPOLOGY_DEMO_BACKFILL",
                              "history simulated at start-up (so `at: 30 min ago` answers at once)",
                              flag="--backfill", parse=parse_duration, shown="35m", metavar="DURATION")


@dataclass(frozen=True, slots=True)
class ServeSettings:
    kafka: bool | str = setting(False, "TOPOLOGY_SERVE_KAFKA",
                                "also run the terminal Kafka workers (stage 3, catalog) in the server; "
                                "BOOTSTRAP overrides KAFKA_BOOTSTRAP",
                                flag="--kafka", parse=kafka_switch, metavar="BOOTSTRAP", const="true")


@dataclass(frozen=True, slots=True)
class SimulateSettings:
    minutes: float = setting(10.0, "TOPOLOGY_SIMULATE_MINUTES", "simulated minutes to emit", flag="--minutes",
                             parse=parse_positive, metavar="M")
    step: float = setting(10.0, "TOPOLOGY_SIMULATE_STEP", "seconds of traffic per simulator step",
                          flag="--step", parse=parse_positive, metavar="SECONDS")
    start: float | None = setting(None, "TOPOLOGY_SIMULATE_START",
                                  "simulated start time in epoch seconds (none: now minus --minutes)",
                                  flag="--start", metavar="EPOCH")
    out: str | None = setting(None, "TOPOLOGY_SIMULATE_OUT", "write the payloads under this directory",
                              flag="--out", metavar="DIR")
    http: str | None = setting(None, "TOPOLOGY_SIMULATE_HTTP",
                               "POST the payloads to a `topology serve` at this base URL", flag="--http",
                               metavar="URL")
    token: str | None = setting(None, "TOPOLOGY_SIMULATE_TOKEN",
                                "bearer token sent with --http (scopes ingest and admin; README: Security)")
    kafka: bool | str = setting(False, "TOPOLOGY_SIMULATE_KAFKA",
                                "publish the payloads to the Kafka topics; "
                                "BOOTSTRAP overrides KAFKA_BOOTSTRAP",
                                flag="--kafka", parse=kafka_switch, metavar="BOOTSTRAP", const="true")
    rate: float = setting(0.0, "TOPOLOGY_SIMULATE_RATE", "simulated seconds per wall second (0: as fast as "
                          "possible)", flag="--rate", parse=parse_not_negative, metavar="X")
    faults: float = setting(0.0, "TOPOLOGY_SIMULATE_FAULTS",
                            "incidents with a known root cause per simulated hour (listed by --truth)",
                            flag="--faults", parse=parse_not_negative, metavar="PER_HOUR")

    def __post_init__(self) -> None:
        if not (self.out or self.http or self.kafka):
            raise ConfigError("nowhere to send the simulated traffic: give --out DIR, --http URL or --kafka "
                              "[BOOTSTRAP] (or TOPOLOGY_SIMULATE_OUT, _HTTP, _KAFKA)")
        if self.http and not self.http.startswith(("http://", "https://")):
            raise ConfigError(f"TOPOLOGY_SIMULATE_HTTP: expected an http(s) URL, got {self.http!r}")


@dataclass(frozen=True, slots=True)
class ExportSettings:
    url: str = setting("http://127.0.0.1:8080", "TOPOLOGY_EXPORT_URL",
                       "base URL of the `topology serve` to export from", flag="--url", metavar="URL")
    format: str = setting("json", "TOPOLOGY_EXPORT_FORMAT", "dot, mermaid, cytoscape, graphml or json",
                          flag="--format", choices=("dot", "mermaid", "cytoscape", "graphml", "json"))
    service: str | None = setting(None, "TOPOLOGY_EXPORT_SERVICE",
                                  "the service in the middle (none: the whole graph)", flag="--service",
                                  metavar="NAME")
    direction: str = setting("both", "TOPOLOGY_EXPORT_DIRECTION",
                             "upstream (what it calls), downstream (what calls it) or both",
                             flag="--direction", choices=("upstream", "downstream", "both"))
    depth: int = setting(2, "TOPOLOGY_EXPORT_DEPTH", "hops from the service", flag="--depth",
                         parse=lambda t: int(parse_positive(t)), metavar="N")
    layers: str | None = setting(None, "TOPOLOGY_EXPORT_LAYERS", "comma-separated layers (none: all)",
                                 flag="--layers", metavar="LIST")
    tier: str | None = setting(None, "TOPOLOGY_EXPORT_TIER", "comma-separated tiers to keep", flag="--tier",
                               metavar="LIST")
    domain: str | None = setting(None, "TOPOLOGY_EXPORT_DOMAIN", "comma-separated domains to keep",
                                 flag="--domain", metavar="LIST")
    at: str | None = setting(None, "TOPOLOGY_EXPORT_AT", "the time to export (ISO 8601; none: now)",
                             flag="--at", metavar="TIME")
    window: str | None = setting(None, "TOPOLOGY_EXPORT_WINDOW", "the window before it (e.g. 15m)",
                                 flag="--window", metavar="DURATION")
    output: str | None = setting(None, "TOPOLOGY_EXPORT_OUTPUT", "write to this file (none: standard output)",
                                 flag="--output", metavar="FILE")
    token: str | None = setting(None, "TOPOLOGY_EXPORT_TOKEN",
                                "bearer token for a server with authentication (scope read)")

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"TOPOLOGY_EXPORT_URL: expected an http(s) URL, got {self.url!r}")


@dataclass(frozen=True, slots=True)
class BackstageSettings:
    url: str | None = setting(None, "TOPOLOGY_BACKSTAGE_URL",
                              "base URL of the `topology serve` to import into (none: print the catalog "
                              "JSON) or to read the map from", flag="--url", metavar="URL")
    token: str | None = setting(None, "TOPOLOGY_BACKSTAGE_TOKEN",
                                "bearer token for a server with authentication (import: scope admin; "
                                "export: read)", secret=True)
    graph: str | None = setting(None, "TOPOLOGY_BACKSTAGE_GRAPH", "export: read the map from this "
                                "`topology export --format json` file instead of a server", flag="--graph",
                                metavar="FILE")
    layers: str | None = setting(None, "TOPOLOGY_BACKSTAGE_LAYERS", "export: comma-separated layers whose "
                                 "edges count (none: all)", flag="--layers", metavar="LIST")
    window: str = setting("6h", "TOPOLOGY_BACKSTAGE_WINDOW", "export: the calls seen within this long before "
                          "now", flag="--window", metavar="DURATION")
    output: str | None = setting(None, "TOPOLOGY_BACKSTAGE_OUTPUT", "import: write the catalog JSON to this "
                                 "file; export: one patch file per component in this directory (none: "
                                 "standard output)", flag="--output", metavar="PATH")

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"TOPOLOGY_BACKSTAGE_URL: expected an http(s) URL, got {self.url!r}")


# every group, in the README's order
GROUPS: tuple[type, ...] = (LogSettings, ServiceConfig, StoreSettings, KafkaSettings, FleetSettings,
                            DemoSettings, ServeSettings, SimulateSettings, ExportSettings, BackstageSettings,
                            IngestSettings, PairingSettings, WorkerSettings, AgentSettings)


def documented() -> list[Row]:
    """Every setting of every command, as the README's configuration table lists them."""
    return [row for group in GROUPS for row in rows(group)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_row(row: Row) -> str:
    default = row.default if row.default == "none" or " " in row.default else f"`{row.default}`"
    flag = f"`{row.flag}`" if row.flag else ""
    return f"| `{row.env}` | {flag} | {_cell(default)} | {_cell(row.meaning)} |"


def markdown() -> str:
    """The README's configuration table (``python -m service.settings`` prints it)."""
    lines = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    return "\n".join(lines + [markdown_row(r) for r in documented()])


if __name__ == "__main__":
    print(markdown())


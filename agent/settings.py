"""The node agent's settings, declared once (:mod:`topology.settings`): each is an environment
variable and a flag of ``topology agent`` / ``python -m agent``; the README's configuration table
lists them. Kafka's bootstrap servers and topic prefix are the shared :class:`KafkaSettings`."""

from __future__ import annotations

from dataclasses import dataclass

from topology.settings import (
    ConfigError,
    parse_bool,
    parse_port,
    parse_positive,
    parse_positive_int,
    setting,
)

__all__ = ["AgentSettings"]


def _kafka(text: str) -> bool | str:
    """``--kafka`` alone (``true``) uses KAFKA_BOOTSTRAP; ``--kafka HOST:PORT`` names the servers."""
    return text if ":" in text else parse_bool(text)


def _port(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "off", "0") else parse_port(text)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    http: str | None = setting(None, "TOPOLOGY_AGENT_HTTP",
                               "send to `topology serve`/`demo` at this base URL (POST /ingest/flows and "
                               "/ingest/addresses)", flag="--http", metavar="URL")
    kafka: bool | str = setting(False, "TOPOLOGY_AGENT_KAFKA", "send to the Kafka topics topology.flows and "
                                "topology.addresses; BOOTSTRAP overrides KAFKA_BOOTSTRAP", flag="--kafka",
                                parse=_kafka, metavar="BOOTSTRAP", const="true")
    token: str | None = setting(None, "TOPOLOGY_AGENT_TOKEN",
                                "bearer token sent with --http (scopes ingest and admin; README: Security)")
    token_file: str | None = setting(None, "TOPOLOGY_AGENT_TOKEN_FILE",
                                     "read the bearer token for --http from this file", flag="--token-file",
                                     metavar="FILE")
    workloads: str | None = setting(None, "TOPOLOGY_AGENT_WORKLOADS",
                                    "rules naming the workload of a process (JSON; README: Agent)",
                                    flag="--workloads", metavar="FILE")
    pods: str | None = setting(None, "TOPOLOGY_AGENT_PODS", "Kubernetes PodList JSON of this node's pods",
                               flag="--pods", metavar="FILE")
    host: str | None = setting(None, "TOPOLOGY_AGENT_HOST", "name of this node in the flow batches",
                               flag="--host", metavar="NAME", shown="the host name")
    interval: float = setting(10.0, "TOPOLOGY_AGENT_INTERVAL",
                              "seconds between reports of open connections and between batches",
                              flag="--interval", parse=parse_positive, metavar="SECONDS")
    poll: float = setting(0.5, "TOPOLOGY_AGENT_POLL", "seconds between drains of the BPF ring buffer",
                          flag="--poll", parse=parse_positive, metavar="SECONDS")
    max_batch_records: int = setting(10_000, "TOPOLOGY_AGENT_MAX_BATCH_RECORDS",
                                     "send a batch as soon as this many records are pending",
                                     flag="--max-batch-records", parse=parse_positive_int, metavar="N")
    fold: bool = setting(True, "TOPOLOGY_AGENT_FOLD", "fold records that differ only in the ephemeral port "
                         "into one with a connection count", flag="--fold", const="true", metavar="BOOL")
    buffer_mib: float = setting(64.0, "TOPOLOGY_AGENT_BUFFER_MIB", "kept while the sink is unavailable "
                                "(beyond it the oldest batches are dropped, counted)", flag="--buffer-mib",
                                parse=parse_positive, metavar="MIB")
    ring_mib: int = setting(8, "TOPOLOGY_AGENT_RING_MIB", "BPF ring buffer size (a power of two)",
                            flag="--ring-mib", parse=parse_positive_int, metavar="MIB")
    max_connections: int = setting(65_536, "TOPOLOGY_AGENT_MAX_CONNECTIONS",
                                   "open connections the kernel table holds", flag="--max-connections",
                                   parse=parse_positive_int, metavar="N")
    lease_renew: float = setting(30.0, "TOPOLOGY_AGENT_LEASE_RENEW",
                                 "seconds between renewals of an address lease in use", flag="--lease-renew",
                                 parse=parse_positive, metavar="SECONDS")
    shutdown_timeout: float = setting(10.0, "TOPOLOGY_AGENT_SHUTDOWN_TIMEOUT",
                                      "seconds to deliver what is buffered when stopping",
                                      flag="--shutdown-timeout", parse=parse_positive, metavar="SECONDS")
    metrics_port: int | None = setting(None, "TOPOLOGY_AGENT_METRICS_PORT",
                                       "serve Prometheus /metrics on this port", flag="--metrics-port",
                                       parse=_port, metavar="PORT")
    metrics_host: str = setting("127.0.0.1", "TOPOLOGY_AGENT_METRICS_HOST",
                                "interface of the /metrics endpoint", flag="--metrics-host", metavar="HOST")

    def __post_init__(self) -> None:
        if not self.http and not self.kafka:
            raise ConfigError("TOPOLOGY_AGENT_HTTP: nowhere to send: give --http URL or --kafka [BOOTSTRAP] "
                              "(or TOPOLOGY_AGENT_HTTP, TOPOLOGY_AGENT_KAFKA)")
        if self.http and self.kafka:
            raise ConfigError("TOPOLOGY_AGENT_HTTP: give --http or --kafka, not both")
        if self.http and not self.http.startswith(("http://", "https://")):
            raise ConfigError(f"TOPOLOGY_AGENT_HTTP: expected an http(s) URL, got {self.http!r}")
        if self.ring_mib & (self.ring_mib - 1):
            raise ConfigError(f"TOPOLOGY_AGENT_RING_MIB: expected a power of two, got {self.ring_mib}")

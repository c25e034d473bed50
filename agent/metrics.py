"""The agent's own metrics, in Prometheus text format on ``--metrics-port`` (``GET /metrics``).

Values are read from the running agent when scraped (a collector, not counters updated on the hot
path). Counters end in ``_total``; the kernel's counters are cumulative since the program loaded.

    topology_agent_events_total{tracepoint}             tracepoint hits (TCP; send/recv with bytes)
    topology_agent_ring_lost_total                      records that did not fit in the ring buffer
    topology_agent_untracked_connections_total{reason}  table_full | not_established
    topology_agent_connections_tracked                  open connections in the kernel table (last scan)
    topology_agent_records_total                        records read from the kernel (closes + scans)
    topology_agent_records_sent_total{kind}             flow records / leases the sink took
    topology_agent_batches_sent_total{kind}             messages the sink took
    topology_agent_sink_errors_total                    failed attempts (retried with backoff)
    topology_agent_sink_rejected_total                  messages the sink refused (dropped)
    topology_agent_dropped_total{kind}                  records dropped (buffer full, rejected, shutdown)
    topology_agent_buffer_bytes                         waiting for the sink
    topology_agent_unattributed_processes_total         processes that matched no resolver
    topology_agent_unattributed_records_total           records reported as unattributed:<comm>
    topology_agent_addresses_leased                     local addresses the agent currently owns out
    topology_agent_address_changes_total{kind}          moved | shared
    topology_agent_round_errors_total                   rounds that failed (logged with the traceback)
    process_cpu_seconds_total, process_resident_memory_bytes   (the standard process collector)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.node import Agent

P = "topology_agent_"


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        a = self.agent
        k = a.kernel_counters
        events = CounterMetricFamily(P + "events", "Tracepoint hits handled by the BPF program",
                                     labels=["tracepoint"])
        for tp, name in (("inet_sock_set_state", "state_events"), ("sock_send_length", "send_events"),
                         ("sock_recv_length", "recv_events")):
            events.add_metric([tp], k.get(name, 0))
        yield events
        yield CounterMetricFamily(P + "ring_lost", "Records lost because the ring buffer was full",
                                  value=k.get("ring_lost", 0))
        untracked = CounterMetricFamily(P + "untracked_connections", "Connections not reported",
                                        labels=["reason"])
        for reason in ("table_full", "not_established"):
            untracked.add_metric([reason], k.get(reason, 0))
        yield untracked
        yield GaugeMetricFamily(P + "connections_tracked", "Open connections in the kernel table",
                                value=a.connections_tracked)
        yield CounterMetricFamily(P + "records", "Connection records read from the kernel",
                                  value=a.records_read)
        ob = a.outbox
        sent = CounterMetricFamily(P + "records_sent", "Records the sink took", labels=["kind"])
        batches = CounterMetricFamily(P + "batches_sent", "Messages the sink took", labels=["kind"])
        dropped = CounterMetricFamily(P + "dropped", "Records dropped before the sink took them",
                                      labels=["kind"])
        for kind in ("flows", "leases"):
            sent.add_metric([kind], ob.sent_records[kind])
            batches.add_metric([kind], ob.sent[kind])
            dropped.add_metric([kind], ob.dropped_records[kind])
        yield sent
        yield batches
        yield dropped
        yield CounterMetricFamily(P + "sink_errors", "Failed sink attempts (retried)", value=ob.errors)
        yield CounterMetricFamily(P + "sink_rejected", "Messages the sink refused", value=ob.rejected)
        yield GaugeMetricFamily(P + "buffer_bytes", "Bytes waiting for the sink", value=ob.bytes)
        yield CounterMetricFamily(P + "unattributed_processes", "Processes no resolver named",
                                  value=a.attributor.unattributed_processes)
        yield CounterMetricFamily(P + "unattributed_records", "Records reported as unattributed",
                                  value=a.batcher.unattributed_records)
        yield GaugeMetricFamily(P + "addresses_leased", "Local addresses with a lease",
                                value=len(a.leases))
        changes = CounterMetricFamily(P + "address_changes", "Addresses that moved or are shared",
                                      labels=["kind"])
        for kind in ("moved", "shared"):
            changes.add_metric([kind], a.leases.counters[kind])
        yield changes
        yield CounterMetricFamily(P + "round_errors", "Agent rounds that failed", value=a.cycle_errors)


def registry_for(agent: Agent) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(AgentCollector(agent))
    ProcessCollector(registry=reg)
    return reg


def serve(agent: Agent, port: int, addr: str = "0.0.0.0") -> Any:
    """Start the /metrics endpoint in a thread; returns the server (call ``shutdown()``)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry_for(agent))
    return server

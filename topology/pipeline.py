"""The three stages of every layer wired together in one process (the embedded default).

Pure: inputs are decoded records, the clock is an argument, outputs are returned. The I/O shell that
feeds it is ``service/runtime.py``, which writes its output with :func:`topology.store.persist.persist`;
the Kafka workers in ``ingest/`` run the same stage classes one stage per consumer group instead (and
their stage 3 writes with the same function).

    flows   -> NetworkStage1 (10 s) -> NetworkStage2 (resolve, collapse) -+
    metrics -> IpcStage1 (deltas)   -> IpcStage2 (resolve)                -+-> FinalStage (60 s) -> windows
    spans   -> SpanPairer (wait, capacity)                                -+

Late data: partials of a window past stage 3's grace come out apart (``PipelineOutput.late``), to be
*added* to the stored window, while the window is within ``late_seconds`` (the stores' retention of
minute windows, 6 h by default); older ones are dropped and counted (``final.late_dropped``).

VPC flow logs go through admission's records into VpcStage, whose aggregates join NetworkStage1's in
NetworkStage2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from topology.address import AddressBook
from topology.catalog import AddressLease, HealthEvent, ServiceInfo, TraceSummary
from topology.health import HealthBook
from topology.model import EdgeWindow, Layer, NodeInfo
from topology.stages.final import REFRESH_SECONDS, FinalStage
from topology.stages.ipc import IpcStage1, IpcStage2
from topology.stages.network import NetworkStage1, NetworkStage2
from topology.stages.trace import SpanPairer
from topology.stages.vpc import VpcStage
from topology.store.persist import by_layer, joined, nodes_of
from topology.timewindow import Retention
from topology.wire.flow import FlowBatch
from topology.wire.vpcflow import VpcFlowRecord


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    # One process needs no network slack: short stage-1 windows and lateness keep a new connection's
    # edge visible within ~2 s (the Kafka workers use 10 s windows and more lateness).
    stage1_window: int = 1
    final_window: int = 60
    lateness: float = 0.5  # how far behind ``now`` the watermark trails
    grace: int = 120  # late data re-opens a finished window for this long
    #: later data merges into stored windows that start within this of the watermark; older is dropped
    late_seconds: float = float(Retention().minute)
    trace_wait: float = 10.0
    trace_capacity: int = 10_000  # spans waiting for their peer (the servers size it: capacity_for)
    provisional: bool = True  # emit open windows as they fill (freshness); closing replaces them
    provisional_refresh: float = REFRESH_SECONDS  # later versions of a provisional window at most this often


@dataclass
class PipelineOutput:
    windows: dict[Layer, list[EdgeWindow]] = field(default_factory=dict)
    nodes: list[NodeInfo] = field(default_factory=list)
    traces: list[TraceSummary] = field(default_factory=list)
    #: stage 3's watermark: windows ending at or before it are complete, later ones provisional
    watermark: float = float("-inf")
    #: leases met next to unattributed NETWORK traffic (NetworkStage2.take_peer_leases)
    peer_leases: list[AddressLease] = field(default_factory=list)
    #: late parts of windows past their grace (FinalStage.take_late): added to the stored windows
    late: dict[Layer, list[EdgeWindow]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return (not any(self.windows.values()) and not self.nodes and not self.traces and not self.peer_leases
                and not any(self.late.values()))


class Pipeline:
    """All stages of all layers, fed in event time."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = cfg = config or PipelineConfig()
        self.addresses = AddressBook()
        self.health = HealthBook()
        self.catalog: dict[str, ServiceInfo] = {}
        self.net1 = NetworkStage1(window_seconds=cfg.stage1_window)
        self.net2 = NetworkStage2(self.addresses, window_seconds=cfg.final_window)
        self.vpc = VpcStage()
        self.ipc1 = IpcStage1(window_seconds=cfg.final_window)
        self.ipc2 = IpcStage2(self.addresses)
        self.pairer = SpanPairer(wait_seconds=cfg.trace_wait, max_pending=cfg.trace_capacity)
        self.final = FinalStage(window_seconds=cfg.final_window, grace_seconds=cfg.grace, health=self.health,
                                refresh_seconds=cfg.provisional_refresh, late_seconds=cfg.late_seconds)
        self._trace_refreshed = float("-inf")  # watermark of the pairer's last refresh (see flush)

    # -- inputs --------------------------------------------------------------------------------
    def add_leases(self, leases: Iterable[AddressLease]) -> None:
        for lease in leases:
            self.addresses.add(lease)

    def add_health(self, events: Iterable[HealthEvent]) -> None:
        for e in events:
            self.health.add(e)

    def add_catalog(self, infos: Iterable[ServiceInfo]) -> None:
        for info in infos:
            self.catalog[info.name] = info

    def add_flows(self, batch: FlowBatch) -> None:
        self.net1.add(batch)

    def add_metrics(self, request: ExportMetricsServiceRequest | bytes) -> None:
        """A request decoded, or serialized as admission keeps it (:func:`topology.admit.admit_metric_bytes`:
        the bytes go to stage 1's native core as they are)."""
        if isinstance(request, bytes):
            self.ipc1.add_serialized(request)
        else:
            self.ipc1.add(request)

    def add_spans(self, request: ExportTraceServiceRequest, now: float) -> None:
        self.pairer.add(request, now)

    def add_span_view(self, view: Any, now: float) -> None:
        """Spans as admission keeps them (:func:`topology.admit.admit_spans`), arrived at ``now``."""
        self.pairer.add_view(view, now)

    def add_vpcflows(self, records: Iterable[VpcFlowRecord]) -> None:
        """VPC flow-log records of one capture (one payload): aggregated at once, joined in stage 2."""
        self.net2.add(self.vpc.aggregate(records, self.config.stage1_window))

    def resume(self, now: float) -> None:
        """Start over stores that may hold windows ending up to ``now`` (a server restarting on its data
        directory, or on JanusGraph): data of those windows merges into them instead of replacing them."""
        self.final.floor = now

    # -- output --------------------------------------------------------------------------------
    def flush(self, now: float, trace: bool = True) -> PipelineOutput:
        """Move everything whose windows closed before ``now - lateness`` through the stages. Without
        ``trace`` the span pairer keeps what it paired for a later flush (its calls gather per edge),
        unless it holds calls of a window this flush closes.

        The pairer hands out at once only the calls of edges new in their window (what stage 3 emits
        early) and holds the others until their window closes, or until a refresh (every
        ``provisional_refresh`` seconds, as stage 3 releases its held versions): a trickle costs a
        partial per edge and window, as a burst does ("Holding" in :mod:`topology.stages.trace`)."""
        cfg = self.config
        wm = now - cfg.lateness
        self.net2.add(self.net1.flush(wm))
        self.final.add(self.net2.flush(wm, early=cfg.provisional))
        self.final.add(self.ipc2.process(self.ipc1.flush(wm)))
        if trace or self.pairer.holds_closing(wm):
            refresh = cfg.provisional and wm - self._trace_refreshed >= cfg.provisional_refresh
            if refresh:
                self._trace_refreshed = wm
            self.final.add(self.pairer.flush(now, close=wm, refresh=refresh))
        windows = by_layer(self.final.flush(wm, provisional=cfg.provisional))
        late = by_layer(self.final.take_late())
        return PipelineOutput(windows, nodes_of(joined(windows, late) if late else windows),
                              self.pairer.take_trace_summaries(), wm, self.net2.take_peer_leases(), late)

    def counters(self) -> dict[str, dict[str, int]]:
        return {
            "network_stage1": dict(self.net1.counters),
            "network_stage2": dict(self.net2.counters),
            "network_vpc": dict(self.vpc.counters),
            "ipc_stage1": dict(self.ipc1.counters),
            "ipc_stage2": dict(self.ipc2.counters),
            "trace_pairing": dict(self.pairer.counters),
            "final": dict(self.final.counters),
        }



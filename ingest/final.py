"""Stage 3 worker of every layer: edge partials -> complete 60 s windows -> the layer's store.

A thin shell around :class:`topology.stages.final.FinalStage`. Windows replace stored windows with
the same key, so writing a window again (after late data, or after a replay) is harmless. Early
flushes (the worker's ``early_interval``) write open windows *provisionally*, as they stand so far;
the complete window replaces them when it closes, by the rules of the pure stage (new edges only,
later versions at most every ``provisional_refresh`` seconds of event time), which the in-process
pipeline follows too. Windows, the nodes they mention and trace summaries (TRACE layer) are written
by :func:`topology.store.persist.persist`, as the in-process runtime writes its output. Late parts
(partials of windows past the grace, while within the store's retention of minute windows) go out as
:class:`Late` and are *added* to the stored windows; a crash after that write and before the next
checkpoint replays them, and they are added again (the one effect here that is not idempotent). Health events
(``topology.health``) are read entirely: edge health uses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.admission import admitted, produced
from ingest.logic import Added, PartitionLogic, Rejected, StageSpec
from ingest.record import Partition, Record
from ingest.topics import Topics
from topology.admit import SCHEMA, admit_health, reason
from topology.catalog import AddressLease, TraceSummary
from topology.health import HealthBook
from topology.model import EdgePartial, EdgeWindow, Layer
from topology.servicegraph import ServiceGraph
from topology.stages.final import FinalStage
from topology.store.base import Stores
from topology.store.persist import by_layer, persist


class FinalSpec(StageSpec):
    stage = 3
    terminal = True

    def __init__(self, layer: str, topics: Topics, stores: Stores, window_seconds: int = 60,
                 grace_seconds: int = 120, lateness: float = 5.0, provisional_refresh: float = 30.0,
                 service_graph: ServiceGraph | None = None, late_seconds: float | None = None) -> None:
        """``service_graph``: where the TRACE layer's windows are counted as emitted (the worker's
        ``traces_service_graph_*`` metrics, :mod:`topology.servicegraph`); ``late_seconds``: how old a
        window late data still merges into (default: the layer store's retention of minute windows)."""
        self.layer = layer
        self.topics = topics
        self.stores = stores
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self.lateness = lateness
        self.provisional_refresh = provisional_refresh
        self.health = HealthBook()
        self.service_graph = service_graph if layer == "trace" else None
        if late_seconds is None:
            store = stores.layers.get(Layer(layer.upper()))
            late_seconds = float(store.retention.minute) if store is not None else 0.0
        self.late_seconds = late_seconds

    def global_topics(self) -> tuple[str, ...]:
        return (self.topics.health,)

    def apply_global(self, record: Record) -> str | None:
        """One ``topology.health`` record, through the same admission as the meta worker's (which
        dead-letters what it rejects; here a rejected record raises and is skipped)."""
        if record.value is not None:
            events, _ = admitted(admit_health(record.value, produced(record)))
            for e in events:
                self.health.add(e)
        return None

    def shared(self) -> dict[str, Any]:
        return {"health": self.health}

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        graph = (self.service_graph, f"{tp.topic}/{tp.partition}") if self.service_graph else None
        if isinstance(state, FinalStage):
            state.refresh_seconds = self.provisional_refresh
            state.late_seconds = self.late_seconds
            return _Final(state, self.lateness, graph)
        stage = FinalStage(self.window_seconds, self.grace_seconds, self.health, self.provisional_refresh,
                           self.late_seconds)
        return _Final(stage, self.lateness, graph)

    async def write(self, outputs: Sequence[Any]) -> int:
        windows = by_layer(o for o in outputs if isinstance(o, EdgeWindow))
        late = by_layer(o.window for o in outputs if isinstance(o, Late))
        return await persist(self.stores, windows, [o for o in outputs if isinstance(o, TraceSummary)],
                             peer_leases=[o for o in outputs if isinstance(o, AddressLease)], late=late)


@dataclass(frozen=True, slots=True)
class Late:
    """A late part of a window stage 3 had forgotten: added to the stored window, not replacing it."""

    window: EdgeWindow


class _Final(PartitionLogic):
    def __init__(self, stage: FinalStage, lateness: float,
                 graph: tuple[ServiceGraph, str] | None = None) -> None:
        self.stage = stage
        self.lateness = lateness
        self.graph = graph  # (where TRACE windows are counted, this partition's name there)
        self.summaries: list[TraceSummary] = []
        self.peer_leases: list[AddressLease] = []  # from NETWORK stage 2, for the catalog store

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        partials = []
        try:
            for d in items or ():
                if "trace_summary" in d:
                    self.summaries.append(TraceSummary.from_dict(d["trace_summary"]))
                elif "peer_lease" in d:
                    self.peer_leases.append(AddressLease.from_dict(d["peer_lease"]))
                else:
                    partials.append(EdgePartial.from_dict(d))
        except (ValueError, TypeError, KeyError) as e:
            raise Rejected(reason(SCHEMA, f"bad edge partial: {e}")) from None
        self.stage.add(partials)
        return Added(None, len(partials))

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        wm = now - self.lateness
        return self._with_summaries(self.stage.flush(wm), wm)

    def early(self, now: float) -> list[Any]:
        """Open windows as they stand, by the stage's provisional rules (new edges, held refreshes)."""
        wm = now - self.lateness
        return self._with_summaries(self.stage.flush(wm, provisional=True), wm)

    def _with_summaries(self, windows: list[EdgeWindow], watermark: float) -> list[Any]:
        if self.graph is not None:  # each version adds what grew since it was counted
            self.graph[0].observe(windows, watermark, self.graph[1])
        out: list[Any] = list(windows)
        late = self.stage.take_late()
        if late:
            if self.graph is not None:  # a late part is new traffic: counted whole
                self.graph[0].observe_late(late, self.graph[1])
            out.extend(Late(w) for w in late)
        if self.summaries:
            out.extend(self.summaries)
            self.summaries = []
        if self.peer_leases:
            out.extend(self.peer_leases)
            self.peer_leases = []
        return out

    def state(self) -> Any:
        return self.stage

    def counters(self) -> dict[str, int]:
        return dict(self.stage.counters)

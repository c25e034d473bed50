"""Stage 3 worker of every layer: edge partials -> complete 60 s windows -> the layer's store.

A thin shell around :class:`topology.stages.final.FinalStage`. Windows replace stored windows with
the same key, so writing a window again (after late data, or after a replay) is harmless. Early
flushes (the worker's ``early_interval``) write open windows *provisionally*, as they stand so far;
the complete window replaces them when it closes. Only *new* edges are written provisionally (not
written in this window or the window before): that is what makes a new edge visible, while an edge
already stored for the previous minute is written once, complete, when its window closes. Later
versions of a provisional window are held back and written at most every ``provisional_refresh``
seconds of event time, so a busy layer does not rewrite open windows each time upstream sends more.
The nodes the windows mention are registered in the catalog store; trace summaries (TRACE layer)
are recorded there too. Health events (``topology.health``) are read entirely: edge health uses them.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ingest.logic import Added, PartitionLogic, Rejected, StageSpec
from ingest.record import Partition, Record
from ingest.topics import Topics
from topology.catalog import HealthEvent, TraceSummary
from topology.health import HealthBook
from topology.model import EdgeKey, EdgePartial, EdgeWindow, Layer
from topology.pipeline import nodes_of
from topology.stages.final import FinalStage
from topology.store.base import Stores


class FinalSpec(StageSpec):
    stage = 3
    terminal = True

    def __init__(self, layer: str, topics: Topics, stores: Stores, window_seconds: int = 60,
                 grace_seconds: int = 120, lateness: float = 5.0, provisional_refresh: float = 30.0) -> None:
        self.layer = layer
        self.topics = topics
        self.stores = stores
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self.lateness = lateness
        self.provisional_refresh = provisional_refresh
        self.health = HealthBook()

    def global_topics(self) -> tuple[str, ...]:
        return (self.topics.health,)

    def apply_global(self, record: Record) -> str | None:
        if record.value is not None:
            raw = json.loads(record.value)
            for d in raw if isinstance(raw, list) else [raw]:
                self.health.add(HealthEvent.from_dict(d))
        return None

    def shared(self) -> dict[str, Any]:
        return {"health": self.health}

    def new_partition(self, tp: Partition, state: Any) -> PartitionLogic:
        stage = state if isinstance(state, FinalStage) else FinalStage(
            self.window_seconds, self.grace_seconds, self.health)
        return _Final(stage, self.lateness, self.provisional_refresh)

    async def write(self, outputs: Sequence[Any]) -> int:
        windows: dict[Layer, list[EdgeWindow]] = defaultdict(list)
        traces: list[TraceSummary] = []
        for o in outputs:
            if isinstance(o, EdgeWindow):
                windows[o.key.layer].append(o)
            elif isinstance(o, TraceSummary):
                traces.append(o)
        for layer, ws in windows.items():
            await self.stores.layers[layer].upsert_windows(ws)
        nodes = nodes_of(dict(windows))
        if nodes:
            await self.stores.catalog.register_nodes(nodes)
        if traces:
            await self.stores.catalog.record_traces(traces)
        return sum(len(ws) for ws in windows.values()) + len(traces)


class _Final(PartitionLogic):
    def __init__(self, stage: FinalStage, lateness: float, refresh: float = 30.0) -> None:
        self.stage = stage
        self.lateness = lateness
        self.refresh = refresh
        self.summaries: list[TraceSummary] = []
        # Not checkpointed (after a restore new edges are simply written once more):
        self.written: dict[int, set[EdgeKey]] = {}  # window -> edges written (provisional or complete)
        self.held: dict[tuple[EdgeKey, int], EdgeWindow] = {}  # newer provisional versions
        self.refreshed = -math.inf  # event time of the last refresh

    def add(self, record: Record, items: list[Any] | None, now: float) -> Added:
        partials = []
        try:
            for d in items or ():
                if "trace_summary" in d:
                    self.summaries.append(TraceSummary.from_dict(d["trace_summary"]))
                else:
                    partials.append(EdgePartial.from_dict(d))
        except (ValueError, TypeError, KeyError) as e:
            raise Rejected(f"bad edge partial: {e}") from None
        self.stage.add(partials)
        return Added(None, len(partials))

    def flush(self, now: float, checkpoint: bool) -> list[Any]:
        out = self.stage.flush(now - self.lateness)
        self._note(out)
        self._forget(now - self.lateness)
        return self._with_summaries(out)

    def _note(self, windows: list[EdgeWindow]) -> None:
        for win in windows:
            self.written.setdefault(win.window_start, set()).add(win.key)

    def early(self, now: float) -> list[Any]:
        """Open windows as they stand (provisional: the store replaces them when they close)."""
        wm = now - self.lateness
        end = self.stage.window_seconds
        out: list[EdgeWindow] = []
        no_keys: set[EdgeKey] = set()
        for win in self.stage.flush(wm, provisional=True):
            w = win.window_start
            if w + end <= wm:  # closed meanwhile: the complete window
                out.append(win)
                self._note([win])
                continue
            written = self.written.setdefault(w, set())
            if win.key in written:
                if (win.key, w) in self.held or win.key not in self.written.get(w - end, no_keys):
                    self.held[(win.key, w)] = win  # a newer version of a new edge
            elif win.key not in self.written.get(w - end, no_keys):
                written.add(win.key)
                out.append(win)
            else:  # known from the window before: written complete at the close
                written.add(win.key)
        self._forget(wm)
        if self.held and now - self.refreshed >= self.refresh:
            out.extend(self.held.values())
            self.held.clear()
            self.refreshed = now
        return self._with_summaries(out)

    def _forget(self, watermark: float) -> None:
        """Drop the provisional bookkeeping of windows that closed (their complete version went out)."""
        end = self.stage.window_seconds
        for w in [w for w in self.written if w + 2 * end <= watermark]:  # the next window's "before"
            del self.written[w]
        if any(w + end <= watermark for _, w in self.held):
            self.held = {k: v for k, v in self.held.items() if k[1] + end > watermark}

    def _with_summaries(self, windows: list[EdgeWindow]) -> list[Any]:
        out: list[Any] = list(windows)
        if self.summaries:
            out.extend(self.summaries)
            self.summaries = []
        return out

    def state(self) -> Any:
        return self.stage

    def counters(self) -> dict[str, int]:
        return dict(self.stage.counters)

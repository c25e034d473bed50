"""Stage specs run from lists, without a broker (in the spirit of bytewax's TestingSource/TestingSink).

:class:`Bus` is an in-memory stand-in for the topics: append-only partitions of plain
:class:`~ingest.record.Record`. :class:`TestingStage` runs one :class:`~ingest.logic.StageSpec` the
way the Kafka worker does, through the same :class:`~ingest.runner.StageRunner` (clocks, flushes,
early outputs, dead letters, repartition records and ticks): :meth:`TestingStage.poll` reads what is
new on its input and global topics, :meth:`TestingStage.commit` is a checkpoint (repartition records
and ticks go to the bus; a terminal stage's store records collect in :attr:`TestingStage.effects`),
and :meth:`TestingStage.restart` restores every partition from its checkpointed state, as a new
owner would. What only a broker can show (transactions, consumer groups, restore from the state
topic) is left to ``tests/kafka``.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ingest import checkpoint, envelope
from ingest.clock import MergedClock, SourceClock
from ingest.logic import Emit, StageSpec
from ingest.record import Partition, Record
from ingest.runner import Part, StageRunner
from topology.model import EdgeWindow


class Bus:
    """Topics in memory: ``partitions`` per topic, records appended with increasing offsets."""

    def __init__(self, partitions: int = 2) -> None:
        self.partitions = partitions
        self.logs: dict[Partition, list[Record]] = defaultdict(list)

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, timestamp_ms: int = 0,
                headers: Sequence[tuple[str, bytes]] = (), partition: int | None = None) -> Record:
        """Append one record: to ``partition``, else by key (as a keyed producer), else round robin."""
        if partition is None:
            if key is not None:
                partition = zlib.crc32(key) % self.partitions
            else:
                partition = sum(len(self.logs[Partition(topic, p)]) for p in range(self.partitions)) \
                    % self.partitions
        log = self.logs[Partition(topic, partition)]
        r = Record(topic, partition, len(log), key, value, timestamp_ms, tuple(headers))
        log.append(r)
        return r

    def produce_json(self, topic: str, items: Iterable[Any], key: Callable[[Any], str],
                     timestamp_ms: int = 0) -> None:
        """One JSON record per item (``to_dict``), keyed as the publisher keys them."""
        for item in items:
            self.produce(topic, json.dumps(item.to_dict()).encode(), key(item).encode(), timestamp_ms)

    def produce_items(self, topic: str, items: Sequence[dict[str, Any]], source: str, now: float,
                      partition: int = 0) -> Record:
        """A repartition record, as an upstream worker writes it: ``items`` from ``source`` at ``now``."""
        value, headers = envelope.batch_record(items, source, now)
        return self.produce(topic, value, headers=headers, partition=partition)

    def tick(self, topic: str, clocks: dict[str, float]) -> None:
        """A tick record to every partition of ``topic``: upstream ``clocks`` by source."""
        value, headers = envelope.tick_record(clocks)
        for p in range(self.partitions):
            self.produce(topic, value, headers=headers, partition=p)

    def read(self, tp: Partition, offset: int) -> list[Record]:
        return self.logs[tp][offset:]

    def topic(self, topic: str) -> list[Record]:
        return [r for p in range(self.partitions) for r in self.logs[Partition(topic, p)]]


@dataclass
class StateMessage:
    """One message of a state topic (what :func:`ingest.checkpoint.assemble` reads)."""

    key: bytes
    value: bytes | None  # None: a tombstone
    headers: list[tuple[str, bytes]]


class TestingStage:
    """One stage spec fed from the bus (see the module docstring). ``wall`` is the fake wall clock:
    a stage-1 partition that has been silent for ``idle_seconds`` of it follows it."""

    __test__ = False  # not a pytest class

    def __init__(self, spec: StageSpec, bus: Bus, wall: float = 0.0, idle_seconds: float = 10.0) -> None:
        self.spec = spec
        self.bus = bus
        self.wall = wall
        self.idle_seconds = idle_seconds
        self.runner = StageRunner(spec, f"{spec.layer}-{spec.stage}-test", wall=lambda: self.wall)
        self.global_offsets: dict[Partition, int] = defaultdict(int)
        self.effects: list[Any] = []  # terminal stages: everything written, in order
        self.emitted: list[Emit] = []  # Kafka stages: every item sent downstream, in order
        self.dead: list[dict[str, Any]] = []  # dead-letter envelopes (reason, source, payload_b64, ...)
        # what the checkpoints of each input partition wrote to its state topic, in order, as the worker
        # writes them (incremental: ingest.checkpoint.Log)
        self.state_topic: dict[Partition, list[StateMessage]] = defaultdict(list)
        self.logs: dict[Partition, checkpoint.Log] = {}

    # -- input -------------------------------------------------------------------------------------
    def inputs(self) -> list[Partition]:
        return [Partition(t, p) for t in self.spec.inputs() for p in range(self.bus.partitions)]

    def _part(self, tp: Partition) -> Part:
        """The partition's logic: restored from its last checkpoint, or new (as on assignment)."""
        ps = self.runner.parts.get(tp)
        if ps is not None:
            return ps
        saved = self.restored(tp)
        if saved is not None:
            cp, restored = saved
            self.logs[tp] = checkpoint.Log.after(cp)
            return self.runner.add_part(tp, restored.logic, restored.clock, cp.offset, cp.offset)
        clock: SourceClock | MergedClock
        if self.spec.repartitioned_input:
            parts = range(self.bus.partitions)
            clock = MergedClock(frozenset(f"{t}:{p}" for t in self.spec.upstream_inputs() for p in parts))
        else:
            clock = SourceClock(self.idle_seconds, last_activity=self.wall)
        return self.runner.add_part(tp, None, clock, 0, None)

    def poll(self, early: bool = False) -> TestingStage:
        """Apply what is new on the global topics, feed what is new on the inputs, flush what is due
        (and the early outputs of open windows with ``early``), as one worker loop does."""
        for t in self.spec.global_topics():
            for p in range(self.bus.partitions):
                tp = Partition(t, p)
                for r in self.bus.read(tp, self.global_offsets[tp]):
                    self.runner.apply_global(r)
                    self.global_offsets[tp] = r.offset + 1
        for tp in self.inputs():
            ps = self._part(tp)
            self.runner.process(ps, self.bus.read(tp, ps.position or 0))
        self.runner.flush(checkpoint=False)
        if early:
            self.runner.early()
        return self

    def idle(self, until: float, step: float = 1.0) -> TestingStage:
        """Let wall time pass without input, one poll per ``step``, up to ``until``."""
        while self.wall < until:
            self.wall = min(until, self.wall + step)
            self.poll()
        return self

    # -- output ------------------------------------------------------------------------------------
    def commit(self, save: bool = True) -> TestingStage:
        """A checkpoint: outputs leave (to the bus, or to :attr:`effects`), ticks carry the clocks
        downstream and (with ``save``) every partition's state and position are kept for
        :meth:`restart`."""
        for tp in self.inputs():
            self._part(tp)
        run = self.runner
        run.flush(checkpoint=True)
        pending = run.pending
        self.effects.extend(pending.effects)
        for emits in pending.emits.values():
            self.emitted.extend(emits)
        out = self.spec.output_topic()
        if out is not None:
            records, _ = run.output_records(self.bus.partitions)
            for p, value, headers in records:
                self.bus.produce(out, value, headers=headers, partition=p)
            clocks = run.clocks()
            if clocks:
                self.bus.tick(out, clocks)
        for key, value, headers in pending.dead:
            self.bus.produce("dlq", value, key, headers=headers)
            self.dead.append(json.loads(value))
        pending.clear()
        if not save:
            return self
        shared = self.spec.shared()
        for tp, ps in run.parts.items():
            log = self.logs.setdefault(tp, checkpoint.Log())
            records = log.records(tp, ps.position or 0, ps.logic.state(), ps.clock, shared)
            self.state_topic[tp].extend(StateMessage(*r) for r in records)
        return self

    def restored(self, tp: Partition) -> tuple[checkpoint.Checkpoint, checkpoint.Saved] | None:
        """The last checkpoint of ``tp`` (and the state in it) as a new owner restores it, from the
        state topic as compaction may leave it (the latest message of each key, tombstones removed)."""
        messages = self.state_topic.get(tp)
        if not messages:
            return None
        latest = {m.key: i for i, m in enumerate(messages)}
        compacted = [m for i, m in enumerate(messages) if latest[m.key] == i and m.value is not None]
        cp = checkpoint.assemble(compacted, tp, complete=True)
        assert cp is not None, f"no complete checkpoint of {tp}"
        return cp, checkpoint.decode(cp.state, self.spec.shared(), cp.sections)

    def restart(self) -> TestingStage:
        """Drop every partition's logic (and what was not committed): the next poll restores each
        from its last checkpoint and reads on from the checkpointed position."""
        self.runner.parts.clear()
        self.runner.pending.clear()
        self.logs.clear()
        return self

    def step(self, early: bool = False, save: bool = True) -> TestingStage:
        return self.poll(early).commit(save)

    def counters(self) -> dict[str, int]:
        return self.runner.counters()


class Chain:
    """Stage specs over one bus, each loop running them in the order given (upstream first)."""

    def __init__(self, specs: Iterable[StageSpec], bus: Bus | None = None, wall: float = 0.0) -> None:
        self.bus = bus or Bus()
        self.stages = [TestingStage(spec, self.bus, wall) for spec in specs]

    def __getitem__(self, i: int) -> TestingStage:
        return self.stages[i]

    def cycle(self, wall: float | None = None, early: bool = False, save: bool = False) -> Chain:
        """One loop of every worker, each ending in a checkpoint (``save``: kept for restarts)."""
        for st in self.stages:
            if wall is not None:
                st.wall = wall
            st.poll(early).commit(save)
        return self

    def drain(self, until: float) -> Chain:
        """Wall time passes without input until ``until``: idle clocks close every window."""
        wall = min(st.wall for st in self.stages)
        while wall < until:
            wall += 1.0
            self.cycle(wall)
        return self

    @property
    def effects(self) -> list[Any]:
        return self.stages[-1].effects


def last_windows(effects: Iterable[Any]) -> dict[tuple[str, str, int, str, str], Any]:
    """The stored windows after ``effects`` were written in order (a window replaces its key)."""
    out: dict[tuple[str, str, int, str, str], Any] = {}
    for w in effects:
        if isinstance(w, EdgeWindow):
            k = w.key
            out[(k.layer.value, k.granularity.value, w.window_start, k.source, k.target)] = w.stats
    return out


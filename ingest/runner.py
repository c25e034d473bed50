"""One stage spec run over its input partitions, record by record, in event time, without Kafka.

This is everything the Kafka worker (:mod:`ingest.worker`) does between polling records and making
outputs durable: each input partition has the stage's logic (:class:`ingest.logic.PartitionLogic`)
and an event-time clock (:mod:`ingest.clock`); repartition records are unwrapped
(:mod:`ingest.envelope`) and their clocks observed; a record that moves its partition's clock
flushes the outputs that became due, which carry that clock downstream; bad records become dead
letters. Outputs wait in :attr:`StageRunner.pending` until the worker makes them durable (or a test
takes them). The worker adds the Kafka plumbing: consumer group, checkpoints, transactions, ticks.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ingest import envelope
from ingest.clock import MergedClock, SourceClock
from ingest.logic import Added, Emit, PartitionLogic, Rejected, StageSpec
from ingest.record import Partition, Record
from topology.admit import DECODE, reason

log = logging.getLogger("ingest.worker")

MAX_ITEMS_PER_RECORD = 2000  # repartition records stay well under a megabyte


@dataclass
class Part:
    """One input partition: its logic, its clock, and how far it has read."""

    tp: Partition
    logic: PartitionLogic
    clock: SourceClock | MergedClock
    position: int | None = None  # next offset to read; None: the consumer's committed/reset position
    committed: int | None = None
    dirty: bool = False

    @property
    def source(self) -> str:
        return f"{self.tp.topic}:{self.tp.partition}"


class Pending:
    """What the next checkpoint has to make durable."""

    def __init__(self) -> None:
        self.emits: dict[tuple[str, float], list[Emit]] = defaultdict(list)  # (source, clock) -> items
        self.effects: list[Any] = []
        self.dead: list[tuple[bytes | None, bytes, envelope.Headers]] = []  # (key, value, headers)

    @property
    def outputs(self) -> bool:
        return bool(self.emits or self.effects or self.dead)

    def clear(self) -> None:
        self.emits.clear()
        self.effects.clear()
        self.dead.clear()


class StageRunner:
    """Feeds one spec's partitions (see the module docstring). ``wall`` is the wall clock (idle input
    and dead-letter times); ``on_dead`` is told the reason of each dead letter (metrics)."""

    def __init__(self, spec: StageSpec, name: str, max_future: float = 300.0,
                 wall: Callable[[], float] = time.time, on_dead: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.name = name
        self.max_future = max_future  # event times beyond the record's timestamp plus this are capped
        self.wall = wall
        self.on_dead = on_dead
        self.parts: dict[Partition, Part] = {}
        self.pending = Pending()

    def add_part(self, tp: Partition, state: Any, clock: SourceClock | MergedClock,
                 position: int | None = None, committed: int | None = None) -> Part:
        """Start (or restore, from a checkpointed ``state``) the logic of ``tp``."""
        ps = Part(tp, self.spec.new_partition(tp, state), clock, position, committed)
        self.parts[tp] = ps
        return ps

    # -- input ----------------------------------------------------------------------------------------
    def apply_global(self, r: Record) -> None:
        """One record of a topic the spec reads entirely (address leases, health events); a bad one
        is skipped here (the meta worker dead-letters it)."""
        try:
            self.spec.apply_global(r)
        except Exception:
            log.debug("bad global record", exc_info=True)

    def process(self, ps: Part, records: Iterable[Record]) -> tuple[int, int]:
        """Feed ``records`` of one partition in offset order; returns (records fed, items in them)."""
        n = items = 0
        wall = self.wall()
        for r in records:
            if ps.position is not None and r.offset < ps.position:
                continue  # already covered by the restored checkpoint
            n += 1
            before = ps.clock.now
            added = self._feed(ps, r, wall)
            if ps.clock.now > before:
                # Flush as time moves, record by record: outputs then carry the clock of the
                # record that made them due, not the clock at the end of a long batch.
                self.flush_part(ps, checkpoint=False)
            if added is not None:
                items += added.items
                for reason, payload in added.rejects:
                    self.dead(r, reason, payload)
            ps.position = r.offset + 1
            ps.dirty = True
        return n, items

    def _feed(self, ps: Part, r: Record, wall: float) -> Added | None:
        items: list[Any] | None = None
        if self.spec.repartitioned_input:
            try:
                inc = envelope.parse(r.value, r.headers)
            except envelope.EnvelopeError as e:
                self.dead(r, reason(DECODE, str(e)), r.value)
                return None
            assert isinstance(ps.clock, MergedClock)
            for src, t in inc.clocks.items():
                ps.clock.observe(src, t)
            if inc.items is None:
                return None  # a tick
            items = inc.items
        try:
            added = ps.logic.add(r, items, ps.clock.now)
        except Rejected as e:
            self.dead(r, e.reason, r.value)
            if isinstance(ps.clock, SourceClock):
                ps.clock.touch(wall)
            return None
        except Exception as e:  # a bug or an input the stage did not expect: never stop the worker
            log.exception("stage failed on a record", extra={"worker": self.name, "offset": r.offset})
            self.dead(r, f"stage error: {type(e).__name__}: {e}", r.value)
            return None
        if isinstance(ps.clock, SourceClock):
            if added.event_time is not None and math.isfinite(added.event_time):
                cap = r.timestamp_ms / 1000.0 + self.max_future if r.timestamp_ms > 0 else math.inf
                ps.clock.observe(min(added.event_time, cap), wall)
            else:
                ps.clock.touch(wall)
        return added

    def dead(self, r: Record, reason: str, payload: bytes | None) -> None:
        value, headers = envelope.dead_letter(
            reason, topic=r.topic, partition=r.partition, offset=r.offset, timestamp_ms=r.timestamp_ms,
            key=r.key, payload=payload, layer=self.spec.layer, stage=self.spec.stage, worker=self.name,
            at=self.wall())
        self.pending.dead.append((r.key, value, headers))
        if self.on_dead is not None:
            self.on_dead(reason)
        log.warning("dead letter", extra={"worker": self.name, "topic": r.topic, "partition": r.partition,
                                          "offset": r.offset, "reason": reason[:200]})

    # -- output ---------------------------------------------------------------------------------------
    def flush(self, checkpoint: bool) -> None:
        """Collect the outputs due in every partition (an idle stage-1 partition's clock moves first)."""
        wall = self.wall()
        floor = min((ps.clock.now for ps in self.parts.values()
                     if isinstance(ps.clock, SourceClock) and math.isfinite(ps.clock.now)), default=-math.inf)
        for ps in self.parts.values():
            if isinstance(ps.clock, SourceClock):
                ps.clock.advance_if_idle(wall, floor)
            self.flush_part(ps, checkpoint)

    def flush_part(self, ps: Part, checkpoint: bool) -> None:
        """Collect the outputs due at the partition's clock; they carry that clock downstream."""
        now = ps.clock.now
        if not math.isfinite(now) and not checkpoint:
            return
        self._collect(ps, now, ps.logic.flush(now, checkpoint))

    def early(self) -> None:
        """The early outputs of open windows (new edges, provisional windows). They go the same way as
        the others: into the next checkpoint, with the state they left, so a replay from a checkpoint
        counts nothing twice."""
        for ps in self.parts.values():  # an unknown clock (-inf) is fine: every window is still open
            self._collect(ps, ps.clock.now, ps.logic.early(ps.clock.now))

    def _collect(self, ps: Part, now: float, outputs: list[Any]) -> None:
        if not outputs:
            return
        ps.dirty = True
        if self.spec.terminal:
            self.pending.effects.extend(outputs)
        else:
            self.pending.emits[(ps.source, now)].extend(outputs)

    def output_records(self, partitions: int) -> tuple[list[tuple[int, bytes, envelope.Headers]], int]:
        """The pending emits as repartition records (output partition, value, headers), routed by
        key, each carrying the clock of its source partition; and how many items they hold."""
        out: list[tuple[int, bytes, envelope.Headers]] = []
        total = 0
        for (source, now), emits in self.pending.emits.items():
            by_part: dict[int, list[dict[str, Any] | list[Any]]] = defaultdict(list)
            for e in emits:
                by_part[zlib.crc32(e.key.encode()) % partitions].append(e.item)
            for p, items in sorted(by_part.items()):
                for i in range(0, len(items), MAX_ITEMS_PER_RECORD):
                    value, headers = envelope.batch_record(items[i : i + MAX_ITEMS_PER_RECORD], source, now)
                    out.append((p, value, headers))
            total += len(emits)
        return out, total

    def clocks(self) -> dict[str, float]:
        """Every partition's known clock, by source (what ticks send downstream)."""
        return {ps.source: ps.clock.now for ps in self.parts.values() if math.isfinite(ps.clock.now)}

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for ps in self.parts.values():
            for k, v in ps.logic.counters().items():
                total[k] += v
        return dict(total)

"""The generic Kafka stage worker: one consumer group per stage and layer.

Loop: consume a batch -> feed each record to the pure stage of its partition -> collect outputs that
are due (event time) -> now and then make everything durable in one step. Feeding, clocks, flushes
and dead letters are :class:`ingest.runner.StageRunner`'s (pure, tested without a broker); this
module is the Kafka plumbing around it:

* Kafka stages (1, 2): one Kafka transaction holds the outputs for the next topic, the dead letters,
  the checkpointed state of every changed input partition (:mod:`ingest.checkpoint`) and the input
  offsets. Consumers of the next stage read committed records only. A crash at any point leaves
  either all of it or none of it, so after a restart each input record has affected the outputs
  exactly once.
* Terminal stages (3, meta): outputs are written to the stores first (idempotent: a window replaces
  the stored one), then state and offsets are committed. A crash in between replays records whose
  windows are rewritten with the same content.

Early outputs: at most every ``early_interval`` the worker also asks each partition's logic for
outputs of windows still open (:meth:`PartitionLogic.early`: new edges, provisional windows). They
join the pending outputs like any others, and the state they were taken from is checkpointed in the
same step, so freshness costs nothing in exactness. They are taken when a commit is due, right
before it, so they do not wait for the next commit. A large batch (a worker that is behind) is
processed in slices of about half a second, each followed by the same collection and commit step,
so commits keep their pace however far behind the worker is.

Time: every partition carries an event-time clock (:mod:`ingest.clock`); outputs of repartition
topics carry their source's clock, and each checkpoint also sends *ticks* (all source clocks of this
worker) to every partition of the output topic, so windows close downstream when every upstream
partition has moved past them.

Fencing: a worker commits (a transaction, a store write) only while it is a member of its consumer
group's current generation, asked of the group coordinator right before each commit (a heartbeat
with the worker's generation and member id). A worker that stalled past the session timeout (a
stopped process, a long pause) has lost its partitions to another worker by then: when it resumes,
its coordinator answers "unknown member" or "illegal generation", the transaction is aborted and
the worker starts a new session from the last checkpoint, so its late outputs and offsets never
appear. (aiokafka's transactional offset commit carries no generation, and transactional ids are
unique per process, so neither the broker nor a shared transactional id would stop it.) A stall
between that check and the commit itself, longer than the session timeout, is the window left.

Failures: a bad record goes to ``topology.dlq`` with its reason and is counted, and the worker goes
on. A store that is unavailable pauses consumption (the group membership is kept, nothing is
committed) and the write is retried until it succeeds. Any Kafka error (broker gone, transaction
aborted, the producer fenced after the broker ended a transaction that outlived its timeout) restarts
the session from the last checkpoint, with back-off, until the broker is back.
SIGTERM (see :mod:`ingest.main`) ends the loop with a final checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.protocol.group import HeartbeatRequest
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from ingest import checkpoint, envelope
from ingest.clock import MergedClock, SourceClock
from ingest.logic import StageSpec
from ingest.metrics import DEFAULT_METRICS_HOST, WorkerMetrics
from ingest.record import Partition, Record
from ingest.runner import StageRunner
from ingest.security import Kafka, client_options
from topology.store.base import StoreUnavailable

log = logging.getLogger("ingest.worker")


def default_instance() -> str:
    """Unique per worker process (host name, pid, a random suffix): two workers of one stage on one
    host must not share a transactional id, or each start fences the other. ``TOPOLOGY_INSTANCE``
    (``--instance``) names a worker stably instead: a restarted worker of that name then fences its
    dead predecessor's open transaction at once, rather than after the transaction timeout."""
    unique = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
    return os.environ.get("TOPOLOGY_INSTANCE") or unique


@dataclass
class WorkerOptions:
    bootstrap: Kafka  # KafkaSettings (with its transport security), or bare PLAINTEXT servers
    instance: str = field(default_factory=default_instance)
    min_commit_interval: float = 1.0  # outputs wait at most this long (plus processing) for their commit
    max_commit_interval: float = 30.0  # offsets and state are checkpointed at least this often
    tick_interval: float = 1.0  # clocks are sent downstream this often when they move
    early_interval: float = 1.0  # open windows emit their early outputs this often (0: only at close)
    idle_seconds: float = 10.0  # a silent stage-1 partition's clock then follows the wall clock
    max_future: float = 300.0  # event times beyond the record's Kafka timestamp plus this are capped
    max_records: int = 1000  # per consumed batch
    poll_ms: int = 200
    transaction_timeout_ms: int = 30_000
    restart_backoff: float = 1.0
    shutdown_seconds: float = 20.0  # time for the final checkpoint after SIGTERM
    metrics_port: int | None = None  # None: no endpoint; 0: any free port
    metrics_host: str = DEFAULT_METRICS_HOST  # the endpoint's interface (default: all, for Prometheus)
    wall: Callable[[], float] = time.time


MEMBER_CHECK_TRIES = 5
# A consumed batch is processed in slices of at most SLICE_RECORDS records, and outputs are collected
# and committed after any slice that ends SLICE_SECONDS or more after the previous one (Worker._handle).
SLICE_RECORDS = 10
SLICE_SECONDS = 0.5
# What the group coordinator answers a member that lost its partitions (dropped after its session
# timed out, or left behind by a rebalance it did not join).
_NOT_A_MEMBER = (kafka_errors.UnknownMemberIdError, kafka_errors.IllegalGenerationError)


# A producer is fenced when the broker bumped its epoch: after aborting a transaction of this worker
# that outlived the transaction timeout (a broker restarted or unreachable mid-transaction), or when
# another live worker started with the same transactional id (the same ``--instance``). Transactional
# ids are unique per process unless named, so a fence is taken as the first: the session restarts
# from the last checkpoint, with a new epoch (a stalled worker is kept from committing by the group
# membership check, not by fencing: see Fencing above). Two live workers given one name fence each
# other in turn: each restart waits twice as long as the last, up to MAX_FENCED_BACKOFF, and says so.
FENCED = ("producer fenced: the broker ended this worker's transaction (it outlived the transaction "
          "timeout), or another worker runs with the same --instance; restarting from the last checkpoint")
MAX_FENCED_BACKOFF = 60.0


class _Restart(Exception):
    """Start a new session from the last checkpoint."""


class Worker:
    """Runs one :class:`StageSpec` as a member of its consumer group (see the module docstring)."""

    def __init__(self, spec: StageSpec, topics_group: str, state_topic: str, dlq_topic: str,
                 options: WorkerOptions, metrics: WorkerMetrics | None = None) -> None:
        self.spec = spec
        self.group = topics_group
        self.state_topic = state_topic
        self.dlq_topic = dlq_topic
        self.opt = options
        self.metrics = metrics or WorkerMetrics()
        self.labels = {"layer": spec.layer, "stage": str(spec.stage)}
        self.name = f"{spec.layer}-{spec.stage}-{options.instance}"
        self.runner = StageRunner(spec, self.name, options.max_future, options.wall, self._count_dead)
        self.parts = self.runner.parts  # input partition -> its logic and clock
        self.pending = self.runner.pending
        self.logs: dict[Partition, checkpoint.Log] = {}  # what this session wrote of each partition's state
        self.assigned: set[TopicPartition] = set()  # as the rebalance listener last said
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.global_consumer: AIOKafkaConsumer | None = None
        self.expected_sources: frozenset[str] = frozenset()
        self.output_partitions = 0
        self.state_partitions = 1
        self.broken = False  # a checkpoint during a rebalance failed: restart the session
        self.last_commit = 0.0
        self.last_tick = 0.0
        self.last_early = 0.0
        self.ticked: dict[str, float] = {}
        self.paused = False
        self.sessions = 0
        self.committed_checkpoints = 0
        self.ready = asyncio.Event()  # set once partitions are assigned and restored
        self._metrics_port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        if self.opt.metrics_port is not None:
            self._metrics_port = self.metrics.serve(self.opt.metrics_port, self.opt.metrics_host)
        fences = 0  # sessions in a row that ended fenced before committing anything
        try:
            while not stop.is_set():
                committed = self.committed_checkpoints
                try:
                    await self._bounded(self._session(stop), stop)
                except ProducerFenced:
                    fences = 1 if self.committed_checkpoints > committed else fences + 1
                    self.metrics.fenced.labels(**self.labels).inc()
                    log.warning(FENCED, extra={"worker": self.name, "instance": self.opt.instance,
                                               "in_a_row": fences})
                    await self._restart(stop, min(MAX_FENCED_BACKOFF, self.opt.restart_backoff * 2 ** fences))
                except (KafkaError, OSError, _Restart, checkpoint.CheckpointError) as e:
                    log.warning("restarting from the last checkpoint",
                                extra={"worker": self.name, "error": f"{type(e).__name__}: {e}"})
                    await self._restart(stop, self.opt.restart_backoff)
                except Exception:  # a bug: log it, and start again from the last checkpoint
                    log.exception("worker session failed; restarting from the last checkpoint",
                                  extra={"worker": self.name})
                    await self._restart(stop, 5 * self.opt.restart_backoff)
        finally:
            await self._close_clients(abort=True)
            self.metrics.close()

    async def _bounded(self, session: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
        """Run a session; once ``stop`` is set it gets ``shutdown_seconds`` for its final checkpoint
        (a broker that is gone must not keep the process from exiting)."""
        task = asyncio.ensure_future(session)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                done, _ = await asyncio.wait({task}, timeout=self.opt.shutdown_seconds)
                if not done:
                    log.warning("final checkpoint did not finish in time; the next owner replays from the "
                                "previous one", extra={"worker": self.name})
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    return
            await task
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()

    async def _restart(self, stop: asyncio.Event, backoff: float) -> None:
        self.metrics.restarts.labels(**self.labels).inc()
        await self._close_clients(abort=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_port

    async def _session(self, stop: asyncio.Event) -> None:
        self.sessions += 1
        self.parts.clear()
        self.logs.clear()
        self.assigned = set()
        self.pending.clear()
        self.ready.clear()
        self.broken = False
        opt = self.opt
        self.producer = AIOKafkaProducer(
            **client_options(opt.bootstrap), transactional_id=f"{self.group}.{opt.instance}",
            enable_idempotence=True, transaction_timeout_ms=opt.transaction_timeout_ms,
            max_request_size=4 * 1024 * 1024, linger_ms=5, max_batch_size=1024 * 1024,
            request_timeout_ms=15_000)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            **client_options(opt.bootstrap), group_id=self.group, client_id=self.name,
            enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset="earliest",
            max_poll_records=opt.max_records, fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024, session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000, request_timeout_ms=20_000)
        await self.consumer.start()
        await self._start_globals()
        await self._load_topology()
        self.consumer.subscribe(list(self.spec.inputs()), listener=_Listener(self))
        self.last_commit = self.last_tick = opt.wall()
        while not stop.is_set():
            await self._poll_globals()
            batch = await self.consumer.getmany(timeout_ms=opt.poll_ms, max_records=opt.max_records)
            if batch:
                await self._catch_up_globals()
            async with self.lock:
                if self.broken:
                    raise _Restart("a checkpoint during a rebalance failed")
                await self._sync_assignment(batch)
                await self._handle(batch)
        async with self.lock:
            if self.parts:
                await self._checkpoint()
        await self._close_clients(abort=False)

    async def _close_clients(self, abort: bool) -> None:
        for c in (self.consumer, self.global_consumer, self.producer):
            if c is not None:
                await _stop_client(c, self.name)
        self.consumer = self.global_consumer = None
        self.producer = None

    # -- globals (address leases, health events) ----------------------------------------------------
    async def _start_globals(self) -> None:
        topics = self.spec.global_topics()
        if not topics:
            return
        gc = AIOKafkaConsumer(**client_options(self.opt.bootstrap), enable_auto_commit=False,
                              isolation_level="read_committed", auto_offset_reset="earliest")
        await gc.start()
        self.global_consumer = gc
        tps = []
        for t in topics:
            parts = await _partitions(gc, t)
            tps.extend(TopicPartition(t, p) for p in sorted(parts))
        gc.assign(tps)
        await gc.seek_to_beginning(*tps)
        # Read everything there is before processing inputs: leases must be known before flows.
        await self._catch_up_globals()

    async def _catch_up_globals(self) -> None:
        """Apply every global record written before now (called after each non-empty batch, so the
        leases a producer wrote before its flows are known when those flows are processed)."""
        gc = self.global_consumer
        if gc is None:
            return
        tps = list(gc.assignment())
        end = await gc.end_offsets(tps)
        while True:
            behind = [tp for tp in tps if await gc.position(tp) < end[tp]]
            if not behind:
                return
            await self._apply_globals(await gc.getmany(*behind, timeout_ms=500, max_records=10_000))

    async def _poll_globals(self) -> None:
        if self.global_consumer is not None:
            await self._apply_globals(await self.global_consumer.getmany(timeout_ms=0, max_records=10_000))

    async def _apply_globals(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for records in batch.values():
            for r in records:
                self.runner.apply_global(plain(r))

    async def _load_topology(self) -> None:
        assert self.consumer is not None
        out = self.spec.output_topic()
        if out is not None:
            self.output_partitions = len(await _partitions(self.consumer, out))
        self.state_partitions = len(await _partitions(self.consumer, self.state_topic))
        sources: set[str] = set()
        for t in self.spec.upstream_inputs():
            sources.update(f"{t}:{p}" for p in await _partitions(self.consumer, t))
        self.expected_sources = frozenset(sources)

    # -- assignment and restore ----------------------------------------------------------------------
    async def _sync_assignment(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None
        # The listener's view, not consumer.assignment(): between a revocation and the next assignment
        # this worker owns nothing, even if the consumer still lists (and fetched) the old partitions.
        assigned = set(self.assigned)
        for tp in [tp for tp in self.parts if tp not in assigned]:
            del self.parts[tp]
        new = [tp for tp in assigned if tp not in self.parts]
        if not new:
            if assigned:
                self.ready.set()
            return
        restored = await asyncio.gather(*(self._restore(tp) for tp in new))
        shared = self.spec.shared()
        wall = self.opt.wall()
        for tp, cp in zip(new, restored, strict=True):
            committed = await self.consumer.committed(tp)
            logic_state: Any = None
            clock: SourceClock | MergedClock
            clock = SourceClock(self.opt.idle_seconds) if not self.spec.repartitioned_input else MergedClock()
            position = committed
            saved = self._decode(tp, cp, shared) if cp is not None else None
            if cp is not None and saved is not None:
                logic_state, clock = saved.logic, saved.clock
                position = cp.offset
                if committed is not None and committed != cp.offset:
                    log.warning("checkpoint and committed offset differ; using the checkpoint",
                                extra={"tp": f"{tp.topic}:{tp.partition}", "checkpoint": cp.offset,
                                       "committed": committed})
                self.consumer.seek(tp, cp.offset)
                batch.pop(tp, None)  # fetched from another position: read again after the seek
            if isinstance(clock, SourceClock):
                clock.idle_seconds = self.opt.idle_seconds
                clock.last_activity = wall
            else:
                clock.expect(self.expected_sources)
            source = Partition(tp.topic, tp.partition)
            self.runner.add_part(source, logic_state, clock, position, committed)
            # a new owner writes every section at its first checkpoint, and removes restored ones gone by then
            self.logs[source] = checkpoint.Log.after(cp if saved is not None else None)
        self._update_stage_counters()  # the baseline: restored counts were counted by their previous owner
        names = sorted(f"{t.topic}:{t.partition}" for t in assigned)
        log.info("partitions assigned", extra={"worker": self.name, "partitions": names})
        self.ready.set()

    async def _restore(self, tp: TopicPartition) -> checkpoint.Checkpoint | None:
        """The newest checkpoint of ``tp``; None if there is none or it is refused (reported)."""
        try:
            source = Partition(tp.topic, tp.partition)
            return await checkpoint.restore(self.opt.bootstrap, self.state_topic, source)
        except checkpoint.BadCheckpoint as e:
            self._refused(tp, e)
            return None

    def _decode(self, tp: TopicPartition, cp: checkpoint.Checkpoint,
                shared: dict[str, Any]) -> checkpoint.Saved | None:
        try:
            return checkpoint.decode(cp.state, shared, cp.sections)
        except checkpoint.BadCheckpoint as e:
            self._refused(tp, e)
            return None

    def _refused(self, tp: TopicPartition, e: checkpoint.BadCheckpoint) -> None:
        """A checkpoint that is not ours to read: reported, and the partition starts empty from its
        committed offset (:mod:`ingest.checkpoint`); never a restart loop."""
        self.metrics.state_refused.labels(**self.labels).inc()
        log.error("checkpoint refused; the partition starts empty from its committed offset",
                  extra={"worker": self.name, "tp": f"{tp.topic}:{tp.partition}", "error": str(e)[:500]})

    async def on_revoked(self) -> None:
        async with self.lock:
            if self.parts and self.producer is not None:
                await self._checkpoint()
            self.parts.clear()
            self.logs.clear()
            self.assigned = set()

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.lock:
            self.assigned = set(assigned)

    # -- processing ---------------------------------------------------------------------------------
    async def _handle(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Process a consumed batch in slices of about :data:`SLICE_SECONDS`: after each, due and early
        outputs are collected and a commit made if one is due, as after a whole batch. A worker that is
        behind fetches large batches; without slices its commits (and the early outputs they carry)
        would wait for the whole batch, seconds under load."""
        t0 = time.perf_counter()
        n = 0
        for tp, records in batch.items():
            for i in range(0, len(records), SLICE_RECORDS):
                n += self._process({tp: records[i : i + SLICE_RECORDS]})
                if time.perf_counter() - t0 >= SLICE_SECONDS:
                    await self._after_slice(n, t0)
                    await asyncio.sleep(0)  # the client's heartbeats and fetches run
                    t0, n = time.perf_counter(), 0
        await self._after_slice(n, t0)

    async def _after_slice(self, n: int, t0: float) -> None:
        self.runner.flush(checkpoint=False)
        self._early_flush()
        if n:
            self.metrics.batch_seconds.labels(**self.labels).observe(time.perf_counter() - t0)
        await self._maybe_commit()
        self._update_lag()

    def _process(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> int:
        n = items_in = 0
        for tp, records in batch.items():
            ps = self.parts.get(tp)
            if ps is None:
                continue
            fed, items = self.runner.process(ps, map(plain, records))
            n += fed
            items_in += items
            self.metrics.records_in.labels(**self.labels).inc(len(records))
        if items_in:
            self.metrics.items_in.labels(**self.labels).inc(items_in)
        return n

    def _count_dead(self, reason: str) -> None:
        self.metrics.dead_letter(self.labels, reason)

    def _early_flush(self) -> None:
        """At most every ``early_interval``: the early outputs of open windows (:meth:`StageRunner.early`),
        taken when a commit is due (``min_commit_interval`` since the last one), so they are committed at
        once rather than waiting up to a commit interval for the next one (in each stage they pass)."""
        interval = self.opt.early_interval
        wall = self.opt.wall()
        if interval <= 0 or wall - self.last_early < interval \
                or wall - self.last_commit < self.opt.min_commit_interval:
            return
        self.last_early = wall
        self.runner.early()

    # -- durability -----------------------------------------------------------------------------------
    async def _maybe_commit(self) -> None:
        wall = self.opt.wall()
        since = wall - self.last_commit
        moved = any(ps.dirty for ps in self.parts.values())
        if self.pending.outputs and since >= self.opt.min_commit_interval:
            if self.spec.terminal and not self.pending.dead and since < self.opt.max_commit_interval:
                await self._write_effects()  # store writes are idempotent: no checkpoint needed yet
                return
            await self._checkpoint()
        elif moved and since >= self.opt.max_commit_interval:
            await self._checkpoint()
        elif (not self.spec.terminal and wall - self.last_tick >= self.opt.tick_interval
              and self._clocks_moved()):
            await self._commit_ticks()

    def _clocks_moved(self) -> bool:
        return any(self.ticked.get(s) != t for s, t in self.runner.clocks().items())

    async def _write_effects(self) -> None:
        effects = list(self.pending.effects)
        if not effects:
            return
        t0 = time.perf_counter()
        delay = 0.2
        await self._check_member()  # a stalled worker must not overwrite its successor's windows
        while True:
            try:
                written = await self.spec.write(effects)
                break
            except StoreUnavailable as e:
                self.metrics.store_errors.labels(**self.labels).inc()
                if not self.paused:
                    log.warning("store unavailable: pausing consumption", extra={"worker": self.name,
                                                                                "error": str(e)})
                await self._pause_for(delay)
                delay = min(delay * 2, 5.0)
        if self.paused:
            self._resume()
        self.pending.effects.clear()
        self.metrics.items_out.labels(**self.labels).inc(written)
        self.metrics.commit_seconds.labels(**self.labels).observe(time.perf_counter() - t0)

    async def _pause_for(self, seconds: float) -> None:
        """Keep the group membership while nothing is consumed (heartbeats continue in the background)."""
        assert self.consumer is not None
        if not self.paused:
            self.consumer.pause(*self.consumer.assignment())
            self.paused = True
            self.metrics.paused.labels(**self.labels).set(1)
        await self.consumer.getmany(timeout_ms=int(seconds * 1000))  # paused: returns nothing

    def _resume(self) -> None:
        assert self.consumer is not None
        self.consumer.resume(*self.consumer.assignment())
        self.paused = False
        self.metrics.paused.labels(**self.labels).set(0)
        log.info("store available again: consumption resumed", extra={"worker": self.name})

    async def _check_member(self) -> None:
        """Raise :class:`_Restart` unless this worker is a member of its group's current generation
        (see Fencing in the module docstring). A rebalance in progress still counts as a member: the
        checkpoint before a revocation is how partitions are handed over. A coordinator that is
        unknown or moving is waited for (a few tries) before the session is restarted instead."""
        consumer = self.consumer
        assert consumer is not None
        coord = consumer._coordinator
        problem = "no answer"
        for attempt in range(MEMBER_CHECK_TRIES):
            if attempt:
                await asyncio.sleep(0.2 * attempt)
            try:
                await asyncio.wait_for(coord.ensure_coordinator_known(), 5)
                beat = HeartbeatRequest(coord.group_id, coord.generation, coord.member_id)
                resp = await coord._send_req(beat)
            except (TimeoutError, KafkaError) as e:
                problem = type(e).__name__
                continue
            error = kafka_errors.for_code(resp.error_code)
            if error in (kafka_errors.NoError, kafka_errors.RebalanceInProgressError):
                return
            if error in _NOT_A_MEMBER:
                self.metrics.fenced.labels(**self.labels).inc()
                raise _Restart(f"not a member of the group's current generation any more ({error.__name__}): "
                               "outputs and offsets since the last checkpoint are dropped")
            problem = error.__name__  # the coordinator is loading or moving: ask again
        raise _Restart(f"group membership unknown before a commit: {problem}")

    async def _checkpoint(self) -> None:
        """Make all pending outputs, the state of changed partitions and their offsets durable at once."""
        producer = self.producer
        assert producer is not None
        t0 = time.perf_counter()
        self.runner.flush(checkpoint=True)
        if self.spec.terminal:
            await self._write_effects()
        shared = self.spec.shared()
        records: list[tuple[str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        items_out = self._encode_emits(records)
        clocks = self.runner.clocks()
        if not self.spec.terminal and self.output_partitions and clocks:
            value, headers = envelope.tick_record(clocks)
            out = self.spec.output_topic()
            assert out is not None
            records.extend((out, p, None, value, headers) for p in range(self.output_partitions))
        for key, value, headers in self.pending.dead:
            records.append((self.dlq_topic, None, key, value, headers))
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for ps in self.parts.values():
            if not ps.dirty or ps.position is None:
                continue
            # only what changed since this session's last checkpoint of the partition (ingest.checkpoint);
            # a failed transaction restarts the session, which forgets these logs
            log_ = self.logs.setdefault(ps.tp, checkpoint.Log())
            part = checkpoint.state_partition(ps.tp, self.state_partitions)
            for key, value, headers in log_.records(ps.tp, ps.position, ps.logic.state(), ps.clock, shared):
                records.append((self.state_topic, part, key, value, headers))
            offsets[TopicPartition(*ps.tp)] = OffsetAndMetadata(ps.position, "")  # the client checks the type
        if not records and not offsets:
            self.last_commit = self.opt.wall()
            return
        await producer.begin_transaction()
        try:
            futures = [await producer.send(t, value=v, key=k, partition=p, headers=h)
                       for t, p, k, v, h in records]
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.group)
            await _delivered(producer, futures)
            await self._check_member()
            await producer.commit_transaction()
        except BaseException as e:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            if isinstance(e, _Restart):
                raise
            raise _Restart("checkpoint transaction failed") from None
        for ps in self.parts.values():
            if ps.tp in offsets:
                ps.committed = ps.position
                ps.dirty = False
        self.pending.clear()
        self.ticked = clocks
        self.last_commit = self.last_tick = self.opt.wall()
        self.committed_checkpoints += 1
        m = self.metrics
        if items_out:
            m.items_out.labels(**self.labels).inc(items_out)
        m.commits.labels(**self.labels).inc()
        m.commit_seconds.labels(**self.labels).observe(time.perf_counter() - t0)
        self._update_stage_counters()

    async def _commit_ticks(self) -> None:
        producer = self.producer
        out = self.spec.output_topic()
        assert producer is not None and out is not None
        clocks = self.runner.clocks()
        if self.pending.outputs:
            await self._checkpoint()
            return
        value, headers = envelope.tick_record(clocks)
        await producer.begin_transaction()
        try:
            sent = [await producer.send(out, value=value, partition=p, headers=headers)
                    for p in range(self.output_partitions)]
            await _delivered(producer, sent)
            await self._check_member()
            await producer.commit_transaction()
        except BaseException as e:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            if isinstance(e, _Restart):
                raise
            raise _Restart("tick transaction failed") from None
        self.ticked = clocks
        self.last_tick = self.opt.wall()

    def _encode_emits(self, records: list[Any]) -> int:
        out = self.spec.output_topic()
        if out is None or not self.pending.emits:
            return 0
        encoded, total = self.runner.output_records(self.output_partitions)
        records.extend((out, p, None, value, headers) for p, value, headers in encoded)
        return total

    # -- metrics -------------------------------------------------------------------------------------
    def _update_lag(self) -> None:
        if self.consumer is None:
            return
        wall = self.opt.wall()
        slowest = math.inf
        for ps in self.parts.values():
            hw = self.consumer.highwater(TopicPartition(*ps.tp))
            if hw is not None and ps.position is not None:
                self.metrics.lag.labels(topic=ps.tp.topic, partition=str(ps.tp.partition),
                                        **self.labels).set(max(0, hw - ps.position))
            slowest = min(slowest, ps.clock.now)
        if math.isfinite(slowest):
            self.metrics.event_lag.labels(**self.labels).set(wall - slowest)
            self.metrics.clock.labels(**self.labels).set(slowest)

    def _update_stage_counters(self) -> None:
        self.metrics.count_stages(self.name, self.labels, [ps.logic for ps in self.parts.values()])

    def counters(self) -> dict[str, int]:
        return self.runner.counters()


async def _delivered(producer: AIOKafkaProducer, futures: list[asyncio.Future[Any]]) -> None:
    """Wait until every record of the open transaction is delivered, and raise if one was not.
    aiokafka commits a transaction once its batches are done, failed or not: a batch whose partition
    had no leader for longer than the request timeout (a broker restarting) fails on its own, and the
    commit would then make the offsets durable without those outputs. Checked before the commit, the
    transaction is aborted instead and the session replays from its last checkpoint."""
    await producer.flush()
    for f in futures:
        f.result()


CLIENT_STOP_SECONDS = 30.0


async def _stop_client(client: AIOKafkaConsumer | AIOKafkaProducer, worker: str) -> None:
    """Stop a Kafka client of a session that is over, whatever state the broker left it in. The
    client's own errors are not the session's: after a broker restart aiokafka's fetcher can raise
    ``CancelledError`` from its own cancelled fetch tasks while it stops, which must not end the
    worker unless the worker itself is being cancelled; a stop that hangs is given up after
    :data:`CLIENT_STOP_SECONDS`."""
    try:
        await asyncio.wait_for(client.stop(), CLIENT_STOP_SECONDS)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception as e:  # nothing more to do for a client being dropped
        log.info("Kafka client stopped with an error", extra={"worker": worker, "error": repr(e)[:300]})


def plain(r: ConsumerRecord[bytes, bytes]) -> Record:
    """The consumed record as the stage logic sees it (no Kafka client type past this point)."""
    return Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, tuple(r.headers or ()))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await self.worker.on_revoked()
        except Exception:
            log.exception("checkpoint before rebalance failed; the new owner replays from the previous one")
            self.worker.parts.clear()
            self.worker.pending.clear()
            self.worker.broken = True

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.on_assigned(assigned)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    parts = consumer.partitions_for_topic(topic)
    for _ in range(50):
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()
        consumer._client.add_topic(topic)
        await asyncio.sleep(0.1)
        parts = consumer.partitions_for_topic(topic)
    raise _Restart(f"topic {topic} has no partitions (not created?)")

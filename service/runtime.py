"""The embedded ingest runtime: admits inputs, runs the in-process pipeline, writes the stores.

This is the I/O shell around :class:`topology.pipeline.Pipeline` used by ``topology demo`` and
``topology serve --embedded``. Inputs pass :mod:`topology.admit`, the admission the Kafka workers
apply too. Bad input never stops it: each rejected payload (or part of one) is counted by reason
class and appended to ``dead-letters.jsonl`` in the data directory (the embedded stand-in for the
``topology.dlq`` topic), and nothing already stored is touched.

Durability (embedded store): catalog entries, health and change events are in the store (a SQLite
commit, which survives a killed process) when ``accept_*`` returns, address leases in
``addresses.jsonl``. Flows, VPC flow logs, spans and metrics are held in the pipeline until their
windows close (a minute, plus the pairing wait for spans); :meth:`flush` writes them then. Until
that write they are in memory only: :meth:`drain` writes every open window (the server calls it at
shutdown, so SIGTERM loses nothing accepted), and :meth:`written` waits until a flush has written
what a request's admissions kept (``?wait=true`` on the ingest routes).

Back-pressure: spans wait in the pipeline for their other side (the pairing wait), at most the
pipeline's ``trace_capacity`` of them. :meth:`pairing_busy` tells the HTTP receiver when a request's
spans could overflow that (the spans held after the last pipeline pass plus those queued since), and
for how long: it answers 429 with ``Retry-After`` instead, and the sender retries, rather than the
pairer dropping spans. Late data: the pipeline's late parts (windows stage 3 had forgotten) are
added to the stored windows (:func:`topology.store.persist.persist`, ``late``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from topology.admit import (
    Admission,
    admit_catalog,
    admit_changes,
    admit_flows,
    admit_health,
    admit_leases,
    admit_metric_bytes,
    admit_spans,
    admit_vpcflows,
    reason_class,
)
from topology.catalog import AddressLease, HealthEvent, ServiceInfo
from topology.change import ChangeEvent
from topology.pipeline import Pipeline, PipelineOutput
from topology.store.base import Stores
from topology.store.persist import persist
from topology.wire.flow import FlowBatch
from topology.wire.vpcflow import VpcFlowRecord

log = logging.getLogger("topology.runtime")
T = TypeVar("T")

MAX_DEAD_LETTER_BYTES = 64 * 1024 * 1024
_WINDOWED = frozenset({"flows", "vpcflows", "spans", "metrics"})  # held in the pipeline until a flush
#: When a flush (its ``now``) will have written what the current request's admissions kept.
_DUE: ContextVar[float | None] = ContextVar("topology_runtime_due", default=None)
#: How many pipeline inputs had been queued when the current request's last one was.
_SEQ: ContextVar[int] = ContextVar("topology_runtime_seq", default=0)


class InputError(ValueError):
    """A payload was rejected; ``reason`` is what the dead letter and the HTTP answer say."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class Runtime:
    """Feeds the pipeline and persists its output.

    The event loop never runs the pipeline: an accepted input is queued (``_inbox``, in arrival
    order) and the pipeline applies the queue and flushes in a worker thread, holding ``_lock``, so
    queries and ``/healthz`` are answered while it works. The stores are written on the loop, one
    flush at a time.
    """

    def __init__(
        self,
        stores: Stores,
        data_dir: Path | None,
        pipeline: Pipeline | None = None,
        clock: Callable[[], float] = time.time,
        trace_every: float = 0.0,
    ) -> None:
        self.stores = stores
        #: seconds between two flushes of the span pairer (0: every flush; see :meth:`flush`)
        self.trace_every = trace_every
        self._trace_due = -math.inf  # the first flush from then flushes the pairer too
        self._pipeline = pipeline or Pipeline()
        self._inbox: deque[Callable[[], None]] = deque()  # pipeline inputs not applied yet
        self._queued = 0  # inputs queued so far
        self._lock = threading.Lock()  # held while the pipeline runs
        self._flushing: asyncio.Lock | None = None  # one flush (and its writes) at a time
        self._stages: dict[str, dict[str, int]] = {}  # the pipeline's counters at the last look
        self.written_seq = 0  # inputs queued before the last written flush began
        self.clock = clock
        self.data_dir = data_dir
        self.received: Counter[str] = Counter()  # kind -> payloads, rejected ones included
        self.accepted: Counter[str] = Counter()  # kind -> payloads
        self.records: Counter[str] = Counter()  # kind -> records inside them
        self.rejected: Counter[tuple[str, str]] = Counter()  # (kind, reason class) -> payloads
        self.windows_written: Counter[str] = Counter()  # layer -> windows
        self.refused: Counter[str] = Counter()  # kind -> payloads refused for back-pressure (429)
        self._spans_queued = 0  # spans handed to the pipeline (counted on the loop)
        self._spans_applied = 0  # of those, applied (counted by the pipeline thread)
        # at the last look at the pipeline: spans waiting, the oldest one's arrival, spans applied by then
        self._pairing: tuple[int, float | None, int] = (0, None, 0)
        self.last_flush: float = 0.0
        self.last_rollup: float = 0.0
        self.written_until = -math.inf  # the ``now`` of the last flush that was written
        self._horizon = -math.inf  # the latest due time of anything accepted
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []  # (due, seq, answered when written)
        self._input: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None  # until_input's
        # called after every flush that wrote windows (service.feed.ChangeFeed.notify: live updates)
        self.flushed: list[Callable[[PipelineOutput], None]] = []
        self._leases_file = data_dir / "addresses.jsonl" if data_dir else None
        self._dlq_file = data_dir / "dead-letters.jsonl" if data_dir else None
        if self._leases_file and self._leases_file.exists():
            self._load_leases(self._leases_file)

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline with every input accepted so far applied (waits for a flush in progress: for
        tests and tools, never called on the runtime's own paths)."""
        with self._lock:
            self._settle()
        return self._pipeline

    def _enqueue(self, op: Callable[[], None]) -> None:
        self._inbox.append(op)  # deque.append is atomic: the history's feeder thread queues too
        self._queued += 1
        _SEQ.set(self._queued)
        if self._input is not None:  # a flusher waits for input (until_input): wake it
            (loop, arrived), self._input = self._input, None
            loop.call_soon_threadsafe(_set, arrived)

    @property
    def idle(self) -> bool:
        """Nothing accepted since the last flush, which was past every window and pairing wait of what
        came before: the pipeline holds nothing to write, a flush would do nothing."""
        return self._queued == self.written_seq and self.written_until >= self._horizon

    async def until_input(self, within: float) -> None:
        """Return once the runtime is not :attr:`idle` (an input was queued), or after ``within``
        seconds: a flush loop waits here instead of waking up to flush nothing."""
        if not self.idle:
            return
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[None] = loop.create_future()
        self._input = (loop, arrived)
        try:
            if self.idle:  # an input queued by another thread meanwhile finds no waiter: look again
                await asyncio.wait_for(arrived, within)
        except TimeoutError:
            pass
        finally:
            self._input = None

    def _settle(self) -> None:
        """Apply the queued inputs, in order (holding ``_lock``)."""
        while self._inbox:
            self._inbox.popleft()()

    def _run(self, now: float, trace: bool = True) -> PipelineOutput:
        """Apply the queue and flush up to ``now`` (in a worker thread); the pairer too with ``trace``."""
        with self._lock:
            self._settle()
            out = self._pipeline.flush(now, trace=trace)
            self._note_pipeline()
            return out

    def _note_pipeline(self) -> None:
        """Keep the counters and the pairer's load for readers on the loop (holding ``_lock``)."""
        self._stages = self._pipeline.counters()
        pairer = self._pipeline.pairer
        self._pairing = (pairer.pending, pairer.oldest_arrival, self._spans_applied)

    # -- inputs (raise InputError on bad input, after dead-lettering it) ------------------------
    # Every input passes topology.admit (the policy the Kafka workers apply too). ``now`` is the
    # arrival time (the reference of the time policy; the pairing wait runs from it); default: the
    # runtime's clock. Each returns the admission: what was kept, how much was cut out and why.
    def accept_flows(self, data: bytes, now: float | None = None) -> Admission[FlowBatch]:
        return self.apply("flows", admit_flows(data, self._now(now)))

    def accept_metrics(
        self, data: bytes, content_type: str = "application/x-protobuf", now: float | None = None
    ) -> Admission[bytes]:
        """Kept as the serialized request (:func:`topology.admit.admit_metric_bytes`): the IPC stage's core
        reads the bytes that arrived, not a copy made after parsing them."""
        return self.apply("metrics", admit_metric_bytes(data, content_type, self._now(now)))

    def accept_spans(
        self, data: bytes, content_type: str = "application/x-protobuf", now: float | None = None
    ) -> Admission[Any]:
        now = self._now(now)
        return self.apply("spans", admit_spans(data, content_type, now), now)

    def accept_vpcflows(self, data: bytes, now: float | None = None) -> Admission[list[VpcFlowRecord]]:
        return self.apply("vpcflows", admit_vpcflows(data, self._now(now)))

    def apply(self, kind: str, adm: Admission[T], now: float | None = None) -> Admission[T]:
        """The second half of ``accept_<kind>`` for flows, metrics, spans and vpcflows: take an
        admission made elsewhere. Decoding and admission are pure and may run in another thread (the
        HTTP routes do, so a large body does not hold the event loop); this must run on the loop.
        ``now``: the arrival time the admission used (spans: the pairing wait runs from it)."""
        if kind not in _WINDOWED:
            raise ValueError(f"no pipeline input {kind!r}")
        kept: Any = self._kept(kind, adm)
        pipe = self._pipeline
        if kind == "flows":
            self._enqueue(lambda: pipe.add_flows(kept))
        elif kind == "metrics":
            self._enqueue(lambda: pipe.add_metrics(kept))
        elif kind == "spans":
            at, n = self._now(now), adm.items
            self._spans_queued += n

            def add_spans() -> None:
                pipe.add_span_view(kept, at)  # decoded once, by admission
                self._spans_applied += n

            self._enqueue(add_spans)
        else:
            self._enqueue(lambda: pipe.add_vpcflows(kept))
        return adm

    def pairing_busy(self, spans: int, now: float | None = None) -> float | None:
        """None if ``spans`` more spans fit the pairing capacity, else the seconds to wait before
        offering them again (``Retry-After``: until the oldest waiting span's wait ends, 1 s at least).
        Counts every span held or queued as waiting (an upper bound: many pair at once), so accepted
        spans never overflow the pairer; a request alone larger than the capacity is let in when
        nothing waits (the pairer then drops what does not fit, counted)."""
        pending, oldest, applied = self._pairing
        held = pending + self._spans_queued - applied
        cfg = self._pipeline.config
        if held <= 0 or held + spans <= cfg.trace_capacity:
            return None
        now = self._now(now)
        until = cfg.trace_wait if oldest is None else oldest + cfg.trace_wait - now
        return max(1.0, min(cfg.trace_wait, until))

    # Catalog entries and health events are stored before the pipeline sees them: if the store
    # refuses (an outage), nothing was applied and the error goes to the caller (HTTP: 503).
    async def accept_catalog(self, data: bytes, now: float | None = None) -> Admission[list[ServiceInfo]]:
        adm = admit_catalog(data, self._now(now))
        infos = self._kept("catalog", adm)
        await self.stores.catalog.upsert_services(infos)
        self.add_catalog(infos)
        return adm

    async def accept_health(self, data: bytes, now: float | None = None) -> Admission[list[HealthEvent]]:
        adm = admit_health(data, self._now(now))
        events = self._kept("health", adm)
        await self.stores.catalog.record_health(events)
        self.add_health(events)
        return adm

    async def accept_changes(self, data: bytes, now: float | None = None) -> Admission[list[ChangeEvent]]:
        adm = admit_changes(data, self._now(now))
        changes = self._kept("changes", adm)
        await self.stores.catalog.record_changes(changes)
        return adm

    def accept_leases(self, data: bytes, now: float | None = None) -> Admission[list[AddressLease]]:
        adm = admit_leases(data, self._now(now))
        leases = self._kept("addresses", adm)
        self.add_leases(leases)
        return adm

    def refuse(self, kind: str, reason: str, payload: bytes) -> InputError:
        """Count and dead-letter a payload refused before admission (the HTTP layer: size, encoding);
        returns the error to answer with."""
        self.received[kind] += 1
        return self._reject(kind, reason, payload)

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def _kept(self, kind: str, adm: Admission[T]) -> T:
        """Dead-letter what admission rejected; raise InputError if nothing was kept, else count it."""
        self.received[kind] += 1
        errors = [self._reject(kind, r.reason, r.payload) for r in adm.rejected]
        if adm.kept is None:
            raise errors[0]
        self.accepted[kind] += 1
        self.records[kind] += adm.items
        self._note_due(kind, adm)
        return adm.kept

    def add_leases(self, leases: Iterable[AddressLease]) -> None:
        """Append ``leases`` to the data directory's lease file, then apply them."""
        leases = list(leases)
        if self._leases_file:
            with self._leases_file.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(lease.to_dict()) + "\n" for lease in leases))
        pipe = self._pipeline
        self._enqueue(lambda: pipe.add_leases(leases))

    def add_catalog(self, infos: Iterable[ServiceInfo]) -> None:
        """Hand catalog entries to the pipeline (the store is the caller's: see :meth:`accept_catalog`)."""
        infos, pipe = list(infos), self._pipeline
        self._enqueue(lambda: pipe.add_catalog(infos))

    def add_health(self, events: Iterable[HealthEvent]) -> None:
        """Hand health events to the pipeline (the store is the caller's: see :meth:`accept_health`)."""
        events, pipe = list(events), self._pipeline
        self._enqueue(lambda: pipe.add_health(events))

    # -- output ---------------------------------------------------------------------------------
    async def flush(self, now: float | None = None) -> PipelineOutput:
        """Apply what was accepted, run the pipeline up to ``now`` (in a worker thread, so the event
        loop answers meanwhile) and write what it produced (layers concurrently). Flushes run one at a
        time, in call order: a later flush never writes before an earlier one.

        The span pairer is flushed only every :attr:`trace_every` seconds (what it pairs meanwhile
        accumulates per edge: each flush costs per edge seen since the last one, so a steady trickle
        flushed twice a second costs several times a burst per span); the other stages every time
        (a new connection's edge within a second or two). What waits for a flush (:meth:`written`,
        :attr:`idle`) counts that delay in."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:
            now = self.clock() if now is None else now
            if self.idle:  # the pipeline holds nothing (no thread, no store call)
                self.last_flush, self.written_until = now, max(self.written_until, now)
                return PipelineOutput()
            return await self._flush(now)

    async def _flush(self, now: float) -> PipelineOutput:
        seq = self._queued
        trace = now >= self._trace_due
        if trace:
            self._trace_due = now + self.trace_every
        out = await asyncio.to_thread(self._run, now, trace)
        await self.write(out)
        self.last_flush = now
        self.written_until = max(self.written_until, now)
        self.written_seq = max(self.written_seq, seq)
        if self._waiting:
            for due, at, waiter in self._waiting:
                if due <= self.written_until and at <= self.written_seq and not waiter.done():
                    waiter.set_result(None)
            self._waiting = [(d, s, w) for d, s, w in self._waiting if not w.done()]
        return out

    async def write(self, out: PipelineOutput) -> None:
        """Persist a pipeline's output and tell the :attr:`flushed` listeners: what a flush does with
        its own, and what the demo does with the output of its simulated fleet's pipeline, which runs
        in a process of its own (:mod:`service.demo_fleet`)."""
        await persist(self.stores, out.windows, out.traces, out.nodes, out.peer_leases, out.late)
        for layer, ws in [*out.windows.items(), *out.late.items()]:
            self.windows_written[layer.value] += len(ws)
        if any(out.windows.values()) or any(out.late.values()):
            for listener in self.flushed:
                listener(out)

    async def drain(self) -> PipelineOutput:
        """Write everything accepted, as if every open window had closed and every pairing wait had
        passed (at shutdown; after a restart, later records of those windows are added to them if they
        ended before it, :meth:`topology.pipeline.Pipeline.resume`, else replace them: see the README)."""
        cfg = self._pipeline.config
        slack = cfg.final_window + cfg.stage1_window + cfg.trace_wait + cfg.lateness + 1.0
        return await self.flush(max(self.clock() + slack, self._horizon))

    @staticmethod
    def request_due() -> float | None:
        """When a flush will have written what this request (its context) accepted; None: nothing
        waits for a flush (JSON records are stored when accepted). Call before the request, with
        :meth:`begin_request`."""
        return _DUE.get()

    @staticmethod
    def begin_request() -> None:
        _DUE.set(None)
        _SEQ.set(0)

    async def written(self, due: float | None, within: float) -> bool:
        """Wait until a flush with ``now >= due`` has been written (``due`` from :meth:`request_due`);
        False if that takes longer than ``within`` seconds (the records are still accepted)."""
        seq = _SEQ.get()
        if due is None or (self.written_until >= due and self.written_seq >= seq):
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((due, seq, waiter))
        try:
            await asyncio.wait_for(waiter, within)
        except TimeoutError:
            return False
        return True

    def _note_due(self, kind: str, adm: Admission[Any]) -> None:
        if kind not in _WINDOWED or adm.latest is None:
            return
        cfg = self._pipeline.config
        closes: float = (math.floor(adm.latest / cfg.final_window) + 1) * cfg.final_window
        if kind == "spans":  # an unpaired span waits for its other side from its arrival
            closes = max(closes, self.clock() + cfg.trace_wait + self.trace_every)
        due = closes + cfg.stage1_window + cfg.lateness
        before = _DUE.get()
        _DUE.set(due if before is None else max(before, due))
        self._horizon = max(self._horizon, due)

    async def rollup(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        await asyncio.gather(*(s.rollup(now) for s in self.stores.layers.values()))
        self.last_rollup = now

    def counters(self) -> dict[str, Any]:
        return {
            "accepted": dict(self.accepted),
            "received": dict(self.received),
            "records": dict(self.records),
            "rejected": {f"{k}:{r}": n for (k, r), n in self.rejected.items()},
            "windows_written": dict(self.windows_written),
            "refused": dict(self.refused),
            "stages": self._stage_counters(),
        }

    def _stage_counters(self) -> dict[str, dict[str, int]]:
        """The pipeline's counters: fresh when no flush is running, else those of the last flush."""
        if self._lock.acquire(blocking=False):
            try:
                self._settle()
                self._note_pipeline()
            finally:
                self._lock.release()
        return self._stages

    # -- helpers --------------------------------------------------------------------------------
    def _reject(self, kind: str, reason: str, payload: bytes) -> InputError:
        self.rejected[(kind, reason_class(reason))] += 1
        log.warning("rejected input", extra={"kind": kind, "reason": reason, "bytes": len(payload)})
        if self._dlq_file:
            try:
                if not self._dlq_file.exists() or self._dlq_file.stat().st_size < MAX_DEAD_LETTER_BYTES:
                    entry = {
                        "at": self.clock(),
                        "kind": kind,
                        "reason": reason,
                        "payload_b64": base64.b64encode(payload[:1_000_000]).decode(),
                    }
                    with self._dlq_file.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(entry) + "\n")
            except OSError:
                log.exception("could not write a dead letter")
        return InputError(kind, reason)

    def _load_leases(self, path: Path) -> None:
        leases = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                leases.append(AddressLease.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash
        self._pipeline.add_leases(leases)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

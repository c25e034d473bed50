"""The agent's loop: drain the kernel, attribute, batch, lease, deliver.

Every ``poll`` seconds the ring buffer is drained (close records). Every ``interval`` seconds the
kernel's table of open connections is scanned (bytes of long-lived connections since their last
report), the pending records leave as one batch, and due leases go out before it. A batch also
leaves as soon as ``max_batch_records`` are pending. On stop (SIGTERM), a last drain and scan report
everything counted so far, and the outbox gets ``shutdown_timeout`` seconds to deliver it.

The tracer, attributor and sink are passed in: tests run this loop with a real tracer and a list as
the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from agent.attribution import Attributor
from agent.batch import Batcher
from agent.leases import Leases
from agent.ledger import ConnArray, Ledger
from agent.outbox import FLOWS, LEASES, Message, Outbox, Send
from agent.sink import lease_payload

log = logging.getLogger("agent")


class Source(Protocol):
    def drain(self) -> ConnArray: ...
    def table(self) -> ConnArray: ...
    def counters(self) -> dict[str, int]: ...
    def cmdline(self, pid: int) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Timing:
    interval: float = 10.0
    poll: float = 0.5
    max_batch_records: int = 10_000
    shutdown_timeout: float = 10.0


class Agent:
    def __init__(self, source: Source, attributor: Attributor, send: Send, host: str,
                 timing: Timing | None = None, fold: bool = True, buffer_bytes: int = 64 * 1024 * 1024,
                 lease_renew: float = 30.0) -> None:
        self.source = source
        self.attributor = attributor
        attributor.processes.kernel_cmdline = source.cmdline
        self.timing = timing or Timing()
        self.leases = Leases(attributor.processes.alive, renew_seconds=lease_renew)
        self.batcher = Batcher(attributor, self.leases, host, fold)
        self.ledger = Ledger()
        self.outbox = Outbox(send, buffer_bytes)
        self.kernel_counters: dict[str, int] = {}
        self.connections_tracked = 0
        self.records_read = 0
        self.cycles = 0
        self.cycle_errors = 0

    async def run(self, stop: asyncio.Event) -> None:
        sender = asyncio.create_task(self.outbox.run())
        t = self.timing
        next_report = time.monotonic() + t.interval
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), t.poll)
                now = time.monotonic()
                due = now >= next_report
                if due:
                    next_report = max(next_report + t.interval, now)
                try:
                    self.cycle(scan=due)
                except Exception:  # a bug in one round must not stop the agent: logged, counted
                    self.cycle_errors += 1
                    log.exception("agent round failed")
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        try:
            self.cycle(scan=True)  # the last records: everything counted so far
        except Exception:
            self.cycle_errors += 1
            log.exception("agent round failed")
        await self.outbox.drain(t.shutdown_timeout)
        log.info("agent stopped", extra=self.summary())

    def cycle(self, scan: bool) -> None:
        """One round: drain, optionally scan, and send what is due."""
        self.cycles += 1
        closes = self.source.drain()
        self.records_read += len(closes)
        self.batcher.add(self.ledger.closed(closes))
        if scan:
            table = self.source.table()
            self.connections_tracked = len(table)
            now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            live = self.ledger.scan(table, now_ns, min_age_ns=int(self.timing.interval * 1e9))
            self.records_read += len(live)
            self.batcher.add(live)
            self.kernel_counters = self.source.counters()
        if scan or self.batcher.pending_records >= self.timing.max_batch_records:
            self.send_due()

    def send_due(self) -> None:
        leases = self.leases.due(time.time())
        if leases:
            self.outbox.put(Message(LEASES, lease_payload(leases), len(leases)))
        taken = self.batcher.take()
        if taken is not None:
            data, n = taken
            self.outbox.put(Message(FLOWS, data, n))

    def summary(self) -> dict[str, Any]:
        ob = self.outbox
        return {"records_read": self.records_read, "flows_sent": ob.sent_records[FLOWS],
                "leases_sent": ob.sent_records[LEASES], "dropped": sum(ob.dropped_records.values()),
                "sink_errors": ob.errors, "kernel": self.kernel_counters}

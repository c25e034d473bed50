"""Delivery with a bounded buffer: the agent never blocks on its sink and never grows without bound.

Messages (encoded flow batches, lease lists) wait in a FIFO of at most ``max_bytes``. A sender task
hands them to the sink in order; when the sink fails, the message stays at the head and the sender
retries with exponential backoff (``backoff_min`` doubling up to ``backoff_max``, with jitter), so a
sink that comes back gets everything that was kept, in order. When the buffer is full, the oldest
flow batches are dropped to make room, counted (batches and records); leases are small and
renewed anyway, but they are dropped last. :meth:`Outbox.drain` is the final flush on shutdown: it
keeps trying until the buffer is empty or its deadline passes, and counts what is left as dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("agent.outbox")

FLOWS, LEASES = "flows", "leases"


@dataclass(frozen=True, slots=True)
class Message:
    kind: str  # FLOWS or LEASES
    payload: bytes
    records: int  # flow records or leases inside


class SinkError(RuntimeError):
    """The sink could not take a message now; it will be retried."""


class Rejected(RuntimeError):
    """The sink refused a message for good (bad input): retrying cannot help; it is dropped."""


Send = Callable[[Message], Awaitable[None]]


class Outbox:
    def __init__(self, send: Send, max_bytes: int = 64 * 1024 * 1024, backoff_min: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        self.send = send
        self.max_bytes = max_bytes
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._queue: deque[Message] = deque()
        self.bytes = 0
        self._ready = asyncio.Event()
        self.sent = {FLOWS: 0, LEASES: 0}  # messages
        self.sent_records = {FLOWS: 0, LEASES: 0}
        self.dropped = {FLOWS: 0, LEASES: 0}  # messages dropped (overflow, rejected, left at shutdown)
        self.dropped_records = {FLOWS: 0, LEASES: 0}
        self.errors = 0
        self.rejected = 0
        self.connected = False
        self._inflight: Message | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, msg: Message) -> None:
        """Queue ``msg``; if the buffer overflows, drop the oldest flow batches (then leases), counted."""
        self._queue.append(msg)
        self.bytes += len(msg.payload)
        while self.bytes > self.max_bytes:
            waiting = [m for m in self._queue if m is not self._inflight]  # never the one being sent
            if not waiting:
                break
            victim = next((m for m in waiting if m.kind == FLOWS), waiting[0])
            self._queue.remove(victim)
            self._drop(victim, "buffer full")
        self._ready.set()

    def _drop(self, msg: Message, why: str) -> None:
        self.bytes -= len(msg.payload)
        self.dropped[msg.kind] += 1
        self.dropped_records[msg.kind] += msg.records
        log.warning("dropped a message", extra={"kind": msg.kind, "records": msg.records, "reason": why})

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Send until cancelled (or ``stop`` is set and the queue is empty)."""
        delay = self.backoff_min
        while True:
            if not self._queue:
                if stop is not None and stop.is_set():
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            if await self._send_head():
                delay = self.backoff_min
            else:
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff_max)

    async def _send_head(self) -> bool:
        msg = self._inflight = self._queue[0]
        try:
            await self.send(msg)
        except Rejected as e:
            self.rejected += 1
            self._pop(msg)
            self._drop(msg, f"rejected: {e}")
            return True
        except (TimeoutError, SinkError, OSError) as e:
            self.errors += 1
            if self.connected:
                log.warning("sink unavailable, buffering",
                            extra={"error": str(e), "queued": len(self._queue)})
            self.connected = False
            return False
        except Exception:  # a sink bug must not stop delivery: logged, counted, retried
            self.errors += 1
            log.exception("unexpected sink failure")
            self.connected = False
            return False
        finally:
            self._inflight = None
        if not self.connected:
            log.info("sink reachable", extra={"queued": len(self._queue)})
        self.connected = True
        self._pop(msg)
        self.bytes -= len(msg.payload)
        self.sent[msg.kind] += 1
        self.sent_records[msg.kind] += msg.records
        return True

    def _pop(self, msg: Message) -> None:
        if self._queue and self._queue[0] is msg:
            self._queue.popleft()

    async def drain(self, within: float) -> None:
        """Final flush: send what is queued within ``within`` seconds; what is left is counted dropped."""
        deadline = time.monotonic() + within
        delay = self.backoff_min
        while self._queue and time.monotonic() < deadline:
            if not await self._send_head():
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, self.backoff_max)
        while self._queue:
            msg = self._queue.popleft()
            self._drop(msg, "shutdown before the sink took it")

"""The gate GraphQL requests pass over HTTP: at most ``TOPOLOGY_MAX_QUERIES`` operations execute at
once, at most ``TOPOLOGY_MAX_QUEUED_QUERIES`` more wait in line (first come, first served), and one more
is refused (503 with ``Retry-After``) instead of queueing without bound.

Why a line at all: the event loop runs every executing operation's resolvers in turn, so with 200
clients each turn of the loop carried 200 operations' work and ``/healthz`` waited seconds behind
them. With a few at a time a turn stays short; the CPU does the same work, and waiting costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

RETRY_AFTER = "1"


class Overloaded(Exception):
    """The line is full."""


class QueryGate:
    def __init__(self, running: int, queued: int) -> None:
        self.running = running
        self.queued = queued
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses it

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``running`` slots; raises :class:`Overloaded` when ``queued`` wait already."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.running)
        if self._slots.locked() and self.waiting >= self.queued:
            raise Overloaded(f"{self.waiting} GraphQL requests are waiting; retry later")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

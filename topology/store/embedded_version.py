"""The embedded stores' version: a number that changes whenever what a store answers may change.

Every write of an embedded store runs under its :class:`WriteLock`; the lock counts the sections it
has let go. A reader that notes the count before answering and finds it unchanged afterwards knew a
state no later write section had finished changing (the GraphQL response cache keys answers so).
"""

from __future__ import annotations

import asyncio

__all__ = ["WriteLock"]


class WriteLock(asyncio.Lock):
    """An :class:`asyncio.Lock` that counts its releases (``released``): one per finished write."""

    def __init__(self) -> None:
        super().__init__()
        self.released = 0

    def release(self) -> None:
        self.released += 1  # before waking the next writer: its changes come after this count
        super().release()

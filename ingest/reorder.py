"""Putting records from several upstream partitions back into event-time order.

A repartition topic interleaves records from every upstream partition, each in its own time order.
Stages that depend on order (cumulative-to-delta conversion per series, span pairing with a wait)
hold records here until the partition's clock (the slowest upstream clock, :mod:`ingest.clock`)
reaches their event time, then take them oldest first. Ties keep arrival order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class ReorderBuffer:
    heap: list[tuple[float, int, bytes]] = field(default_factory=list)
    seq: int = 0

    def push(self, t: float, data: bytes) -> None:
        heapq.heappush(self.heap, (t, self.seq, data))
        self.seq += 1

    def release(self, now: float) -> Iterator[tuple[float, bytes]]:
        """Records with event time <= ``now``, oldest first."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            t, _, data = heapq.heappop(heap)
            yield t, data

    def __len__(self) -> int:
        return len(self.heap)

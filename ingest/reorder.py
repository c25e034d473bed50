"""Putting records from several upstream partitions back into event-time order.

A repartition topic interleaves records from every upstream partition, each in its own time order.
Stages that depend on order (cumulative-to-delta conversion per series, span pairing with a wait)
hold records here until the partition's clock (the slowest upstream clock, :mod:`ingest.clock`)
reaches their event time, then take them oldest first. Ties keep arrival order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field


@dataclass
class ReorderBuffer:
    heap: list[tuple[float, int, bytes]] = field(default_factory=list)
    seq: int = 0

    def push(self, t: float, data: bytes) -> None:
        heapq.heappush(self.heap, (t, self.seq, data))
        self.seq += 1

    def push_payloads(self, payloads: Iterable[bytes], times: Callable[[bytes], list[int]]) -> int:
        """Push each serialized request at its latest time (``times`` gives its nanosecond times;
        it raises on bad bytes, before anything is pushed); returns how many times there were."""
        timed: list[tuple[float, bytes]] = []
        n = 0
        for data in payloads:
            ts = times(data)
            n += len(ts)
            timed.append((max(ts, default=0) / 1e9, data))
        for t, data in timed:
            self.push(t, data)
        return n

    def release(self, now: float) -> Iterator[tuple[float, bytes]]:
        """Records with event time <= ``now``, oldest first."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            t, _, data = heapq.heappop(heap)
            yield t, data

    def __len__(self) -> int:
        return len(self.heap)

"""The input record a stage's logic sees: plain data, no Kafka client type.

The worker (:mod:`ingest.worker`) converts each consumed record at the edge, so a stage spec can be
fed from a list in a test (:mod:`tests.ingest.testing`) exactly as the worker feeds it from a topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Partition(NamedTuple):
    """One input partition: the unit a stage keeps state for (equal to the Kafka client's
    ``TopicPartition`` of the same topic and number, which is a named tuple too)."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int  # the record's Kafka timestamp (producer or broker time); <= 0: none
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def source(self) -> Partition:
        return Partition(self.topic, self.partition)

"""Stage state checkpoints in a compacted Kafka topic.

A stateful stage (open windows, pending spans) cannot commit an input offset past records whose
effect is still only in memory. Instead of holding offsets back, every checkpoint writes the state
of each input partition, in the same Kafka transaction as the stage's outputs and the consumer
offsets (see :mod:`ingest.worker`). After a crash the new owner of a partition restores the last
checkpoint and continues from the offset stored with it, so each input record affects the outputs
exactly once.

Encoding: the stage objects are pickled (they are plain Python and numpy state) and compressed.
Objects shared between partitions (the address book, the health book) are not written: they are
replaced by their name and re-attached at restore time. The state topic is internal to the
pipeline; like any pickle it must not be writable by untrusted producers.

A checkpoint may be larger than one Kafka message: it is cut into parts that share a checkpoint id.
Keys are ``<source topic>:<partition>#<part>`` so compaction keeps the latest version of each part;
parts left over from an older, longer checkpoint carry an older id and are ignored.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.record import Partition

if TYPE_CHECKING:  # the Kafka client is imported where a checkpoint is read back (restore)
    from aiokafka import AIOKafkaConsumer, TopicPartition

PART_BYTES = 900_000
FORMAT = b"1"


class CheckpointError(RuntimeError):
    """A checkpoint could not be read back."""


def _reduce_struct(s: struct.Struct) -> tuple[Any, tuple[str]]:
    return struct.Struct, (s.format,)


# Stages cache precompiled struct formats; rebuild them from their format string.
_DISPATCH = copyreg.dispatch_table.copy()
_DISPATCH[struct.Struct] = _reduce_struct


class _Pickler(pickle.Pickler):
    def __init__(self, f: io.BytesIO, shared: dict[str, Any]) -> None:
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.dispatch_table = _DISPATCH
        self._ids = {id(v): k for k, v in shared.items()}

    def persistent_id(self, obj: Any) -> str | None:
        return self._ids.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: io.BytesIO, shared: dict[str, Any]) -> None:
        super().__init__(f)
        self._shared = shared

    def persistent_load(self, pid: Any) -> Any:
        try:
            return self._shared[pid]
        except KeyError as e:
            raise CheckpointError(f"checkpoint refers to an unknown shared object {pid!r}") from e


def dumps(state: Any, shared: dict[str, Any] | None = None) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, shared or {}).dump(state)
    return zlib.compress(buf.getvalue(), 1)


def loads(data: bytes, shared: dict[str, Any] | None = None) -> Any:
    return _Unpickler(io.BytesIO(zlib.decompress(data)), shared or {}).load()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    source: Partition  # the input partition whose state this is
    offset: int  # the next input offset to read: the state covers every record before it
    state: bytes  # dumps() output


def state_key(source: Partition) -> str:
    return f"{source.topic}:{source.partition}"


def to_records(cp: Checkpoint) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of the messages that hold one checkpoint."""
    cid = uuid.uuid4().hex.encode()
    chunks = [cp.state[i : i + PART_BYTES] for i in range(0, len(cp.state), PART_BYTES)] or [b""]
    base = state_key(cp.source)
    out = []
    for i, chunk in enumerate(chunks):
        headers = [("ckpt.format", FORMAT), ("ckpt.id", cid), ("ckpt.part", str(i).encode()),
                   ("ckpt.parts", str(len(chunks)).encode()), ("ckpt.offset", str(cp.offset).encode())]
        out.append((f"{base}#{i}".encode(), chunk, headers))
    return out


def state_partition(source: Partition, state_partitions: int) -> int:
    return source.partition % state_partitions


async def restore(bootstrap: str, state_topic: str, source: Partition) -> Checkpoint | None:
    """The latest complete checkpoint of ``source`` in ``state_topic`` (None if there is none).

    Reads the state partition backwards in growing steps from its end, so a restore costs about
    the size of the latest checkpoint whatever the topic's history.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                fetch_max_bytes=16 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(state_topic)
        if parts is None:
            await consumer._client.force_metadata_update()  # topic created moments ago
            parts = consumer.partitions_for_topic(state_topic)
        if not parts:
            raise CheckpointError(f"state topic {state_topic} does not exist")
        tp = TopicPartition(state_topic, state_partition(source, len(parts)))
        consumer.assign([tp])
        begin = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        prefix = (state_key(source) + "#").encode()
        hi, step = end, 64
        records: list[Any] = []
        while hi > begin:
            lo = max(begin, hi - step)
            records = await _read_range(consumer, tp, lo, hi) + records
            newest = _newest(records, prefix, source)
            if newest is not None:
                return newest
            hi, step = lo, step * 4
        if any(m.key is not None and m.key.startswith(prefix) for m in records):
            raise CheckpointError(f"the latest checkpoint of {state_key(source)} in {state_topic} is "
                                  "incomplete")
        return None
    finally:
        await consumer.stop()


async def _read_range(consumer: AIOKafkaConsumer, tp: TopicPartition, lo: int, hi: int) -> list[Any]:
    """The committed records of ``tp`` with offsets in [lo, hi)."""
    consumer.seek(tp, lo)
    out: list[Any] = []
    idle = 0
    while await consumer.position(tp) < hi and idle < 3:
        batch = await consumer.getmany(tp, timeout_ms=500)
        msgs = batch.get(tp, [])
        out.extend(m for m in msgs if m.offset < hi)
        idle = 0 if msgs else idle + 1  # only markers or aborted records may remain below hi
    return out


def _newest(records: list[Any], prefix: bytes, source: Partition) -> Checkpoint | None:
    """The newest checkpoint of ``source`` in ``records`` if all its parts are there, else None."""
    newest: bytes | None = None
    parts: dict[int, Any] = {}
    total = 0
    for m in reversed(records):
        if m.key is None or not m.key.startswith(prefix):
            continue
        h = dict(m.headers or ())
        if h.get("ckpt.format") != FORMAT or "ckpt.id" not in h:
            continue
        if newest is None:
            newest, total = h["ckpt.id"], int(h["ckpt.parts"])
        if h["ckpt.id"] != newest:
            continue
        parts[int(h["ckpt.part"])] = m
        if len(parts) == total:
            state = b"".join(parts[i].value or b"" for i in range(total))
            return Checkpoint(source, int(h["ckpt.offset"]), state)
    return None

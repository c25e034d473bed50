"""Stage state checkpoints in a compacted Kafka topic.

A stateful stage (open windows, pending spans) cannot commit an input offset past records whose
effect is still only in memory. Instead of holding offsets back, every checkpoint writes the state
of each input partition, in the same Kafka transaction as the stage's outputs and the consumer
offsets (see :mod:`ingest.worker`). After a crash the new owner of a partition restores the last
checkpoint and continues from the offset stored with it, so each input record affects the outputs
exactly once.

Encoding: :mod:`ingest.state` (msgpack with an explicit schema per state type, read without
pickle, so a message written into the state topic cannot run code in the worker that restores it).
Objects shared between partitions (the address book, the health book) are not written: they are
replaced by their name and re-attached at restore time.

Refused checkpoints: the newest checkpoint of a partition that is in another format (``ckpt.format``
1 was pickle: never read), has malformed headers or does not decode is refused with
:class:`BadCheckpoint`. The worker logs it, counts it (``topology_ingest_state_refused_total``) and
starts that partition empty from its committed consumer offset: the records before that offset
whose effect was only in the lost state are not replayed (their open windows are lost), nothing is
counted twice. A restart of the worker does not help (the same checkpoint would be read again), so
a refused checkpoint is not retried.

A checkpoint may be larger than one Kafka message: it is cut into parts that share a checkpoint id.
Keys are ``<source topic>:<partition>#<part>`` so compaction keeps the latest version of each part;
parts left over from an older, longer checkpoint carry an older id and are ignored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest import state as codec
from ingest.clock import MergedClock, SourceClock
from ingest.record import Partition
from ingest.security import Kafka, client_options

if TYPE_CHECKING:  # the Kafka client is imported where a checkpoint is read back (restore)
    from aiokafka import AIOKafkaConsumer, TopicPartition

PART_BYTES = 900_000
FORMAT = str(codec.VERSION).encode()  # the ckpt.format header ("1" was pickle: refused)


class CheckpointError(RuntimeError):
    """A checkpoint could not be read back (the state topic is missing, a checkpoint is incomplete):
    the worker restarts its session and tries again."""


class BadCheckpoint(CheckpointError):
    """The newest checkpoint of a partition is not one this build reads (another format, malformed,
    not decodable): refused, never retried (see the module docstring)."""


def dumps(state: Any, shared: dict[str, Any] | None = None) -> bytes:
    return codec.dumps(state, shared)


def loads(data: bytes, shared: dict[str, Any] | None = None) -> Any:
    """The state in a checkpoint's bytes; raises :class:`BadCheckpoint` for anything else."""
    try:
        return codec.loads(data, shared)
    except codec.StateError as e:
        raise BadCheckpoint(str(e)) from None


@dataclass(frozen=True, slots=True)
class Saved:
    """What a checkpoint holds: the logic's state (:meth:`PartitionLogic.state`) and the clock."""

    logic: Any
    clock: SourceClock | MergedClock


def encode(saved: Saved, shared: dict[str, Any] | None = None) -> bytes:
    return dumps({"logic": saved.logic, "clock": saved.clock}, shared)


def decode(data: bytes, shared: dict[str, Any] | None = None) -> Saved:
    """The state and clock in a checkpoint's bytes; raises :class:`BadCheckpoint` for anything else."""
    doc = loads(data, shared)
    if not isinstance(doc, dict) or set(doc) != {"logic", "clock"} \
            or not isinstance(doc["clock"], SourceClock | MergedClock):
        raise BadCheckpoint("a checkpoint holds a logic state and a clock")
    return Saved(doc["logic"], doc["clock"])


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


async def restore(kafka: Kafka, state_topic: str, source: Partition) -> Checkpoint | None:
    """The latest complete checkpoint of ``source`` in ``state_topic`` (None if there is none).

    Reads the state partition backwards in growing steps from its end, so a restore costs about
    the size of the latest checkpoint whatever the topic's history.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False,
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
    """The newest checkpoint of ``source`` in ``records`` if all its parts are there, else None.
    Raises :class:`BadCheckpoint` if the newest message of ``source`` is not of this format."""
    newest: bytes | None = None
    parts: dict[int, Any] = {}
    total = 0
    for m in reversed(records):
        if m.key is None or not m.key.startswith(prefix):
            continue
        h = dict(m.headers or ())
        if newest is None:
            fmt = h.get("ckpt.format")
            if fmt != FORMAT:
                raise BadCheckpoint(f"the checkpoint of {state_key(source)} is in format {fmt!r}, this build "
                                    f"reads {FORMAT!r} only" + (" (pickle checkpoints are never read)"
                                                                if fmt == b"1" else ""))
            newest, total = h.get("ckpt.id"), _header_int(h, "ckpt.parts", source)
            if newest is None or total < 1:
                raise BadCheckpoint(f"the checkpoint of {state_key(source)} has malformed headers")
        if h.get("ckpt.id") != newest:
            continue
        part = _header_int(h, "ckpt.part", source)
        if not 0 <= part < total:
            raise BadCheckpoint(f"the checkpoint of {state_key(source)} has malformed headers")
        parts[part] = m
        if len(parts) == total:
            state = b"".join(parts[i].value or b"" for i in range(total))
            return Checkpoint(source, _header_int(h, "ckpt.offset", source), state)
    return None


def _header_int(h: dict[str, bytes], name: str, source: Partition) -> int:
    try:
        return int(h[name])
    except (KeyError, ValueError, TypeError):
        raise BadCheckpoint(f"the checkpoint of {state_key(source)} has a malformed {name} header") from None

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

Incremental checkpoints: a commit every second (early outputs) must not rewrite the whole state.
For a state class listed in :data:`ingest.state.SECTIONED` (NETWORK stage 2: its windows; NETWORK
stage 1: each window's pending rows and remembered keys) a checkpoint is a *head* (the state
without its sections, and the clock) plus the sections that
changed since this worker's previous checkpoint of the partition (:class:`Log`); each section is
keyed ``<source>#s<section>.<part>``, so compaction keeps its latest version (a section that is
gone, or parts it no longer has, get tombstones, so compaction removes them). The head's
``ckpt.sections`` header is the manifest: every live section and the id of the checkpoint that
last wrote it. All of it is in the one transaction with the outputs and offsets, so the newest
committed head and the sections its manifest names are always a consistent state (a section
rewritten later was written with a later head). Restoring reads the state partition backwards
until it holds the newest complete head and every section of its manifest. To bound that reading,
a section is rewritten once more than :data:`STALE_FACTOR` times the state's size has been
written since its version (restore reads about that much at most); a new owner of a partition
writes every section at its first checkpoint. A state class not listed is written whole, as before
(no manifest header), and a whole checkpoint of a sectioned class is read as before.
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
STALE_FACTOR = 4  # a section is rewritten once this many times the state's size was written after it
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


def decode(data: bytes, shared: dict[str, Any] | None = None,
           sections: tuple[bytes, ...] | None = None) -> Saved:
    """The state and clock in a checkpoint's bytes (its head, and its ``sections`` if it has a
    manifest); raises :class:`BadCheckpoint` for anything else."""
    doc = loads(data, shared)
    if not isinstance(doc, dict) or set(doc) != {"logic", "clock"} \
            or not isinstance(doc["clock"], SourceClock | MergedClock):
        raise BadCheckpoint("a checkpoint holds a logic state and a clock")
    if sections is None:
        return Saved(doc["logic"], doc["clock"])
    parts: dict[Any, Any] = {}
    for data in sections:
        item = loads(data, shared)
        if not isinstance(item, list) or len(item) != 2:
            raise BadCheckpoint("a checkpoint section holds its key and its value")
        parts[item[0]] = item[1]
    try:
        return Saved(codec.join(doc["logic"], parts), doc["clock"])
    except codec.StateError as e:
        raise BadCheckpoint(str(e)) from None


Record = tuple[bytes, bytes | None, list[tuple[str, bytes]]]  # key, value (None: a tombstone), headers


@dataclass(frozen=True, slots=True)
class Checkpoint:
    source: Partition  # the input partition whose state this is
    offset: int  # the next input offset to read: the state covers every record before it
    state: bytes  # dumps() output (the head of a sectioned state)
    sections: tuple[bytes, ...] | None = None  # restored: every section of the manifest (None: whole)
    names: tuple[str, ...] = ()  # restored: the sections' names, in the same order


def state_key(source: Partition) -> str:
    return f"{source.topic}:{source.partition}"


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]


def to_records(cp: Checkpoint, cid: bytes | None = None,
               manifest: list[tuple[str, bytes]] | None = None) -> list[Record]:
    """(key, value, headers) of the messages that hold one checkpoint (its head, with the
    ``manifest`` of its sections if it has sections)."""
    cid = cid or uuid.uuid4().hex.encode()
    chunks = _chunks(cp.state)
    base = state_key(cp.source)
    out = []
    for i, chunk in enumerate(chunks):
        headers = [("ckpt.format", FORMAT), ("ckpt.id", cid), ("ckpt.part", str(i).encode()),
                   ("ckpt.parts", str(len(chunks)).encode()), ("ckpt.offset", str(cp.offset).encode())]
        if manifest is not None:
            headers.append(("ckpt.sections", b",".join(f"{k}={v.decode()}".encode() for k, v in manifest)))
        out.append((f"{base}#{i}".encode(), chunk, headers))
    return out


def section_records(source: Partition, cid: bytes, name: str, data: bytes) -> list[Record]:
    """The messages that hold one section written by checkpoint ``cid``."""
    chunks = _chunks(data)
    base = state_key(source)
    return [(f"{base}#s{name}.{i}".encode(), chunk,
             [("ckpt.format", FORMAT), ("ckpt.kind", b"section"), ("ckpt.section", name.encode()),
              ("ckpt.id", cid), ("ckpt.part", str(i).encode()), ("ckpt.parts", str(len(chunks)).encode())])
            for i, chunk in enumerate(chunks)]


def _tombstones(source: Partition, name: str, parts: range) -> list[Record]:
    """Tombstones for parts of a section that is gone (or now has fewer parts), so compaction removes them."""
    base = state_key(source)
    return [(f"{base}#s{name}.{i}".encode(), None,
             [("ckpt.format", FORMAT), ("ckpt.kind", b"section"), ("ckpt.section", name.encode())])
            for i in parts]


class Log:
    """What this worker last wrote of one input partition's sections: decides what the next
    checkpoint rewrites (see the module docstring). A new one writes every section; made
    :meth:`after` a restored checkpoint, it also knows the restored sections, to remove them when
    they are gone."""

    def __init__(self) -> None:
        self.versions: dict[str, bytes] = {}  # section -> id of the checkpoint that last wrote it
        self.sizes: dict[str, int] = {}  # section -> its bytes then
        self.since: dict[str, int] = {}  # section -> bytes written for this partition after it
        self.parts: dict[str, int] = {}  # section -> messages it was cut into

    @classmethod
    def after(cls, restored: Checkpoint | None) -> Log:
        """The log of a partition just restored from ``restored`` (None: started empty)."""
        log = cls()
        if restored is not None and restored.sections is not None:
            restored_parts = zip(restored.names, restored.sections, strict=True)
            log.parts = {name: len(_chunks(data)) for name, data in restored_parts}
        return log

    def records(self, source: Partition, offset: int, state: Any, clock: SourceClock | MergedClock,
                shared: dict[str, Any] | None = None) -> list[Record]:
        """The messages of the next checkpoint of ``source`` (all of them go into one transaction)."""
        cid = uuid.uuid4().hex.encode()
        parts = codec.split(state)
        if parts is None:
            return to_records(Checkpoint(source, offset, encode(Saved(state, clock), shared)), cid)
        head_state, sections, touched = parts
        head = encode(Saved(head_state, clock), shared)
        names = {str(k): k for k in sections}
        if any("," in n or "=" in n for n in names):
            raise codec.StateError("a section key must not contain ',' or '=' (the manifest separators)")
        out: list[Record] = []
        for gone in [n for n in self.parts if n not in names]:
            out.extend(_tombstones(source, gone, range(self.parts.pop(gone))))
            for known in (self.versions, self.sizes, self.since):
                known.pop(gone, None)
        limit = STALE_FACTOR * (len(head) + sum(self.sizes.values()))
        written = len(head)
        for name, k in names.items():
            if name in self.versions and k not in touched and self.since[name] <= limit:
                continue
            data = codec.dumps([k, sections[k]], shared)
            records = section_records(source, cid, name, data)
            out.extend(records)
            out.extend(_tombstones(source, name, range(len(records), self.parts.get(name, 0))))
            self.versions[name], self.sizes[name], self.since[name] = cid, len(data), -len(data)
            self.parts[name] = len(records)
            written += len(data)
        for name in self.since:
            self.since[name] += written
        manifest = [(name, self.versions[name]) for name in names]
        return out + to_records(Checkpoint(source, offset, head), cid, manifest)


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
            found = assemble(records, source, complete=lo == begin)
            if found is not None:
                return found
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


def assemble(records: list[Any], source: Partition, complete: bool = False) -> Checkpoint | None:
    """The newest checkpoint of ``source`` in ``records`` (the latest records of its state partition,
    in offset order) if its head and every section of its manifest are there, else None (read
    further back). ``complete``: ``records`` start at the partition's beginning, so a section still
    missing never comes. Raises :class:`BadCheckpoint` if the newest head is not of this format."""
    prefix = (state_key(source) + "#").encode()
    newest: bytes | None = None
    parts: dict[int, Any] = {}
    total = 0
    head: Any = None
    at = 0
    for at in range(len(records) - 1, -1, -1):
        m = records[at]
        if m.key is None or not m.key.startswith(prefix):
            continue
        h = dict(m.headers or ())
        if h.get("ckpt.kind") is not None:  # a section (read below, once the head is known)
            continue
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
            head = h
            break
    if head is None:
        return None
    state = b"".join(parts[i].value or b"" for i in range(total))
    offset = _header_int(head, "ckpt.offset", source)
    manifest = head.get("ckpt.sections")
    if manifest is None:
        return Checkpoint(source, offset, state)
    wanted = _manifest(manifest, source)
    found = _sections(records[: at + 1], prefix, wanted, source)
    missing = [name for name in wanted if name not in found]
    if missing:
        if complete:
            raise BadCheckpoint(f"the checkpoint of {state_key(source)} names sections the state topic does "
                                f"not hold: {missing[:5]}")
        return None
    return Checkpoint(source, offset, state, tuple(found[name] for name in wanted), tuple(wanted))


def _manifest(value: bytes, source: Partition) -> dict[str, bytes]:
    """A head's ``ckpt.sections`` header: section -> id of the checkpoint that wrote it."""
    out: dict[str, bytes] = {}
    for item in value.split(b",") if value else ():
        name, sep, cid = item.partition(b"=")
        if not sep or not name or not cid:
            raise BadCheckpoint(f"the checkpoint of {state_key(source)} has a malformed manifest")
        out[name.decode()] = cid
    return out


def _sections(records: list[Any], prefix: bytes, wanted: dict[str, bytes],
              source: Partition) -> dict[str, bytes]:
    """The bytes of every section in ``wanted`` (name -> checkpoint id) whose parts are all in ``records``."""
    parts: dict[str, dict[int, bytes]] = {}
    totals: dict[str, int] = {}
    for m in records:
        if m.key is None or not m.key.startswith(prefix):
            continue
        h = dict(m.headers or ())
        if h.get("ckpt.kind") != b"section" or m.value is None:  # a tombstone: the section is gone
            continue
        name = (h.get("ckpt.section") or b"").decode(errors="replace")
        if name not in wanted or wanted[name] != h.get("ckpt.id"):
            continue
        part, total = _header_int(h, "ckpt.part", source), _header_int(h, "ckpt.parts", source)
        if not 0 <= part < total:
            raise BadCheckpoint(f"the checkpoint of {state_key(source)} has malformed headers")
        parts.setdefault(name, {})[part] = m.value or b""
        totals[name] = total
    return {name: b"".join(p[i] for i in range(totals[name])) for name, p in parts.items()
            if len(p) == totals[name]}


def _header_int(h: dict[str, bytes], name: str, source: Partition) -> int:
    try:
        return int(h[name])
    except (KeyError, ValueError, TypeError):
        raise BadCheckpoint(f"the checkpoint of {state_key(source)} has a malformed {name} header") from None

"""Flow batch wire format, version 1: what the node agent emits (topic ``topology.flows``,
HTTP ``POST /ingest/flows``). Specification with rationale: ``docs/flow-wire-format.md``.

A batch is a fixed header, a string table and fixed-size little-endian records, so a batch of
thousands of records decodes as one zero-copy numpy structured array.

    header (32 bytes)
      0  magic         4s   b"STFB"
      4  version       u16  1
      6  record_size   u16  88 for version 1 (readers skip trailing bytes of larger records)
      8  record_count  u32
     12  strings_len   u32  bytes of the string table that follows the header
     16  emitted_ms    i64  when the agent emitted the batch (epoch ms)
     24  host_index    u32  string index of the reporting host
     28  reserved      u32  0
    string table: entries of (u16 byte length, UTF-8 bytes); index 0 is always the empty string
    records (record_size bytes each), version 1 layout: see RECORD_V1
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAGIC = b"STFB"
VERSION = 1
HEADER = struct.Struct("<4sHHIIqII")
HEADER_SIZE = HEADER.size  # 32
MAX_RECORDS = 1_000_000
MAX_STRINGS_LEN = 16 * 1024 * 1024

ROLE_CLIENT = 1  # the local process opened the connection
ROLE_SERVER = 2  # the local process accepted it
PROTO_TCP = 6
PROTO_UDP = 17

RECORD_V1 = np.dtype(
    [
        ("start_ms", "<i8"),  # connection start (or first activity in the reporting interval), epoch ms
        ("end_ms", "<i8"),  # connection close (or last activity), epoch ms
        ("local_addr", "S16"),  # IPv6, or IPv4-mapped (::ffff:a.b.c.d)
        ("remote_addr", "S16"),
        ("local_port", "<u2"),
        ("remote_port", "<u2"),
        ("protocol", "u1"),  # IANA protocol number: 6 TCP, 17 UDP
        ("role", "u1"),  # ROLE_CLIENT or ROLE_SERVER
        ("flags", "<u2"),  # reserved, 0
        ("local_app", "<u4"),  # string index: the app the local process belongs to
        ("local_cluster", "<u4"),  # string index: its cluster (deployment); 0 if unknown
        ("bytes_sent", "<u8"),  # by the local end
        ("bytes_received", "<u8"),
        ("connections", "<u4"),  # connections this record stands for (>= 1)
        ("pid", "<u4"),  # local process id, 0 if unknown
    ]
)
assert RECORD_V1.itemsize == 88
assert RECORD_V1.fields is not None
_V1_FIELDS = {name: (spec[0], spec[1]) for name, spec in RECORD_V1.fields.items()}

FlowArray = npt.NDArray[np.void]


class FlowDecodeError(ValueError):
    """A flow batch is malformed; the message says why (it becomes the dead-letter reason)."""


class FlowSchemaError(FlowDecodeError):
    """A flow batch decodes, but a record in it is impossible (no app, a bad role, ends before it starts)."""


@dataclass(frozen=True, slots=True)
class FlowBatch:
    version: int
    emitted_ms: int
    host: str
    strings: tuple[str, ...]
    records: FlowArray  # structured array with RECORD_V1's fields

    def __len__(self) -> int:
        return int(self.records.shape[0])


def encode(records: FlowArray, strings: Sequence[str], host: str = "", emitted_ms: int = 0) -> bytes:
    """Encode a batch. ``strings[0]`` must be ``""``; ``records`` must have dtype RECORD_V1."""
    if records.dtype != RECORD_V1:
        raise ValueError("records must have dtype RECORD_V1")
    table = list(strings)
    if not table or table[0] != "":
        raise ValueError("strings[0] must be the empty string")
    try:
        host_index = table.index(host)
    except ValueError:
        host_index = len(table)
        table.append(host)
    parts = []
    for s in table:
        b = s.encode("utf-8")
        if len(b) > 0xFFFF:
            raise ValueError("string longer than 65535 bytes")
        parts.append(struct.pack("<H", len(b)) + b)
    strtab = b"".join(parts)
    head = HEADER.pack(
        MAGIC, VERSION, RECORD_V1.itemsize, len(records), len(strtab), emitted_ms, host_index, 0
    )
    return head + strtab + records.tobytes()


def decode(data: bytes | bytearray | memoryview) -> FlowBatch:
    """Decode and validate a batch; raises :class:`FlowDecodeError` with the reason."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    n = len(buf)
    if n < HEADER_SIZE:
        raise FlowDecodeError(f"truncated header: {n} of {HEADER_SIZE} bytes")
    magic, version, rsize, count, slen, emitted_ms, host_index, _ = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FlowDecodeError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise FlowDecodeError(f"unsupported flow schema version {version} (this reader knows {VERSION})")
    if rsize < RECORD_V1.itemsize:
        raise FlowDecodeError(f"record size {rsize} is smaller than version 1's {RECORD_V1.itemsize}")
    if count > MAX_RECORDS:
        raise FlowDecodeError(f"record count {count} exceeds {MAX_RECORDS}")
    if slen > MAX_STRINGS_LEN:
        raise FlowDecodeError(f"string table of {slen} bytes exceeds {MAX_STRINGS_LEN}")
    expected = HEADER_SIZE + slen + count * rsize
    if n != expected:
        raise FlowDecodeError(f"batch is {n} bytes, header says {expected}")
    strings = _decode_strings(bytes(buf[HEADER_SIZE : HEADER_SIZE + slen]))
    if host_index >= len(strings):
        raise FlowDecodeError(f"host index {host_index} outside string table of {len(strings)}")
    body = buf[HEADER_SIZE + slen :]
    if rsize == RECORD_V1.itemsize:
        recs = np.frombuffer(body, dtype=RECORD_V1, count=count)
    else:  # a newer minor layout with trailing fields: view with a stride
        recs = np.frombuffer(body, dtype=_strided(rsize), count=count).astype(RECORD_V1)
    if count:
        nstr = len(strings)
        if int(recs["local_app"].max()) >= nstr or int(recs["local_cluster"].max()) >= nstr:
            raise FlowSchemaError("a record names a string index outside the string table")
        if not np.all(recs["local_app"] > 0):
            raise FlowSchemaError("a record has no local app (string index 0)")
        roles = recs["role"]
        if not np.all((roles == ROLE_CLIENT) | (roles == ROLE_SERVER)):
            raise FlowSchemaError("a record has a role other than 1 (client) or 2 (server)")
        if not np.all(recs["end_ms"] >= recs["start_ms"]):
            raise FlowSchemaError("a record ends before it starts")
        if not np.all(recs["connections"] >= 1):
            raise FlowSchemaError("a record stands for zero connections")
    return FlowBatch(version, int(emitted_ms), strings[host_index], strings, recs)


def _strided(itemsize: int) -> np.dtype[np.void]:
    """RECORD_V1's fields at their offsets inside a larger record (a later minor revision)."""
    names = list(_V1_FIELDS)
    return np.dtype(
        {
            "names": names,
            "formats": [_V1_FIELDS[n][0] for n in names],
            "offsets": [_V1_FIELDS[n][1] for n in names],
            "itemsize": itemsize,
        }
    )


def _decode_strings(tab: bytes) -> tuple[str, ...]:
    out: list[str] = []
    i, n = 0, len(tab)
    while i < n:
        if i + 2 > n:
            raise FlowDecodeError("string table ends inside a length prefix")
        (ln,) = struct.unpack_from("<H", tab, i)
        i += 2
        if i + ln > n:
            raise FlowDecodeError("string table ends inside a string")
        try:
            out.append(tab[i : i + ln].decode("utf-8"))
        except UnicodeDecodeError as e:
            raise FlowDecodeError(f"string table entry {len(out)} is not UTF-8") from e
        i += ln
    if not out or out[0] != "":
        raise FlowDecodeError("string table must start with the empty string")
    return tuple(out)


def pack_ip(ip: str) -> bytes:
    """16-byte form of an address (IPv4 as IPv4-mapped IPv6)."""
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + a.packed
    return a.packed


def unpack_ip(b: bytes) -> str:
    """Text form of a 16-byte address (IPv4-mapped shown as dotted quad)."""
    b = b.ljust(16, b"\x00")  # numpy strips trailing NULs of S16 values
    if b[:12] == b"\x00" * 10 + b"\xff\xff":
        return str(ipaddress.IPv4Address(b[12:]))
    return str(ipaddress.IPv6Address(b))

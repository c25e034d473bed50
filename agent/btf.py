"""Member offsets of kernel structures, read from the running kernel's BTF (``/sys/kernel/btf/vmlinux``).

bcc compiles the BPF program against the installed Debian headers, which may be older than the
running kernel: a struct read written against them returns garbage when the layout moved. Only
tracepoint fields are safe, and the one thing they lack is the network namespace of a socket. Its
path (``sock.__sk_common.skc_net.net->ns.inum``) is read here from the kernel's own type
information and handed to the program as constants, so the program reads the right bytes.

BTF layout (``include/uapi/linux/btf.h``): a header, a type section of variable-length entries
(``name_off u32, info u32, size_or_type u32`` plus kind-specific data) and a string section. Type ids
start at 1 in file order. Members of a struct carry a bit offset (or, with ``kind_flag``, a bitfield
size in the top 8 bits and the bit offset in the low 24). Anonymous struct/union members are searched
through, as C does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT = 9, 10, 11, 12, 13, 14, 15, 16
_DECL_TAG, _TYPE_TAG, _ENUM64 = 17, 18, 19
# Bytes after the common 12-byte entry: fixed, or per member (vlen of them).
_FIXED_EXTRA = {_INT: 4, _ARRAY: 12, _VAR: 4, _DECL_TAG: 4}
_PER_MEMBER = {_STRUCT: 12, _UNION: 12, _ENUM: 8, _FUNC_PROTO: 8, _DATASEC: 12, _ENUM64: 12}
_MODIFIERS = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}


class BtfError(LookupError):
    """The kernel's BTF is missing, malformed, or lacks a structure or member that was asked for."""


@dataclass(frozen=True, slots=True)
class _Type:
    kind: int
    name: str
    ref: int  # size for structs/unions, referenced type id for pointers and modifiers
    members: tuple[tuple[str, int, int], ...]  # (name, type id, byte offset)


class Btf:
    """The named structs and the types they reference, parsed once."""

    def __init__(self, data: bytes) -> None:
        try:
            self._parse(data)
        except (struct.error, IndexError) as e:
            raise BtfError(f"malformed BTF: {e}") from e

    def _parse(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF data too short")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", data, 0)
        if magic != _MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x}")
        strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self._types: list[_Type | None] = [None]  # id 0 is void
        self._structs: dict[str, int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple[tuple[str, int, int], ...] = ()
            if kind in (_STRUCT, _UNION):
                ms = []
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos + 12 * i)
                    bits = m_off & 0xFFFFFF if kind_flag else m_off
                    ms.append((_string(strings, m_name), m_type, bits // 8))
                members = tuple(ms)
            pos += _FIXED_EXTRA.get(kind, 0) + vlen * _PER_MEMBER.get(kind, 0)
            name = _string(strings, name_off)
            self._types.append(_Type(kind, name, size_or_type, members))
            if kind == _STRUCT and name and name not in self._structs:
                self._structs[name] = len(self._types) - 1

    @classmethod
    def from_kernel(cls, path: Path = VMLINUX) -> Btf:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise BtfError(f"cannot read the kernel's BTF at {path}: {e.strerror}") from e

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a dotted member path inside ``struct_name`` (through embedded structs)."""
        tid = self._structs.get(struct_name)
        if tid is None:
            raise BtfError(f"struct {struct_name} is not in the kernel's BTF")
        total = 0
        for part in path.split("."):
            found = self._find(tid, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path!r} (at {part!r})")
            off, tid = found
            total += off
        return total

    def _find(self, tid: int, member: str) -> tuple[int, int] | None:
        """(byte offset, type id) of ``member`` in the struct/union ``tid``, searching anonymous members."""
        t = self._resolve(tid)
        if t is None or t.kind not in (_STRUCT, _UNION):
            return None
        for name, mtype, off in t.members:
            if name == member:
                return off, mtype
        for name, mtype, off in t.members:
            if not name:
                inner = self._find(mtype, member)
                if inner is not None:
                    return off + inner[0], inner[1]
        return None

    def _resolve(self, tid: int) -> _Type | None:
        for _ in range(32):  # bounded: modifier chains are short
            if tid <= 0 or tid >= len(self._types):
                return None
            t = self._types[tid]
            if t is None or t.kind not in _MODIFIERS:
                return t
            tid = t.ref
        return None


def _string(table: bytes, off: int) -> str:
    endpos = table.find(b"\x00", off)
    return table[off : endpos if endpos >= 0 else len(table)].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class NetnsOffsets:
    """Where a socket's network namespace inode number lives: ``*(sk + sk_net) + net_inum``."""

    sk_net: int  # struct sock: __sk_common.skc_net (possible_net_t, whose first member is the pointer)
    net_inum: int  # struct net: ns.inum


def netns_offsets(btf: Btf) -> NetnsOffsets:
    return NetnsOffsets(btf.offset("sock", "__sk_common.skc_net.net"), btf.offset("net", "ns.inum"))


@dataclass(frozen=True, slots=True)
class CmdlineOffsets:
    """Where the current process's arguments are: ``*(task + task_mm)`` then ``arg_start``/``arg_end``."""

    task_mm: int
    arg_start: int
    arg_end: int


def cmdline_offsets(btf: Btf) -> CmdlineOffsets:
    return CmdlineOffsets(btf.offset("task_struct", "mm"), btf.offset("mm_struct", "arg_start"),
                          btf.offset("mm_struct", "arg_end"))

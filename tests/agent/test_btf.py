"""The BTF reader: member offsets through embedded and anonymous members, malformed input refused."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.btf import Btf, BtfError, netns_offsets
from tests.conftest import require


def blob(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings)) + body + strings


def struct_type(name_off: int, size: int, members: list[tuple[int, int, int]], kind: int = 4) -> bytes:
    out = struct.pack("<III", name_off, (kind << 24) | len(members), size)
    return out + b"".join(struct.pack("<III", n, t, bits) for n, t, bits in members)


def test_offsets_through_embedded_and_anonymous_members() -> None:
    strings = b"\x00int\x00inner\x00x\x00y\x00outer\x00a\x00in\x00"
    name = {s: strings.index(s.encode() + b"\x00") for s in ("int", "inner", "x", "y", "outer", "a", "in")}
    types = [
        struct.pack("<IIII", name["int"], 1 << 24, 4, 32),  # 1: int
        struct_type(name["inner"], 8, [(name["x"], 1, 0), (name["y"], 1, 32)]),  # 2: struct inner
        struct_type(0, 8, [(name["a"], 1, 0), (name["x"], 1, 0)], kind=5),  # 3: anonymous union {a; x}
        struct.pack("<III", 0, 8 << 24, 2),  # 4: typedef of inner (modifiers are followed)
        struct_type(name["outer"], 24, [(0, 3, 64), (name["in"], 4, 128)]),  # 5: struct outer
    ]
    btf = Btf(blob(types, strings))
    assert btf.offset("inner", "y") == 4
    assert btf.offset("outer", "a") == 8  # inside the anonymous union at byte 8
    assert btf.offset("outer", "in.y") == 20
    with pytest.raises(BtfError, match=r"no member 'in\.z'"):
        btf.offset("outer", "in.z")
    with pytest.raises(BtfError, match="struct missing is not"):
        btf.offset("missing", "x")


@given(st.binary(max_size=200))
def test_garbage_is_refused_with_btf_error(data: bytes) -> None:
    with contextlib.suppress(BtfError):
        Btf(data)


def test_the_running_kernel_has_the_members_the_program_reads() -> None:
    require(Path("/sys/kernel/btf/vmlinux").exists(), "the kernel's BTF (/sys/kernel/btf/vmlinux)")
    off = netns_offsets(Btf.from_kernel())
    assert off.sk_net > 0 and off.net_inum > 0

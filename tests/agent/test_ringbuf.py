"""The bulk ring-buffer reader against the kernel's layout, built in a memfd: consumer page, producer
page, and the data area twice in a row (as the kernel maps it). Hypothesis writes any mix of
committed, discarded, foreign-sized and still-busy records at any position, wrapping or not."""

from __future__ import annotations

import mmap
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ringbuf import BUSY, DISCARD, RingReader

PAGE = mmap.PAGESIZE
SIZE = 4096
RECORD = 24

records = st.lists(st.tuples(st.sampled_from(["ok", "ok", "ok", "discard", "other", "busy"]),
                             st.binary(min_size=RECORD, max_size=RECORD)), max_size=60)


def slot(length: int) -> int:
    return (length + 8 + 7) & ~7


@settings(max_examples=150, deadline=None)
@given(records, st.integers(min_value=0, max_value=2**40).map(lambda x: x * 8))
def test_reads_what_is_committed_in_order(recs: list[tuple[str, bytes]], cons: int) -> None:
    data = bytearray(SIZE)
    pos, expected, stop = cons, [], None
    for kind, payload in recs:
        length = RECORD + 8 if kind == "other" else RECORD
        if pos + slot(length) - cons > SIZE:
            break
        head = length | (DISCARD if kind == "discard" else 0) | (BUSY if kind == "busy" else 0)
        body = struct.pack("<II", head, 0) + (payload if kind != "other" else payload + b"x" * 8)
        for i, b in enumerate(body):
            data[(pos + i) % SIZE] = b
        if kind == "busy" and stop is None:
            stop = pos
        if kind == "ok" and stop is None:
            expected.append(payload)
        pos += slot(length)
    fd = os.memfd_create("ring")
    try:
        os.ftruncate(fd, 2 * PAGE + 2 * SIZE)
        with mmap.mmap(fd, 2 * PAGE + 2 * SIZE) as m:
            struct.pack_into("<Q", m, 0, cons)
            struct.pack_into("<Q", m, PAGE, pos)
            m[2 * PAGE : 2 * PAGE + SIZE] = bytes(data)
            m[2 * PAGE + SIZE : 2 * PAGE + 2 * SIZE] = bytes(data)
            reader = RingReader(fd, SIZE, RECORD)
            try:
                assert reader.read() == b"".join(expected)
                assert struct.unpack_from("<Q", m, 0)[0] == (stop if stop is not None else pos)
                assert reader.read() == b""  # nothing new: nothing read twice
            finally:
                reader.close()
    finally:
        os.close(fd)

"""Flow batch wire format v1: round trip, and malformed input only ever raises FlowDecodeError."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from topology.wire.flow import (
    HEADER,
    HEADER_SIZE,
    RECORD_V1,
    ROLE_CLIENT,
    ROLE_SERVER,
    FlowDecodeError,
    FlowSchemaError,
    decode,
    encode,
    pack_ip,
    unpack_ip,
)

Batch = tuple[np.ndarray, list[str], str, int]
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
addresses = st.one_of(
    st.ip_addresses(v=4).map(lambda a: pack_ip(str(a))),
    st.ip_addresses(v=6).map(lambda a: a.packed),
)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    """A valid batch: strings drawn by hypothesis, record fields from a seeded generator (fast)."""
    strings = ["", *draw(st.lists(names, min_size=1, max_size=6))]
    n = draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    recs = np.zeros(n, dtype=RECORD_V1)
    recs["start_ms"] = rng.integers(0, 2**62, n)
    recs["end_ms"] = recs["start_ms"] + rng.integers(0, 10**9, n)
    pool = [draw(addresses) for _ in range(3)]
    recs["local_addr"] = [pool[i] for i in rng.integers(0, 3, n)]
    recs["remote_addr"] = [pool[i] for i in rng.integers(0, 3, n)]
    recs["local_port"] = rng.integers(0, 65536, n)
    recs["remote_port"] = rng.integers(0, 65536, n)
    recs["protocol"] = rng.choice([6, 17], n)
    recs["role"] = rng.choice([ROLE_CLIENT, ROLE_SERVER], n)
    recs["local_app"] = rng.integers(1, len(strings), n)
    recs["local_cluster"] = rng.integers(0, len(strings), n)
    recs["bytes_sent"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    recs["bytes_received"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    recs["connections"] = rng.integers(1, 2**32, n)
    recs["pid"] = rng.integers(0, 2**32, n)
    host = draw(st.one_of(st.sampled_from(strings), names))
    return recs, strings, host, draw(st.integers(-(2**63), 2**63 - 1))


@given(batches())
def test_encode_decode_round_trip(b: Batch) -> None:
    recs, strings, host, emitted = b
    out = decode(encode(recs, strings, host, emitted))
    assert out.version == 1
    assert out.emitted_ms == emitted
    assert out.host == host
    assert list(out.strings[: len(strings)]) == strings
    assert len(out) == len(recs)
    assert out.records.tobytes() == recs.tobytes()
    for a, b2 in zip(out.records["remote_addr"], recs["remote_addr"], strict=True):
        assert unpack_ip(bytes(a)) == unpack_ip(bytes(b2))


def _decode_or_reason(data: bytes) -> None:
    try:
        decode(data)
    except FlowDecodeError as e:
        assert str(e)  # the reason becomes the dead-letter message


@given(st.binary(max_size=400))
def test_random_bytes_only_raise_flow_decode_error(data: bytes) -> None:
    _decode_or_reason(data)


@given(st.binary(max_size=200))
def test_random_bytes_behind_a_valid_header_prefix(data: bytes) -> None:
    _decode_or_reason(b"STFB\x01\x00" + data)


@given(batches(), st.data())
def test_truncation_is_always_rejected(b: Batch, data: st.DataObject) -> None:
    blob = encode(*b)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(FlowDecodeError):
        decode(blob[:cut])


@given(batches(), st.data())
def test_bit_flips_never_crash(b: Batch, data: st.DataObject) -> None:
    blob = bytearray(encode(*b))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    _decode_or_reason(bytes(blob))


@given(batches(), st.integers(0, 7), st.integers(0, 2**32 - 1))
def test_header_fields_set_to_anything_never_crash(b: Batch, field: int,
                                                   value: int) -> None:
    blob = bytearray(encode(*b))
    parts = list(HEADER.unpack_from(blob, 0))
    if field == 0:
        parts[0] = value.to_bytes(4, "little")
    elif field == 5:
        parts[5] = value - 2**31
    else:
        limit = 0xFFFF if field in (1, 2) else 0xFFFFFFFF
        parts[field] = value & limit
    blob[:HEADER_SIZE] = HEADER.pack(*parts)
    _decode_or_reason(bytes(blob))


def _valid_blob(n: int = 2, **fields: int) -> bytes:
    recs = np.zeros(n, dtype=RECORD_V1)
    recs["start_ms"], recs["end_ms"] = 1_700_000_000_000, 1_700_000_001_000
    recs["role"], recs["local_app"], recs["connections"] = ROLE_CLIENT, 1, 1
    for k, v in fields.items():
        recs[k] = v
    return encode(recs, ["", "app"], "host", 1)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"local_app": 0}, "no local app"),
        ({"local_app": 7}, "outside the string table"),
        ({"role": 3}, "role"),
        ({"end_ms": 0}, "ends before it starts"),
        ({"connections": 0}, "zero connections"),
    ],
)
def test_invalid_records_are_rejected_with_the_reason(fields: dict[str, int], reason: str) -> None:
    with pytest.raises(FlowSchemaError, match=reason):  # a FlowDecodeError that says the layout was fine
        decode(_valid_blob(**fields))


def test_header_errors_name_the_problem() -> None:
    blob = _valid_blob()
    with pytest.raises(FlowDecodeError, match="bad magic"):
        decode(b"XXXX" + blob[4:])
    with pytest.raises(FlowDecodeError, match="unsupported flow schema version 2"):
        decode(blob[:4] + struct.pack("<H", 2) + blob[6:])
    with pytest.raises(FlowDecodeError, match="truncated header"):
        decode(blob[:10])
    with pytest.raises(FlowDecodeError, match="header says"):
        decode(blob + b"\x00")


def test_larger_records_of_a_later_minor_revision_are_read() -> None:
    recs = np.zeros(1, dtype=RECORD_V1)
    recs["start_ms"], recs["end_ms"], recs["role"], recs["local_app"], recs["connections"] = 5, 6, 2, 1, 3
    strtab = b"\x00\x00\x03\x00app"
    body = recs.tobytes() + b"\xee" * 8  # 8 trailing bytes of an unknown newer field
    blob = HEADER.pack(b"STFB", 1, 96, 1, len(strtab), 0, 0, 0) + strtab + body
    out = decode(blob)
    assert out.records.tobytes() == recs.tobytes()


def test_ip_packing_round_trip() -> None:
    assert unpack_ip(pack_ip("10.1.2.0")) == "10.1.2.0"
    assert unpack_ip(pack_ip("2001:db8::")) == "2001:db8::"
    assert pack_ip("10.0.0.1") == pack_ip("::ffff:10.0.0.1")
    # numpy strips trailing NULs of S16 values; unpack_ip pads them back
    arr = np.zeros(1, dtype="S16")
    arr[0] = pack_ip("10.0.0.0")
    assert unpack_ip(bytes(arr[0])) == "10.0.0.0"

"""VPC flow logs, the reader: formats, skipped and malformed lines (aggregation: stages/test_vpc.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topology.wire.vpcflow import DEFAULT_FIELDS, VpcFlowError, VpcFlowParser, VpcFlowRecord

T = 1_700_000_040
V2 = "2 123456789012 eni-1 {src} {dst} {sp} {dp} 6 20 {b} {s} {e} ACCEPT OK"


def v2(src: str = "10.0.0.1", dst: str = "10.0.0.2", sp: int = 40000, dp: int = 443, b: int = 100,
       s: int = T + 5, e: int = T + 14) -> str:
    return V2.format(src=src, dst=dst, sp=sp, dp=dp, b=b, s=s, e=e)


def test_default_version_2_line() -> None:
    r = VpcFlowParser().parse_line(v2())
    assert r == VpcFlowRecord(src="10.0.0.1", dst="10.0.0.2", srcport=40000, dstport=443, protocol=6,
                              bytes=100, start=T + 5, end=T + 14, packets=20, action="ACCEPT",
                              interface_id="eni-1")


def test_custom_format_from_a_header_uses_packet_addresses() -> None:
    p = VpcFlowParser()
    lines = [
        "version interface-id srcaddr dstaddr pkt-srcaddr pkt-dstaddr srcport dstport protocol bytes "
        "start end tcp-flags flow-direction traffic-path log-status",
        f"5 eni-9 10.0.5.5 10.0.0.2 10.1.1.1 10.0.0.2 40000 443 6 100 {T} {T + 60} 2 ingress - OK",
        f"5 eni-9 10.0.0.2 10.0.5.5 - - 443 40000 6 900 {T} {T + 60} 18 egress 1 OK",
    ]
    records, errors = p.parse_lines(lines)
    assert errors == []
    assert [(r.src, r.dst, r.tcp_flags, r.flow_direction) for r in records] == [
        ("10.1.1.1", "10.0.0.2", 2, "ingress"), ("10.0.0.2", "10.0.5.5", 18, "egress")]
    assert p.counters["headers"] == 1 and p.fields[0] == "version"


def test_format_strings_with_placeholders() -> None:
    p = VpcFlowParser.from_format(
        "${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${bytes} ${start} ${end}")
    r = p.parse_line(f"10.0.0.1 2001:db8::1 1 2 17 5 {T} {T}")
    assert r is not None and (r.dst, r.protocol, r.action, r.tcp_flags) == ("2001:db8::1", 17, None, None)
    with pytest.raises(VpcFlowError, match="lacks the field"):
        VpcFlowParser.from_format("${srcaddr} ${srcport}")
    with pytest.raises(VpcFlowError, match="not a flow-log format"):
        VpcFlowParser.from_format("10.0.0.1 srcport")


def test_nodata_skipdata_and_blank_lines_are_skipped_and_counted() -> None:
    p = VpcFlowParser()
    records, errors = p.parse_lines([
        f"2 123456789012 eni-1 - - - - - - - {T} {T + 60} - NODATA",
        f"2 123456789012 eni-1 - - - - - - - {T} {T + 60} - SKIPDATA",
        "   ",
        v2(),
    ])
    assert len(records) == 1 and errors == []
    assert (p.counters["nodata"], p.counters["skipdata"], p.counters["records"]) == (1, 1, 1)


@pytest.mark.parametrize(("line", "reason"), [
    ("2 1 eni-1 10.0.0.1", "expected 14 fields"),
    (v2(src="10.0.0.300"), "'srcaddr' is not an IP address"),
    (v2().replace(" 40000 ", " -1 "), "'srcport' is not a non-negative integer"),
    (v2().replace(" 40000 ", " 70000 "), "'srcport' is out of range"),
    (v2(e=T), "ends"),
    (v2().replace(" ACCEPT ", " MAYBE "), "unknown action"),
    (v2().replace(" OK", " WEIRD"), "unknown log-status"),
    (v2().replace(" 10.0.0.2 ", " - "), "destination address is missing"),
    (v2().replace(" 6 20 ", " - 20 "), "protocol is missing"),
    (v2().replace(f" {T + 5} ", " - "), "start or end time is missing"),
    (v2().replace(" 40000 ", " ٣ "), "not a non-negative integer"),  # a non-ASCII digit
])
def test_malformed_lines_raise_with_the_reason(line: str, reason: str) -> None:
    p = VpcFlowParser()
    with pytest.raises(VpcFlowError, match=reason):
        p.parse_line(line)
    assert p.counters["malformed"] == 1
    records, errors = p.parse_lines([line, v2()])
    assert len(records) == 1 and errors[0][0] == 1 and reason.split("'")[0] in errors[0][2]


token = st.one_of(st.sampled_from(["-", "OK", "NODATA", "ACCEPT", "REJECT", "10.0.0.1", "::1", "6", "eni-1",
                                   "2", "srcport", "${x}", "٣"]),
                  st.text(min_size=1, max_size=6).filter(lambda s: not any(c.isspace() for c in s)))


@given(st.lists(token, min_size=0, max_size=20))
def test_any_line_parses_or_raises_vpc_flow_error(tokens: list[str]) -> None:
    p = VpcFlowParser()
    try:
        p.parse_line(" ".join(tokens))
    except VpcFlowError as e:
        assert str(e)


records = st.builds(
    VpcFlowRecord,
    src=st.ip_addresses(v=4).map(str), dst=st.ip_addresses(v=4).map(str),
    srcport=st.integers(0, 65535), dstport=st.integers(0, 65535), protocol=st.sampled_from([6, 17]),
    bytes=st.integers(0, 2**40), start=st.integers(T, T + 120), end=st.just(T + 200),
    packets=st.integers(0, 1000), action=st.just("ACCEPT"), tcp_flags=st.none(),
    interface_id=st.sampled_from(["eni-1", "eni-2"]),
)


@given(records)
def test_format_and_parse_round_trip(r: VpcFlowRecord) -> None:
    values = {"version": "2", "account-id": "123456789012", "interface-id": r.interface_id, "srcaddr": r.src,
              "dstaddr": r.dst, "srcport": r.srcport, "dstport": r.dstport, "protocol": r.protocol,
              "packets": r.packets, "bytes": r.bytes, "start": r.start, "end": r.end, "action": r.action,
              "log-status": "OK"}
    assert VpcFlowParser().parse_line(" ".join(str(values[f]) for f in DEFAULT_FIELDS)) == r

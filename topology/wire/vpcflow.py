"""AWS VPC Flow Logs (text format): the reader (topic ``topology.vpcflows``, HTTP ``POST /ingest/vpcflows``).

Lines are space-separated fields. The default format is the 14 version-2 fields
(:data:`DEFAULT_FIELDS`); custom formats choose fields and order, and log files start with a
header line naming them (``version account-id interface-id srcaddr ...``, or ``${srcaddr}``
style), which :meth:`VpcFlowParser.parse_lines` follows. ``-`` means "no value". Lines with
``log-status`` NODATA or SKIPDATA carry no traffic and are skipped (counted). A malformed line
raises :class:`VpcFlowError` whose message is the reason (the caller dead-letters the line).

Records are turned into NETWORK stage-2 input by :mod:`topology.stages.vpc` (windowing,
orientation, de-duplication of the interfaces that logged the same traffic); admission
(:func:`topology.admit.admit_vpcflows`) applies the time policy to each record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from topology.wire.flow import pack_ip, unpack_ip

DEFAULT_FIELDS: tuple[str, ...] = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport", "protocol",
    "packets", "bytes", "start", "end", "action", "log-status",
)
#: Fields of versions 3 to 5 (and later) that this reader knows; others in a header are ignored.
KNOWN_FIELDS: frozenset[str] = frozenset(DEFAULT_FIELDS) | {
    "vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr", "region",
    "az-id", "sublocation-type", "sublocation-id", "pkt-src-aws-service", "pkt-dst-aws-service",
    "flow-direction", "traffic-path", "ecs-cluster-arn", "ecs-cluster-name", "ecs-container-instance-arn",
    "ecs-container-instance-id", "ecs-container-id", "ecs-second-container-id", "ecs-service-name",
    "ecs-task-definition-arn", "ecs-task-arn", "ecs-task-id", "reject-reason",
}
_NAME = re.compile(r"^\$?\{?([a-z][a-z0-9_-]*)\}?$")
_MAX_TIME = 1 << 40  # epoch seconds; anything larger is garbage


class VpcFlowError(ValueError):
    """A flow-log line is malformed; the message says why."""


@dataclass(frozen=True, slots=True)
class VpcFlowRecord:
    """One flow-log record, with the addresses to attribute it by (``pkt-*`` when present)."""

    src: str
    dst: str
    srcport: int
    dstport: int
    protocol: int
    bytes: int
    start: int  # epoch seconds (start of the capture interval)
    end: int
    packets: int | None = None
    action: str | None = None  # ACCEPT | REJECT
    tcp_flags: int | None = None
    interface_id: str | None = None
    flow_direction: str | None = None  # ingress | egress


class VpcFlowParser:
    """Parses flow-log lines in one format (changed by header lines)."""

    def __init__(self, fields: Sequence[str] = DEFAULT_FIELDS) -> None:
        self.fields: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._canon: dict[str, str] = {}
        self.counters: dict[str, int] = {
            "lines": 0, "headers": 0, "records": 0, "nodata": 0, "skipdata": 0, "malformed": 0,
        }
        self.set_format(fields)

    @classmethod
    def from_format(cls, fmt: str) -> VpcFlowParser:
        """A parser for a format string such as ``"${version} ${srcaddr} ..."`` or a header line."""
        names = _header_names(fmt)
        if names is None:
            raise VpcFlowError(f"not a flow-log format: {fmt[:200]!r}")
        return cls(names)

    def set_format(self, fields: Sequence[str]) -> None:
        names = tuple(f.replace("_", "-") for f in fields)
        if len(set(names)) != len(names):
            raise VpcFlowError(f"format names a field twice: {' '.join(names)}")
        have = set(names)
        missing = [f for f in ("srcport", "dstport", "protocol", "bytes", "start", "end") if f not in have]
        if not have & {"srcaddr", "pkt-srcaddr"}:
            missing.append("srcaddr")
        if not have & {"dstaddr", "pkt-dstaddr"}:
            missing.append("dstaddr")
        if missing:
            raise VpcFlowError(f"format lacks the field(s) {', '.join(missing)} needed to build edges")
        self.fields = names
        self._index = {f: i for i, f in enumerate(names)}

    # -- parsing ----------------------------------------------------------------------------------
    def parse_line(self, line: str) -> VpcFlowRecord | None:
        """One record; None for blank, header, NODATA and SKIPDATA lines. Raises VpcFlowError."""
        self.counters["lines"] += 1
        try:
            return self._parse(line)
        except VpcFlowError:
            self.counters["malformed"] += 1
            raise

    def parse_lines(self, lines: Iterable[str]) -> tuple[list[VpcFlowRecord], list[tuple[int, str, str]]]:
        """Records of many lines, and (line number, line, reason) of the malformed ones."""
        records: list[VpcFlowRecord] = []
        errors: list[tuple[int, str, str]] = []
        for n, line in enumerate(lines, 1):
            try:
                r = self.parse_line(line)
            except VpcFlowError as e:
                errors.append((n, line, str(e)))
                continue
            if r is not None:
                records.append(r)
        return records, errors

    def _parse(self, line: str) -> VpcFlowRecord | None:
        tokens = line.split()
        if not tokens:
            return None
        lead = tokens[0][0]
        if lead == "$" or "a" <= lead <= "z":  # data lines hold numbers and addresses: maybe a header
            names = _header_names(line)
            if names is not None:
                self.set_format(names)
                self.counters["headers"] += 1
                return None
        if len(tokens) != len(self.fields):
            raise VpcFlowError(
                f"expected {len(self.fields)} fields ({' '.join(self.fields)}), got {len(tokens)}")
        ix = self._index
        status = tokens[ix["log-status"]] if "log-status" in ix else "OK"
        if status in ("NODATA", "SKIPDATA"):
            self.counters["nodata" if status == "NODATA" else "skipdata"] += 1
            return None
        if status not in ("OK", "-"):
            raise VpcFlowError(f"unknown log-status {status!r}")
        src = self._address(tokens, "pkt-srcaddr", "srcaddr")
        dst = self._address(tokens, "pkt-dstaddr", "dstaddr")
        if src is None and dst is None and "log-status" not in ix:
            self.counters["nodata"] += 1  # a no-traffic record in a format without log-status
            return None
        if src is None or dst is None:
            raise VpcFlowError(f"{'source' if src is None else 'destination'} address is missing")
        start = _int(tokens, ix, "start", _MAX_TIME)
        end = _int(tokens, ix, "end", _MAX_TIME)
        if start is None or end is None:
            raise VpcFlowError("start or end time is missing")
        if end < start:
            raise VpcFlowError(f"record ends ({end}) before it starts ({start})")
        protocol = _int(tokens, ix, "protocol", 255)
        if protocol is None:
            raise VpcFlowError("protocol is missing")
        action = _opt(tokens, ix, "action")
        if action is not None and action not in ("ACCEPT", "REJECT"):
            raise VpcFlowError(f"unknown action {action!r}")
        direction = _opt(tokens, ix, "flow-direction")
        if direction is not None and direction not in ("ingress", "egress"):
            raise VpcFlowError(f"unknown flow-direction {direction!r}")
        self.counters["records"] += 1
        return VpcFlowRecord(
            src=src,
            dst=dst,
            srcport=_int(tokens, ix, "srcport", 0xFFFF) or 0,
            dstport=_int(tokens, ix, "dstport", 0xFFFF) or 0,
            protocol=protocol,
            bytes=_int(tokens, ix, "bytes", 1 << 62) or 0,
            start=start,
            end=end,
            packets=_int(tokens, ix, "packets", 1 << 62),
            action=action,
            tcp_flags=_int(tokens, ix, "tcp-flags", 0xFFFF),
            interface_id=_opt(tokens, ix, "interface-id"),
            flow_direction=direction,
        )

    def _address(self, tokens: list[str], preferred: str, fallback: str) -> str | None:
        for name in (preferred, fallback):
            i = self._index.get(name)
            if i is None or tokens[i] == "-":
                continue
            text = tokens[i]
            canon = self._canon.get(text)
            if canon is None:
                try:
                    canon = unpack_ip(pack_ip(text))
                except ValueError:
                    raise VpcFlowError(f"field {name!r} is not an IP address: {text[:64]!r}") from None
                if len(self._canon) >= 100_000:
                    self._canon.clear()
                self._canon[text] = canon
            return canon
        return None


def _header_names(line: str) -> list[str] | None:
    """Field names if ``line`` is a header / format string, else None."""
    names: list[str] = []
    for token in line.split():
        m = _NAME.match(token)
        if m is None:
            return None
        names.append(m.group(1).replace("_", "-"))
    if "srcport" not in names:
        return None
    return names


def _opt(tokens: list[str], ix: dict[str, int], name: str) -> str | None:
    i = ix.get(name)
    if i is None or tokens[i] == "-":
        return None
    return tokens[i]


def _int(tokens: list[str], ix: dict[str, int], name: str, maximum: int) -> int | None:
    text = _opt(tokens, ix, name)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise VpcFlowError(f"field {name!r} is not a non-negative integer: {text[:64]!r}")
    v = int(text)
    if v > maximum:
        raise VpcFlowError(f"field {name!r} is out of range: {v}")
    return v

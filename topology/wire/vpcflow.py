"""AWS VPC Flow Logs (text format) into NETWORK stage-2 input (topic ``topology.vpcflows``).

Lines are space-separated fields. The default format is the 14 version-2 fields
(:data:`DEFAULT_FIELDS`); custom formats choose fields and order, and log files start with a
header line naming them (``version account-id interface-id srcaddr ...``, or ``${srcaddr}``
style), which :meth:`VpcFlowParser.parse_lines` follows. ``-`` means "no value". Lines with
``log-status`` NODATA or SKIPDATA carry no traffic and are skipped (counted). A malformed line
raises :class:`VpcFlowError` whose message is the reason (the caller dead-letters the line).

Design: a flow-log record names *both* ends of the traffic, but neither end's workload (the
node agent knows its local workload; a flow log only knows addresses). Records are therefore
turned into *two-sided* :class:`~topology.stages.network_stage1.FlowAggregate` records: empty
``local_app``, ``local_addr`` = the client end, ``remote_addr`` = the server end, role client.
Stage 2 resolves both addresses through time-ranged ownership at the start time, runs the same
intermediary joins as for agent data (an intermediary on the client end is turned around into the
backend's view), and emits Side.PAIR partials: when the node agents report the same traffic
(Side.CLIENT / Side.SERVER), stage 3 takes the maximum instead of adding.

Attribution and orientation, in :meth:`VpcFlowParser.aggregate`:

* ``pkt-srcaddr`` / ``pkt-dstaddr`` are used when present: behind NAT gateways, transit gateways,
  EKS pods and secondary addresses they are the real endpoints; ``srcaddr``/``dstaddr`` name the
  network interface.
* Client and server: TCP ``tcp-flags`` (OR-ed over the capture interval; AWS reports ACK only
  with SYN) with SYN but not ACK marks the client -> server record; SYN-ACK (18) marks the reply.
  Without flags (other protocols, formats without the field, or an interval in the middle of a
  connection) the end with the lower port is taken as the server, and on equal ports the
  destination. This fallback is a heuristic: it is right for the usual ephemeral client ports.
* The same traffic is logged by every interface it crosses (the client's and the server's):
  records of one 5-tuple, direction and window from several interfaces count once (the largest),
  then 5-tuples add up. This holds within one :meth:`aggregate` call (pass a capture interval's
  records together) and needs ``interface-id`` in the format (without it the views add up).
* Connections: a 5-tuple counts as one connection when one of its records has SYN set, or when the
  format has no ``tcp-flags`` at all (then a connection that spans several windows is counted in
  each). Bytes of client -> server records are ``bytes_sent``, of replies ``bytes_received``.
* ``action`` REJECT records are not traffic that reached the peer: skipped and counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from topology.stages.network_stage1 import FlowAggregate
from topology.wire.flow import ROLE_CLIENT, pack_ip, unpack_ip

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
_SYN, _ACK = 2, 16
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
    """Parses flow-log lines in one format (changed by header lines) and aggregates the records."""

    def __init__(self, fields: Sequence[str] = DEFAULT_FIELDS) -> None:
        self.fields: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._canon: dict[str, str] = {}
        self.counters: dict[str, int] = {
            "lines": 0, "headers": 0, "records": 0, "nodata": 0, "skipdata": 0, "malformed": 0,
            "rejected": 0, "aggregates": 0,
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

    # -- aggregation ------------------------------------------------------------------------------
    def aggregate(self, records: Iterable[VpcFlowRecord], window_seconds: int = 10) -> list[FlowAggregate]:
        """Two-sided aggregates (client end local, server end remote) per window; see the module docstring."""
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        # (window, client, server, client port, server port, protocol) -> per direction, per interface:
        # [bytes, first start, last start, last end, syn seen, flags known]
        tuples: dict[tuple[int, str, str, int, int, int], dict[tuple[bool, str | None], list[int]]] = {}
        for r in records:
            if r.action == "REJECT":
                self.counters["rejected"] += 1
                continue
            forward = _client_to_server(r)
            client, server = (r.src, r.dst) if forward else (r.dst, r.src)
            cport, sport = (r.srcport, r.dstport) if forward else (r.dstport, r.srcport)
            w = r.start - r.start % window_seconds
            views = tuples.setdefault((w, client, server, cport, sport, r.protocol), {})
            v = views.get((forward, r.interface_id))
            flags = r.tcp_flags
            syn = int(flags is not None and bool(flags & _SYN))
            known = int(flags is not None)
            if v is None:
                views[(forward, r.interface_id)] = [r.bytes, r.start, r.start, r.end, syn, known]
            else:
                v[0] += r.bytes
                v[1] = min(v[1], r.start)
                v[2] = max(v[2], r.start)
                v[3] = max(v[3], r.end)
                v[4] |= syn
                v[5] |= known
        # 5-tuples -> (window, client, server, server port, protocol)
        sums: dict[tuple[int, str, str, int, int], list[int]] = {}
        for (w, client, server, _cport, sport, proto), views in tuples.items():
            sent = max((v[0] for (fwd, _), v in views.items() if fwd), default=0)
            received = max((v[0] for (fwd, _), v in views.items() if not fwd), default=0)
            syn = any(v[4] for v in views.values())
            known = any(v[5] for v in views.values())
            conns = 1 if syn or not known else 0
            first = min(v[1] for v in views.values())
            last_start = max(v[2] for v in views.values())
            last_end = max(v[3] for v in views.values())
            s = sums.get((w, client, server, sport, proto))
            if s is None:
                sums[(w, client, server, sport, proto)] = [conns, sent, received, first, last_start, last_end]
            else:
                s[0] += conns
                s[1] += sent
                s[2] += received
                s[3] = min(s[3], first)
                s[4] = max(s[4], last_start)
                s[5] = max(s[5], last_end)
        out = [
            FlowAggregate(w, window_seconds, "", "", ROLE_CLIENT, server, sport, proto, conns, sent, received,
                          first * 1000, last_start * 1000, last_end * 1000, local_addr=client)
            for (w, client, server, sport, proto), (conns, sent, received, first, last_start, last_end)
            in sorted(sums.items())
        ]
        self.counters["aggregates"] += len(out)
        return out


def _client_to_server(r: VpcFlowRecord) -> bool:
    """True if ``r.src`` is the client end of the connection (see the module docstring)."""
    if r.protocol == 6 and r.tcp_flags is not None:
        f = r.tcp_flags & (_SYN | _ACK)
        if f == _SYN:
            return True
        if f == _SYN | _ACK:
            return False
    return r.dstport <= r.srcport


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

"""NETWORK stage 1 for cloud flow logs: VPC flow-log records (:mod:`topology.wire.vpcflow`) into
two-sided :class:`~topology.stages.network_stage1.FlowAggregate` records for stage 2.

A flow-log record names *both* ends of the traffic, but neither end's workload (the
node agent knows its local workload; a flow log only knows addresses). Records are therefore
turned into *two-sided* :class:`~topology.stages.network_stage1.FlowAggregate` records: empty
``local_app``, ``local_addr`` = the client end, ``remote_addr`` = the server end, role client.
Stage 2 resolves both addresses through time-ranged ownership at the start time, runs the same
intermediary joins as for agent data (an intermediary on the client end is turned around into the
backend's view), and emits Side.PAIR partials: when the node agents report the same traffic
(Side.CLIENT / Side.SERVER), stage 3 takes the maximum instead of adding.

Attribution and orientation:

* ``pkt-srcaddr`` / ``pkt-dstaddr`` are used when present (the reader picks them): behind NAT
  gateways, transit gateways, EKS pods and secondary addresses they are the real endpoints;
  ``srcaddr``/``dstaddr`` name the network interface.
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

from collections.abc import Iterable

from topology.stages.network_stage1 import FlowAggregate
from topology.wire.flow import ROLE_CLIENT
from topology.wire.vpcflow import VpcFlowRecord

_SYN, _ACK = 2, 16


class VpcStage:
    """Aggregates flow-log records per window; counts REJECT records and the aggregates made."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {"rejected": 0, "aggregates": 0}

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

"""Readable flow records -> encoded flow batches (through topology.wire.flow.encode), for tests.

A record is a dict: ``start``/``end`` (epoch seconds), ``app``, ``cluster`` (optional), ``role``
("client" | "server"), ``local`` and ``remote`` ("addr:port", IPv6 as "[addr]:port"),
``proto`` ("tcp" | "udp", default tcp), ``sent``, ``received``, ``connections`` (default 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from topology.wire.flow import PROTO_TCP, PROTO_UDP, RECORD_V1, ROLE_CLIENT, ROLE_SERVER, encode, pack_ip


def split_endpoint(text: str) -> tuple[str, int]:
    if text.startswith("["):
        addr, _, port = text[1:].partition("]:")
    else:
        addr, _, port = text.rpartition(":")
    return addr, int(port)


def encode_records(records: Sequence[dict[str, Any]], host: str = "host-1", emitted: float | None = None,
                   strings: Sequence[str] = ("",)) -> bytes:
    """One flow batch holding ``records``; ``strings`` may pre-seed the string table (e.g. duplicates)."""
    table = list(strings)

    def index(s: str) -> int:
        if s not in table:
            table.append(s)
        return table.index(s)

    recs = np.zeros(len(records), dtype=RECORD_V1)
    for i, r in enumerate(records):
        laddr, lport = split_endpoint(r["local"])
        raddr, rport = split_endpoint(r["remote"])
        recs[i]["start_ms"] = round(r["start"] * 1000)
        recs[i]["end_ms"] = round(r.get("end", r["start"]) * 1000)
        recs[i]["local_addr"] = pack_ip(laddr)
        recs[i]["remote_addr"] = pack_ip(raddr)
        recs[i]["local_port"] = lport
        recs[i]["remote_port"] = rport
        recs[i]["protocol"] = {"tcp": PROTO_TCP, "udp": PROTO_UDP}[r.get("proto", "tcp")]
        recs[i]["role"] = {"client": ROLE_CLIENT, "server": ROLE_SERVER}[r["role"]]
        recs[i]["local_app"] = index(r["app"])
        recs[i]["local_cluster"] = index(r["cluster"]) if r.get("cluster") else 0
        recs[i]["bytes_sent"] = r.get("sent", 0)
        recs[i]["bytes_received"] = r.get("received", 0)
        recs[i]["connections"] = r.get("connections", 1)
    if emitted is None:
        emitted = max((r.get("end", r["start"]) for r in records), default=0.0)
    return encode(recs, table, host, round(emitted * 1000))

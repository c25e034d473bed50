"""NETWORK layer emission: one flow batch (wire format v1) per host agent per step.

Connections per edge and step are Poisson; the agent folds them into at most ``MAX_RECORDS_PER_EDGE``
records per edge (one per client/server instance pair). Both ends of a workload-to-workload
connection report. Paths through a load balancer, API gateway or proxy point both records at the
intermediary's address; through a NAT gateway the client points at the real backend and the backend
sees the NAT's address. Sinks (databases, managed brokers, external hosts) have no agent.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from topology.model import Layer
from topology.sim.fleet import CallKind
from topology.sim.world import World
from topology.timewindow import MINUTE
from topology.wire import flow

MAX_RECORDS_PER_EDGE = 6
EPHEMERAL_LOW = 32768
EPHEMERAL_SPAN = 28000

IntArray = npt.NDArray[np.int64]


class _Tables:
    """Numpy views of the world at one version: instances, sinks and active edges as index arrays."""

    def __init__(self, world: World, strings: dict[str, int]) -> None:
        fleet = world.fleet

        def sid(s: str) -> int:
            i = strings.get(s)
            if i is None:
                i = strings[s] = len(strings)
            return i

        ips: list[int] = []
        hosts: list[int] = []
        app_sid: list[int] = []
        cl_sid: list[int] = []
        pids: list[int] = []
        app_off: dict[str, tuple[int, int]] = {}
        self.index: dict[int, int] = {}  # id(instance) -> row
        for a in fleet.apps.values():
            off = len(ips)
            a_sid = sid(a.name)
            for c in a.clusters:
                c_sid = sid(c.name)
                for inst in c.instances:
                    self.index[id(inst)] = len(ips)
                    ips.append(inst.ip)
                    hosts.append(inst.host)
                    app_sid.append(a_sid)
                    cl_sid.append(c_sid)
                    pids.append(inst.pid)
            app_off[a.name] = (off, len(ips) - off)
        self.inst_ip = np.array(ips, dtype=np.uint32)
        self.inst_host = np.array(hosts, dtype=np.int64)
        self.inst_app = np.array(app_sid, dtype=np.int64)
        self.inst_cluster = np.array(cl_sid, dtype=np.int64)
        self.inst_pid = np.array(pids, dtype=np.uint32)
        sink_ips: list[int] = []
        sink_off: dict[str, tuple[int, int]] = {}
        for s in fleet.sinks.values():
            sink_off[s.name] = (len(sink_ips), len(s.ips))
            sink_ips.extend(s.ips)
        self.sink_ip = np.array(sink_ips or [0], dtype=np.uint32)

        edges = world.active_edges()
        self.edges = edges
        n = len(edges)
        self.src_off = np.zeros(n, np.int64)
        self.src_cnt = np.zeros(n, np.int64)
        self.dst_off = np.zeros(n, np.int64)
        self.dst_cnt = np.zeros(n, np.int64)
        self.dst_app = np.zeros(n, bool)  # the target has an agent (a fleet app)
        self.via_ip = np.zeros(n, np.uint32)
        self.via_port = np.zeros(n, np.int64)
        self.nat_ip = np.zeros(n, np.uint32)
        self.port = np.zeros(n, np.int64)
        self.lam = np.zeros(n, np.float64)
        self.bytes_mean = np.zeros(n, np.float64)
        for i, e in enumerate(edges):
            self.src_off[i], self.src_cnt[i] = app_off[e.src]
            if e.dst in fleet.apps:
                self.dst_off[i], self.dst_cnt[i] = app_off[e.dst]
                self.dst_app[i] = True
                self.port[i] = fleet.apps[e.dst].port
            else:
                self.dst_off[i], self.dst_cnt[i] = sink_off[e.dst]
                self.port[i] = fleet.sinks[e.dst].port
            if e.via is not None:
                inter = fleet.intermediaries[e.via]
                self.via_ip[i] = inter.ip
                self.via_port[i] = inter.port
            if e.nat is not None:
                self.nat_ip[i] = fleet.intermediaries[e.nat].ip
            self.lam[i] = e.rate * e.conn_factor + e.keepalive
            per_conn = 1.0 / max(e.conn_factor, 1e-3)
            size = 20_000.0 if e.kind is CallKind.EXTERNAL else 3_000.0
            self.bytes_mean[i] = min(per_conn, 500.0) * size
        dst_names = [e.dst for e in edges]
        self.truth_src = [e.src for e in edges]
        self.truth_dst = dst_names


class FlowEmitter:
    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.world = world
        self.rng = rng
        self.strings: dict[str, int] = {"": 0}
        self._names: list[str] = [""]
        self._tables: _Tables | None = None
        self._version = -1
        self._shape = -1
        self.records_emitted = 0

    def _tables_now(self) -> _Tables:
        w = self.world
        if self._tables is None or self._shape != w.shape_version:
            self._tables = _Tables(w, self.strings)
            self._names = list(self.strings)
            self._shape = w.shape_version
        elif self._version != w.version:  # instances replaced in place: patch their rows
            tb = self._tables
            for _app, old, new in w.replacements:
                i = tb.index.pop(id(old), None)
                if i is not None:
                    tb.inst_ip[i], tb.inst_host[i], tb.inst_pid[i] = new.ip, new.host, new.pid
                    tb.index[id(new)] = i
        self._version = w.version
        return self._tables

    def step(self, t0: float, t1: float) -> list[bytes]:
        tb = self._tables_now()
        rng = self.rng
        dt = t1 - t0
        ms0, ms1 = _first_ms(t0), _first_ms(t1)  # records start in [ms0, ms1): inside [t0, t1)
        if not tb.edges or ms1 <= ms0:
            return []  # nothing to carry traffic, or a step shorter than a millisecond
        n_conn = rng.poisson(tb.lam * dt)
        idx = np.nonzero(n_conn)[0]
        if idx.size == 0:
            return []
        n_conn = n_conn[idx]
        k = np.minimum(np.minimum(n_conn, MAX_RECORDS_PER_EDGE), tb.src_cnt[idx] * tb.dst_cnt[idx])
        rec_edge = np.repeat(idx, k)
        total = int(k.sum())
        starts = np.cumsum(k) - k
        j = np.arange(total) - np.repeat(starts, k)
        kk = np.repeat(k, k)
        nc = np.repeat(n_conn, k)
        conns = nc // kk + (j < nc % kk)

        client = tb.src_off[rec_edge] + (rng.random(total) * tb.src_cnt[rec_edge]).astype(np.int64)
        server = tb.dst_off[rec_edge] + (rng.random(total) * tb.dst_cnt[rec_edge]).astype(np.int64)
        dst_app = tb.dst_app[rec_edge]
        client_ip = tb.inst_ip[client]
        server_ip = np.where(
            dst_app, tb.inst_ip[np.where(dst_app, server, 0)], tb.sink_ip[np.where(dst_app, 0, server)]
        )
        start_ms = ms0 + (rng.random(total) * max(1, ms1 - ms0)).astype(np.int64)
        dur = np.exp(rng.normal(6.0, 1.5, total)).astype(np.int64)  # ~400 ms median
        end_ms = np.minimum(start_ms + dur, ms1 - 1)
        end_ms = np.maximum(end_ms, start_ms)
        sent = (tb.bytes_mean[rec_edge] * conns * rng.lognormal(0.0, 0.5, total) * 0.2).astype(np.uint64) + 64
        received = (sent.astype(np.float64) * rng.lognormal(1.0, 0.8, total)).astype(np.uint64) + 64
        eph = (EPHEMERAL_LOW + rng.integers(0, EPHEMERAL_SPAN, total)).astype(np.uint16)
        via = tb.via_ip[rec_edge]
        routed = via != 0
        port = tb.port[rec_edge]

        # Client side: every record.
        cli = np.zeros(total, dtype=flow.RECORD_V1)
        cli["start_ms"] = start_ms
        cli["end_ms"] = end_ms
        cli["local_addr"] = _addrs(client_ip)
        cli["remote_addr"] = _addrs(np.where(routed, via, server_ip))
        cli["local_port"] = eph
        cli["remote_port"] = np.where(routed, tb.via_port[rec_edge], port).astype(np.uint16)
        cli["protocol"] = flow.PROTO_TCP
        cli["role"] = flow.ROLE_CLIENT
        cli["local_app"] = tb.inst_app[client]
        cli["local_cluster"] = tb.inst_cluster[client]
        cli["bytes_sent"] = sent
        cli["bytes_received"] = received
        cli["connections"] = conns
        cli["pid"] = tb.inst_pid[client]
        cli_host = tb.inst_host[client]

        # Server side: only targets with an agent (fleet apps).
        sv = np.nonzero(dst_app)[0]
        srv = np.zeros(sv.size, dtype=flow.RECORD_V1)
        s_inst = server[sv]
        nat = tb.nat_ip[rec_edge[sv]]
        remote = np.where(routed[sv], via[sv], np.where(nat != 0, nat, client_ip[sv]))
        srv["start_ms"] = start_ms[sv]
        srv["end_ms"] = end_ms[sv]
        srv["local_addr"] = _addrs(tb.inst_ip[s_inst])
        srv["remote_addr"] = _addrs(remote)
        srv["local_port"] = port[sv].astype(np.uint16)
        srv["remote_port"] = np.where(
            routed[sv], (eph[sv].astype(np.int64) + 7919) % EPHEMERAL_SPAN + EPHEMERAL_LOW, eph[sv]
        ).astype(np.uint16)
        srv["protocol"] = flow.PROTO_TCP
        srv["role"] = flow.ROLE_SERVER
        srv["local_app"] = tb.inst_app[s_inst]
        srv["local_cluster"] = tb.inst_cluster[s_inst]
        srv["bytes_sent"] = received[sv]
        srv["bytes_received"] = sent[sv]
        srv["connections"] = conns[sv]
        srv["pid"] = tb.inst_pid[s_inst]
        srv_host = tb.inst_host[s_inst]

        self._observe(tb, rec_edge, start_ms)
        records = np.concatenate([cli, srv])
        hosts = np.concatenate([cli_host, srv_host])
        self.records_emitted += int(records.shape[0])
        return self._batches(records, hosts, ms1)

    def _observe(self, tb: _Tables, rec_edge: IntArray, start_ms: IntArray) -> None:
        minute = (start_ms // (MINUTE * 1000)).astype(np.int64)
        key = rec_edge.astype(np.int64) * 100_000_000 + minute
        for k in np.unique(key).tolist():
            e, m = divmod(int(k), 100_000_000)
            self.world.truth.observe_window(Layer.NETWORK, (tb.truth_src[e], tb.truth_dst[e]), m * MINUTE)

    def _batches(self, records: npt.NDArray[np.void], hosts: IntArray, emitted_ms: int) -> list[bytes]:
        """One batch per host, each with its own string table (its apps and clusters, then its name)."""
        order = np.argsort(hosts, kind="stable")
        records = records[order]
        hosts = hosts[order]
        n = int(hosts.size)
        # Re-number the string indexes per host in one vectorised pass: unique (host, string) keys.
        keys = np.concatenate(
            [
                hosts << 32 | records["local_app"].astype(np.int64),
                hosts << 32 | records["local_cluster"].astype(np.int64),
            ]
        )
        uniq, inv = np.unique(keys, return_inverse=True)
        u_host = uniq >> 32
        first = np.searchsorted(u_host, u_host, side="left")
        local = inv - first[inv] + 1
        records["local_app"] = local[:n]
        records["local_cluster"] = local[n:]
        u_sid = (uniq & 0xFFFFFFFF).tolist()
        u_bounds = [*(np.nonzero(np.diff(u_host))[0] + 1).tolist(), int(uniq.size)]
        r_bounds = [*(np.nonzero(np.diff(hosts))[0] + 1).tolist(), n]
        names = self._names
        host_names = self.world.fleet.hosts
        out: list[bytes] = []
        ra = ua = 0
        for rb, ub in zip(r_bounds, u_bounds, strict=True):
            strings = ["", *(names[i] for i in u_sid[ua:ub])]
            out.append(
                flow.encode(records[ra:rb], strings, host=host_names[int(hosts[ra])], emitted_ms=emitted_ms)
            )
            ra, ua = rb, ub
        return out


def _first_ms(t: float) -> int:
    """The first whole millisecond at or after ``t`` (robust to float rounding either way)."""
    ms = math.ceil(t * 1000.0)
    while ms / 1000.0 < t:
        ms += 1
    while (ms - 1) / 1000.0 >= t:
        ms -= 1
    return ms


_MAPPED_PREFIX = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)


def _addrs(ipv4: npt.NDArray[np.uint32]) -> npt.NDArray[np.bytes_]:
    """IPv4 integers as 16-byte IPv4-mapped IPv6 addresses (the wire format's address form)."""
    out = np.zeros((ipv4.size, 16), dtype=np.uint8)
    out[:, :12] = _MAPPED_PREFIX
    out[:, 12:] = ipv4.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out.view("S16").reshape(-1)

"""From kernel connection records to flow batches (``docs/flow-wire-format.md``), in bulk.

Records arrive as numpy arrays of :data:`agent.program.CONN` (close records, interval scans). They
are attributed once per distinct process in the array (:class:`agent.attribution.Attributor`,
cached), turned into :data:`topology.wire.flow.RECORD_V1` rows with no per-record Python, and held
until the batch goes out. On the way out, records with equal (local workload, role, local address,
remote address, server port) are folded into one with a connection count, as the wire format
allows: the ephemeral port of a folded record is 0 (kept when it stands for one connection), its
start the earliest, its end the latest, its pid one of its processes.

Every attributed record also tells :class:`agent.leases.Leases` that its workload used its local
address.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from agent.attribution import Attributor
from agent.leases import Leases
from agent.program import ROLE_CLIENT, ROLE_SERVER
from topology.wire import flow
from topology.wire.flow import PROTO_TCP, RECORD_V1

RecordArray = npt.NDArray[np.void]

_PROC_KEY = np.dtype([("pid", "<u4"), ("netns", "<u4"), ("comm", "S16"), ("laddr", "S16"), ("role", "u1")])
_FOLD_KEY = np.dtype([("app", "<u4"), ("cluster", "<u4"), ("role", "u1"), ("local_addr", "S16"),
                      ("remote_addr", "S16"), ("server_port", "<u2")])


def group(keys: npt.NDArray[np.void]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(first index of each distinct key, inverse) for a structured key array, like ``np.unique``
    with ``return_index`` and ``return_inverse`` but fast: rows are grouped by a 64-bit hash of their
    bytes (numpy sorts integers quickly, structured rows slowly), then checked byte for byte; only
    a hash collision (never seen in practice) falls back to the exact structured sort."""
    n, size = len(keys), keys.dtype.itemsize
    if n == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    words = -(-size // 8)
    raw = np.zeros((n, words * 8), dtype=np.uint8)
    raw[:, :size] = np.frombuffer(keys.tobytes(), dtype=np.uint8).reshape(n, size)
    w = raw.view(np.uint64)
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words):
            h = (h ^ w[:, j]) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(raw[first[inverse]], raw):
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return first, inverse


def monotonic_offset_ns() -> int:
    """Add to a kernel ``bpf_ktime_get_ns()`` value (CLOCK_MONOTONIC) to get epoch nanoseconds."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Batcher:
    def __init__(self, attributor: Attributor, leases: Leases | None = None, host: str = "",
                 fold: bool = True) -> None:
        self.attributor = attributor
        self.leases = leases
        self.host = host
        self.fold = fold
        self._strings: list[str] = [""]
        self._index: dict[str, int] = {"": 0}
        self._pending: list[RecordArray] = []
        self.pending_records = 0
        self.unattributed_records = 0

    def add(self, conns: npt.NDArray[np.void], offset_ns: int | None = None) -> int:
        """Attribute kernel records and keep them for the next batch; returns how many were added."""
        n = len(conns)
        if not n:
            return 0
        offset = monotonic_offset_ns() if offset_ns is None else offset_ns
        rec = np.zeros(n, dtype=RECORD_V1)
        rec["start_ms"] = (conns["start_ns"].astype(np.int64) + offset) // 1_000_000
        rec["end_ms"] = np.maximum((conns["end_ns"].astype(np.int64) + offset) // 1_000_000, rec["start_ms"])
        rec["local_addr"] = conns["laddr"]
        rec["remote_addr"] = conns["raddr"]
        rec["local_port"] = conns["lport"]
        rec["remote_port"] = conns["rport"]
        rec["protocol"] = PROTO_TCP
        rec["role"] = conns["role"]
        rec["bytes_sent"] = conns["sent"]
        rec["bytes_received"] = conns["received"]
        rec["connections"] = 1
        rec["pid"] = conns["pid"]
        self._attribute(conns, rec)
        self._pending.append(rec)
        self.pending_records += n
        return n

    def _attribute(self, conns: npt.NDArray[np.void], rec: RecordArray) -> None:
        keys = np.empty(len(conns), dtype=_PROC_KEY)
        for name in _PROC_KEY.names or ():
            keys[name] = conns[name]
        first, inverse = group(keys)
        uniq = keys[first]
        apps = np.empty(len(uniq), dtype=np.uint32)
        clusters = np.empty(len(uniq), dtype=np.uint32)
        since = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(since, inverse, rec["start_ms"])
        until = np.zeros(len(uniq), dtype=np.int64)
        np.maximum.at(until, inverse, rec["end_ms"])
        cgroups = conns["cgroup"][first].tolist()
        per_key = np.bincount(inverse, minlength=len(uniq)).tolist()
        for i, (pid, netns, comm, laddr, role) in enumerate(uniq.tolist()):
            a = self.attributor.resolve(pid, comm.decode("utf-8", "replace"), cgroups[i], netns)
            apps[i] = self._string(a.workload.app)
            clusters[i] = self._string(a.workload.cluster)
            if not a.attributed:
                self.unattributed_records += per_key[i]
            if self.leases is not None and pid:
                start = int(since[i]) / 1000.0
                if role == ROLE_SERVER:
                    start = self._server_since(pid, start)
                self.leases.observe(flow.unpack_ip(laddr), a.workload, pid, start, int(until[i]) / 1000.0)
        rec["local_app"] = apps[inverse]
        rec["local_cluster"] = clusters[inverse]

    def _server_since(self, pid: int, first_seen: float) -> float:
        """A server held its address at least since its process started (or since its first record)."""
        started = self.attributor.processes.start_time(pid)
        return first_seen if started is None else min(first_seen, started)

    def _string(self, s: str) -> int:
        i = self._index.get(s)
        if i is None:
            i = self._index[s] = len(self._strings)
            self._strings.append(s)
        return i

    def take(self, emitted_ms: int | None = None) -> tuple[bytes, int] | None:
        """The pending records as one encoded batch (folded), and its record count; None if empty."""
        if not self._pending:
            return None
        rec = np.concatenate(self._pending)
        self._pending, self.pending_records = [], 0
        if self.fold:
            rec = fold(rec)
        names = np.concatenate([rec["local_app"], rec["local_cluster"]])
        used, inverse = np.unique(names, return_inverse=True)
        if used[0] != 0:  # index 0 (the empty string) must stay first
            used = np.concatenate([[0], used])
            inverse = inverse + 1
        n = len(rec)
        rec["local_app"], rec["local_cluster"] = inverse[:n], inverse[n:]
        strings: Sequence[str] = [self._strings[i] for i in used.tolist()]
        if len(self._strings) > 100_000:  # forget names no longer in use (processes come and go)
            self._strings, self._index = [""], {"": 0}
        ms = int(time.time() * 1000) if emitted_ms is None else emitted_ms
        return flow.encode(rec, strings, self.host, ms), n


def fold(rec: RecordArray) -> RecordArray:
    """Records with equal (app, cluster, role, local address, remote address, server port) as one."""
    if len(rec) < 2:
        return rec
    keys = np.empty(len(rec), dtype=_FOLD_KEY)
    keys["app"], keys["cluster"], keys["role"] = rec["local_app"], rec["local_cluster"], rec["role"]
    keys["local_addr"], keys["remote_addr"] = rec["local_addr"], rec["remote_addr"]
    keys["server_port"] = np.where(rec["role"] == ROLE_CLIENT, rec["remote_port"], rec["local_port"])
    first, inverse = group(keys)
    if len(first) == len(rec):
        return rec
    out = rec[first].copy()
    for name in ("bytes_sent", "bytes_received", "connections"):
        acc = np.zeros(len(first), dtype=np.uint64)
        np.add.at(acc, inverse, rec[name].astype(np.uint64))
        out[name] = acc
    start = np.full(len(first), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(start, inverse, rec["start_ms"])
    end = np.zeros(len(first), dtype=np.int64)
    np.maximum.at(end, inverse, rec["end_ms"])
    out["start_ms"], out["end_ms"] = start, end
    many = out["connections"] > 1
    client = out["role"] == ROLE_CLIENT
    out["local_port"] = np.where(many & client, 0, out["local_port"])
    out["remote_port"] = np.where(many & ~client, 0, out["remote_port"])
    return out

"""NETWORK stage 1: windowed pre-aggregation of flow records, vectorised with numpy.

Input: decoded flow batches (:class:`topology.wire.flow.FlowBatch`). Output: :class:`FlowAggregate`
records, one per (10 s window, local app, local cluster, role, remote address, server port,
protocol), summing connections and bytes and keeping the first start and last end. The window of a
record is the window of its ``start_ms`` (stage 2 resolves addresses at the start time too).

Server ports: for a record of the client (role 1) the server port is ``remote_port``; for a record
of the server (role 2) it is ``local_port`` (the remote port is the client's ephemeral port, which
would only multiply the aggregates). The group-by key therefore uses the server port.

Each batch is reduced as soon as it arrives (one sort of a packed integer key per batch, sums with
``reduceat``); :meth:`NetworkStage1.flush` merges the reduced rows of each closed window across
batches and turns them into records. Records are never dropped for being late: a record for a
window that was already flushed is emitted with the next flush (the aggregates are additive; the
later stages own lateness). Records with implausible times (:mod:`topology.admit`'s policy) are
rejected and counted.

*Early emission of new keys* (``flush(watermark, early=True)``, used by the Kafka worker to make a
new connection visible long before its window closes): in windows still open, aggregates whose key
(local app, cluster, role, protocol, server port, remote address) is *new* are emitted at once and
removed from the pending rows; the rest of the window is emitted when it closes, as usual (the
aggregates are additive, so early + closing output sums to what a single flush at close gives). A key
is new when it was not seen in this window or the previous one: every key a flush looks at (pending
rows of open windows, output of closed ones) is remembered per window as a 64-bit hash in a sorted
array, so a key that stays busy is emitted early only once, when it first appears. Only rows that
arrived since the last early flush are looked at, and the rows that stay are merged into one reduced
part per window (so the checkpointed state holds each key of an open window once). A hash
collision can only make a new key wait for its window to close, never change counts. Remembered
keys of windows before the previous one are forgotten, so the state stays bounded (and picklable:
it is checkpointed with the pending rows).

*Checkpoints* (:mod:`ingest.checkpoint`) are incremental, as NETWORK stage 2's: each window's pending
rows and each window's remembered keys are a section of their own, and :meth:`take_touched` names
those changed since the last checkpoint (rows added, an early flush, keys remembered), so a commit
rewrites the open window's rows and the key sets that grew, not the windows already closed or the
key sets of windows that see no new key.

Aggregates cross the Kafka repartition topic between stage 1 and stage 2 as ``to_dict`` JSON,
keyed by :attr:`FlowAggregate.partition_key` (the remote address). In process, :meth:`flush`
returns them as :class:`FlowAggregates`, a sequence that keeps plain tuples and builds the records
only when they are looked at.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from topology.admit import implausible, reference
from topology.wire.flow import ROLE_CLIENT, ROLE_SERVER, FlowBatch

ROLE_NAMES: dict[int, str] = {ROLE_CLIENT: "client", ROLE_SERVER: "server"}
_ROLE_BY_NAME = {v: k for k, v in ROLE_NAMES.items()}
PROTOCOL_NAMES: dict[int, str] = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def protocol_name(number: int) -> str:
    """``"tcp"``, ``"udp"``, ... or ``"ip-<number>"`` for the others."""
    return PROTOCOL_NAMES.get(number) or f"ip-{number}"


@dataclass(frozen=True, slots=True)
class FlowAggregate:
    """Flows seen by one local workload towards one remote address and server port in one window.

    ``local_app`` empty means a *two-sided* observation (cloud flow logs): neither end is known
    and stage 2 resolves ``local_addr`` through address ownership as it does ``remote_addr``.
    """

    window_start: int  # epoch seconds, aligned to window_seconds
    window_seconds: int
    local_app: str
    local_cluster: str  # "" if the agent did not know it
    role: int  # ROLE_CLIENT (the local end opened the connections) or ROLE_SERVER
    remote_addr: str  # text form
    server_port: int
    protocol: int  # IANA number
    connections: int
    bytes_sent: int  # by the local end
    bytes_received: int
    first_start_ms: int
    last_start_ms: int
    last_end_ms: int
    local_addr: str = ""  # only for two-sided observations

    @property
    def partition_key(self) -> str:
        """Key of the repartition topic between stage 1 and stage 2."""
        return self.remote_addr

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "window_start": self.window_start,
            "window_seconds": self.window_seconds,
            "local_app": self.local_app,
            "local_cluster": self.local_cluster,
            "role": ROLE_NAMES[self.role],
            "remote_addr": self.remote_addr,
            "server_port": self.server_port,
            "protocol": self.protocol,
            "connections": self.connections,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "first_start_ms": self.first_start_ms,
            "last_start_ms": self.last_start_ms,
            "last_end_ms": self.last_end_ms,
        }
        if self.local_addr:
            d["local_addr"] = self.local_addr
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowAggregate:
        """Parse and validate; raises ValueError naming the bad field."""
        if not isinstance(d, dict):
            raise ValueError("flow aggregate must be a JSON object")
        role = _ROLE_BY_NAME.get(d.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise ValueError(f"flow aggregate 'role' must be 'client' or 'server', got {d.get('role')!r}")
        ints = {k: _int(d, k) for k in _INT_FIELDS}
        strs = {k: _str(d, k) for k in ("local_app", "local_cluster", "remote_addr")}
        local_addr = _str(d, "local_addr") if "local_addr" in d else ""
        values = {**ints, **strs, "role": role, "local_addr": local_addr}
        return cls(*_checked(tuple(values[f] for f in _ROW_FIELDS)))  # type: ignore[arg-type]


#: The fields of a FlowAggregate, in order, as a plain tuple.
AggregateRow = tuple[int, int, str, str, int, str, int, int, int, int, int, int, int, int, str]


class FlowAggregates(MutableSequence[FlowAggregate]):
    """Stage 1 output: a list of aggregates kept as plain tuples (:data:`AggregateRow`).

    Indexing or iterating builds :class:`FlowAggregate` records, and records put in (``append``,
    ``extend``...) are stored as tuples; :class:`NetworkStage2` reads the tuples directly, which
    saves building a frozen record per aggregate on the in-process path.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: list[AggregateRow] | None = None) -> None:
        self.rows: list[AggregateRow] = [] if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> FlowAggregate: ...
    @overload
    def __getitem__(self, i: slice) -> FlowAggregates: ...
    def __getitem__(self, i: int | slice) -> FlowAggregate | FlowAggregates:
        if isinstance(i, slice):
            return FlowAggregates(self.rows[i])
        return FlowAggregate(*self.rows[i])

    @overload
    def __setitem__(self, i: int, value: FlowAggregate) -> None: ...
    @overload
    def __setitem__(self, i: slice, value: Iterable[FlowAggregate]) -> None: ...
    def __setitem__(self, i: int | slice, value: FlowAggregate | Iterable[FlowAggregate]) -> None:
        if isinstance(i, slice):
            assert not isinstance(value, FlowAggregate)
            self.rows[i] = [as_row(a) for a in value]
        else:
            assert isinstance(value, FlowAggregate)
            self.rows[i] = as_row(value)

    def __delitem__(self, i: int | slice) -> None:
        del self.rows[i]

    def insert(self, i: int, value: FlowAggregate) -> None:
        self.rows.insert(i, as_row(value))

    def __iter__(self) -> Iterator[FlowAggregate]:
        for row in self.rows:
            yield FlowAggregate(*row)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FlowAggregates):
            return self.rows == other.rows
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FlowAggregates({list(self)!r})"


def from_row(v: Any) -> AggregateRow:
    """A repartition item in row form (the fields of :class:`FlowAggregate` in order, the role as its
    number: what stage 1 sends stage 2, cheaper to write and read than :meth:`FlowAggregate.to_dict`),
    validated as :meth:`FlowAggregate.from_dict` does; raises ValueError naming the bad field."""
    if type(v) is not list or len(v) != len(_ROW_FIELDS):
        raise ValueError(f"a flow aggregate row is a list of {len(_ROW_FIELDS)} fields")
    for i in _ROW_INTS:
        if type(v[i]) is not int:
            raise ValueError(f"flow aggregate field {_ROW_FIELDS[i]!r} must be an integer, got {v[i]!r}")
    for i in _ROW_STRS:
        if type(v[i]) is not str:
            raise ValueError(f"flow aggregate field {_ROW_FIELDS[i]!r} must be a string, got {v[i]!r}")
    if v[4] not in ROLE_NAMES:
        raise ValueError(f"flow aggregate 'role' must be {ROLE_CLIENT} or {ROLE_SERVER} in a row, "
                         f"got {v[4]!r}")
    return _checked(tuple(v))


def _checked(row: AggregateRow) -> AggregateRow:
    """``row`` if its values make sense together (raises ValueError naming what does not)."""
    (window_start, window_seconds, local_app, _, _, remote_addr, server_port, protocol, connections,
     bytes_sent, bytes_received, first_start_ms, last_start_ms, last_end_ms, local_addr) = row
    if not remote_addr:
        raise ValueError("flow aggregate needs a 'remote_addr'")
    if not local_app and not local_addr:
        raise ValueError("flow aggregate needs a 'local_app' or, for two-sided records, a 'local_addr'")
    if window_seconds <= 0 or window_start % window_seconds:
        raise ValueError("flow aggregate 'window_start' must be aligned to a positive 'window_seconds'")
    if not 0 <= server_port <= 0xFFFF or not 0 <= protocol <= 0xFF:
        raise ValueError("flow aggregate 'server_port' or 'protocol' out of range")
    if min(connections, bytes_sent, bytes_received) < 0:
        raise ValueError("flow aggregate counts must not be negative")
    if not first_start_ms <= last_start_ms <= last_end_ms:
        raise ValueError("flow aggregate needs first_start_ms <= last_start_ms <= last_end_ms")
    return row


def as_row(a: FlowAggregate) -> AggregateRow:
    """The fields of ``a`` as a plain tuple (the inverse of ``FlowAggregate(*row)``)."""
    return (a.window_start, a.window_seconds, a.local_app, a.local_cluster, a.role, a.remote_addr,
            a.server_port, a.protocol, a.connections, a.bytes_sent, a.bytes_received, a.first_start_ms,
            a.last_start_ms, a.last_end_ms, a.local_addr)


_INT_FIELDS = ("window_start", "window_seconds", "server_port", "protocol", "connections", "bytes_sent",
               "bytes_received", "first_start_ms", "last_start_ms", "last_end_ms")
_ROW_FIELDS = ("window_start", "window_seconds", "local_app", "local_cluster", "role", "remote_addr",
               "server_port", "protocol", "connections", "bytes_sent", "bytes_received", "first_start_ms",
               "last_start_ms", "last_end_ms", "local_addr")
_ROW_INTS = tuple(i for i, f in enumerate(_ROW_FIELDS) if f in _INT_FIELDS or f == "role")
_ROW_STRS = tuple(i for i, f in enumerate(_ROW_FIELDS) if f not in _INT_FIELDS and f != "role")


def _int(d: dict[str, Any], k: str) -> int:
    v = d.get(k)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"flow aggregate field {k!r} must be an integer, got {v!r}")
    return v


def _str(d: dict[str, Any], k: str) -> str:
    v = d.get(k)
    if not isinstance(v, str):
        raise ValueError(f"flow aggregate field {k!r} must be a string, got {v!r}")
    return v


# Reduced rows kept between add() and flush(): app/cluster are ids into NetworkStage1's name table,
# the address is the 16-byte form as two big-endian words.
_ROWS = np.dtype(
    [
        ("app", "<i8"),
        ("cluster", "<i8"),
        ("role", "u1"),
        ("protocol", "u1"),
        ("port", "<u2"),
        ("hi", "<u8"),
        ("lo", "<u8"),
        ("connections", "<u8"),
        ("bytes_sent", "<u8"),
        ("bytes_received", "<u8"),
        ("first_start", "<i8"),
        ("last_start", "<i8"),
        ("last_end", "<i8"),
    ]
)
_Rows = npt.NDArray[np.void]
_IntArray = npt.NDArray[np.integer[Any]]
_Hashes = npt.NDArray[np.uint64]
_NO_HASHES: _Hashes = np.zeros(0, dtype=np.uint64)
_MAX_ADDR_CACHE = 1_000_000


class NetworkStage1:
    """Pre-aggregates flow records into ``window_seconds`` windows (see the module docstring)."""

    def __init__(self, window_seconds: int = 10) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self._pending: dict[int, list[_Rows]] = {}  # window start -> reduced rows of that window
        self._names: list[str] = [""]
        self._ids: dict[str, int] = {"": 0}
        self._name_array: npt.NDArray[np.object_] = np.array([""], dtype=object)
        self._addr_text: dict[tuple[int, int], str] = {}
        # Early emission (see the module docstring): window start -> sorted hashes of the keys seen
        # in it; and how many leading parts of _pending[w] early flushes have already looked at.
        self._known: dict[int, _Hashes] = {}
        self._checked: dict[int, int] = {}
        self._early = False  # an early flush happened: closing windows remember their keys too
        # (field, window) of the pending rows and remembered keys changed since the last take_touched()
        self._touched: set[tuple[str, int]] = set()
        self.counters: dict[str, int] = {
            "batches": 0,
            "records": 0,
            "rejected_time": 0,
            "rejected_invalid": 0,
            "aggregates": 0,
        }

    @property
    def pending_windows(self) -> list[int]:
        return sorted(self._pending)

    @property
    def known_windows(self) -> list[int]:
        """Windows whose keys are remembered for early emission (bounded: see the module docstring)."""
        return sorted(self._known)

    # -- input ------------------------------------------------------------------------------------
    def add(self, batch: FlowBatch) -> None:
        recs = batch.records
        self.counters["batches"] += 1
        self.counters["records"] += len(recs)
        if not len(recs):
            return
        recs = self._valid(batch)
        if not len(recs):
            return
        strings = batch.strings
        app_idx: _IntArray = recs["local_app"]
        cluster_idx: _IntArray = recs["local_cluster"]
        if len(set(strings)) != len(strings):  # the same name twice: use the first index of each
            first = {s: i for i, s in reversed(list(enumerate(strings)))}
            canon = np.array([first[s] for s in strings], dtype=np.int64)
            app_idx, cluster_idx = canon[app_idx], canon[cluster_idx]
        ws = self.window_seconds
        start: _IntArray = recs["start_ms"]
        window = start // (ws * 1000)
        role: _IntArray = recs["role"]
        port = np.where(role == ROLE_CLIENT, recs["remote_port"], recs["local_port"])
        words = np.ascontiguousarray(recs["remote_addr"]).view(">u8").reshape(-1, 2).astype(np.uint64)
        local = app_idx.astype(np.uint64) << np.uint64(32) | cluster_idx.astype(np.uint64)
        keys: list[_IntArray] = [window, local, role, recs["protocol"], port, words[:, 0], words[:, 1]]
        order, starts = _group(keys)
        rows = _reduce(order, starts, recs["connections"], recs["bytes_sent"], recs["bytes_received"],
                       start, recs["end_ms"])
        rep = order[starts]
        ids = np.fromiter((self._intern(s) for s in strings), dtype=np.int64, count=len(strings))
        rows["app"] = ids[app_idx[rep]]
        rows["cluster"] = ids[cluster_idx[rep]]
        rows["role"] = role[rep]
        rows["protocol"] = recs["protocol"][rep]
        rows["port"] = port[rep]
        rows["hi"] = words[rep, 0]
        rows["lo"] = words[rep, 1]
        # Rows are sorted by window first: cut them into one slice per window.
        win = window[rep]
        cuts = np.flatnonzero(win[1:] != win[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(rows)]
        for a, b in itertools.pairwise(bounds):
            w = int(win[a]) * ws
            self._pending.setdefault(w, []).append(rows[a:b])
            self._touched.add(("_pending", w))

    def _valid(self, batch: FlowBatch) -> _Rows:
        recs = batch.records
        start, end = recs["start_ms"], recs["end_ms"]
        # admission cuts these out already; batches built in process are held to the same time policy
        ref = reference(batch.emitted_ms / 1000.0)
        ok_time = (end >= start) & ~implausible(start / 1000.0, end / 1000.0, ref)
        nstr = len(batch.strings)
        role = recs["role"]
        ok = ((role == ROLE_CLIENT) | (role == ROLE_SERVER)) & (recs["local_app"] > 0)
        ok &= (recs["local_app"] < nstr) & (recs["local_cluster"] < nstr) & (recs["connections"] >= 1)
        bad_time = int(np.count_nonzero(~ok_time & ok))
        bad = int(np.count_nonzero(~ok))
        if not bad_time and not bad:
            return recs
        self.counters["rejected_time"] += bad_time
        self.counters["rejected_invalid"] += bad
        kept: _Rows = recs[ok & ok_time]
        return kept

    def _intern(self, name: str) -> int:
        i = self._ids.get(name)
        if i is None:
            i = len(self._names)
            self._ids[name] = i
            self._names.append(name)
        return i

    def take_touched(self) -> set[tuple[str, int]]:
        """(``"_pending"`` or ``"_known"``, window start) of what changed since the last call among
        what is still kept: an incremental checkpoint rewrites only these (see "Checkpoints" in the
        module docstring)."""
        out = set(self._touched)
        self._touched.clear()
        return out

    # -- output -----------------------------------------------------------------------------------
    def flush(self, watermark: float, early: bool = False) -> FlowAggregates:
        """Aggregates of every window that ends at or before ``watermark`` (epoch seconds).

        With ``early``, windows still open also emit the aggregates of keys not seen in them or in
        the window before (see the module docstring); those rows leave the pending state.
        """
        ws = self.window_seconds
        out: list[AggregateRow] = []
        early_rows = 0
        if early:
            self._early = True
        for w in sorted(self._pending):
            if w + ws > watermark:
                if not early:
                    break
                n = len(out)
                self._emit_new(w, out)
                early_rows += len(out) - n
                continue
            parts = self._pending.pop(w)
            checked = self._checked.pop(w, 0)
            if self._early and checked < len(parts):  # the next window's early flushes need its keys
                self._remember(w, _key_hashes(_concatenate(parts[checked:])))
            rows = parts[0] if len(parts) == 1 else _merge(_concatenate(parts))
            out.extend(self._rows(w, rows))
        for w in [w for w in self._known if w + 2 * ws <= watermark]:
            del self._known[w]
        self.counters["aggregates"] += len(out)
        if early:
            self.counters["early_aggregates"] = self.counters.get("early_aggregates", 0) + early_rows
        return FlowAggregates(out)

    def _emit_new(self, w: int, out: list[AggregateRow]) -> None:
        """Move the rows of new keys among the parts of open window ``w`` not looked at yet to ``out``."""
        parts = self._pending[w]
        checked = self._checked.get(w, 0)
        if checked >= len(parts):
            return
        self._touched.add(("_pending", w))
        fresh_parts = parts[checked:]
        rows = fresh_parts[0] if len(fresh_parts) == 1 else _concatenate(fresh_parts)
        hashes = _key_hashes(rows)
        new = ~(_contains(self._known.get(w, _NO_HASHES), hashes)
                | _contains(self._known.get(w - self.window_seconds, _NO_HASHES), hashes))
        self._remember(w, hashes)
        rest = rows
        if new.any():
            emit = rows[new]
            if len(fresh_parts) > 1:  # the same key in several batches: one aggregate
                emit = _merge(emit)
            out.extend(self._rows(w, emit))
            rest = rows[~new]
        # What stays is merged into one reduced part: the state (checkpointed after every early
        # flush that emitted something) then holds each key of the window once, not once per batch.
        kept = [*parts[:checked], rest] if len(rest) else parts[:checked]
        if len(kept) > 1:
            kept = [_merge(_concatenate(kept))]
        if kept:
            self._pending[w] = kept
            self._checked[w] = 1
        else:
            del self._pending[w]
            self._checked.pop(w, None)

    def _remember(self, w: int, hashes: _Hashes) -> None:
        known = self._known.get(w, _NO_HASHES)
        add = np.unique(hashes)
        add = add[~_contains(known, add)]
        if len(add):
            self._known[w] = np.insert(known, np.searchsorted(known, add), add)
            self._touched.add(("_known", w))

    def _rows(self, w: int, rows: _Rows) -> Iterator[AggregateRow]:
        if len(self._name_array) != len(self._names):
            self._name_array = np.array(self._names, dtype=object)
        names = self._name_array
        hi, lo = rows["hi"], rows["lo"]
        if not hi.any():  # IPv4 (mapped) and a few IPv6 addresses: text per distinct address only
            uniq, inverse = np.unique(lo, return_inverse=True)
            texts = np.array([self._address(0, x) for x in uniq.tolist()], dtype=object)
            addrs: list[str] = texts[inverse].tolist()
        else:
            addrs = [self._address(h, x) for h, x in zip(hi.tolist(), lo.tolist(), strict=True)]
        return zip(
            itertools.repeat(w), itertools.repeat(self.window_seconds), names[rows["app"]].tolist(),
            names[rows["cluster"]].tolist(), rows["role"].tolist(), addrs, rows["port"].tolist(),
            rows["protocol"].tolist(), rows["connections"].tolist(), rows["bytes_sent"].tolist(),
            rows["bytes_received"].tolist(), rows["first_start"].tolist(), rows["last_start"].tolist(),
            rows["last_end"].tolist(), itertools.repeat(""),
        )

    def _address(self, hi: int, lo: int) -> str:
        key = (hi, lo)
        text = self._addr_text.get(key)
        if text is None:
            if hi == 0 and lo >> 32 == 0xFFFF:
                text = f"{lo >> 24 & 255}.{lo >> 16 & 255}.{lo >> 8 & 255}.{lo & 255}"
            else:
                text = str(ipaddress.IPv6Address(hi << 64 | lo))
            if len(self._addr_text) >= _MAX_ADDR_CACHE:
                self._addr_text.clear()
            self._addr_text[key] = text
        return text


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: _Hashes) -> _Hashes:
    """The splitmix64 finaliser (array arithmetic wraps modulo 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _key_hashes(rows: _Rows) -> _Hashes:
    """A 64-bit hash of each row's key (local app and cluster ids, role, protocol, server port, address)."""
    local = rows["app"].astype(np.uint64) << np.uint64(32) | rows["cluster"].astype(np.uint64)
    small = (rows["role"].astype(np.uint64) << np.uint64(24)
             | rows["protocol"].astype(np.uint64) << np.uint64(16) | rows["port"].astype(np.uint64))
    h = _mix(rows["hi"].astype(np.uint64) + _GOLDEN)
    for word in (rows["lo"].astype(np.uint64), local, small):
        h = _mix(h ^ word)
    return h


def _contains(known: _Hashes, hashes: _Hashes) -> npt.NDArray[np.bool_]:
    """Which of ``hashes`` are in the sorted array ``known``."""
    if not len(known):
        return np.zeros(len(hashes), dtype=bool)
    at = np.minimum(np.searchsorted(known, hashes), len(known) - 1)
    found: npt.NDArray[np.bool_] = known[at] == hashes
    return found


def _concatenate(parts: list[_Rows]) -> _Rows:
    # As bytes: numpy's concatenate of structured arrays checks field promotion per part (20x slower).
    joined: _Rows = np.concatenate([np.ascontiguousarray(p).view(np.uint8) for p in parts]).view(_ROWS)
    return joined


def _merge(rows: _Rows) -> _Rows:
    """Reduce rows of one window that came from several batches."""
    local = rows["app"].astype(np.uint64) << np.uint64(32) | rows["cluster"].astype(np.uint64)
    keys: list[_IntArray] = [local, rows["role"], rows["protocol"], rows["port"], rows["hi"], rows["lo"]]
    order, starts = _group(keys)
    out = _reduce(order, starts, rows["connections"], rows["bytes_sent"], rows["bytes_received"],
                  rows["first_start"], rows["last_end"], last_start=rows["last_start"])
    rep = order[starts]
    for f in ("app", "cluster", "role", "protocol", "port", "hi", "lo"):
        out[f] = rows[f][rep]
    return out


def _reduce(order: _IntArray, starts: _IntArray, conns: _IntArray, sent: _IntArray, recv: _IntArray,
            first: _IntArray, last_end: _IntArray, last_start: _IntArray | None = None) -> _Rows:
    out = np.empty(len(starts), dtype=_ROWS)
    out["connections"] = np.add.reduceat(conns[order].astype(np.uint64), starts)
    out["bytes_sent"] = np.add.reduceat(sent[order], starts)
    out["bytes_received"] = np.add.reduceat(recv[order], starts)
    f = first[order]
    out["first_start"] = np.minimum.reduceat(f, starts)
    out["last_start"] = np.maximum.reduceat(f if last_start is None else last_start[order], starts)
    out["last_end"] = np.maximum.reduceat(last_end[order], starts)
    return out


def _group(keys: list[_IntArray]) -> tuple[_IntArray, _IntArray]:
    """Sort order and group starts for rows equal on every key (keys most significant first).

    Fast path: each key minus its minimum fits in a few bits, so all keys pack into one uint64 and one
    ``argsort`` does the work; keys with a wide range are first replaced by dense ranks. Otherwise
    ``lexsort`` over all keys.
    """
    n = len(keys[0])
    cols: list[npt.NDArray[np.uint64]] = []
    bits: list[int] = []
    for k in keys:
        lo = k.min()
        col = (k - lo).astype(np.uint64) if k.dtype.kind == "i" else k.astype(np.uint64) - np.uint64(lo)
        cols.append(col)
        bits.append(int(col.max()).bit_length())
    while sum(bits) > 63:
        i = max(range(len(bits)), key=bits.__getitem__)
        uniq, inverse = np.unique(cols[i], return_inverse=True)
        dense_bits = (len(uniq) - 1).bit_length()
        if dense_bits >= bits[i]:
            break
        cols[i], bits[i] = inverse.astype(np.uint64), dense_bits
    if sum(bits) <= 63:
        packed = np.zeros(n, dtype=np.uint64)
        for col, b in zip(cols, bits, strict=True):
            if b:
                packed = (packed << np.uint64(b)) | col
        order = np.argsort(packed)
        s = packed[order]
        change = s[1:] != s[:-1]
    else:
        order = np.lexsort(cols[::-1])
        change = np.zeros(n - 1, dtype=bool)
        for col in cols:
            c = col[order]
            change |= c[1:] != c[:-1]
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    return order, starts

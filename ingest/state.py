"""The checkpoint format of stage state: msgpack with an explicit schema per state type, read without
pickle.

A checkpoint must not be able to run code in the worker that restores it (whoever can write to a
``*.state`` topic would otherwise run code there), so state is written as plain msgpack data and read
back through a closed list of types. Plain values (None, bools, ints, floats, strings, bytes, lists,
dicts) are msgpack's own; every other value is an extension whose code says what it is:

* tuples, sets, frozensets, ordered dicts, ints beyond 64 bits;
* numpy arrays and scalars of numeric dtypes (plain or structured; never object arrays), as their
  dtype and raw bytes;
* enum members of the model (:data:`ENUMS`), as their value;
* instances of the state classes of :data:`SCHEMAS`: each has a tag, a version and the exact list of
  its fields; reading one makes an empty instance of that class (no ``__init__``, no
  ``__setstate__``) and sets exactly those fields. Fields listed as *derived* (caches rebuilt from
  the others, lookup shortcuts) are not written and are reset on read;
* objects shared by every partition of a worker (the address book, the health book), as their name:
  they are re-attached from the worker's own on read, never read from the checkpoint.

An instance met twice (an accumulator referenced from two dicts) is written once and referenced by
number after, so restored state keeps the sharing it had. Anything else cannot be written (a new
attribute of a stage fails loudly in its tests, :class:`StateError`), and anything else cannot be
read: an unknown tag, a field list that differs from the schema, an object dtype or a malformed
payload is a :class:`StateError`, never an instance of something else.

A class listed in :data:`SECTIONED` is also written in parts (:func:`split`, :func:`join`): its head
(the state without one dict field) and each entry of that field as a document of its own, so an
incremental checkpoint rewrites only the entries that changed (:mod:`ingest.checkpoint`).

The whole document is ``["topology.state", VERSION, value]``, compressed with zlib (inflating stops
at :data:`MAX_BYTES`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack
import numpy as np

from ingest.clock import MergedClock, SourceClock
from ingest.reorder import ReorderBuffer
from topology.catalog import AddressKind, HealthState, TraceSummary
from topology.model import Direction, EdgeKey, EdgePartial, EdgeWindow, Granularity, Layer, NodeKind, Side
from topology.sketch import LatencySketch
from topology.stages import (
    final,
    ipc,
    ipc_points,
    network_stage1,
    network_stage2,
    trace,
    trace_native,
    vpc,
)
from topology.stats import EdgeStats
from topology.wire import metric_columns

MAGIC = "topology.state"
VERSION = 2  # 1 was pickle: refused
MAX_BYTES = 1 << 30  # an inflated checkpoint larger than this is refused

# extension codes
_TUPLE, _SET, _FROZENSET, _ODICT, _BIGINT, _ARRAY, _SCALAR, _ENUM, _OBJECT, _REF, _SHARED = range(1, 12)


class StateError(ValueError):
    """State that cannot be written, or bytes that are not a checkpoint of this version."""


@dataclass(frozen=True)
class Schema:
    """How one state class is written: ``tag`` and ``version`` name it in the checkpoint, ``fields``
    are written in this order; ``derived`` fields are not written and are rebuilt by ``rebuild``."""

    cls: type
    tag: str
    fields: tuple[str, ...]
    version: int = 1
    derived: tuple[str, ...] = ()
    rebuild: Callable[[Any], None] | None = None
    # fields written as plain columns: name -> (to columns, from columns)
    columns: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = field(default_factory=dict)
    legacy: dict[int, tuple[str, ...]] = field(default_factory=dict)  # older versions read: their fields
    _all: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_all", frozenset(self.fields) | frozenset(self.derived))
        slots = _slots(self.cls)
        if slots - self._all:  # slots are fixed by the class: checked once, here
            missing = sorted(slots - self._all)
            raise StateError(f"{self.tag} has slots its checkpoint schema does not list: {missing}")

    def values(self, obj: Any) -> list[Any]:
        d = getattr(obj, "__dict__", None)
        if d is not None and not d.keys() <= self._all:
            unknown = sorted(set(d) - self._all)
            raise StateError(f"{self.tag} has fields its checkpoint schema does not list: {unknown}")
        if self.columns:
            return [self.columns[f][0](getattr(obj, f)) if f in self.columns else getattr(obj, f)
                    for f in self.fields]
        return [getattr(obj, f) for f in self.fields]

    def make(self, version: int, values: list[Any]) -> Any:
        fields, columns = self.fields, self.columns
        if version != self.version:
            if version not in self.legacy:
                raise StateError(f"{self.tag} version {version} is not readable (this build: {self.version})")
            fields, columns = self.legacy[version], {}
        if len(values) != len(fields):
            raise StateError(f"{self.tag} has {len(values)} fields, its schema {len(fields)}")
        obj = object.__new__(self.cls)
        for name, value in zip(fields, values, strict=True):
            if name in columns:
                try:
                    value = columns[name][1](value)
                except (TypeError, ValueError, KeyError) as e:
                    raise StateError(f"malformed {self.tag}.{name}: {type(e).__name__}: {e}") from None
            object.__setattr__(obj, name, value)
        if self.rebuild is not None:
            self.rebuild(obj)
        return obj


def _slots(cls: type) -> set[str]:
    return {s for klass in cls.__mro__ for s in getattr(klass, "__slots__", ())
            if s not in ("__dict__", "__weakref__")}


def _attributes(obj: Any) -> set[str]:
    return set(getattr(obj, "__dict__", ())) | _slots(type(obj))


def _dataclass(cls: type, tag: str, **kw: Any) -> Schema:
    import dataclasses

    return Schema(cls, tag, tuple(f.name for f in dataclasses.fields(cls)), **kw)


def _set(**values: Any) -> Callable[[Any], None]:
    def rebuild(obj: Any) -> None:
        for k, v in values.items():
            object.__setattr__(obj, k, v() if callable(v) else v)
    return rebuild


def _rebuild_network1(st: Any) -> None:
    st._name_array = np.array(st._names, dtype=object)
    st._addr_text = {}
    st._touched = set()


# NETWORK stage 2's windows hold tens of thousands of edge accumulators: written as columns of plain
# values (msgpack packs those without a call into Python per value), not an object each.
_ACC_FIELDS = ("first", "last", "connections", "sent", "received", "proto")
_NODE_KINDS = {k.value: k for k in NodeKind}


def _accs_out(accs: list[Any]) -> list[Any]:
    return [*([getattr(a, f) for a in accs] for f in _ACC_FIELDS),
            [sorted(a.ports) for a in accs], [None if a.inter is None else sorted(a.inter) for a in accs],
            [a.source_kind.value for a in accs], [a.target_kind.value for a in accs],
            [a.source_app for a in accs], [a.target_app for a in accs]]


def _accs_in(cols: list[Any], n: int) -> list[Any]:
    if not isinstance(cols, list) or len(cols) != len(_ACC_FIELDS) + 6 \
            or not all(isinstance(c, list) and len(c) == n for c in cols):
        raise StateError("malformed edge accumulators")
    new, acc_cls = object.__new__, network_stage2._Acc
    out = []
    for first, last, conns, sent, recv, proto, ports, inter, sk, tk, sa, ta in zip(*cols, strict=True):
        a = new(acc_cls)
        a.first, a.last, a.connections, a.sent, a.received, a.proto = first, last, conns, sent, recv, proto
        a.ports, a.inter = set(ports), None if inter is None else set(inter)
        a.source_kind, a.target_kind, a.source_app, a.target_app = _NODE_KINDS[sk], _NODE_KINDS[tk], sa, ta
        out.append(a)
    return out


def _edges_out(d: dict[tuple[str, str, int], Any]) -> list[Any]:
    """``{(source, target, side): _Acc}`` as columns."""
    return [[k[0] for k in d], [k[1] for k in d], [k[2] for k in d], _accs_out(list(d.values()))]


def _edges_in(cols: Any) -> dict[tuple[str, str, int], Any]:
    if not isinstance(cols, list) or len(cols) != 4 or not all(isinstance(c, list) for c in cols[:3]):
        raise StateError("malformed window edges")
    src, dst, side, accs = cols
    return dict(zip(zip(src, dst, side, strict=True), _accs_in(accs, len(src)), strict=True))


def _into_out(d: dict[tuple[Granularity, str], dict[tuple[str, int], Any]]) -> list[Any]:
    """``{(granularity, target): {(source, side): _Acc}}`` as columns, in order."""
    rows = [(g, t, s, side, a) for (g, t), inner in d.items() for (s, side), a in inner.items()]
    return [[r[0].value for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
            _accs_out([r[4] for r in rows])]


def _into_in(cols: Any) -> dict[tuple[Granularity, str], dict[tuple[str, int], Any]]:
    if not isinstance(cols, list) or len(cols) != 5 or not all(isinstance(c, list) for c in cols[:4]):
        raise StateError("malformed window targets")
    out: dict[tuple[Granularity, str], dict[tuple[str, int], Any]] = {}
    accs = _accs_in(cols[4], len(cols[0]))
    for g, t, s, side, a in zip(*cols[:4], accs, strict=True):
        out.setdefault((Granularity(g), t), {})[(s, side)] = a
    return out


def _sent_out(sent: set[tuple[Granularity, str, str, int]] | None) -> Any:
    if sent is None:
        return None
    return [[k[0].value for k in sent], [k[1] for k in sent], [k[2] for k in sent], [k[3] for k in sent]]


def _sent_in(cols: Any) -> set[tuple[Granularity, str, str, int]] | None:
    if cols is None:
        return None
    if not isinstance(cols, list) or len(cols) != 4 or not all(isinstance(c, list) for c in cols):
        raise StateError("malformed window early edges")
    grans = {g.value: g for g in Granularity}
    return {(grans[g], s, t, side) for g, s, t, side in zip(*cols, strict=True)}


_EDGE_COLUMNS = (_edges_out, _edges_in)
_WINDOW_V1 = ("app", "cluster", "direct", "dirty", "early_sent", "emitted_into", "flushed", "joins", "nat",
              "nat_new")

#: Every class whose instances a checkpoint may hold.
SCHEMAS: tuple[Schema, ...] = (
    _dataclass(SourceClock, "clock.source"),
    _dataclass(MergedClock, "clock.merged"),
    _dataclass(ReorderBuffer, "reorder"),
    _dataclass(EdgeStats, "stats"),
    _dataclass(LatencySketch, "sketch"),
    _dataclass(EdgeKey, "edge.key"),
    _dataclass(EdgePartial, "edge.partial"),
    _dataclass(EdgeWindow, "edge.window"),
    _dataclass(TraceSummary, "trace.summary", version=2),  # 2: kept spans
    _dataclass(network_stage1.FlowAggregate, "network1.aggregate"),
    Schema(network_stage1.FlowAggregates, "network1.aggregates", ("rows",)),
    Schema(network_stage1.NetworkStage1, "network1",
           ("window_seconds", "_pending", "_names", "_ids", "_known", "_checked", "_early", "counters"),
           derived=("_name_array", "_addr_text", "_touched"), rebuild=_rebuild_network1),
    Schema(network_stage2._Acc, "network2.acc", network_stage2._Acc.__slots__),
    Schema(network_stage2._Join, "network2.join", network_stage2._Join.__slots__),
    # 2: edges as columns; the direct-edge shortcuts (a cache of app and cluster entries) not written
    Schema(network_stage2._Window, "network2.window",
           tuple(f for f in network_stage2._Window.__slots__ if f != "direct"), version=2,
           derived=("direct",), rebuild=_set(direct=dict),
           columns={"app": _EDGE_COLUMNS, "cluster": _EDGE_COLUMNS, "emitted_into": (_into_out, _into_in),
                    "early_sent": (_sent_out, _sent_in)},
           legacy={1: _WINDOW_V1}),
    # the leases next to unattributed traffic go out with every flush: a restored stage starts without
    Schema(network_stage2.NetworkStage2, "network2",
           ("addresses", "window_seconds", "grace_seconds", "_windows", "_watermark", "_book_version",
            "counters"), derived=("_peer_leases", "_touched"), rebuild=_set(_peer_leases=dict, _touched=set)),
    Schema(vpc.VpcStage, "vpc", ("counters",)),
    _dataclass(ipc.IpcObservation, "ipc.observation"),
    # The series' shortcuts to the accumulator it last added to are valid until the next flush only;
    # they are rebuilt by the next point (as for a series restored before they existed).
    Schema(ipc_points._Series, "ipc.series",
           ("base", "bounds", "counts", "endpoint", "error", "group", "layout", "protocol", "seen", "start",
            "stat", "total", "value"),
           derived=("acc", "acc_epoch", "acc_window", "join", "join_epoch", "join_window", "run", "run_acc"),
           rebuild=_set(acc=None, join=None, run=None, run_acc=None, acc_epoch=-1, acc_window=-1,
                        join_epoch=-1, join_window=-1)),
    Schema(ipc._Acc, "ipc.acc", ipc._Acc.__slots__),
    Schema(ipc_points._StatJoin, "ipc.statjoin", ipc_points._StatJoin.__slots__),
    # the point-by-point stage 1 (the fallback when the native decoder is not built)
    Schema(ipc_points.PointIpcStage1, "ipc1",
           ("window_seconds", "max_series", "counters", "_series", "_services", "_accs", "_stats",
            "_bucket_maps", "_watermark", "_epoch"),
           derived=("_unpackers",), rebuild=_set(_unpackers=dict)),
    # the native stage 1: Python's tables of groups, bases and texts, the core's state as its own bytes
    Schema(ipc.IpcStage1, "ipc1.columns",  # 2: the per-point work moved into the native core
           ("window_seconds", "max_series", "_counters", "_services", "_groups", "_group_ids", "_bases",
            "_texts", "_text_ids", "_core"),
           columns={"_core": (lambda core: core.dump(), metric_columns.load_ipc_core)}, version=2),
    Schema(ipc.IpcStage2, "ipc2", ("addresses", "counters", "_pending")),
    Schema(trace._Acc, "trace.acc", trace._Acc.__slots__),
    Schema(trace.PythonSpanPairer, "trace.pairer",  # 2: traces keep their spans
           ("wait_seconds", "max_pending", "window_seconds", "_wns", "max_traces", "max_trace_spans",
            "counters", "_clients", "_servers", "_n_servers", "_producers", "_obs", "_traces", "_summaries",
            "_identities"),
           version=2),
    # the native pairer's state is the extension's own bytes (every map in its order)
    Schema(trace_native.NativeSpanPairer, "trace.pairer.native",
           ("wait_seconds", "max_pending", "window_seconds", "max_traces", "max_trace_spans", "_core"),
           columns={"_core": (lambda core: core.dump(), trace_native.load_core)}),
    # the version a slot emitted last is not written: a restored slot emits its next version anyway
    Schema(final._Slot, "final.slot", tuple(f for f in final._Slot.__slots__ if f != "last"),
           derived=("last",), rebuild=_set(last=None)),
    Schema(final.FinalStage, "final",  # 2: late parts merged into stored windows
           ("window_seconds", "grace_seconds", "health", "refresh_seconds", "_written", "_held", "_refreshed",
            "_windows", "_watermark", "counters", "late_seconds", "_late", "floor"), version=2),
)

ENUMS: tuple[type[Enum], ...] = (Layer, Granularity, NodeKind, Direction, Side, HealthState, AddressKind)


@dataclass(frozen=True)
class Sections:
    """A state class whose dict ``fields`` (keyed by int or str) are checkpointed entry by entry:
    ``take`` names the method that returns the keys changed since its last call. Entries must not
    share objects with each other or with the rest of the state (each is written on its own).

    One field: its keys are the section keys, and ``take`` returns them. Several fields: each has a
    prefix (``fields`` maps field to prefix), their keys are ints, a section key is the prefix and
    the key (``"p1700000000"``), and ``take`` returns (field, key) pairs."""

    fields: dict[str, str]  # field -> prefix of its section keys ("" for a single field: the key itself)
    take: str

    def __post_init__(self) -> None:
        prefixes = list(self.fields.values())
        if len(prefixes) > 1 and (len(set(prefixes)) != len(prefixes)
                                  or not all(re.fullmatch("[a-z]+", p) for p in prefixes)):
            raise StateError("several sectioned fields need distinct prefixes of letters")


#: State classes checkpointed incrementally (see :mod:`ingest.checkpoint`): NETWORK stage 2's windows,
#: NETWORK stage 1's pending rows and remembered keys of each window.
SECTIONED: dict[type, Sections] = {
    network_stage2.NetworkStage2: Sections({"_windows": ""}, "take_touched"),
    network_stage1.NetworkStage1: Sections({"_pending": "p", "_known": "k"}, "take_touched"),
}


def split(state: Any) -> tuple[Any, dict[Any, Any], set[Any]] | None:
    """``state`` as (head, sections, keys changed since the last split) if its class is sectioned
    (the head is a shallow copy with no sections), else None. Resets the changed keys."""
    spec = SECTIONED.get(type(state))
    if spec is None:
        return None
    head = copy.copy(state)
    for name in spec.fields:
        object.__setattr__(head, name, {})
    touched = getattr(state, spec.take)()
    if len(spec.fields) == 1:
        (name,) = spec.fields
        return head, getattr(state, name), set(touched)
    sections = {f"{prefix}{k}": v for name, prefix in spec.fields.items()
                for k, v in getattr(state, name).items()}
    return head, sections, {f"{spec.fields[name]}{k}" for name, k in touched}


def join(head: Any, sections: dict[Any, Any]) -> Any:
    """The state ``split`` took apart (raises :class:`StateError` for a head of another class)."""
    spec = SECTIONED.get(type(head))
    if spec is None or any(getattr(head, name) != {} for name in spec.fields):
        raise StateError(f"{type(head).__name__} is not the head of a sectioned state")
    if not all(type(k) in (int, str) for k in sections):
        raise StateError("section keys are ints or strings")
    if len(spec.fields) == 1:
        (name,) = spec.fields
        object.__setattr__(head, name, sections)
        return head
    by_prefix: dict[str, dict[int, Any]] = {p: getattr(head, name) for name, p in spec.fields.items()}
    for key, value in sections.items():
        m = re.fullmatch(r"([a-z]+)(-?[0-9]+)", key) if type(key) is str else None
        if m is None or m[1] not in by_prefix:
            raise StateError(f"{type(head).__name__} has no section {key!r}")
        by_prefix[m[1]][int(m[2])] = value
    return head


_BY_CLASS = {s.cls: s for s in SCHEMAS}
_BY_TAG = {s.tag: s for s in SCHEMAS}
_ENUM_BY_CLASS = {e: e.__name__ for e in ENUMS}
_ENUM_BY_NAME = {e.__name__: e for e in ENUMS}
_NUMERIC = frozenset("biuf")  # dtype kinds an array or scalar may have
_INT64 = (-(1 << 63), (1 << 64) - 1)


class _Writer:
    def __init__(self, shared: dict[str, Any]) -> None:
        self.shared = {id(v): k for k, v in shared.items()}
        self.seen: dict[int, int] = {}
        self.open: set[int] = set()
        self.keep: list[Any] = []  # keeps ids unique while writing
        # Extensions are packed from inside ``default``, while their container is being packed: one
        # packer per nesting depth (a packer is not reentrant, and making one per value is slow).
        self.packers: list[msgpack.Packer] = []
        self.depth = 0

    def pack(self, value: Any) -> bytes:
        if self.depth == len(self.packers):
            self.packers.append(msgpack.Packer(default=self.default, strict_types=True, use_bin_type=True))
        packer = self.packers[self.depth]
        self.depth += 1
        try:
            return packer.pack(value)
        except BaseException:
            packer.reset()
            raise
        finally:
            self.depth -= 1

    def default(self, v: Any) -> msgpack.ExtType:
        t = type(v)
        if t is tuple:
            return msgpack.ExtType(_TUPLE, self.pack(list(v)))
        if t is set or t is frozenset:
            return msgpack.ExtType(_SET if t is set else _FROZENSET, self.pack(list(v)))
        if t is OrderedDict:
            return msgpack.ExtType(_ODICT, self.pack([x for item in v.items() for x in item]))
        if t is int:
            return msgpack.ExtType(_BIGINT, str(v).encode())
        if t is np.ndarray:
            return msgpack.ExtType(_ARRAY, self.pack([_dtype(v.dtype), list(v.shape),
                                                      np.ascontiguousarray(v).tobytes()]))
        if isinstance(v, np.generic):
            return msgpack.ExtType(_SCALAR, self.pack([_dtype(v.dtype), v.tobytes()]))
        if t in _ENUM_BY_CLASS:
            return msgpack.ExtType(_ENUM, self.pack([_ENUM_BY_CLASS[t], v.value]))
        name = self.shared.get(id(v))
        if name is not None:
            return msgpack.ExtType(_SHARED, name.encode())
        schema = _BY_CLASS.get(t)
        if schema is None:
            raise StateError(f"{t.__module__}.{t.__qualname__} is not a checkpoint state type")
        n = self.seen.get(id(v))
        if n is not None:
            if id(v) in self.open:
                raise StateError(f"{schema.tag} contains itself")
            return msgpack.ExtType(_REF, self.pack(n))
        n = self.seen[id(v)] = len(self.seen)
        self.keep.append(v)
        self.open.add(id(v))
        body = self.pack([n, schema.tag, schema.version, schema.values(v)])
        self.open.discard(id(v))
        return msgpack.ExtType(_OBJECT, body)


def _dtype(dt: np.dtype[Any]) -> Any:
    if dt.hasobject:
        raise StateError("object arrays are not checkpoint state")
    return dt.str if dt.fields is None else [list(f) for f in dt.descr]


class _Reader:
    def __init__(self, shared: dict[str, Any]) -> None:
        self.shared = shared
        self.objects: dict[int, Any] = {}

    def unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self.ext, strict_map_key=False, raw=False, use_list=True)

    def ext(self, code: int, data: bytes) -> Any:
        if code == _TUPLE:
            return tuple(self._list(data))
        if code == _SET:
            return set(self._list(data))
        if code == _FROZENSET:
            return frozenset(self._list(data))
        if code == _ODICT:
            flat = self._list(data)
            if len(flat) % 2:
                raise StateError("malformed ordered dict")
            return OrderedDict(zip(flat[::2], flat[1::2], strict=True))
        if code == _BIGINT:
            return int(data.decode("ascii"))
        if code == _ARRAY:
            descr, shape, raw = self._list(data, 3)
            dt = _read_dtype(descr)
            if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
                raise StateError("bad array shape")
            if not isinstance(raw, bytes) or len(raw) != dt.itemsize * int(np.prod(shape, dtype=np.int64)):
                raise StateError("array bytes do not match its shape")
            return np.frombuffer(raw, dtype=dt).reshape(shape).copy()
        if code == _SCALAR:
            descr, raw = self._list(data, 2)
            dt = _read_dtype(descr)
            if not isinstance(raw, bytes) or len(raw) != dt.itemsize:
                raise StateError("bad scalar")
            return np.frombuffer(raw, dtype=dt)[0]
        if code == _ENUM:
            name, value = self._list(data, 2)
            enum = _ENUM_BY_NAME.get(name) if isinstance(name, str) else None
            if enum is None:
                raise StateError(f"unknown enum {name!r}")
            return enum(value)
        if code == _SHARED:
            key = data.decode("utf-8")
            if key not in self.shared:
                raise StateError(f"checkpoint refers to an unknown shared object {key!r}")
            return self.shared[key]
        if code == _REF:
            n = self.unpack(data)
            if type(n) is not int or n not in self.objects:
                raise StateError(f"reference to an unknown object {n!r}")
            return self.objects[n]
        if code == _OBJECT:
            n, tag, version, values = self._list(data, 4)
            schema = _BY_TAG.get(tag) if isinstance(tag, str) else None
            if schema is None:
                raise StateError(f"unknown state type {tag!r}")
            if type(n) is not int or n in self.objects or type(version) is not int \
                    or not isinstance(values, list):
                raise StateError(f"malformed {tag}")
            obj = self.objects[n] = schema.make(version, values)
            return obj
        raise StateError(f"unknown extension {code}")

    def _list(self, data: bytes, n: int | None = None) -> list[Any]:
        v = self.unpack(data)
        if not isinstance(v, list) or (n is not None and len(v) != n):
            raise StateError("malformed extension")
        return v


def _read_dtype(descr: Any) -> np.dtype[Any]:
    try:
        if isinstance(descr, str):
            dt = np.dtype(descr)
        elif isinstance(descr, list) and descr and all(
                isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f) for f in descr):
            dt = np.dtype([(name, kind) for name, kind in descr])
        else:
            raise StateError(f"bad dtype {descr!r}")
    except TypeError as e:
        raise StateError(f"bad dtype {descr!r}") from e
    kinds = [dt] if dt.fields is None else [f[0] for f in dt.fields.values()]
    if any(k.kind not in _NUMERIC or k.subdtype is not None for k in kinds):
        raise StateError(f"dtype {descr!r} is not a numeric dtype")
    return dt


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """No cyclic garbage collection while a checkpoint is written or read: the many short-lived
    lists it makes would start full collections over the stage's (large, long-lived) heap."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def dumps(state: Any, shared: dict[str, Any] | None = None) -> bytes:
    """``state`` as checkpoint bytes; ``shared`` objects are written as their name."""
    with _no_collection():
        return zlib.compress(_Writer(shared or {}).pack([MAGIC, VERSION, state]), 1)


def loads(data: bytes, shared: dict[str, Any] | None = None) -> Any:
    """The state in checkpoint bytes (raises :class:`StateError` for anything else)."""
    try:
        d = zlib.decompressobj()
        raw = d.decompress(data, MAX_BYTES)
        if d.unconsumed_tail:
            raise StateError(f"checkpoint inflates beyond {MAX_BYTES} bytes")
        with _no_collection():
            doc = _Reader(shared or {}).unpack(raw)
    except StateError:
        raise
    except Exception as e:  # zlib, msgpack, a value an enum or a dtype refuses, recursion
        raise StateError(f"not a readable checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(doc, list) or len(doc) != 3 or doc[0] != MAGIC:
        raise StateError("not a topology state checkpoint")
    if doc[1] != VERSION:
        raise StateError(f"checkpoint format version {doc[1]!r} is not readable (this build reads {VERSION})")
    return doc[2]

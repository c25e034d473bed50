"""The checkpoint format (:mod:`ingest.state`, :mod:`ingest.checkpoint`): every stage's state round
trips (a simulated fleet restarted from its checkpoints stores what it stores without restarts, and
each restored state equals the one written), plain values of every kind round trip (hypothesis), and
nothing but a checkpoint of this format is read: a pickle that would run code is refused whatever
the header says, and so are arbitrary bytes, unknown types and object arrays, always as
:class:`BadCheckpoint` / :class:`StateError`, never another exception."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import struct
import zlib
from collections import OrderedDict
from enum import Enum
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ingest import checkpoint, state
from ingest.clock import MergedClock, SourceClock
from ingest.record import Partition
from tests.ingest.fleet import STEP, FleetRun, publish
from tests.ingest.testing import last_windows
from topology.address import AddressBook
from topology.model import EdgeKey, Granularity, Layer, Side
from topology.sim import Simulator, generate_fleet
from topology.stages.network_stage2 import NetworkStage2
from topology.store.embedded import open_stores
from topology.wire import spans

START = 1_800_000_000.0
TP = Partition("topology.flows", 0)


# -- a value's shape, for "equal state" ---------------------------------------------------------------
def shape(v: Any, shared: dict[int, str]) -> Any:
    """A comparable picture of ``v``: containers keep their order (dicts, lists), sets do not; state
    objects are their tag and their written fields; shared objects their name; NaN equals NaN."""
    t = type(v)
    if id(v) in shared:
        return ("shared", shared[id(v)])
    if t is float:
        return ("float", struct.pack("<d", v)) if math.isnan(v) else ("float", v)
    if t in (int, str, bytes, bool) or v is None:
        return (t.__name__, v)
    if isinstance(v, Enum):
        return (t.__name__, v.value)
    if t in (list, tuple):
        return (t.__name__, tuple(shape(x, shared) for x in v))
    if t in (set, frozenset):
        return (t.__name__, frozenset(shape(x, shared) for x in v))
    if t in (dict, OrderedDict):
        return (t.__name__, tuple((shape(k, shared), shape(x, shared)) for k, x in v.items()))
    if t is np.ndarray:
        return ("array", v.dtype.str, v.dtype.descr, v.shape, v.tobytes())
    if isinstance(v, np.generic):
        return ("scalar", v.dtype.str, v.tobytes())
    if spans.is_pairer(v):  # the native pairer's state: its own bytes, every map in order
        return ("native pairer", v.dump())
    if t.__module__ == "topology.wire._metrics" and t.__name__ == "IpcCore":  # the IPC stage 1's, as well
        return ("native ipc core", v.dump())
    schema = state._BY_CLASS[t]
    return (schema.tag, tuple(shape(getattr(v, f), shared) for f in schema.fields))


# -- every stage's state -----------------------------------------------------------------------------
class _Cut(FleetRun):
    """A fleet run whose stages all restart from their checkpoints after the cycles in ``cuts``, and
    which checks, at each cut, that every restored state equals the state written."""

    def run(self, services: int, seed: int, cycles: int, cuts: set[int]) -> None:
        sim = Simulator(generate_fleet(services=services, seed=seed), seed=seed, start=START)
        publish(self.bus, self.topics, sim.initial_records(), START)
        t = START
        for i in range(cycles):
            publish(self.bus, self.topics, sim.step(t, STEP), t + STEP)
            t += STEP
            self.chain.cycle(t, early=i % 2 == 0, save=True)
            if i in cuts:
                self.restart_all()
        self.chain.drain(t + 150)

    def restart_all(self) -> None:
        for stage in self.chain.stages:
            shared = stage.spec.shared()
            names = {id(v): k for k, v in shared.items()}
            written = {tp: shape({"logic": ps.logic.state(), "clock": ps.clock}, names)
                       for tp, ps in stage.runner.parts.items()}
            stage.restart()
            for tp in stage.state_topic:
                restored = stage.restored(tp)
                assert restored is not None
                saved = restored[1]
                assert shape({"logic": saved.logic, "clock": saved.clock}, names) == written[tp], tp


def _stored(run: FleetRun) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for layer in ("network", "ipc", "trace"):
        out[layer] = last_windows(run.stage(3, layer).effects)
    out["meta"] = [e.to_dict() for e in run.stage(1, "meta").effects]
    out["dead"] = sorted(d["reason"] for s in run.stages.values() for d in s.dead)
    return out


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # a fleet run is too slow to shrink
@given(seed=st.integers(0, 10_000), cuts=st.sets(st.integers(0, 11), min_size=1, max_size=3))
def test_a_fleet_restarted_from_its_checkpoints_stores_what_it_stores_without_restarts(
        tmp_path_factory: pytest.TempPathFactory, seed: int, cuts: set[int]) -> None:
    results = []
    for restart in (set(), cuts):
        stores = open_stores(tmp_path_factory.mktemp("store") / "s")
        try:
            run = _Cut(stores)
            run.run(20, seed, 12, restart)
            results.append(_stored(run))
        finally:
            asyncio.run(stores.close())
    assert results[0]["network"] and results[0]["ipc"] and results[0]["trace"]
    assert results[1] == results[0]


# -- plain values --------------------------------------------------------------------------------------
_scalars = (st.none() | st.booleans() | st.integers(-(1 << 80), 1 << 80) | st.floats(allow_nan=False)
            | st.text(max_size=8) | st.binary(max_size=8) | st.sampled_from(list(Side) + list(Granularity)))
_hashable = st.recursive(_scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
                         max_leaves=8)
_values = st.recursive(
    _hashable,
    lambda inner: (st.lists(inner, max_size=4) | st.dictionaries(_hashable, inner, max_size=4)
                   | st.sets(_hashable, max_size=4)
                   | st.dictionaries(_hashable, inner, max_size=4).map(OrderedDict)),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(_values)
def test_plain_values_round_trip_with_their_types(v: Any) -> None:
    assert shape(state.loads(state.dumps(v)), {}) == shape(v, {})


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["<i8", "<u2", "|u1", "<f8", "<u8"]), st.lists(st.integers(0, 255), max_size=40))
def test_numeric_arrays_and_scalars_round_trip(dtype: str, raw: list[int]) -> None:
    dt = np.dtype(dtype)
    data = bytes(raw[: len(raw) // dt.itemsize * dt.itemsize])
    a = np.frombuffer(data, dtype=dt)
    structured = np.zeros(3, dtype=[("app", "<i8"), ("port", "<u2"), ("hi", "<u8")])
    structured["port"] = [1, 2, 3]
    back = state.loads(state.dumps([a, structured, np.uint64(7), np.float64(0.5)]))
    assert back[0].dtype == dt and back[0].tobytes() == a.tobytes()
    assert back[1].dtype == structured.dtype and back[1].tobytes() == structured.tobytes()
    assert type(back[2]) is np.uint64 and back[2] == 7 and type(back[3]) is np.float64
    back[0].setflags(write=True)  # a restored array is the stage's to change


def test_a_state_object_met_twice_is_one_object_after_restore() -> None:
    key = EdgeKey(Layer.IPC, Granularity.APP, "a", "b")
    clock = SourceClock(now=5.0)
    a, b = state.loads(state.dumps([clock, {"again": clock, "key": key}]))
    assert a is b["again"] and a == clock and b["key"] == key


def test_shared_objects_are_written_as_their_name_and_reattached() -> None:
    book, other = AddressBook(), AddressBook()
    stage = NetworkStage2(book, 60, 120)
    data = state.dumps(stage, {"addresses": book})
    assert state.loads(data, {"addresses": other}).addresses is other
    with pytest.raises(state.StateError, match="unknown shared object"):
        state.loads(data, {})


# -- what cannot be written ------------------------------------------------------------------------
def test_an_unknown_type_or_an_unlisted_field_cannot_be_written() -> None:
    class Foreign:
        pass

    with pytest.raises(state.StateError, match="not a checkpoint state type"):
        state.dumps({"x": Foreign()})
    clock = MergedClock()
    clock.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(state.StateError, match="does not list"):
        state.dumps(clock)
    with pytest.raises(state.StateError, match="object arrays"):
        state.dumps(np.array(["a"], dtype=object))
    with pytest.raises(state.StateError, match="not a checkpoint state type"):
        state.dumps(AddressBook())  # not shared: never written


def test_every_stage_state_type_is_listed_with_all_its_fields() -> None:
    """A fresh instance of each stage state class has exactly the attributes its schema names."""
    from topology.stages import final, ipc, network_stage1, trace, vpc

    fresh = [network_stage1.NetworkStage1(), NetworkStage2(AddressBook()), ipc.IpcStage1(),
             ipc.IpcStage2(AddressBook()), trace.SpanPairer(), final.FinalStage(), vpc.VpcStage(),
             SourceClock(), MergedClock()]
    for obj in fresh:
        schema = state._BY_CLASS[type(obj)]
        assert state._attributes(obj) == set(schema.fields) | set(schema.derived), schema.tag


# -- what cannot be read ---------------------------------------------------------------------------
class _Marker:
    """Unpickling this writes a file: the proof that a checkpoint ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, ...]]:
        return os.system, (f"touch {self.path}",)


def _pickle_payloads(marker: Path) -> list[bytes]:
    bomb = pickle.dumps({"logic": _Marker(marker), "clock": None})
    return [bomb, zlib.compress(bomb, 1)]  # raw, and as the pickle format wrote it


class _Message:
    def __init__(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.key, self.value, self.headers = key, value, headers


def test_a_pickle_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for payload in _pickle_payloads(marker):
        with pytest.raises(checkpoint.BadCheckpoint):
            checkpoint.decode(payload)
        for fmt in (b"1", checkpoint.FORMAT):
            records = checkpoint.to_records(checkpoint.Checkpoint(TP, 7, payload))
            msgs = [_Message(*m) for m in records]
            for m in msgs:
                m.headers = [(k, fmt if k == "ckpt.format" else v) for k, v in m.headers]
            if fmt == b"1":
                with pytest.raises(checkpoint.BadCheckpoint, match="pickle checkpoints are never read"):
                    checkpoint.assemble(msgs, TP)
            else:
                cp = checkpoint.assemble(msgs, TP)
                assert cp is not None and cp.offset == 7
                with pytest.raises(checkpoint.BadCheckpoint, match="not a readable checkpoint"):
                    checkpoint.decode(cp.state)
    assert not marker.exists()
    # the same pickle, had it been unpickled, would have written the marker (the test can fail)
    pickle.loads(_pickle_payloads(marker)[0])
    assert marker.exists()


@pytest.mark.parametrize("headers", [
    [("ckpt.format", b"2"), ("ckpt.id", b"x"), ("ckpt.part", b"0"), ("ckpt.parts", b"many")],
    [("ckpt.format", b"2"), ("ckpt.part", b"0"), ("ckpt.parts", b"1"), ("ckpt.offset", b"1")],
    [("ckpt.format", b"2"), ("ckpt.id", b"x"), ("ckpt.part", b"5"), ("ckpt.parts", b"1")],
    [("ckpt.id", b"x"), ("ckpt.part", b"0"), ("ckpt.parts", b"1"), ("ckpt.offset", b"1")],
    [("ckpt.format", b"2"), ("ckpt.id", b"x"), ("ckpt.part", b"0"), ("ckpt.parts", b"1"),
     ("ckpt.offset", b"1"), ("ckpt.sections", b"60,120=y")],  # a manifest entry without its checkpoint id
])
def test_a_checkpoint_with_malformed_headers_is_refused(headers: list[tuple[str, bytes]]) -> None:
    prefix = (checkpoint.state_key(TP) + "#").encode()
    with pytest.raises(checkpoint.BadCheckpoint):
        checkpoint.assemble([_Message(prefix + b"0", b"", headers)], TP)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_as_bad_checkpoints(data: bytes) -> None:
    for blob in (data, zlib.compress(data)):
        with pytest.raises(checkpoint.BadCheckpoint):
            checkpoint.decode(blob)


def _doc(value: Any) -> bytes:
    return zlib.compress(msgpack.packb([state.MAGIC, state.VERSION, value], use_bin_type=True))


def _ext(code: int, value: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize(("value", "message"), [
    (_ext(state._OBJECT, [0, "os.system", 1, []]), "unknown state type"),
    (_ext(state._OBJECT, [0, "clock.merged", 1, [1, 2]]), "fields"),
    (_ext(state._OBJECT, [0, "clock.merged", 9, [1, 2, 3]]), "version 9"),
    (_ext(state._ARRAY, ["|O", [1], b"\0" * 8]), "not a numeric dtype"),
    (_ext(state._ARRAY, [[["a", "|O"]], [1], b"\0" * 8]), "not a numeric dtype"),
    (_ext(state._ARRAY, ["<i8", [2], b"\0" * 8]), "do not match"),
    (_ext(state._ENUM, ["Side", "SIDEWAYS"]), "not a readable"),
    (_ext(state._ENUM, ["Path", "/"]), "unknown enum"),
    (_ext(state._REF, 3), "unknown object"),
    (_ext(42, b""), "unknown extension"),
])
def test_crafted_documents_are_refused(value: Any, message: str) -> None:
    with pytest.raises(state.StateError, match=message):
        state.loads(_doc(value))


def test_other_versions_and_oversized_documents_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(state.StateError, match="version 3"):
        state.loads(zlib.compress(msgpack.packb([state.MAGIC, 3, None])))
    with pytest.raises(state.StateError, match="not a topology state"):
        state.loads(zlib.compress(msgpack.packb(["other", 2, None])))
    monkeypatch.setattr(state, "MAX_BYTES", 1000)
    with pytest.raises(state.StateError, match="inflates beyond"):
        state.loads(state.dumps(b"\0" * 5000))

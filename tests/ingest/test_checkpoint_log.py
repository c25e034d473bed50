"""Incremental checkpoints (:class:`ingest.checkpoint.Log`, :func:`ingest.checkpoint.assemble`): a
checkpoint of NETWORK stage 2 writes its head and only the windows changed since the last one, and
the newest head plus the sections of its manifest restore exactly the state that was checkpointed,
whatever the history of changes and deletions, before or after compaction (hypothesis over the pure
write/assemble pair; the fleet restart test in ``test_state.py`` does the same through every spec).
A window's edge accumulators are written as columns of plain values, and read back exactly."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingest import checkpoint, state
from ingest.clock import MergedClock
from ingest.record import Partition
from tests.ingest.test_state import shape
from tests.ingest.testing import StateMessage
from tests.topology.stages.flowdata import encode_records
from topology.address import AddressBook
from topology.model import Granularity, NodeKind
from topology.stages.network_stage1 import NetworkStage1
from topology.stages.network_stage2 import NetworkStage2, _Acc, _Window
from topology.wire import flow

TP = Partition("topology.network.1", 3)
WS = 60


def new_stage(book: AddressBook) -> NetworkStage2:
    return NetworkStage2(book, WS, 120)


def touch(stage: NetworkStage2, w: int, tag: str) -> None:
    """A change to window ``w`` (created if new), as an aggregate added to it makes one."""
    window = stage._window(w * WS)
    assert window is not None
    window.nat_new.add((tag, None, "nat"))


def drop(stage: NetworkStage2, w: int) -> None:
    """Window ``w`` past its grace period, as flush deletes it."""
    if stage._windows.pop(w * WS, None) is not None:
        stage._touched.discard(w * WS)


def _restore(messages: list[StateMessage], compact: bool,
             book: AddressBook) -> tuple[checkpoint.Checkpoint, Any]:
    if compact:
        messages = _compacted(messages)
    cp = checkpoint.assemble(messages, TP, complete=True)
    assert cp is not None
    saved = checkpoint.decode(cp.state, {"addresses": book}, cp.sections)
    return cp, saved.logic


def _compacted(messages: list[StateMessage]) -> list[StateMessage]:
    """What compaction leaves: the latest message of each key, in order, without tombstones."""
    latest = {m.key: i for i, m in enumerate(messages)}
    return [m for i, m in enumerate(messages) if latest[m.key] == i and m.value is not None]


_ops = st.lists(st.tuples(st.sampled_from(["touch", "drop", "commit", "restart"]), st.integers(0, 5)),
                max_size=60)


@settings(max_examples=150, deadline=None)
@given(_ops, st.booleans())
@example([("touch", 0), ("commit", 0), ("drop", 0), ("commit", 0)], False)  # a tombstone before the head
def test_the_newest_head_and_its_sections_restore_the_state_checkpointed(
        ops: list[tuple[str, int]], compact: bool) -> None:
    book = AddressBook()
    names = {id(book): "addresses"}
    stage = new_stage(book)
    log = checkpoint.Log()
    messages: list[StateMessage] = []
    written: Any = None
    offset = 0
    for i, (op, w) in enumerate(ops):
        if op == "touch":
            touch(stage, w, f"c{i}")
        elif op == "drop":
            drop(stage, w)
        elif op == "restart":  # a new owner restores the last checkpoint and writes every section next
            if written is not None:
                cp, stage = _restore(messages, compact, book)
                assert shape(stage, names) == written
                log = checkpoint.Log.after(cp)
            else:
                stage, log = new_stage(book), checkpoint.Log()
        else:
            offset += 1
            records = log.records(TP, offset, stage, MergedClock(), {"addresses": book})
            messages.extend(StateMessage(*r) for r in records)
            written = shape(stage, names)
            cp, restored = _restore(messages, compact, book)
            assert cp.offset == offset
            assert shape(restored, names) == written
            # compaction keeps nothing of windows that are gone: a section key per live window
            kept = {m.key for m in _compacted(messages) if dict(m.headers).get("ckpt.kind") == b"section"}
            assert kept == {f"{checkpoint.state_key(TP)}#s{w}.0".encode() for w in stage._windows}


def _sections_written(records: list[checkpoint.Record]) -> list[str]:
    return [dict(h)["ckpt.section"].decode() for _, v, h in records
            if dict(h).get("ckpt.kind") == b"section" and v is not None]


def test_a_checkpoint_writes_the_head_and_the_windows_changed_since_the_last_one() -> None:
    book = AddressBook()
    stage = new_stage(book)
    for w in range(4):
        touch(stage, w, "a")
    log = checkpoint.Log()
    first = log.records(TP, 1, stage, MergedClock(), {"addresses": book})
    assert _sections_written(first) == [str(w * WS) for w in range(4)]
    assert _sections_written(log.records(TP, 2, stage, MergedClock(), {"addresses": book})) == []
    touch(stage, 3, "b")
    drop(stage, 0)
    second = log.records(TP, 3, stage, MergedClock(), {"addresses": book})
    assert _sections_written(second) == [str(3 * WS)]
    assert [k for k, v, _ in second if v is None] == [f"{checkpoint.state_key(TP)}#s0.0".encode()]  # gone
    head = dict(second[-1][2])
    assert head["ckpt.offset"] == b"3"
    manifest = checkpoint._manifest(head["ckpt.sections"], TP)
    assert list(manifest) == [str(w * WS) for w in (1, 2, 3)]
    assert manifest[str(3 * WS)] == head["ckpt.id"] != manifest[str(WS)]


def test_an_unchanged_section_is_rewritten_once_the_state_was_written_over_several_times() -> None:
    """Restore reads back at most about STALE_FACTOR times the state's size."""
    book = AddressBook()
    stage = new_stage(book)
    for w in range(2):
        touch(stage, w, "a")
    log = checkpoint.Log()
    log.records(TP, 1, stage, MergedClock(), {"addresses": book})
    for n in range(400):
        touch(stage, 1, f"b{n}")  # window 1 grows and is rewritten each time; window 0 never changes
        if str(0) in _sections_written(log.records(TP, 2 + n, stage, MergedClock(), {"addresses": book})):
            break
    else:
        raise AssertionError("an unchanged window was never rewritten")
    assert n >= checkpoint.STALE_FACTOR  # each commit here writes nearly the whole state


def test_a_whole_checkpoint_of_a_sectioned_state_is_still_read() -> None:
    """Checkpoints written before incremental ones (the whole stage in one document) restore as before."""
    book = AddressBook()
    stage = new_stage(book)
    touch(stage, 1, "a")
    data = checkpoint.encode(checkpoint.Saved(stage, MergedClock()), {"addresses": book})
    messages = [StateMessage(*r) for r in checkpoint.to_records(checkpoint.Checkpoint(TP, 9, data))]
    cp, restored = _restore(messages, False, book)
    names = {id(book): "addresses"}
    assert cp.offset == 9 and shape(restored, names) == shape(stage, names)


def _busy_window(book: AddressBook) -> NetworkStage2:
    """A stage with one window holding every kind of edge accumulator its columns must keep."""
    stage = new_stage(book)
    window = stage._window(0)
    assert window is not None
    plain = _Acc()
    plain.add(1.5, 2.5, 3, 400, 500, 6, 443)
    virtual = _Acc(NodeKind.SERVICE, NodeKind.DATABASE, "app-a", None)
    virtual.add(1.0, 9.0, 1, 1 << 70, 0, 17, 5432)  # a byte count beyond 64 bits
    virtual.inter = {"lb-1", "nat-2"}
    window.app[("a", "b", 0)] = plain
    window.cluster[("a-prod", "db", 1)] = virtual
    window.emitted_into[(Granularity.APP, "b")] = {("a", 0): _Acc(), ("c", 2): virtual}
    window.emitted_into[(Granularity.CLUSTER, "db")] = {("a-prod", 0): plain}
    window.early_sent = {(Granularity.APP, "a", "b", 0), (Granularity.CLUSTER, "x", "y", 2)}
    window.direct[("a", "a-prod", 1, "10.0.0.1")] = (0.0, 9.0, plain, None)  # a cache: not written
    stage._window(60)  # a window checkpointed before it had early edges
    stage._windows[60].early_sent = None
    return stage


def test_windows_written_as_columns_restore_every_accumulator() -> None:
    book = AddressBook()
    names = {id(book): "addresses"}
    stage = _busy_window(book)
    back = state.loads(state.dumps(stage, {"addresses": book}), {"addresses": book})
    assert shape(back, names) == shape(stage, names)
    window = back._windows[0]
    assert window.direct == {} and back._windows[60].early_sent is None
    acc = window.cluster[("a-prod", "db", 1)]
    assert (acc.sent, acc.ports, acc.inter, acc.target_kind) == (1 << 70, {5432}, {"lb-1", "nat-2"},
                                                                  NodeKind.DATABASE)
    assert window.app[("a", "b", 0)].inter is None and type(window.app[("a", "b", 0)].ports) is set


def test_a_window_checkpointed_before_columns_is_still_read() -> None:
    """Version 1 wrote a window's fields as objects (and its direct-edge cache): still read."""
    book = AddressBook()
    names = {id(book): "addresses"}
    stage = _busy_window(book)
    schema = state._BY_CLASS[_Window]
    state._BY_CLASS[_Window] = state.Schema(_Window, "network2.window", state._WINDOW_V1)
    try:
        data = state.dumps(stage, {"addresses": book})
    finally:
        state._BY_CLASS[_Window] = schema
    back = state.loads(data, {"addresses": book})
    assert shape(back, names) == shape(stage, names) and back._windows[0].direct == {}


def test_malformed_window_columns_are_refused() -> None:
    book = AddressBook()
    stage = _busy_window(book)
    schema = state._BY_CLASS[_Window]
    good = schema.values(stage._windows[0])
    i = schema.fields.index("app")
    for bad in (None, [["a"], ["b"], [0]], [["a"], ["b"], [0], [[1.0]] * 12], [["a"], ["b"], [0], [[]] * 12]):
        values = list(good)
        values[i] = bad
        with pytest.raises(state.StateError):
            schema.make(schema.version, values)


# -- NETWORK stage 1: each window's pending rows and remembered keys are sections -----------------------
S1 = 10


def _stage1_batch(i: int, w: int, n: int) -> Any:
    """A batch of ``n`` records in window ``w`` (keys drawn from a few apps and callees, so batches share
    keys and bring new ones)."""
    records = [{"start": T0 + w * S1 + (i + k) % S1, "app": f"app-{(i * 7 + k) % 4}", "role": "client",
                "local": "10.0.0.1:40000", "remote": f"10.0.1.{(i + 3 * k) % 6}:{443 + k % 2}",
                "sent": 100 + k, "received": i} for k in range(n)]
    return flow.decode(encode_records(records, emitted=T0 + w * S1 + S1))


T0 = 1_800_000_000

_ops1 = st.lists(st.tuples(st.sampled_from(["add", "add", "early", "close", "commit", "restart"]),
                           st.integers(0, 3), st.integers(1, 5)), max_size=40)


def _restore1(messages: list[StateMessage], compact: bool) -> tuple[checkpoint.Checkpoint, Any]:
    if compact:
        messages = _compacted(messages)
    cp = checkpoint.assemble(messages, TP, complete=True)
    assert cp is not None
    return cp, checkpoint.decode(cp.state, {}, cp.sections).logic


@settings(max_examples=120, deadline=None)
@given(_ops1, st.booleans())
def test_stage1_restored_from_its_head_and_sections_equals_the_state_checkpointed(
        ops: list[tuple[str, int, int]], compact: bool) -> None:
    """Batches added to windows, early flushes, closing flushes, commits and restarts in any order:
    the newest head and its sections restore exactly what was checkpointed, and the restored stage
    then emits exactly what the original emits for the same input."""
    stage = NetworkStage1(S1)
    log = checkpoint.Log()
    messages: list[StateMessage] = []
    written: Any = None
    offset = 0
    for i, (op, w, n) in enumerate(ops):
        if op == "add":
            stage.add(_stage1_batch(i, w, n))
        elif op == "early":
            stage.flush(T0 + w * S1 + S1 / 2, early=True)
        elif op == "close":
            stage.flush(T0 + w * S1 + S1)
        elif op == "restart":
            if written is not None:
                cp, stage = _restore1(messages, compact)
                assert shape(stage, {}) == written
                log = checkpoint.Log.after(cp)
            else:
                stage, log = NetworkStage1(S1), checkpoint.Log()
        else:
            offset += 1
            messages.extend(StateMessage(*r) for r in log.records(TP, offset, stage, MergedClock(), {}))
            written = shape(stage, {})
            cp, restored = _restore1(messages, compact)
            assert cp.offset == offset
            assert shape(restored, {}) == written
            kept = {m.key for m in _compacted(messages) if dict(m.headers).get("ckpt.kind") == b"section"}
            live = [f"p{w}" for w in stage._pending] + [f"k{w}" for w in stage._known]
            assert kept == {f"{checkpoint.state_key(TP)}#s{name}.0".encode() for name in live}
            # the restored stage goes on as the original does (a copy: the run goes on with the original)
            twin = copy.deepcopy(stage)
            for s in (twin, restored):
                s.add(_stage1_batch(i, w, 3))
            assert restored.flush(T0, early=True) == twin.flush(T0, early=True)


def test_a_stage1_checkpoint_rewrites_the_windows_changed_since_the_last_one() -> None:
    stage = NetworkStage1(S1)
    for w in range(3):
        stage.add(_stage1_batch(w, w, 4))
    # windows 0 and 1 close (0's keys are forgotten), window 2 emits its keys (all new) and keeps none
    stage.flush(T0 + 2 * S1 + 1, early=True)
    log = checkpoint.Log()
    first = _sections_written(log.records(TP, 1, stage, MergedClock(), {}))
    assert sorted(first) == [f"k{T0 + S1}", f"k{T0 + 2 * S1}"]
    assert _sections_written(log.records(TP, 2, stage, MergedClock(), {})) == []
    stage.add(_stage1_batch(2, 2, 2))  # rows for the open window only, of keys it has seen
    assert _sections_written(log.records(TP, 3, stage, MergedClock(), {})) == [f"p{T0 + 2 * S1}"]
    stage.flush(T0 + 2 * S1 + 2, early=True)  # no key is new: the rows stay, no key set grows
    assert _sections_written(log.records(TP, 4, stage, MergedClock(), {})) == [f"p{T0 + 2 * S1}"]

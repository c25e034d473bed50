"""NETWORK stage 1: the vectorised group-by agrees with a plain-Python reference; bad records are counted."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topology.stages.network_stage1 import FlowAggregate, FlowAggregates, NetworkStage1, _group, as_row
from topology.wire.flow import RECORD_V1, ROLE_CLIENT, ROLE_SERVER, FlowBatch, decode, encode, pack_ip

from .flowdata import encode_records

T = 1_700_000_000

record = st.fixed_dictionaries({
    "start": st.one_of(st.floats(T, T + 95, allow_nan=False), st.just(T + 9.999), st.just(1_000_000_000.0)),
    "dur": st.floats(0, 30),  # end = start + dur
    "app": st.sampled_from(["a", "b", "checkout"]),
    "cluster": st.sampled_from(["", "a-prod", "b-prod-v2"]),
    "role": st.sampled_from(["client", "server"]),
    "local": st.sampled_from(["10.0.0.1:40000", "10.0.0.1:8080", "[fd00::1]:443"]),
    "remote": st.sampled_from(["10.0.1.0:443", "10.0.1.0:40001", "10.255.0.7:443", "[2001:db8::]:443",
                               "[2001:db8::1:0]:5432", "0.0.0.0:1"]),
    "proto": st.sampled_from(["tcp", "udp"]),
    "sent": st.integers(0, 2**40),
    "received": st.integers(0, 2**40),
    "connections": st.integers(1, 1000),
})


def _reference(batches: list[list[dict[str, Any]]], ws: int) -> dict[tuple[Any, ...], list[int]]:
    ref: dict[tuple[Any, ...], list[int]] = {}
    for b in batches:
        for r in b:
            start_ms, end_ms = round(r["start"] * 1000), round((r["start"] + r["dur"]) * 1000)
            lport = r["local"].rsplit(":", 1)[1]
            raddr, rport = r["remote"].rsplit(":", 1)
            server_port = int(rport) if r["role"] == "client" else int(lport)
            proto = 6 if r["proto"] == "tcp" else 17
            window = start_ms // (ws * 1000) * ws
            key = (window, r["app"], r["cluster"], r["role"], _canon(raddr), server_port, proto)
            acc = ref.setdefault(key, [0, 0, 0, 2**63, 0, 0])
            acc[0] += r["connections"]
            acc[1] += r["sent"]
            acc[2] += r["received"]
            acc[3] = min(acc[3], start_ms)
            acc[4] = max(acc[4], start_ms)
            acc[5] = max(acc[5], end_ms)
    return ref


def _canon(addr: str) -> str:
    from topology.wire.flow import unpack_ip

    return unpack_ip(pack_ip(addr.strip("[]")))


def _collect(aggs: list[FlowAggregate]) -> dict[tuple[Any, ...], list[int]]:
    got: dict[tuple[Any, ...], list[int]] = {}
    for a in aggs:
        role = {1: "client", 2: "server"}[a.role]
        key = (a.window_start, a.local_app, a.local_cluster, role, a.remote_addr, a.server_port, a.protocol)
        acc = got.setdefault(key, [0, 0, 0, 2**63, 0, 0])
        acc[0] += a.connections
        acc[1] += a.bytes_sent
        acc[2] += a.bytes_received
        acc[3] = min(acc[3], a.first_start_ms)
        acc[4] = max(acc[4], a.last_start_ms)
        acc[5] = max(acc[5], a.last_end_ms)
    return got


def _feed(stage: NetworkStage1, batches: list[list[dict[str, Any]]],
          flushes: list[tuple[int, bool]]) -> list[FlowAggregate]:
    """Add the batches; after each, flush at ``T + f`` (early or not) for every (f, early) of ``flushes``."""
    out: list[FlowAggregate] = []
    for i, b in enumerate(batches):
        # a different string table order per batch: the same app has different indexes
        strings = ("", *(["checkout", "b", "a"] if i % 2 else []))
        recs = [{**r, "end": r["start"] + r["dur"]} for r in b]
        stage.add(decode(encode_records(recs, host=f"h{i}", emitted=0, strings=strings)))
        for f, early in flushes:
            out.extend(stage.flush(T + f, early=early))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(record, min_size=0, max_size=25), min_size=1, max_size=4), st.sampled_from([10, 60]),
       st.lists(st.integers(0, 120), max_size=3))
def test_matches_a_plain_python_group_by(batches: list[list[dict[str, Any]]], ws: int,
                                         flushes: list[int]) -> None:
    stage = NetworkStage1(window_seconds=ws)
    out = _feed(stage, batches, [(f, False) for f in flushes])
    out.extend(stage.flush(T + 10**6))
    assert stage.pending_windows == []
    assert _collect(out) == _reference(batches, ws)
    assert stage.counters["records"] == sum(map(len, batches))
    assert stage.counters["aggregates"] == len(out)
    for a in out:
        assert FlowAggregate.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_one_aggregate_per_key_when_flushed_once() -> None:
    base = {"app": "a", "cluster": "a-prod", "role": "client"}
    recs = [
        {**base, "start": T + 1, "end": T + 2, "local": "10.0.0.1:40000", "remote": "10.0.0.2:443",
         "sent": 10, "received": 20, "connections": 2},
        {**base, "start": T + 3, "end": T + 9, "local": "10.0.0.1:40001", "remote": "10.0.0.2:443",
         "sent": 1, "received": 2, "connections": 1},
        # server records: the remote port is the client's ephemeral port; the server port is local
        {**base, "role": "server", "start": T + 4, "end": T + 5, "local": "10.0.0.1:8080",
         "remote": "10.0.0.9:51000"},
        {**base, "role": "server", "start": T + 5, "end": T + 6, "local": "10.0.0.1:8080",
         "remote": "10.0.0.9:51001"},
    ]
    stage = NetworkStage1()
    stage.add(decode(encode_records(recs[:3])))
    stage.add(decode(encode_records(recs[3:], host="other")))
    assert stage.flush(T + 9.99) == []  # the window [T, T+10) has not ended
    out = stage.flush(T + 10)
    assert len(out) == 2
    client = next(a for a in out if a.role == ROLE_CLIENT)
    assert (client.remote_addr, client.server_port, client.connections, client.bytes_sent) == (
        "10.0.0.2", 443, 3, 11)
    assert (client.first_start_ms, client.last_start_ms, client.last_end_ms) == (
        (T + 1) * 1000, (T + 3) * 1000, (T + 9) * 1000)
    server = next(a for a in out if a.role == ROLE_SERVER)
    assert (server.remote_addr, server.server_port, server.connections) == ("10.0.0.9", 8080, 2)
    assert server.partition_key == "10.0.0.9"


def test_late_records_are_emitted_with_the_next_flush() -> None:
    rec = {"start": T + 1, "app": "a", "role": "client", "local": "10.0.0.1:1", "remote": "10.0.0.2:2"}
    stage = NetworkStage1()
    stage.add(decode(encode_records([rec])))
    assert len(stage.flush(T + 100)) == 1
    stage.add(decode(encode_records([rec])))
    again = stage.flush(T + 100)
    assert len(again) == 1 and again[0].window_start == T and again[0].local_cluster == ""


def test_absurd_timestamps_are_rejected_and_counted() -> None:
    ok = {"start": T + 1, "app": "a", "role": "client", "local": "10.0.0.1:1", "remote": "10.0.0.2:2"}
    recs = [ok, {**ok, "start": 5.0}, {**ok, "start": T + 3 * 86400}, {**ok, "start": T + 86400 - 100}]
    stage = NetworkStage1()
    stage.add(decode(encode_records(recs, emitted=T + 60)))
    assert stage.counters["rejected_time"] == 2
    out = stage.flush(T + 10 * 86400)
    assert sorted(a.window_start for a in out) == [T, T + 86400 - 100]
    # without an emitted time only the lower bound applies
    stage.add(decode(encode_records(recs, emitted=0)))
    assert stage.counters["rejected_time"] == 3


def _raw(n: int, **fields: Any) -> np.ndarray:
    recs = np.zeros(n, dtype=RECORD_V1)
    recs["start_ms"], recs["end_ms"] = T * 1000, T * 1000 + 5
    recs["role"], recs["local_app"], recs["connections"], recs["protocol"] = ROLE_CLIENT, 1, 1, 6
    recs["remote_addr"] = pack_ip("10.1.1.1")
    recs["remote_port"] = 80
    for k, v in fields.items():
        recs[k] = v
    return recs


def test_records_a_decoder_would_refuse_are_counted_not_fatal() -> None:
    # Batches built in-process skip decode(): stage 1 checks roles, string indexes and counts itself.
    recs = _raw(4)
    recs[1]["role"] = 9
    recs[2]["local_app"] = 0
    recs[3]["local_cluster"] = 99
    stage = NetworkStage1()
    stage.add(FlowBatch(1, 0, "h", ("", "a"), recs))
    assert stage.counters["rejected_invalid"] == 3
    assert [a.connections for a in stage.flush(T + 60)] == [1]


def test_a_name_twice_in_the_string_table_is_one_app() -> None:
    recs = _raw(2)
    recs[1]["local_app"] = 2
    stage = NetworkStage1()
    stage.add(FlowBatch(1, 0, "h", ("", "a", "a"), recs))
    out = stage.flush(T + 60)
    assert [(a.local_app, a.connections) for a in out] == [("a", 2)]


def test_empty_batches_are_fine() -> None:
    stage = NetworkStage1()
    stage.add(decode(encode(np.zeros(0, dtype=RECORD_V1), [""], "h", 0)))
    assert stage.flush(T) == [] and stage.counters["batches"] == 1


def _reference_groups(keys: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, k in enumerate(zip(*(k.tolist() for k in keys), strict=True)):
        groups[k].append(i)
    return sorted(sorted(g) for g in groups.values())


@pytest.mark.parametrize("n,width", [(50, 4), (3000, 64), (3000, 3)])
def test_group_by_packs_or_falls_back_correctly(n: int, width: int) -> None:
    # 7 keys of up to 64 bits: small ones pack into one word; wide ones with many distinct values
    # exceed 63 bits even after dense ranking and take the lexsort path.
    rng = np.random.default_rng(n + width)
    hi = 2**width - 1
    keys = [rng.integers(0, hi, n, dtype=np.uint64, endpoint=True) for _ in range(7)]
    keys.append(rng.integers(-5, 5, n))  # a signed key
    order, starts = _group(keys)
    bounds = [*starts.tolist(), n]
    got = sorted(sorted(order[a:b].tolist()) for a, b in itertools.pairwise(bounds))
    assert got == _reference_groups(keys)


def test_flush_output_is_a_sequence_of_records() -> None:
    recs = [{"start": T + i, "app": "a", "role": "client", "local": "10.0.0.1:1",
             "remote": f"10.0.0.{i + 2}:2"} for i in range(3)]
    stage = NetworkStage1()
    stage.add(decode(encode_records(recs)))
    out = stage.flush(T + 10)
    assert len(out) == 3 and isinstance(out[0], FlowAggregate)
    assert [a.remote_addr for a in out] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert list(out[1:]) == [out[1], out[2]] and out == list(out) and out != [out[0]]
    assert FlowAggregates([as_row(a) for a in out]) == out
    out.extend([out[0]])
    out.append(out[1])
    out[0] = out[2]
    del out[1]
    assert [a.remote_addr for a in out] == ["10.0.0.4", "10.0.0.4", "10.0.0.2", "10.0.0.3"]
    out[1:3] = []
    assert [a.remote_addr for a in out] == ["10.0.0.4", "10.0.0.3"]


# -- early emission of new keys -------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(record, min_size=0, max_size=25), min_size=1, max_size=5), st.sampled_from([10, 60]),
       st.lists(st.tuples(st.integers(0, 120), st.booleans()), max_size=4))
def test_early_and_closing_output_add_up_to_the_all_at_close_output(
        batches: list[list[dict[str, Any]]], ws: int, flushes: list[tuple[int, bool]]) -> None:
    stage = NetworkStage1(window_seconds=ws)
    out = _feed(stage, batches, flushes)
    out.extend(stage.flush(T + 10**6, early=True))
    assert stage.pending_windows == [] and stage.known_windows == []
    assert _collect(out) == _reference(batches, ws)
    assert stage.counters["aggregates"] == len(out)


def _one(start: float, remote: str = "10.0.0.2:443", connections: int = 1, app: str = "a") -> dict[str, Any]:
    return {"start": start, "end": start + 1, "app": app, "cluster": "a-prod", "role": "client",
            "local": "10.0.0.1:40000", "remote": remote, "sent": 10 * connections, "connections": connections}


def _keys(out: FlowAggregates) -> list[tuple[int, str, int]]:
    return sorted((a.window_start, a.remote_addr, a.connections) for a in out)


def test_a_new_key_is_emitted_early_and_the_rest_of_its_window_at_close() -> None:
    stage = NetworkStage1()
    stage.add(decode(encode_records([_one(T + 1, connections=2)])))
    assert _keys(stage.flush(T + 5, early=True)) == [(T, "10.0.0.2", 2)]
    assert stage.pending_windows == []
    # the same key again in the same window: not new, it waits for the window to close
    stage.add(decode(encode_records([_one(T + 6, connections=3), _one(T + 7, "10.0.0.3:443")])))
    assert _keys(stage.flush(T + 8, early=True)) == [(T, "10.0.0.3", 1)]
    assert stage.flush(T + 9, early=True) == []
    assert _keys(stage.flush(T + 10, early=True)) == [(T, "10.0.0.2", 3)]
    assert stage.counters["early_aggregates"] == 2 and stage.counters["aggregates"] == 3


def test_a_key_seen_in_the_previous_window_is_not_emitted_early() -> None:
    stage = NetworkStage1()
    stage.add(decode(encode_records([_one(T + 1)])))
    assert len(stage.flush(T + 2, early=True)) == 1
    # next window: the key was seen in the previous one (emitted early there)
    stage.add(decode(encode_records([_one(T + 11, connections=4)])))
    assert stage.flush(T + 12, early=True) == []
    # the window after: the key was seen in the previous window (pending there, not emitted early)
    stage.add(decode(encode_records([_one(T + 21, connections=5)])))
    assert stage.flush(T + 15, early=True) == []
    assert _keys(stage.flush(T + 22, early=True)) == [(T + 10, "10.0.0.2", 4)]  # [T+10, T+20) closed
    assert _keys(stage.flush(T + 30, early=True)) == [(T + 20, "10.0.0.2", 5)]
    # after a silent window the key is new again
    stage.add(decode(encode_records([_one(T + 41, connections=6)])))
    assert _keys(stage.flush(T + 42, early=True)) == [(T + 40, "10.0.0.2", 6)]


def test_keys_closed_without_an_early_look_still_count_as_seen() -> None:
    stage = NetworkStage1()
    assert stage.flush(T - 5, early=True) == []  # nothing there yet; then a batch comes just in time
    stage.add(decode(encode_records([_one(T + 2, connections=2)])))
    assert len(stage.flush(T + 10, early=True)) == 1  # its window closes before an early look
    stage.add(decode(encode_records([_one(T + 12, connections=3)])))
    assert stage.flush(T + 13, early=True) == []  # seen in the previous window


def test_remembered_keys_are_forgotten_with_their_windows() -> None:
    stage = NetworkStage1()
    for i in range(30):
        stage.add(decode(encode_records([_one(T + 10 * i + 1, f"10.0.{i}.2:443")])))
        stage.flush(T + 10 * i + 5, early=True)
        assert len(stage.known_windows) <= 3
    assert stage.known_windows[0] >= T + 270


def test_a_hash_collision_only_delays_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import topology.stages.network_stage1 as ns1

    monkeypatch.setattr(ns1, "_key_hashes", lambda rows: np.zeros(len(rows), dtype=np.uint64))
    stage = NetworkStage1()
    stage.add(decode(encode_records([_one(T + 1)])))
    assert len(stage.flush(T + 2, early=True)) == 1
    stage.add(decode(encode_records([_one(T + 3, "10.0.0.3:443", connections=7)])))
    assert stage.flush(T + 4, early=True) == []  # collides with the first key: waits for the close
    assert _keys(stage.flush(T + 10, early=True)) == [(T, "10.0.0.3", 7)]


def test_the_early_state_survives_a_checkpoint() -> None:
    from ingest import state

    stage = NetworkStage1()
    stage.add(decode(encode_records([_one(T + 1), _one(T + 2, "10.0.0.3:443")])))
    first = stage.flush(T + 3, early=True)
    stage.add(decode(encode_records([_one(T + 4, connections=2), _one(T + 5, "10.0.0.4:443")])))
    restored = state.loads(state.dumps(stage))
    for s in (stage, restored):
        assert _keys(s.flush(T + 6, early=True)) == [(T, "10.0.0.4", 1)]
        assert _keys(s.flush(T + 10, early=True)) == [(T, "10.0.0.2", 2)]
    assert len(first) == 2

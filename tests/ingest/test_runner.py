"""The runner's clocks, as the worker uses them: event times capped by the record's time, silent
partitions following the wall clock, repartitioned partitions waiting for every upstream source."""

from __future__ import annotations

import math

from ingest.network import NetworkStage1Spec, NetworkStage2Spec
from ingest.record import Partition
from ingest.topics import Topics
from tests.ingest.testing import Bus, Chain, TestingStage
from tests.topology.stages.flowdata import encode_records

T = 1_800_000_000
TOPICS = Topics()


def _flow(start: float) -> dict[str, object]:
    return {"start": start, "end": start + 1, "app": "web", "role": "client", "local": "10.0.0.1:40000",
            "remote": "10.0.0.2:443", "sent": 1}


def test_an_event_time_far_ahead_of_its_record_moves_the_clock_only_max_future_ahead() -> None:
    bus = Bus(1)
    stage = TestingStage(NetworkStage1Spec(TOPICS), bus, wall=T)
    bus.produce(TOPICS.flows, encode_records([_flow(T + 3600)], emitted=T), b"h", T * 1000)
    stage.poll()
    assert stage.runner.parts[Partition(TOPICS.flows, 0)].clock.now == T + 300.0
    assert stage.runner.max_future == 300.0


def test_silent_partitions_follow_the_wall_clock_and_close_their_windows() -> None:
    bus = Bus(2)
    stage = TestingStage(NetworkStage1Spec(TOPICS), bus, wall=T + 2, idle_seconds=10)
    data = encode_records([_flow(T + 1)], emitted=T + 2)
    bus.produce(TOPICS.flows, data, b"h", (T + 2) * 1000, partition=0)
    stage.poll()
    clocks = {(tp.topic, tp.partition): ps.clock.now for tp, ps in stage.runner.parts.items()}
    assert clocks == {(TOPICS.flows, 0): T + 2, (TOPICS.flows, 1): -math.inf,
                      (TOPICS.vpcflows, 0): -math.inf, (TOPICS.vpcflows, 1): -math.inf}
    stage.commit()
    assert stage.emitted == []  # the 10 s window [T, T + 10) is open
    stage.idle(T + 11)
    assert stage.emitted == []  # silence for less than idle_seconds does not count
    stage.idle(T + 40).commit()
    clocks = {(tp.topic, tp.partition): ps.clock.now for tp, ps in stage.runner.parts.items()}
    assert all(T + 20 < c <= T + 40 for c in clocks.values()), clocks
    assert len(stage.emitted) == 1  # the window closed without more input


def test_a_repartitioned_partition_waits_for_every_upstream_partition() -> None:
    chain = Chain([NetworkStage1Spec(TOPICS), NetworkStage2Spec(TOPICS)], Bus(2), wall=T + 2)
    chain.bus.produce(TOPICS.flows, encode_records([_flow(T + 1)], emitted=T + 2), b"h", (T + 2) * 1000,
                      partition=0)
    chain.cycle()
    stage2 = chain[1].runner.parts
    assert {ps.clock.now for ps in stage2.values()} == {-math.inf}  # upstream partition 1 said nothing
    chain.drain(T + 30)
    assert all(T < ps.clock.now <= T + 30 for ps in stage2.values())

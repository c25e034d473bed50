"""Consumer-group behaviour: two workers of one stage split its partitions (and hand state over when
one joins mid-stream), and a store that cannot be written pauses stage 3 without losing anything."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.main import build_worker
from ingest.publisher import publish_simulation
from ingest.worker import WorkerOptions
from tests.kafka.harness import (
    TEST_OPTIONS,
    InProcess,
    assert_same_windows,
    embedded_baseline,
    prefixed_topics,
    until,
    windows,
)
from topology.model import Layer
from topology.store.embedded import open_stores

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SERVICES = 20
MINUTES = 3.0
NETWORK = [(1, "network"), (2, "network"), (3, "network")]


async def test_two_workers_of_a_stage_split_its_partitions_and_hand_over_state(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        stores = open_stores(tmp_path / "store")
        try:
            async with InProcess(kafka_bootstrap, topics, stores, stages=NETWORK, meta=False) as run:
                publishing = asyncio.create_task(publish_simulation(
                    kafka_bootstrap, services=SERVICES, minutes=MINUTES, start=start, topics=topics,
                    partitions=2, rate=10.0))
                first = run.worker(2, "network")
                # the first worker holds state when the second joins
                await until(lambda: first.committed_checkpoints >= 2, what="two checkpoints")
                assert not publishing.done()
                second = build_worker(2, "network", topics, None, WorkerOptions(
                    bootstrap=kafka_bootstrap, instance="second", **TEST_OPTIONS))
                second_task = asyncio.create_task(second.run(run.stop))
                await until(lambda: bool(first.parts) and bool(second.parts), what="a split assignment")
                mine, theirs = set(first.parts), set(second.parts)
                res = await publishing
                await run.wait_clocks(res["end"] + 80, [(3, "network")])
                await run.wait_written()
                run.stop.set()
                await second_task
            got = await windows(stores, [Layer.NETWORK], start, res["end"])
        finally:
            await stores.close()
    assert mine and theirs and not mine & theirs, (mine, theirs)
    assert len(mine | theirs) == 2  # both partitions of the stage-2 input, one each
    assert second.committed_checkpoints > 0
    assert_same_windows(got, embedded_baseline(SERVICES, 42, start, MINUTES, layers=[Layer.NETWORK]))


async def _committed(bootstrap: str, group: str, topic: str) -> list[int | None]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return [await c.committed(TopicPartition(topic, p)) for p in (0, 1)]
    finally:
        await c.stop()


async def test_an_unavailable_store_pauses_stage_3_without_commits_and_loses_nothing(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        res = await publish_simulation(kafka_bootstrap, services=SERVICES, minutes=MINUTES, start=start,
                                       topics=topics, partitions=2)
        stores = open_stores(tmp_path / "store")
        # Another process-level writer holds the network database: writes fail with "database is locked"
        blocker = sqlite3.connect(tmp_path / "store" / "network.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            async with InProcess(kafka_bootstrap, topics, stores, stages=NETWORK, meta=False) as run:
                final = run.worker(3, "network")
                await until(lambda: final.paused, what="stage 3 pausing on the unavailable store")
                paused_at = final.committed_checkpoints
                group, source = topics.group("network", 3), topics.stage_output("network", 2)
                before = await _committed(kafka_bootstrap, group, source)
                await asyncio.sleep(3)
                after = await _committed(kafka_bootstrap, group, source)
                assert final.paused and final.committed_checkpoints == paused_at and before == after
                blocker.execute("ROLLBACK")  # the store is back
                await run.wait_clocks(res["end"] + 80, [(3, "network")])
                await run.wait_written()
                assert not final.paused
            got = await windows(stores, [Layer.NETWORK], start, res["end"])
        finally:
            blocker.close()
            await stores.close()
    assert_same_windows(got, embedded_baseline(SERVICES, 42, start, MINUTES, layers=[Layer.NETWORK]))

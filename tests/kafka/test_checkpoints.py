"""Checkpoints on the real broker: a message written into a state topic cannot run code in the worker
that restores it. A crafted pickle (it would write a marker file when unpickled) under the old pickle
header and under the current one is refused, reported and counted, each partition starts empty from
its committed offset, and the stored windows are still exactly the in-process pipeline's.
Incremental checkpoints (heads and changed windows) restore the last committed state."""

from __future__ import annotations

import asyncio
import os
import pickle
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from ingest import checkpoint
from ingest.clock import MergedClock
from ingest.publisher import publish_simulation
from ingest.record import Partition
from ingest.topics import STATE_CONFIG
from tests.ingest.test_checkpoint_log import drop, new_stage, touch
from tests.ingest.test_state import shape
from tests.kafka.harness import InProcess, assert_same_windows, embedded_baseline, prefixed_topics, windows
from topology.address import AddressBook
from topology.model import Layer
from topology.store.embedded import open_stores

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SERVICES = 20
MINUTES = 3.0
NETWORK = [(1, "network"), (2, "network"), (3, "network")]


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.path}",)


async def _plant(bootstrap: str, state_topic: str, source: Partition, fmt: bytes, payload: bytes) -> None:
    """A checkpoint of ``source`` in ``state_topic`` as the workers write one, with ``payload``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in checkpoint.to_records(checkpoint.Checkpoint(source, 0, payload)):
            headers = [(k, fmt if k == "ckpt.format" else v) for k, v in headers]
            await producer.send_and_wait(state_topic, value, key=key, headers=headers,
                                         partition=checkpoint.state_partition(source, 2))
    finally:
        await producer.stop()


async def test_a_pickle_in_the_state_topic_is_refused_and_runs_nothing(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bomb = zlib.compress(pickle.dumps({"logic": _Marker(marker), "clock": None}), 1)
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        # stage 2's input partitions: one checkpoint in the old pickle format, one with the current header
        source = topics.stage_output("network", 1)
        state_topic = topics.state("network", 2)
        await _plant(kafka_bootstrap, state_topic, Partition(source, 0), b"1", bomb)
        await _plant(kafka_bootstrap, state_topic, Partition(source, 1), checkpoint.FORMAT, bomb)
        stores = open_stores(tmp_path / "store")
        try:
            async with InProcess(kafka_bootstrap, topics, stores, stages=NETWORK, meta=False) as run:
                res = await publish_simulation(kafka_bootstrap, services=SERVICES, minutes=MINUTES,
                                               start=start, topics=topics, partitions=2)
                await run.wait_clocks(res["end"] + 80, [(3, "network")])
                await run.wait_written()
                worker = run.worker(2, "network")
                refused = worker.metrics.state_refused.labels(**worker.labels)._value.get()
            got = await windows(stores, [Layer.NETWORK], start, res["end"])
        finally:
            await stores.close()
    await asyncio.sleep(0.5)  # a shell started by an unpickled payload would have finished by now
    assert not marker.exists()
    assert refused == 2  # reported once per partition: no restart loop
    assert_same_windows(got, embedded_baseline(SERVICES, 42, start, MINUTES, layers=[Layer.NETWORK]))
    # the payload is a working exploit: unpickled, it writes the marker
    pickle.loads(zlib.decompress(bomb))
    assert marker.exists()


async def test_incremental_checkpoints_restore_the_last_committed_state(
        kafka_bootstrap: str, new_topic: Any) -> None:
    """Heads and changed windows of NETWORK stage 2 in real transactions (a second source's checkpoints
    in the same state partition, an aborted last transaction): restore reads the state partition back
    far enough for every section of the newest committed head and gives the state that was committed."""
    state_topic = await new_topic("state", partitions=2, config=dict(STATE_CONFIG))
    book = AddressBook()
    names = {id(book): "addresses"}
    sources = [Partition("t.network.1", 0), Partition("t.network.1", 2)]  # both in state partition 0
    stages = {s: new_stage(book) for s in sources}
    logs = {s: checkpoint.Log() for s in sources}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{state_topic}.tx",
                                enable_idempotence=True)
    await producer.start()
    written: dict[Partition, Any] = {}
    try:
        for i in range(60):
            aborted = i == 59
            await producer.begin_transaction()
            for n, s in enumerate(sources):
                touch(stages[s], (i // 7 + n) % 6, f"c{i}")  # a window at a time, as time moves
                if i % 11 == 10:
                    drop(stages[s], (i // 7 + n + 3) % 6)
                shared = {"addresses": book}
                for key, value, headers in logs[s].records(s, i + 1, stages[s], MergedClock(), shared):
                    await producer.send(state_topic, value, key=key, headers=headers,
                                        partition=checkpoint.state_partition(s, 2))
                if not aborted:
                    written[s] = (i + 1, shape(stages[s], names))
            if aborted:
                await producer.abort_transaction()
            else:
                await producer.commit_transaction()
    finally:
        await producer.stop()
    for s in sources:
        cp = await checkpoint.restore(kafka_bootstrap, state_topic, s)
        assert cp is not None and cp.sections is not None
        saved = checkpoint.decode(cp.state, {"addresses": book}, cp.sections)
        assert (cp.offset, shape(saved.logic, names)) == written[s]

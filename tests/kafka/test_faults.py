"""Faults with the real broker: workers killed with SIGKILL mid-stream and restarted, and the broker
itself stopped and started mid-stream. The final edge windows must equal those of an uninterrupted
run of the same input (the in-process pipeline): nothing lost, nothing counted twice. NETWORK stage 2
is killed after an incremental checkpoint (a head naming windows written by earlier ones), so its
restart assembles its state from several transactions."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError

from ingest.publisher import publish_simulation
from ingest.worker import _delivered
from tests.conftest import require
from tests.kafka.conftest import broker_answers
from tests.kafka.harness import (
    LAYERS,
    ROOT,
    InProcess,
    Processes,
    assert_same_windows,
    embedded_baseline,
    free_port,
    prefixed_topics,
    windows,
)
from topology.model import Layer
from topology.store.embedded import open_stores

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SERVICES = 20
MINUTES = 3.0


async def test_kill_9_of_a_worker_in_each_stage_loses_and_duplicates_nothing(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        procs = Processes(kafka_bootstrap, topics, tmp_path)
        procs.start()
        try:
            # the input arrives over ~18 s while the workers run
            publishing = asyncio.create_task(publish_simulation(
                kafka_bootstrap, services=SERVICES, minutes=MINUTES, start=start, topics=topics, partitions=2,
                rate=10.0))
            for stage in (1, 2, 3):
                # kill once the stage has committed checkpoints (state and offsets), so the restart must
                # resume from them rather than from the beginning
                await procs.wait_metric("topology_ingest_commits_total", 3, [(stage, lr) for lr in LAYERS])
                if stage == 1:
                    assert not publishing.done(), "the stream ended before the first kill"
                if stage == 2:  # and once NETWORK stage 2 wrote a checkpoint not rewriting every window
                    await _until_carried(kafka_bootstrap, topics.state("network", 2))
                for layer in LAYERS:
                    p = procs.proc(stage, layer)
                    assert p.popen is not None and p.popen.poll() is None, f"{layer} {stage} died: {p.log}"
                    p.kill9()
                await asyncio.sleep(0.5)
                for layer in LAYERS:
                    procs.proc(stage, layer).start()
            res = await publishing
            await procs.wait_clocks(res["end"] + 80, [(3, layer) for layer in LAYERS], limit=150)
            await asyncio.sleep(3)  # stage 3 writes what it flushed
        finally:
            codes = procs.stop()
        assert all(c == 0 for c in codes), f"graceful shutdown failed: {codes}"
    got: dict[object, object] = {}
    for layer in LAYERS:
        stores = open_stores(procs.store_dir(layer))
        try:
            got.update(await windows(stores, [Layer(layer.upper())], start, res["end"]))
        finally:
            await stores.close()
    assert all(procs.proc(s, layer).kills == 1 for s in (1, 2, 3) for layer in LAYERS)
    assert_same_windows(got, embedded_baseline(SERVICES, 42, start, MINUTES))


async def _until_carried(bootstrap: str, state_topic: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not await _carried_sections(bootstrap, state_topic):
        assert time.monotonic() < deadline, f"no incremental checkpoint in {state_topic} after {limit} s"
        await asyncio.sleep(0.5)


async def _carried_sections(bootstrap: str, state_topic: str) -> int:
    """Committed checkpoint heads in ``state_topic`` whose manifest names a section that an earlier
    checkpoint wrote (incremental checkpoints: not everything was rewritten)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(state_topic, p) for p in cluster.partitions_for_topic(state_topic) or ()]
        assert tps, f"{state_topic} has no partitions"
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        carried = 0
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                break  # only transaction markers left
            for msgs in batch.values():
                for m in msgs:
                    h = dict(m.headers or ())
                    manifest = (h.get("ckpt.sections") or b"").split(b",")
                    ids = {item.partition(b"=")[2] for item in manifest if item}
                    carried += bool(ids - {h.get("ckpt.id")})
        return carried
    finally:
        await consumer.stop()


async def test_a_record_the_broker_refused_keeps_its_transaction_from_committing(
        kafka_bootstrap: str, topic_label: str) -> None:
    # aiokafka commits a transaction once its batches are done, delivered or failed: committed, the
    # consumer offsets in it would say the refused outputs were made. The worker checks first.
    topic = f"{topic_label}.small"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2048"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=topic,
                                max_request_size=4 * 1024 * 1024)
    group = f"{topic}.group"
    await producer.start()
    try:
        await producer.begin_transaction()
        sent = [await producer.send(topic, b"fits", partition=0),
                await producer.send(topic, b"x" * 8000, partition=0)]
        await producer.send_offsets_to_transaction({TopicPartition(topic, 0): 5}, group)
        with pytest.raises(MessageSizeTooLargeError):
            await _delivered(producer, sent)
        await producer.abort_transaction()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        assert await consumer.committed(TopicPartition(topic, 0)) is None
    finally:
        await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        with contextlib.suppress(Exception):
            await admin.delete_topics([topic])
        await admin.close()


def _dev_sh(command: str, port: int, controller: int) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "KAFKA_PORT": str(port),
           "KAFKA_CONTROLLER_PORT": str(controller), "KAFKA_HEAP": "-Xms128m -Xmx384m"}
    return subprocess.run(["bash", str(ROOT / "docker/kafka/dev.sh"), command], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


async def test_broker_stopped_and_restarted_mid_stream_recovers_without_loss(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    # A private broker (stopping it must not disturb anything else using the shared one) on free ports,
    # so that several test runs on one machine do not collide.
    port, controller = free_port(), free_port()
    started = _dev_sh("start", port, controller)
    require(started.returncode == 0, f"a second Kafka broker on port {port} ({started.stderr[-300:]})")
    bootstrap = f"127.0.0.1:{port}"
    try:
        assert await broker_answers(bootstrap)
        start = float(int(time.time()) - 240)
        async with prefixed_topics(bootstrap, topic_label) as topics:
            stores = open_stores(tmp_path / "store")
            try:
                # idle_seconds above the outage: a historic stream must not be taken as finished
                async with InProcess(bootstrap, topics, stores, meta=False, idle_seconds=60.0) as run:
                    publishing = asyncio.create_task(publish_simulation(
                        bootstrap, services=SERVICES, minutes=MINUTES, start=start, topics=topics,
                        partitions=2, rate=12.0))
                    await asyncio.sleep(6)
                    assert not publishing.done()
                    stopped = await asyncio.to_thread(_dev_sh, "stop", port, controller)
                    assert stopped.returncode == 0, stopped.stderr
                    # down for longer than the workers' request timeout (15 s): batches sent meanwhile
                    # fail on their own (no partition leader), and a commit must not go on without them
                    await asyncio.sleep(16)
                    restarted = await asyncio.to_thread(_dev_sh, "start", port, controller)
                    assert restarted.returncode == 0, restarted.stderr
                    res = await publishing
                    await run.wait_clocks(res["end"] + 80, [(3, layer) for layer in LAYERS], limit=150)
                    await run.wait_written()
                got = await windows(stores, list(Layer), start, res["end"])
            finally:
                await stores.close()
        assert_same_windows(got, embedded_baseline(SERVICES, 42, start, MINUTES))
    finally:
        _dev_sh("stop", port, controller)
        shutil.rmtree(ROOT / "var" / "kafka" / f"state-{port}", ignore_errors=True)

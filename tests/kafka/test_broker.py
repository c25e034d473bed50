"""Smoke tests of the real broker: produce and consume through it, committed offsets persist."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.kafka.conftest import TopicFactory, broker_answers

pytestmark = pytest.mark.kafka


async def _drain(consumer: AIOKafkaConsumer, want: int, wait: float = 20.0) -> list[tuple[bytes, bytes, int]]:
    got: list[tuple[bytes, bytes, int]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while len(got) < want and loop.time() < deadline:
        batches = await consumer.getmany(timeout_ms=500)
        for tp, msgs in batches.items():
            got.extend((m.key, m.value, tp.partition) for m in msgs)
    return got


async def test_produce_and_consume_keyed_records(kafka_bootstrap: str, new_topic: TopicFactory,
                                                 topic_label: str) -> None:
    topic = await new_topic("smoke", partitions=3)
    sent = [(f"k{i % 7}".encode(), f"v{i}".encode()) for i in range(300)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for k, v in sent:
            await producer.send(topic, v, key=k)
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"{topic_label}.g",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        got = await _drain(consumer, len(sent))
        await consumer.commit()
    finally:
        await consumer.stop()

    assert sorted((k, v) for k, v, _ in got) == sorted(sent)
    # one key -> one partition, and within it the order of sending
    partitions: dict[bytes, set[int]] = {}
    for k, _, p in got:
        partitions.setdefault(k, set()).add(p)
    assert all(len(ps) == 1 for ps in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1  # 7 keys spread over 3 partitions
    for key in partitions:
        values = [v for k, v, _ in got if k == key]
        assert values == [v for k, v in sent if k == key]

    # the group's committed offsets survive: a new member of the group starts at the end
    again = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"{topic_label}.g",
                             auto_offset_reset="earliest", enable_auto_commit=False)
    await again.start()
    try:
        assert await _drain(again, 1, wait=3.0) == []
        committed = {p: await again.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        await again.stop()
    assert sum(c or 0 for c in committed.values()) == len(sent)


async def test_a_closed_port_is_reported_as_no_broker() -> None:
    assert not await broker_answers("127.0.0.1:1", wait=2.0)

"""The Kafka road of the shared admission table (``tests/admission_cases.py``): each payload produced
to its topic on the real broker, judged by the stage-1 and meta workers, its verdict and reason
class read from ``topology.dlq``. The HTTP road (``tests/integration/test_admission.py``) must agree.

Every case goes to partition 0 of its topic, then an empty record (itself rejected) closes each
topic: the workers take a partition in offset order and commit dead letters in order, so once the
closing records' letters are in, every case before them has been judged.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ingest.topics import Topics
from tests.admission_cases import CASES, ROADS, Case
from tests.kafka.harness import InProcess, prefixed_topics
from topology.admit import reason_class
from topology.store.embedded import open_stores

pytestmark = pytest.mark.kafka

Origin = tuple[str, int, int]  # topic, partition, offset


async def letters_until(bootstrap: str, topics: Topics, closing: set[Origin],
                        limit: float = 60.0) -> dict[Origin, list[dict[str, Any]]]:
    """Dead letters by origin, read until the letters of every ``closing`` record are in."""
    consumer = AIOKafkaConsumer(topics.dlq, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    out: dict[Origin, list[dict[str, Any]]] = {}
    try:
        deadline = time.monotonic() + limit
        while not closing <= out.keys():
            assert time.monotonic() < deadline, f"closing letters missing: {closing - out.keys()}"
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    env = json.loads(m.value)
                    src = env["source"]
                    out.setdefault((src["topic"], src["partition"], src["offset"]), []).append(env)
    finally:
        await consumer.stop()
    return out


def verdict(sent: bytes, letters: list[dict[str, Any]]) -> tuple[str, str | None]:
    """What the dead letters of one record say: nothing (kept), the record itself (rejected whole)
    or parts of it (partial), and the reason class of the first."""
    if not letters:
        return "kept", None
    whole = any(base64.b64decode(e["payload_b64"]) == sent for e in letters)
    return ("rejected" if whole else "partial"), reason_class(letters[0]["reason"])


async def test_the_kafka_road_gives_the_verdicts_of_the_table(
        kafka_bootstrap: str, topic_label: str, tmp_path: object) -> None:
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        sent: list[tuple[Case, Origin, bytes]] = []
        closing: set[Origin] = set()
        try:
            for i, case in enumerate(CASES):
                topic = getattr(topics, ROADS[case.kind][2])
                now = time.time()
                value = case.payload(now)
                md = await producer.send_and_wait(topic, value, key=f"case-{i}".encode(), partition=0,
                                                  timestamp_ms=int(now * 1000))
                sent.append((case, (md.topic, md.partition, md.offset), value))
            for attr in {ROADS[c.kind][2] for c in CASES}:
                md = await producer.send_and_wait(getattr(topics, attr), b"", key=b"closing", partition=0)
                closing.add((md.topic, md.partition, md.offset))
        finally:
            await producer.stop()
        stores = open_stores(tmp_path / "store")  # type: ignore[operator]
        try:
            stage1 = [(1, "network"), (1, "ipc"), (1, "trace")]
            async with InProcess(kafka_bootstrap, topics, stores, stages=stage1):
                letters = await letters_until(kafka_bootstrap, topics, closing)
        finally:
            await stores.close()
    got = {case.name: verdict(value, letters.get(origin, [])) for case, origin, value in sent}
    expected = {case.name: (case.verdict, case.reason_class) for case in CASES}
    assert got == expected
    for origin in closing:
        assert [reason_class(e["reason"]) for e in letters[origin]] == ["empty"]

"""Bad input on the real topics: each bad record goes to topology.dlq with its reason and origin, is
counted, and the workers go on with the good records that follow."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import generate_latest

from ingest.topics import Topics
from tests.ingest.payloads import flow_batch, metrics_request, spans_request
from tests.kafka.harness import InProcess, prefixed_topics
from topology.store.embedded import open_stores
from topology.wire import flow

pytestmark = pytest.mark.kafka


async def wait_for(condition: Callable[[], bool], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.2)


async def read_dlq(bootstrap: str, topics: Topics, want: int, limit: float = 30.0) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(topics.dlq, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    out: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + limit
        while len(out) < want and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    env = json.loads(m.value)
                    env["headers"] = {k: v.decode() for k, v in m.headers}
                    out.append(env)
    finally:
        await consumer.stop()
    return out


async def test_bad_records_go_to_the_dead_letter_topic_and_the_workers_go_on(
        kafka_bootstrap: str, topic_label: str, tmp_path: object) -> None:
    now_ms = int(time.time() * 1000)
    good = flow_batch([now_ms - 30_000 + i for i in range(5)])
    wrong_version = bytearray(flow_batch([now_ms]))
    struct.pack_into("<H", wrong_version, 4, 9)
    truncated_spans = spans_request()[:-7]
    bad: list[tuple[str, bytes, str]] = [  # (topic attribute, value, expected reason fragment)
        ("flows", os.urandom(300), "bad magic"),
        ("flows", bytes(wrong_version), "unsupported flow schema version 9"),
        ("flows", flow_batch([4_102_444_800_000]), "more than a day after"),  # the year 2100
        ("flows", flow_batch([1_000]), "before 2000-01-01"),
        ("vpcflows", b"2 123456789012 eni-1 not-an-ip 10.0.0.2 1 2 6 1 1 1700000000 1700000001 ACCEPT OK",
         "flow-log line 1: field 'srcaddr' is not an IP address"),
        ("otlp_spans", truncated_spans, "not a valid protobuf"),
        ("otlp_metrics", os.urandom(64), "ExportMetricsServiceRequest"),
        ("otlp_metrics", metrics_request(1_000), "before 2000-01-01"),
        ("catalog", b'{"tier": 1}', "'name' must be a non-empty string"),
    ]
    mixed = flow_batch([now_ms - 20_000, 4_102_444_800_000, now_ms - 19_000])  # one absurd record of three
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        sent = []
        try:
            for attr, value, reason in bad:
                key = b"some-service" if attr == "catalog" else None  # compacted topics need keys
                md = await producer.send_and_wait(getattr(topics, attr), value, key=key)
                sent.append((md.topic, md.partition, md.offset, reason))
            md = await producer.send_and_wait(topics.flows, mixed)
            mixed_at = (md.topic, md.partition, md.offset)
            await producer.send_and_wait(topics.flows, good)
            await producer.send_and_wait(topics.otlp_spans, spans_request())
        finally:
            await producer.stop()
        stores = open_stores(tmp_path / "store")  # type: ignore[operator]
        try:
            stage1 = [(1, "network"), (1, "ipc"), (1, "trace")]
            async with InProcess(kafka_bootstrap, topics, stores, stages=stage1) as run:
                letters = await read_dlq(kafka_bootstrap, topics, len(bad) + 1)
                net = run.worker(1, "network")
                await wait_for(lambda: net.counters().get("records", 0) >= 7)
                counted = generate_latest(net.metrics.registry).decode()
                net_records = net.counters()["records"]
                spans_ok = run.worker(1, "trace").counters()["spans"]
        finally:
            await stores.close()
    by_origin = {(e["source"]["topic"], e["source"]["partition"], e["source"]["offset"]): e  # type: ignore[index]
                 for e in letters}
    for topic, partition, offset, reason in sent:
        e = by_origin.get((topic, partition, offset))
        assert e is not None, f"no dead letter for {topic}:{partition}@{offset} ({reason}): {list(by_origin)}"
        assert reason in str(e["reason"]), (reason, e["reason"])
        assert e["headers"]["dlq.topic"] == topic and e["headers"]["dlq.offset"] == str(offset)  # type: ignore[index]
        assert e["payload_b64"]
    # the mixed batch: only the absurd record is dead-lettered (re-encoded), the other two go on
    e = by_origin[mixed_at]
    rejected = flow.decode(base64.b64decode(str(e["payload_b64"])))
    assert len(rejected) == 1 and int(rejected.records["start_ms"][0]) == 4_102_444_800_000
    assert "1 of 3 flow records" in str(e["reason"])
    assert len(letters) == len(bad) + 1
    assert net_records == 2 + 5  # the good rest of the mixed batch, then the good batch
    assert spans_ok == 3
    assert 'topology_ingest_dead_letters_total{layer="network",reason="decode",stage="1"}' in counted

"""OTel SDK -> Collector (``docker/otelcol/kafka.yaml``, OTLP in, ``kafka`` out, ``otlp_proto``) -> the
``otlp_spans`` / ``otlp_metrics`` topics on the real broker -> the stage workers -> the store -> the
expected TRACE and IPC edges.

The spans carry timestamps five minutes in the past, so their windows are closed by the time the workers'
clocks (which follow the wall clock while a partition is idle) look at them; the metrics are stamped now
(the SDK stamps them at collection), so their edges are stored once their minute window closes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from tests.kafka.conftest import kafka_bootstrap, topic_label  # noqa: F401 - the fixtures
from tests.kafka.harness import InProcess, prefixed_topics
from tests.otelcol.conftest import StartCollector
from tests.otelcol.traffic import IPC_EDGES, TRACE_EDGES, send_ipc_metrics, send_traces
from topology.model import Granularity, Layer
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

pytestmark = [pytest.mark.otelcol, pytest.mark.kafka, pytest.mark.slow]

STAGES = [(s, layer) for layer in ("trace", "ipc") for s in (1, 2, 3)]


async def _keys(bootstrap: str, topic: str, expected: set[str]) -> set[str]:
    """The keys of the messages of ``topic`` (all partitions), read until ``expected`` are among them."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    keys: set[str] = set()
    deadline = time.monotonic() + 60
    try:
        while not expected <= keys and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                keys |= {m.key.decode() if m.key is not None else "" for m in msgs}
    finally:
        await consumer.stop()
    return keys


async def _app_edges(stores: Stores, layer: Layer) -> set[tuple[str, str]]:
    now = time.time() + 300
    es = await stores.layers[layer].edges(Granularity.APP, TimeRange(now - 3600, now), now=now)
    return {(e.key.source, e.key.target) for e in es}


async def test_spans_and_metrics_through_the_collector_and_kafka_become_the_expected_edges(
        start_collector: StartCollector, kafka_bootstrap: str,  # noqa: F811
        topic_label: str, tmp_path: Path) -> None:  # noqa: F811
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        collector = start_collector("kafka.yaml", {"KAFKA_BOOTSTRAP": kafka_bootstrap,
                                                   "TOPOLOGY_TOPIC_PREFIX": topics.prefix})
        stores = open_stores(tmp_path / "store")
        try:
            async with InProcess(kafka_bootstrap, topics, stores, stages=STAGES, meta=False,
                                 early_interval=0.5):
                ids = await asyncio.to_thread(send_traces, collector.endpoint, time.time() - 300)
                await asyncio.to_thread(send_ipc_metrics, collector.endpoint)
                # messages of one trace each, keyed by its trace id (partition_traces_by_id)
                assert await _keys(kafka_bootstrap, topics.otlp_spans, set(ids)) == set(ids)
                got: dict[Layer, set[tuple[str, str]]] = {}

                async def check() -> bool:
                    for layer in (Layer.TRACE, Layer.IPC):
                        got[layer] = await _app_edges(stores, layer)
                    return got == {Layer.TRACE: TRACE_EDGES, Layer.IPC: IPC_EDGES}

                deadline = time.monotonic() + 240  # IPC: its minute window must close
                while not await check():
                    assert time.monotonic() < deadline, f"edges stored: {got}"
                    await asyncio.sleep(0.5)
            assert collector.metric("otelcol_exporter_sent_spans") == 6 * len(ids)
            assert collector.logged("warn", "error") == []  # no deprecated name, no failure
        finally:
            await stores.close()

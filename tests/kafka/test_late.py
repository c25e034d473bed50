"""Late spans through the real broker: the TRACE workers (stages 1-3) merge spans that arrive minutes
after stage 3 forgot their window into the stored window (a Collector retrying after an outage): the
window's counts become the truth, the part stored before neither lost nor doubled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from ingest.main import build_worker
from ingest.worker import WorkerOptions
from tests.kafka.harness import TEST_OPTIONS, InProcess, prefixed_topics
from tests.service.test_late_and_burst import Truth, calls, stored
from topology.store.embedded import open_stores

pytestmark = pytest.mark.kafka
TRACE = [(1, "trace"), (2, "trace"), (3, "trace")]


async def test_spans_minutes_late_merge_into_their_stored_window(kafka_bootstrap: str, topic_label: str,
                                                                tmp_path: Path) -> None:
    w = int(time.time()) // 60 * 60 - 900  # a window 15 minutes ago
    on_time, truth = calls(1, 40, w + 5.0)
    late, truth_late = calls(500, 25, w + 20.0)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        stores = open_stores(tmp_path / "store")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            async with InProcess(kafka_bootstrap, topics, stores, stages=TRACE, meta=False) as run:
                for body in on_time:  # produced as they happened
                    await producer.send_and_wait(topics.otlp_spans, body, timestamp_ms=(w + 30) * 1000)
                # idle partitions follow the wall clock: stage 3 closes the window and forgets it
                await run.wait_clocks(w + 400, [(3, "trace")])
                await run.wait_written()
                assert await stored(stores, w, w + 60, w + 900) == truth
                final = run.worker(3, "trace")
                assert all(w not in ps.logic.stage.open_windows for ps in final.parts.values())  # type: ignore[attr-defined]

                for body in late:  # a Collector retrying now, after an outage
                    await producer.send_and_wait(topics.otlp_spans, body)
                want = truth + truth_late
                got = Truth()

                async def merged() -> bool:
                    nonlocal got
                    got = await stored(stores, w, w + 60, time.time())
                    return got == want

                deadline = time.monotonic() + 90
                while not await merged():
                    assert time.monotonic() < deadline, f"late spans not merged: {got} != {want}"
                    await asyncio.sleep(0.5)
                await run.wait_written()
                assert await stored(stores, w, w + 60, time.time()) == want  # merged once
                counters = final.counters()
            # partials come per stage-2 partition and flush: at least one per late edge
            assert counters["late_merged"] >= len(truth_late) and counters["late_dropped"] == 0
            assert run.worker(2, "trace").counters()["dropped"] == 0
        finally:
            await producer.stop()
            await stores.close()


async def test_a_backlog_consumed_at_full_speed_drops_no_span(kafka_bootstrap: str, topic_label: str,
                                                              tmp_path: Path) -> None:
    """Ten minutes of traces waiting in the topic, consumed as fast as the workers go, with a pairing
    capacity (40 a partition) far below the backlog's 600 unanswered database calls: spans wait in
    event time (their records' clock), so at most the calls of one pairing wait (10 s) are held at
    once, nothing is dropped and every edge has its exact count. Over HTTP the same backlog sent at
    once waits in arrival time and meets the capacity (tests/service/test_late_and_burst.py)."""
    start = int(time.time()) // 60 * 60 - 1200
    bodies, truth = calls(1, 600, start + 1.0, step=1.0)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        stores = open_stores(tmp_path / "store")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i, body in enumerate(bodies):  # the backlog, each record stamped when it was produced
                await producer.send(topics.otlp_spans, body, timestamp_ms=int((start + 2.0 + i) * 1000))
            await producer.flush()
            opts = {**TEST_OPTIONS}
            workers = [build_worker(s, layer, topics, stores if s == 3 else None,
                                    WorkerOptions(bootstrap=kafka_bootstrap, instance=f"b{s}", **opts),
                                    settings={"trace_capacity": 40})
                       for s, layer in TRACE]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(w.run(stop)) for w in workers]
            try:
                deadline = time.monotonic() + 120
                got = Truth()
                while got != truth:
                    assert time.monotonic() < deadline, f"edges after the backlog: {got} != {truth}"
                    await asyncio.sleep(1.0)
                    got = await stored(stores, start, start + 660, time.time())
                pairing = workers[1].counters()
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            assert pairing["spans"] == 4 * 600 and pairing["dropped"] == 0, pairing
            assert pairing["expired"] == 600  # every database call waited its wait, none was cut short
        finally:
            await producer.stop()
            await stores.close()

"""HTTP ingest under a burst and with late data, against hand-built truth (issue 12 item 2).

* A burst with more waiting spans than the pairing capacity: ``/v1/traces`` answers 429 with
  ``Retry-After`` rather than dropping; the sender waits that long and retries; every edge appears
  with its exact request count and nothing is dropped.
* Spans 10 minutes and 2 hours late merge into their windows (stored before, then forgotten by stage 3):
  the counts are the truth, the earlier part neither lost nor doubled. Spans older than the retention
  of minute windows are dropped and counted (``topology_ingest_dropped_total{reason="too_late"}``).
"""

from __future__ import annotations

import collections
from pathlib import Path

import httpx

from service.runtime import Runtime
from tests.integration.asgi import ingest_client
from tests.topology.stages.otlp_builders import resource_spans, span, traces
from topology.model import Granularity, Layer
from topology.pipeline import Pipeline, PipelineConfig
from topology.store.base import Stores
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange

T0 = 1_767_225_600  # a window start (2026-01-01T00:00:00Z)
PROTOBUF = {"content-type": "application/x-protobuf"}
Truth = collections.Counter[tuple[str, str]]


def calls(first: int, n: int, start: float, step: float = 0.01) -> tuple[list[bytes], Truth]:
    """``n`` traces (ids from ``first``), one request each, as a Collector grouping by trace sends them:
    a user calls ``web``, ``web`` calls ``api-k``, ``api-k`` queries the database ``db-k`` (a CLIENT span
    that nobody answers: it waits the whole pairing wait, then becomes a virtual node's edge); a trace
every ``step`` seconds."""
    out, truth = [], Truth()
    for t in range(first, first + n):
        k, at = t % 4, start + (t - first) * step
        web = [span(t, 1, kind="server", start=at, duration=0.05),
               span(t, 2, 1, kind="client", start=at + 0.001, duration=0.03)]
        api = [span(t, 3, 2, kind="server", start=at + 0.002, duration=0.02),
               span(t, 4, 3, kind="client", start=at + 0.003, duration=0.01,
                    attributes={"db.system.name": "postgresql", "db.namespace": f"db-{k}"})]
        out.append(traces(resource_spans("web", web), resource_spans(f"api-{k}", api)).SerializeToString())
        truth.update([("user", "web"), ("web", f"api-{k}"), (f"api-{k}", f"db-{k}")])
    return out, truth


def other_traffic(n: int, start: float) -> bytes:
    """A user calling ``cron`` at ``start``: traffic of later windows, which keeps the pipeline running."""
    request = traces(resource_spans("cron", [span(1000 + n, 1, kind="server", start=start)]))
    return bytes(request.SerializeToString())


async def stored(stores: Stores, start: float, end: float, now: float) -> Truth:
    es = await stores.layers[Layer.TRACE].edges(Granularity.APP, TimeRange(start, end), now=now)
    return Truth({(e.key.source, e.key.target): e.stats.requests for e in es})


async def post(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post("/v1/traces", content=body, headers=PROTOBUF)


async def test_a_burst_beyond_the_pairing_capacity_is_refused_with_retry_after_and_nothing_is_lost(
        tmp_path: Path) -> None:
    clock = [T0 + 30.0]
    stores = open_stores(tmp_path)
    runtime = Runtime(stores, tmp_path, Pipeline(PipelineConfig(trace_capacity=60)), clock=lambda: clock[0])
    bodies, truth = calls(1, 400, T0 + 20.0)  # 400 database calls wait 10 s each: far beyond 60
    refused, waits = 0, set()
    async with ingest_client(stores, runtime) as http:
        pending = collections.deque(bodies)
        while pending:
            r = await post(http, pending[0])
            if r.status_code == 429:  # the sender (a Collector) waits Retry-After, the server flushes
                refused += 1
                wait = int(r.headers["retry-after"])
                waits.add(wait)
                assert 1 <= wait <= 10 and r.headers["content-type"] == PROTOBUF["content-type"]
                clock[0] += wait
                await runtime.flush()
                continue
            assert r.status_code == 200, r.text
            pending.popleft()
            clock[0] += 0.002
            if len(pending) % 20 == 0:  # the server's flusher runs every 0.5 s
                await runtime.flush()
        await runtime.drain()
        counters = runtime.counters()
    assert refused > 0, "the burst never met the capacity"
    assert counters["refused"] == {"spans": refused}
    pairing = counters["stages"]["trace_pairing"]
    assert (pairing["dropped"], pairing["spans"]) == (0, 4 * 400)
    assert await stored(stores, T0, T0 + 120, clock[0]) == truth
    await stores.close()


async def test_spans_late_by_minutes_and_hours_merge_into_their_windows(tmp_path: Path) -> None:
    clock = [T0 + 30.0]
    stores = open_stores(tmp_path)
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: clock[0])
    on_time, truth = calls(1, 30, T0 + 5.0)
    ten_min, truth_10 = calls(100, 20, T0 + 15.0)  # same window (T0), sent 10 minutes late
    two_h, truth_2h = calls(200, 10, T0 + 40.0)  # same window, 2 hours late
    older, truth_old = calls(300, 5, T0 - 7 * 3600 + 5.0)  # 7 h before T0: beyond the 6 h of minutes
    async with ingest_client(stores, runtime) as http:
        for b in on_time:
            assert (await post(http, b)).status_code == 200
        for t in range(60, 400, 20):  # the window closes, its grace passes: stage 3 forgets it
            clock[0] = T0 + t
            assert (await post(http, other_traffic(t, T0 + t + 60))).status_code == 200
            await runtime.flush()
        assert await stored(stores, T0, T0 + 60, clock[0]) == truth
        assert T0 not in runtime.pipeline.final.open_windows

        clock[0] = T0 + 600.0
        for b in ten_min:
            assert (await post(http, b)).status_code == 200
        for t in (600, 620, 640):
            clock[0] = T0 + t
            await runtime.flush()
        assert await stored(stores, T0, T0 + 60, clock[0]) == truth + truth_10
        assert runtime.counters()["stages"]["final"]["late_merged"] == len(truth_10)

        clock[0] = T0 + 7200.0
        for b in two_h + older:
            assert (await post(http, b)).status_code == 200
        for t in (7200, 7220, 7240):
            clock[0] = T0 + t
            await runtime.flush()
        await runtime.drain()
        await runtime.drain()  # nothing merged twice
        assert await stored(stores, T0, T0 + 60, clock[0]) == truth + truth_10 + truth_2h
        assert await stored(stores, T0 - 8 * 3600, T0 - 6 * 3600, clock[0]) == Truth()
        final = runtime.counters()["stages"]["final"]
        metrics = (await http.get("/metrics")).text
    # one partial per edge and window (no clusters: APP edges only)
    assert (final["late_merged"], final["late_dropped"]) == (len(truth_10) + len(truth_2h), len(truth_old))
    dropped = [line for line in metrics.splitlines()
               if line.startswith("topology_ingest_dropped_total{") and 'reason="too_late"' in line]
    assert dropped and float(dropped[0].rsplit(" ", 1)[1]) == final["late_dropped"], dropped
    await stores.close()


async def test_after_a_restart_spans_of_windows_already_stored_merge_into_them(tmp_path: Path) -> None:
    """A server stopped (its open windows written at shutdown) and started again a minute later on
    the same data: the Collector's retried spans for a window written before merge into it."""
    clock = [T0 + 40.0]
    before, truth = calls(1, 30, T0 + 5.0)
    retried, truth_retried = calls(100, 20, T0 + 30.0)
    stores = open_stores(tmp_path)
    runtime = Runtime(stores, tmp_path, Pipeline(), clock=lambda: clock[0])
    async with ingest_client(stores, runtime) as http:
        for b in before:
            assert (await post(http, b)).status_code == 200
        await runtime.drain()  # SIGTERM: every open window is written
    await stores.close()
    assert await stored_in(tmp_path, T0, clock[0] + 60) == truth

    clock[0] = T0 + 100.0  # within the window's grace: a pipeline started afresh would replace it
    stores = open_stores(tmp_path)
    pipeline = Pipeline()
    pipeline.resume(clock[0])
    runtime = Runtime(stores, tmp_path, pipeline, clock=lambda: clock[0])
    async with ingest_client(stores, runtime) as http:
        for b in retried:
            assert (await post(http, b)).status_code == 200
        await runtime.drain()
    assert await stored(stores, T0, T0 + 60, clock[0]) == truth + truth_retried
    await stores.close()


async def stored_in(path: Path, start: float, now: float) -> Truth:
    stores = open_stores(path)
    try:
        return await stored(stores, start, start + 60, now)
    finally:
        await stores.close()


async def test_the_simulator_posts_again_after_retry_after(tmp_path: Path) -> None:
    """``topology simulate --http`` waits ``Retry-After`` on a 429 and posts again, as the OpenTelemetry
    exporters do (real time: a pairing wait of 1 s, the server's flusher every 0.2 s)."""
    import asyncio
    import time

    from service.simulate import HttpSink

    stores = open_stores(tmp_path)
    runtime = Runtime(stores, tmp_path, Pipeline(PipelineConfig(trace_capacity=3, trace_wait=1.0)))
    now = time.time()
    first, second = (traces(resource_spans("web", [
        span(n, 1, kind="client", start=now, attributes={"db.namespace": "orders"}) for n in ns
    ])).SerializeToString() for ns in ((1, 2, 3), (4, 5, 6)))
    stop = asyncio.Event()

    async def flusher() -> None:
        while not stop.is_set():
            await runtime.flush()
            await asyncio.sleep(0.2)

    task = asyncio.create_task(flusher())
    async with ingest_client(stores, runtime) as http:
        sink = HttpSink("http://t")
        await sink.client.aclose()
        sink.client = http
        await sink._post("/v1/traces", first, PROTOBUF["content-type"])
        await sink._post("/v1/traces", second, PROTOBUF["content-type"])  # 429 until the first three expire
        stop.set()
        await task
        await runtime.drain()
        assert sink.retries >= 1 and runtime.refused["spans"] == sink.retries
    assert await stored(stores, now - 60, now + 60, time.time()) == Truth({("web", "orders"): 6})
    await stores.close()

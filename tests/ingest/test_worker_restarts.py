"""How a worker's run loop answers a session that ends in error (no broker needed: the sessions
here end at once the way a real one does, by raising)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, ProducerFenced

from ingest.main import build_worker
from ingest.metrics import WorkerMetrics
from ingest.topics import Topics
from ingest.worker import MAX_FENCED_BACKOFF, WorkerOptions, _stop_client


def _worker(endings: list[BaseException | None], waits: list[float],
            committing: BaseException | None = None) -> Any:
    """A NETWORK stage-2 worker whose sessions end as ``endings`` says (None: the stop is asked; the
    session ending in ``committing`` commits a checkpoint first), recording the back-off before each
    restart."""
    metrics = WorkerMetrics()
    w = build_worker(2, "network", Topics("t."), None, WorkerOptions(bootstrap="127.0.0.1:1",
                                                                     restart_backoff=0.5), metrics=metrics)

    async def session(stop: asyncio.Event) -> None:
        w.sessions += 1
        ending = endings.pop(0)
        if ending is None:
            stop.set()
            return
        if ending is committing:
            w.committed_checkpoints += 1
        raise ending

    async def restart(stop: asyncio.Event, backoff: float) -> None:
        waits.append(backoff)

    w._session = session
    w._restart = restart
    return w


async def test_a_fenced_producer_restarts_the_session_with_a_growing_back_off() -> None:
    # The broker fences a producer after ending a transaction that outlived its timeout (a broker
    # restarted mid-transaction): the worker used to stop for good, leaving its stage without a worker.
    waits: list[float] = []
    fenced = [ProducerFenced() for _ in range(5)]
    endings = [*fenced[:3], KafkaConnectionError(), fenced[3], fenced[4], None]
    w = _worker(endings, waits, committing=fenced[2])
    await asyncio.wait_for(w.run(asyncio.Event()), 10)
    assert w.sessions == 7
    # twice the plain back-off, then 4x (two in a row); the third session committed first: 2x again; a
    # connection error: the plain back-off; two more fences, still counted from the last commit: 4x, 8x
    assert waits == [1.0, 2.0, 1.0, 0.5, 2.0, 4.0]
    labels = {"layer": "network", "stage": "2"}
    assert w.metrics.registry.get_sample_value("topology_ingest_fenced_total", labels) == 5


async def test_the_back_off_after_fences_is_bounded() -> None:
    waits: list[float] = []
    w = _worker([ProducerFenced() for _ in range(12)] + [None], waits)
    await asyncio.wait_for(w.run(asyncio.Event()), 10)
    assert max(waits) == MAX_FENCED_BACKOFF and len(waits) == 12


class _Client:
    """Stops the way aiokafka's consumer can after a broker restart: its fetcher awaits its own
    cancelled fetch tasks, so ``stop()`` raises ``CancelledError`` nobody asked for."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang

    async def stop(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        inner = asyncio.ensure_future(asyncio.sleep(3600))
        inner.cancel()
        await inner


async def test_a_client_whose_stop_raises_cancelled_does_not_end_the_worker() -> None:
    await _stop_client(_Client(), "w")  # returns: the cancellation was the client's own


async def test_a_worker_being_cancelled_while_it_stops_a_client_is_cancelled() -> None:
    task = asyncio.ensure_future(_stop_client(_Client(hang=True), "w"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

"""A worker that stalls past its session timeout cannot commit once it resumes: its partitions went to
another worker, which replayed them from the last checkpoint, so anything the stalled worker still
held would otherwise be written twice. Real processes (``python -m service.cli ingest``) on the real
broker; SIGSTOP and SIGCONT stand for a frozen VM, a long pause, a swapped-out process."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from ingest.publisher import publish_simulation
from tests.kafka.harness import (
    TEST_OPTIONS,
    Proc,
    Processes,
    assert_same_windows,
    embedded_baseline,
    free_port,
    prefixed_topics,
    until,
    windows,
)
from topology.model import Layer
from topology.store.embedded import open_stores

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SERVICES = 20
MINUTES = 3.0
NEVER = "100000"  # seconds: the stalled worker commits only when its partitions are revoked


def _stage2(root: Path, name: str, bootstrap: str, prefix: str, *extra: str) -> Proc:
    """A NETWORK stage-2 worker without ``--instance``: its transactional id is unique by default."""
    args = ["--stage", "2", "--layer", "network", "--bootstrap", bootstrap, "--topic-prefix", prefix,
            "--partitions", "2", "--log-level", "WARNING",
            "--idle-seconds", str(TEST_OPTIONS["idle_seconds"])]
    port = free_port()
    p = Proc(2, "network", [*args, "--metrics-port", str(port), *extra], port, root / f"worker-{name}.log")
    p.start()
    return p


async def _stable(bootstrap: str, group: str, members: int, limit: float = 60.0) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + limit
        while True:
            g = (await admin.describe_consumer_groups([group]))[0].groups[0]
            if g[2] == "Stable" and len(g[5]) == members:
                return
            assert time.monotonic() < deadline, f"group {group} not stable with {members} members: {g[2]}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def test_a_worker_stopped_past_its_session_cannot_commit_when_it_resumes(
        kafka_bootstrap: str, topic_label: str, tmp_path: Path) -> None:
    start = float(int(time.time()) - 240)
    async with prefixed_topics(kafka_bootstrap, topic_label) as topics:
        procs = Processes(kafka_bootstrap, topics, tmp_path, stages=[(1, "network"), (3, "network")])
        procs.start()
        stalled = _stage2(tmp_path, "stalled", kafka_bootstrap, topics.prefix, "--min-commit-interval", NEVER,
                          "--max-commit-interval", NEVER, "--tick-interval", NEVER)
        other = _stage2(tmp_path, "other", kafka_bootstrap, topics.prefix,
                        "--min-commit-interval", str(TEST_OPTIONS["min_commit_interval"]),
                        "--max-commit-interval", str(TEST_OPTIONS["max_commit_interval"]))
        try:
            publishing = asyncio.create_task(publish_simulation(
                kafka_bootstrap, services=SERVICES, minutes=MINUTES, start=start, topics=topics, partitions=2,
                rate=5.0))
            # both workers of the stage run side by side on this host (no shared transactional id), and
            # the one about to stall holds records it has not committed
            await until(lambda: (stalled.metric("topology_ingest_records_total") or 0) >= 20
                        and (other.metric("topology_ingest_records_total") or 0) >= 20,
                        limit=90, what="both stage-2 workers consuming")
            # stalled in a stable group, a member is dropped after the session timeout (during a
            # rebalance the group would wait for it up to the rebalance timeout instead)
            await _stable(kafka_bootstrap, topics.group("network", 2), members=2)
            # ... and holds records it has not committed (it commits only when its partitions are revoked)
            seen = stalled.metric("topology_ingest_records_total") or 0
            await until(lambda: (stalled.metric("topology_ingest_records_total") or 0) > seen, limit=60,
                        what="the worker about to stall consuming")
            assert not publishing.done()
            assert stalled.popen is not None and other.popen is not None
            stalled.popen.send_signal(signal.SIGSTOP)
            try:
                # the session times out: the group goes on with the other worker alone, which takes the
                # stalled worker's partition over
                await _stable(kafka_bootstrap, topics.group("network", 2), members=1, limit=90)
            finally:
                stalled.popen.send_signal(signal.SIGCONT)
            # resumed, the stalled worker tries to commit what it held (its partitions are revoked) and
            # is refused: it is not a member of the group's current generation any more
            await until(lambda: (stalled.metric("topology_ingest_fenced_total") or 0) >= 1, limit=60,
                        what="the resumed worker's commit being refused")
            assert stalled.terminate() == 0 and other.popen.poll() is None
            res = await publishing
            await procs.wait_clocks(res["end"] + 80, [(3, "network")], limit=150)
            await asyncio.sleep(3)  # stage 3 writes what it flushed
        finally:
            for p in (stalled, other):
                if p.popen is not None and p.popen.poll() is None:
                    p.popen.send_signal(signal.SIGCONT)
            codes = [other.terminate(), stalled.terminate(), *procs.stop()]
        assert all(c == 0 for c in codes), f"graceful shutdown failed: {codes}"
    stores = open_stores(procs.store_dir("network"))
    try:
        got = await windows(stores, [Layer.NETWORK], start, res["end"])
    finally:
        await stores.close()
    assert_same_windows(got, embedded_baseline(SERVICES, 42, start, MINUTES, layers=[Layer.NETWORK]))

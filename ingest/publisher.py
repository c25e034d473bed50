"""Publishing inputs to the ingestion topics exactly as real producers frame them.

* ``topology.addresses``: one AddressLease JSON per message, key ``ip@start`` (compacted topic);
  ``topology.catalog``: ServiceInfo JSON keyed by name; ``topology.health``: HealthEvent JSON keyed
  by service; ``topology.changes``: ChangeEvent JSON keyed by service. They are flushed before any
  traffic of the same step, so leases are known before the flows that use them.
* ``topology.flows``: one flow batch (wire format v1) per message, keyed by the reporting host.
* ``otlp_metrics`` / ``otlp_spans``: serialized ``ExportMetricsServiceRequest`` /
  ``ExportTraceServiceRequest``, as the OpenTelemetry Collector's kafka exporter writes them with
  ``encoding: otlp_proto``. With ``traces_by_id`` (the exporter's ``partition_traces_by_id``) each
  request is cut into one message per trace, keyed by the hex trace id; otherwise messages are
  unkeyed and hold whole requests.

:class:`KafkaSink` is what ``topology simulate --kafka`` uses; :func:`publish_simulation` runs a
simulated fleet into Kafka in one call (tests and benchmarks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingest.security import Kafka, client_options
from ingest.splitter import by_trace_id
from ingest.topics import Topics, ensure_topics
from topology.catalog import AddressLease, HealthEvent, ServiceInfo
from topology.change import ChangeEvent
from topology.wire import flow

log = logging.getLogger("ingest.publisher")


DELIVERY_SECONDS = 120


class PublishError(Exception):
    """Messages the broker never acknowledged."""


def lease_key(lease: AddressLease) -> bytes:
    return f"{lease.ip}@{lease.start!r}".encode()


@dataclass
class PublishStats:
    messages: int = 0
    flow_batches: int = 0
    flow_records: int = 0
    metric_requests: int = 0
    span_messages: int = 0
    leases: int = 0
    catalog: int = 0
    health: int = 0
    changes: int = 0


class KafkaSink:
    """Sends simulator emissions (or anything shaped like them) to the ingestion topics."""

    def __init__(self, kafka: Kafka, topics: Topics | None = None, traces_by_id: bool = True,
                 create_topics: bool = True, partitions: int = 4) -> None:
        self.kafka = kafka
        self.topics = topics or Topics()
        self.traces_by_id = traces_by_id
        self.create_topics = create_topics
        self.partitions = partitions
        self.stats = PublishStats()
        self.producer: AIOKafkaProducer | None = None
        self._sent: list[asyncio.Future[Any]] = []  # deliveries not checked yet

    async def start(self) -> None:
        if self.create_topics:
            await ensure_topics(self.kafka, self.topics, self.partitions)
        # request_timeout_ms is also how long a batch waits for its partition's leader: long enough to
        # ride out a broker restart on a busy machine rather than fail the batch
        self.producer = AIOKafkaProducer(
            **client_options(self.kafka), acks="all", enable_idempotence=True, linger_ms=5,
            max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024,
            request_timeout_ms=DELIVERY_SECONDS * 1000)
        await self.producer.start()

    async def close(self) -> None:
        if self.producer is not None:
            try:
                await self.flush()
            finally:
                await self.producer.stop()
                self.producer = None

    async def _send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        assert self.producer is not None, "call start() first"
        self._sent.append(await self.producer.send(topic, value=value, key=key))
        self.stats.messages += 1

    async def send_records(self, leases: Iterable[AddressLease] = (), catalog: Iterable[ServiceInfo] = (),
                           health: Iterable[HealthEvent] = (), changes: Iterable[ChangeEvent] = ()) -> None:
        """Leases, catalog entries, health and change events, flushed (durable) before this returns."""
        t = self.topics
        for lease in leases:
            await self._send(t.addresses, json.dumps(lease.to_dict()).encode(), lease_key(lease))
            self.stats.leases += 1
        for info in catalog:
            await self._send(t.catalog, json.dumps(info.to_dict()).encode(), info.name.encode())
            self.stats.catalog += 1
        for event in health:
            await self._send(t.health, json.dumps(event.to_dict()).encode(), event.service.encode())
            self.stats.health += 1
        for change in changes:
            await self._send(t.changes, json.dumps(change.to_dict()).encode(), change.service.encode())
            self.stats.changes += 1
        await self.flush()

    async def send_flows(self, batches: Iterable[bytes]) -> None:
        for data in batches:
            host, n = _flow_host(data)
            await self._send(self.topics.flows, data, host.encode() or None)
            self.stats.flow_batches += 1
            self.stats.flow_records += n

    async def send_metrics(self, requests: Iterable[bytes]) -> None:
        for data in requests:
            await self._send(self.topics.otlp_metrics, data)
            self.stats.metric_requests += 1

    async def send_spans(self, requests: Iterable[bytes]) -> None:
        for data in requests:
            if not self.traces_by_id:
                await self._send(self.topics.otlp_spans, data)
                self.stats.span_messages += 1
                continue
            for tid, req in by_trace_id(data).items():
                await self._send(self.topics.otlp_spans, req, tid.encode())
                self.stats.span_messages += 1

    async def send(self, em: Any, t: float | None = None) -> None:
        """One simulator :class:`~topology.sim.Emission` (records first, then traffic)."""
        await self.send_records(em.leases, em.catalog, em.health, em.change_events)
        await self.send_flows(em.flow_batches)
        await self.send_metrics(em.metrics)
        await self.send_spans(em.spans)

    async def flush(self) -> None:
        """Everything sent so far is delivered; :class:`PublishError` if something was not (the
        client gives up on a record only after :data:`DELIVERY_SECONDS` without a partition leader,
        or on an error it cannot retry): never a silent loss."""
        if self.producer is not None:
            await self.producer.flush()
        sent, self._sent = self._sent, []
        failed = [e for f in sent if (e := f.exception()) is not None]  # all done after the flush
        if failed:
            raise PublishError(f"{len(failed)} of {len(sent)} messages were not delivered: {failed[0]!r}")


def _flow_host(data: bytes) -> tuple[str, int]:
    try:
        batch = flow.decode(data)
    except flow.FlowDecodeError:
        return "", 0
    return batch.host, len(batch)


async def publish_simulation(kafka: Kafka, *, services: int = 50, seed: int = 42, minutes: float = 5.0,
                             step: float = 10.0, start: float | None = None, rate: float = 0.0,
                             truth_path: str | Path | None = None, topics: Topics | None = None,
                             traces_by_id: bool = True, partitions: int = 4,
                             stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Simulate a fleet and publish everything it emits; returns the ground truth and counts.

    ``start`` defaults to ``now - minutes`` (the past few minutes, as fast as possible); ``rate`` > 0
    paces the steps at that many simulated seconds per wall second (1.0 = live).
    """
    from topology.sim import Simulator, generate_fleet

    fleet = generate_fleet(services=services, seed=seed)
    duration = minutes * 60.0
    t0 = start if start is not None else time.time() - duration
    sim = Simulator(fleet, seed=seed, start=t0)
    sink = KafkaSink(kafka, topics, traces_by_id=traces_by_id, partitions=partitions)
    await _retry(sink.start)
    wall0 = time.monotonic()
    try:
        await sink.send(sim.initial_records(), t0)
        t = t0
        while t < t0 + duration - 1e-9 and not (stop is not None and stop.is_set()):
            await sink.send(sim.step(t, step), t)
            t += step
            if rate > 0:
                ahead = (t - t0) / rate - (time.monotonic() - wall0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await sink.close()
    truth = sim.truth()
    if truth_path is not None:
        await asyncio.to_thread(Path(truth_path).write_text, json.dumps(truth), encoding="utf-8")
    return {"truth": truth, "start": t0, "end": t, "publish": sink.stats.__dict__, "sim": sim.stats(),
            "seconds": time.monotonic() - wall0}


async def _retry(fn: Any, attempts: int = 30) -> None:
    for i in range(attempts):
        try:
            await fn()
            return
        except (KafkaError, OSError) as e:
            if i == attempts - 1:
                raise
            log.warning("Kafka not reachable yet", extra={"error": str(e)})
            await asyncio.sleep(1.0)

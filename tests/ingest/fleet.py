"""A simulated fleet through every Kafka stage spec, without a broker: the simulator's emissions are
published to a :class:`~tests.ingest.testing.Bus` as the real producers frame them, and the ten
specs run over it as the workers would (stage 1 -> 2 -> 3 of each layer, and the meta worker)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ingest.main import build_spec
from ingest.publisher import lease_key
from ingest.splitter import by_trace_id
from ingest.topics import Topics
from tests.ingest.testing import Bus, Chain, TestingStage
from topology.sim import Simulator, generate_fleet
from topology.store.base import Stores
from topology.wire import flow

LAYERS = ("network", "ipc", "trace")
STEP = 10.0


def publish(bus: Bus, topics: Topics, em: Any, t: float, traces_by_id: bool = True) -> None:
    """One simulator emission, framed and keyed as :class:`ingest.publisher.KafkaSink` sends it."""
    ms = int(t * 1000)
    for lease in em.leases:
        bus.produce(topics.addresses, json.dumps(lease.to_dict()).encode(), lease_key(lease), ms)
    bus.produce_json(topics.catalog, em.catalog, lambda i: i.name, ms)
    bus.produce_json(topics.health, em.health, lambda e: e.service, ms)
    for data in em.flow_batches:
        bus.produce(topics.flows, data, flow.decode(data).host.encode() or None, ms)
    for data in em.metrics:
        bus.produce(topics.otlp_metrics, data, None, ms)
    for data in em.spans:
        if not traces_by_id:
            bus.produce(topics.otlp_spans, data, None, ms)
            continue
        for tid, req in by_trace_id(data).items():
            bus.produce(topics.otlp_spans, req, tid.encode(), ms)


class FleetRun:
    """Every stage of ``layers`` (and meta) over one bus; ``stores`` only for the terminal specs."""

    def __init__(self, stores: Stores, layers: Iterable[str] = LAYERS, partitions: int = 2) -> None:
        self.topics = Topics()
        self.keys = [(s, layer) for layer in layers for s in (1, 2, 3)] + [(1, "meta")]
        self.chain = Chain((build_spec(s, layer, self.topics, stores) for s, layer in self.keys),
                           Bus(partitions))
        self.bus = self.chain.bus
        self.stages = dict(zip(self.keys, self.chain.stages, strict=True))

    def stage(self, stage: int, layer: str) -> TestingStage:
        return self.stages[(stage, layer)]

    def simulate(self, services: int, minutes: float, start: float, seed: int = 42,
                 traces_by_id: bool = True) -> Simulator:
        sim = Simulator(generate_fleet(services=services, seed=seed), seed=seed, start=start)
        publish(self.bus, self.topics, sim.initial_records(), start)
        t = start
        while t < start + minutes * 60 - 1e-9:
            publish(self.bus, self.topics, sim.step(t, STEP), t + STEP, traces_by_id)
            t += STEP
            self.chain.cycle(t)
        return sim

    def drain(self, until: float) -> None:
        self.chain.drain(until)

"""``topology simulate``: run the fleet simulator and deliver its payloads in the real wire formats.

Destinations (any combination, at least one): ``--out DIR`` (files), ``--http URL`` (a ``topology
serve``), ``--kafka [BOOTSTRAP]`` (the ingestion topics). ``--truth PATH`` writes the ground truth at the
end, with the incidents ``--faults`` started (root, kind, start, end, symptomatic callers). A sink
that cannot be reached stops the run with :class:`Unreachable` (one line from the CLI).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from service.client import retry_wait
from service.progress import Progress
from service.settings import FleetSettings, SimulateSettings
from topology.settings import ConfigError, KafkaSettings

log = logging.getLogger("topology.simulate")


class Unreachable(Exception):
    """A sink cannot be reached; the message says which."""


class FileSink:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("flows", "otlp_metrics", "otlp_spans"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.n = 0

    async def send(self, em: Any, t: float) -> None:
        stamp = f"{int(t)}"
        for sub, payloads, ext in (
            ("flows", em.flow_batches, "stfb"),
            ("otlp_metrics", em.metrics, "pb"),
            ("otlp_spans", em.spans, "pb"),
        ):
            for i, data in enumerate(payloads):
                (self.root / sub / f"{stamp}-{i:05d}.{ext}").write_bytes(data)
        for name, records in (("catalog", em.catalog), ("health", em.health), ("addresses", em.leases),
                              ("changes", em.change_events)):
            if records:
                with (self.root / f"{name}.jsonl").open("a", encoding="utf-8") as f:
                    for r in records:
                        f.write(json.dumps(r.to_dict()) + "\n")

    async def close(self) -> None:
        return None



class HttpSink:
    """POSTs to a ``topology serve``: OTLP at /v1/*, the rest at /ingest/*."""

    def __init__(self, base: str, token: str | None = None) -> None:
        import httpx

        self.base = base.rstrip("/")
        self.client = httpx.AsyncClient(timeout=30.0)
        self.auth = {"authorization": f"Bearer {token}"} if token else {}
        self.retries = 0  # posts answered 429/503 and sent again

    async def _post(self, path: str, content: bytes, ctype: str) -> None:
        """POST once; on 429 or 503 wait ``Retry-After`` (1 s if absent) and again, as the OpenTelemetry
        exporters do, for at most :data:`service.client.RETRY_FOR` seconds of waiting."""
        import httpx

        waited = 0.0
        while True:
            try:
                r = await self.client.post(self.base + path, content=content,
                                           headers={"content-type": ctype, **self.auth})
            except httpx.TransportError as e:
                why = f"{type(e).__name__}: {e}"
                raise Unreachable(f"the server at {self.base} cannot be reached: {why}") from e
            wait = retry_wait(r.status_code, r.headers, waited)
            if wait is None:
                break
            self.retries += 1
            waited += wait
            await asyncio.sleep(wait)
        if r.status_code >= 400:
            log.warning("rejected", extra={"path": path, "status": r.status_code, "body": r.text[:200]})

    async def send(self, em: Any, t: float) -> None:
        for name, records in (("addresses", em.leases), ("catalog", em.catalog), ("health", em.health),
                              ("changes", em.change_events)):
            if records:
                await self._post(
                    f"/ingest/{name}", json.dumps([r.to_dict() for r in records]).encode(), "application/json"
                )
        for data in em.flow_batches:
            await self._post("/ingest/flows", data, "application/x-topology-flows")
        for data in em.metrics:
            await self._post("/v1/metrics", data, "application/x-protobuf")
        for data in em.spans:
            await self._post("/v1/traces", data, "application/x-protobuf")

    async def close(self) -> None:
        await self.client.aclose()


async def run_simulate(fleet_settings: FleetSettings, settings: SimulateSettings,
                       kafka: KafkaSettings | None) -> int:
    """Simulate ``settings.minutes`` of the fleet's traffic into every sink; progress on stderr."""
    from topology.sim import SimConfig, Simulator, generate_fleet

    sinks: list[Any] = []
    try:
        if settings.out:
            sinks.append(FileSink(Path(settings.out)))
        if settings.http:
            sinks.append(HttpSink(settings.http, settings.token))
        if kafka is not None:
            from ingest.publisher import KafkaSink
            from ingest.topics import Topics

            sink = KafkaSink(kafka, Topics(kafka.topic_prefix))
            sinks.append(sink)
            await _start_kafka(sink, kafka)
        fleet = generate_fleet(services=fleet_settings.services, seed=fleet_settings.seed)
        duration = settings.minutes * 60
        start = settings.start if settings.start is not None else time.time() - duration
        sim = Simulator(fleet, seed=fleet_settings.seed, start=start,
                        config=SimConfig(faults_per_hour=settings.faults))
        initial = sim.initial_records()
        for s in sinks:
            await s.send(initial, start)
        t = start
        wall0 = time.monotonic()
        bar = Progress("simulate", settings.minutes, "min")
        while t < start + duration:
            em = sim.step(t, settings.step)
            for s in sinks:
                await s.send(em, t)
            t += settings.step
            bar.update((t - start) / 60)
            if settings.rate > 0:
                ahead = (t - start) / settings.rate - (time.monotonic() - wall0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        bar.close()
    finally:
        for s in sinks:
            await s.close()
    if fleet_settings.truth:
        truth = json.dumps(sim.truth())
        await asyncio.to_thread(Path(fleet_settings.truth).write_text, truth, encoding="utf-8")
    log.info("simulated", extra={"services": fleet_settings.services, "seconds": duration,
                                 "took_s": round(time.monotonic() - wall0, 2)})
    return 0


async def _start_kafka(sink: Any, kafka: KafkaSettings) -> None:
    from ingest.security import explain

    try:
        await sink.start()
    except ConfigError:
        raise
    except Exception as e:
        raise Unreachable(f"Kafka at {kafka.describe()} cannot be reached: {await explain(kafka, e)}") from e

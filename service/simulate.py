"""``topology simulate``: run the fleet simulator and deliver its payloads in the real wire formats.

Destinations (any combination): ``--out DIR`` (files), ``--http URL`` (a ``topology serve``),
``--kafka BOOTSTRAP`` (the ingestion topics). ``--truth PATH`` writes the ground truth at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("topology.simulate")


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
        for name, records in (("catalog", em.catalog), ("health", em.health), ("addresses", em.leases)):
            if records:
                with (self.root / f"{name}.jsonl").open("a", encoding="utf-8") as f:
                    for r in records:
                        f.write(json.dumps(r.to_dict()) + "\n")

    async def close(self) -> None:
        return None


class HttpSink:
    """POSTs to a ``topology serve``: OTLP at /v1/*, the rest at /ingest/*."""

    def __init__(self, base: str) -> None:
        import httpx

        self.base = base.rstrip("/")
        self.client = httpx.AsyncClient(timeout=30.0)

    async def _post(self, path: str, content: bytes, ctype: str) -> None:
        r = await self.client.post(self.base + path, content=content, headers={"content-type": ctype})
        if r.status_code >= 400:
            log.warning("rejected", extra={"path": path, "status": r.status_code, "body": r.text[:200]})

    async def send(self, em: Any, t: float) -> None:
        for name, records in (("addresses", em.leases), ("catalog", em.catalog), ("health", em.health)):
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


async def run_simulate(args: Any) -> int:
    from topology.sim import Simulator, generate_fleet

    sinks: list[Any] = []
    if args.out:
        sinks.append(FileSink(Path(args.out)))
    if args.http:
        sinks.append(HttpSink(args.http))
    if args.kafka:
        from ingest.publisher import KafkaSink
        from ingest.topics import Topics

        sink = KafkaSink(args.kafka, Topics(getattr(args, "topic_prefix", "")))
        await sink.start()
        sinks.append(sink)
    fleet = generate_fleet(services=args.services, seed=args.seed)
    duration = args.minutes * 60
    start = args.start if args.start is not None else time.time() - duration
    sim = Simulator(fleet, seed=args.seed, start=start)
    initial = sim.initial_records()
    for s in sinks:
        await s.send(initial, start)
    t = start
    wall0 = time.monotonic()
    try:
        while t < start + duration:
            em = sim.step(t, args.step)
            for s in sinks:
                await s.send(em, t)
            t += args.step
            if args.rate > 0:
                ahead = (t - start) / args.rate - (time.monotonic() - wall0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        for s in sinks:
            await s.close()
    if args.truth:
        await asyncio.to_thread(Path(args.truth).write_text, json.dumps(sim.truth()), encoding="utf-8")
    log.info(
        "simulated",
        extra={"services": args.services, "seconds": duration, "took_s": round(time.monotonic() - wall0, 2)},
    )
    return 0

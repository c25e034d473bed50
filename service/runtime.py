"""The embedded ingest runtime: decodes inputs, runs the in-process pipeline, writes the stores.

This is the I/O shell around :class:`topology.pipeline.Pipeline` used by ``topology demo`` and
``topology serve --embedded``. Bad input never stops it: each rejected payload is counted by
reason and appended to ``dead-letters.jsonl`` in the data directory (the embedded stand-in for the
``topology.dlq`` topic), and nothing already stored is touched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from topology.catalog import AddressLease, HealthEvent, ServiceInfo
from topology.pipeline import Pipeline, PipelineOutput
from topology.store.base import Stores
from topology.wire import flow, otlp

log = logging.getLogger("topology.runtime")

MAX_DEAD_LETTER_BYTES = 64 * 1024 * 1024


class InputError(ValueError):
    """A payload was rejected; ``reason`` is what the dead letter and the HTTP answer say."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class Runtime:
    """Feeds the pipeline and persists its output. Single event loop: no locks needed."""

    def __init__(
        self,
        stores: Stores,
        data_dir: Path | None,
        pipeline: Pipeline | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stores = stores
        self.pipeline = pipeline or Pipeline()
        self.clock = clock
        self.data_dir = data_dir
        self.accepted: Counter[str] = Counter()  # kind -> payloads
        self.records: Counter[str] = Counter()  # kind -> records inside them
        self.rejected: Counter[tuple[str, str]] = Counter()  # (kind, reason class) -> payloads
        self.windows_written: Counter[str] = Counter()  # layer -> windows
        self.last_flush: float = 0.0
        self.last_rollup: float = 0.0
        self._leases_file = data_dir / "addresses.jsonl" if data_dir else None
        self._dlq_file = data_dir / "dead-letters.jsonl" if data_dir else None
        if self._leases_file and self._leases_file.exists():
            self._load_leases(self._leases_file)

    # -- inputs (raise InputError on bad input, after dead-lettering it) ------------------------
    def accept_flows(self, data: bytes) -> int:
        try:
            batch = flow.decode(data)
        except flow.FlowDecodeError as e:
            raise self._reject("flows", str(e), data) from e
        self.pipeline.add_flows(batch)
        return self._count("flows", len(batch))

    def accept_metrics(self, data: bytes, content_type: str = "application/x-protobuf") -> int:
        try:
            req = otlp.decode_metrics(data, content_type)
        except otlp.OtlpDecodeError as e:
            raise self._reject("metrics", str(e), data) from e
        self.pipeline.add_metrics(req)
        n = sum(
            len(m.data_points)
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for m in _metric_points(sm.metrics)
        )
        return self._count("metrics", n)

    def accept_spans(
        self, data: bytes, content_type: str = "application/x-protobuf", now: float | None = None
    ) -> int:
        """``now`` is the arrival time (the pairing wait runs from it); default: the runtime's clock."""
        try:
            req = otlp.decode_traces(data, content_type)
        except otlp.OtlpDecodeError as e:
            raise self._reject("spans", str(e), data) from e
        self.pipeline.add_spans(req, self.clock() if now is None else now)
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        return self._count("spans", n)

    async def accept_catalog(self, records: Sequence[Any]) -> int:
        infos = self._parse("catalog", records, ServiceInfo.from_dict)
        self.pipeline.add_catalog(infos)
        await self.stores.catalog.upsert_services(infos)
        return self._count("catalog", len(infos))

    async def accept_health(self, records: Sequence[Any]) -> int:
        events = self._parse("health", records, HealthEvent.from_dict)
        self.pipeline.add_health(events)
        await self.stores.catalog.record_health(events)
        return self._count("health", len(events))

    def accept_leases(self, records: Sequence[Any]) -> int:
        leases = self._parse("addresses", records, AddressLease.from_dict)
        self.add_leases(leases)
        return self._count("addresses", len(leases))

    def add_leases(self, leases: Iterable[AddressLease]) -> None:
        leases = list(leases)
        self.pipeline.add_leases(leases)
        if self._leases_file:
            with self._leases_file.open("a", encoding="utf-8") as f:
                for lease in leases:
                    f.write(json.dumps(lease.to_dict()) + "\n")

    # -- output ---------------------------------------------------------------------------------
    async def flush(self, now: float | None = None) -> PipelineOutput:
        """Run the pipeline up to ``now`` and write what it produced (layers concurrently)."""
        now = self.clock() if now is None else now
        out = self.pipeline.flush(now)
        writes = [self.stores.layers[layer].upsert_windows(ws) for layer, ws in out.windows.items() if ws]
        await asyncio.gather(*writes)
        for layer, ws in out.windows.items():
            self.windows_written[layer.value] += len(ws)
        if out.nodes:
            await self.stores.catalog.register_nodes(out.nodes)
        if out.traces:
            await self.stores.catalog.record_traces(out.traces)
        self.last_flush = now
        return out

    async def rollup(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        await asyncio.gather(*(s.rollup(now) for s in self.stores.layers.values()))
        self.last_rollup = now

    def counters(self) -> dict[str, Any]:
        return {
            "accepted": dict(self.accepted),
            "records": dict(self.records),
            "rejected": {f"{k}:{r}": n for (k, r), n in self.rejected.items()},
            "windows_written": dict(self.windows_written),
            "stages": self.pipeline.counters(),
        }

    # -- helpers --------------------------------------------------------------------------------
    def _count(self, kind: str, n: int) -> int:
        self.accepted[kind] += 1
        self.records[kind] += n
        return n

    def _parse(self, kind: str, records: Sequence[Any], parse: Callable[[dict[str, Any]], Any]) -> list[Any]:
        if not isinstance(records, list):
            raise self._reject(kind, "expected a JSON array of records", json.dumps(records).encode())
        out = []
        for i, r in enumerate(records):
            try:
                if not isinstance(r, dict):
                    raise ValueError("record is not a JSON object")
                out.append(parse(r))
            except (ValueError, KeyError, TypeError) as e:
                raise self._reject(kind, f"record {i}: {e}", json.dumps(r, default=str).encode()) from e
        return out

    def _reject(self, kind: str, reason: str, payload: bytes) -> InputError:
        self.rejected[(kind, reason.split(":")[0][:60])] += 1
        log.warning("rejected input", extra={"kind": kind, "reason": reason, "bytes": len(payload)})
        if self._dlq_file:
            try:
                if not self._dlq_file.exists() or self._dlq_file.stat().st_size < MAX_DEAD_LETTER_BYTES:
                    entry = {
                        "at": self.clock(),
                        "kind": kind,
                        "reason": reason,
                        "payload_b64": base64.b64encode(payload[:1_000_000]).decode(),
                    }
                    with self._dlq_file.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(entry) + "\n")
            except OSError:
                log.exception("could not write a dead letter")
        return InputError(kind, reason)

    def _load_leases(self, path: Path) -> None:
        leases = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                leases.append(AddressLease.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash
        self.pipeline.add_leases(leases)


def _metric_points(metrics: Iterable[Any]) -> Iterable[Any]:
    for m in metrics:
        kind = m.WhichOneof("data")
        if kind:
            yield getattr(m, kind)

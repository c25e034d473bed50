"""The HTTP road of the shared admission table (``tests/admission_cases.py``): each payload posted to
the real ASGI app with the embedded runtime, its verdict read from the answer and its reason class
from the runtime's dead letters (the embedded stand-in for ``topology.dlq``)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from service.receiver import INVALID_ARGUMENT, rpc_status
from service.runtime import Runtime
from tests.admission_cases import CASES, ROADS, Case
from tests.integration.asgi import ingest_client
from topology.admit import reason_class
from topology.pipeline import Pipeline
from topology.store.embedded import open_stores

Letter = dict[str, Any]


class Road:
    def __init__(self, client: httpx.AsyncClient, runtime: Runtime, letters: Path) -> None:
        self.client = client
        self.runtime = runtime
        self.letters = letters
        self.seen = 0

    def new_letters(self) -> list[Letter]:
        lines = self.letters.read_text().splitlines() if self.letters.exists() else []
        out, self.seen = [json.loads(x) for x in lines[self.seen:]], len(lines)
        return out

    async def post(self, case: Case, now: float) -> tuple[str, str | None, httpx.Response, list[Letter]]:
        """The verdict, the reason class of the first dead letter, the answer and the new letters."""
        route, content_type, _ = ROADS[case.kind]
        r = await self.client.post(route, content=case.payload(now), headers={"content-type": content_type})
        letters = self.new_letters()
        assert r.status_code in (200, 400), r.text  # never a 500
        if r.status_code == 400:
            verdict = "rejected"
        elif case.kind == "spans":
            spans = ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans
            verdict = "partial" if spans else "kept"
        elif case.kind == "metrics":
            points = ExportMetricsServiceResponse.FromString(r.content).partial_success.rejected_data_points
            verdict = "partial" if points else "kept"
        else:
            verdict = "partial" if r.json().get("rejected") else "kept"
        return verdict, reason_class(letters[0]["reason"]) if letters else None, r, letters


@pytest_asyncio.fixture
async def road(tmp_path: Path) -> AsyncIterator[Road]:
    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path, Pipeline())  # the wall clock: arrival times are real
    async with ingest_client(stores, runtime) as c:
        yield Road(c, runtime, tmp_path / "dead-letters.jsonl")
    await stores.close()


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_the_http_road_gives_the_verdict_of_the_table(road: Road, case: Case) -> None:
    verdict, cls, r, letters = await road.post(case, time.time())
    assert (verdict, cls) == (case.verdict, case.reason_class), (r.status_code, r.content[:300], letters)
    if verdict == "rejected":  # the answer says what the dead letter says
        reason = letters[0]["reason"]
        if case.kind in ("spans", "metrics"):
            assert r.content == rpc_status(INVALID_ARGUMENT, reason)
        else:
            assert r.json() == {"error": reason, "code": "BAD_INPUT"}
        assert len(letters) == 1 and letters[0]["payload_b64"] is not None
    kinds = road.runtime.counters()["rejected"]
    assert sum(kinds.values()) == len(letters)
    assert all(k.split(":")[1] == case.reason_class for k in kinds)


async def test_a_span_pair_dated_2100_is_not_paired(road: Road) -> None:
    """The case of the issue: over HTTP it was paired and written as a TRACE window."""
    [case] = [c for c in CASES if "2100-01-01" in c.name]
    await road.post(case, time.time())
    assert road.runtime.pipeline.counters()["trace_pairing"]["spans"] == 0
    out = road.runtime.pipeline.flush(4_102_444_800 + 600)
    assert not out.windows

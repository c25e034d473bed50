"""Golden cases of the root-cause ranking, on hand-built graphs in the embedded store.

Every case writes one-minute IPC windows for the baseline (40 minutes) and the current window (the
10 minutes before AT): 100 requests a minute per edge, the error ratio and the latency given.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from topology.catalog import HealthEvent, HealthState
from topology.change import ChangeEvent, ChangeKind
from topology.model import EdgeKey, EdgeWindow, Granularity, Layer, NodeKind
from topology.rootcause import EvidenceKind, RootCauseReport, Verdict, root_cause
from topology.sketch import LatencySketch
from topology.stats import EdgeStats
from topology.store.base import Stores
from topology.store.embedded import open_stores

AT = 1_800_003_600.0
WINDOW = 600.0
MINUTE = 60


@dataclass(frozen=True)
class E:
    src: str
    dst: str
    err: tuple[float, float] = (0.01, 0.01)  # (baseline, current) error ratio
    lat: tuple[float, float] = (0.02, 0.02)  # (baseline, current) latency, seconds
    dst_kind: NodeKind = NodeKind.SERVICE


def windows(edges: list[E]) -> list[EdgeWindow]:
    out = []
    first = int(AT - 5 * WINDOW)
    for e in edges:
        for start in range(first, int(AT), MINUTE):
            i = 0 if start < AT - WINDOW else 1
            stats = EdgeStats(first_seen=start, last_seen=start + 59, requests=100,
                              errors=round(100 * e.err[i]), latency=LatencySketch.of([e.lat[i]] * 100),
                              latency_sum=100 * e.lat[i])
            out.append(EdgeWindow(EdgeKey(Layer.IPC, Granularity.APP, e.src, e.dst), start, MINUTE, stats,
                                  NodeKind.SERVICE, e.dst_kind))
    return out


@pytest.fixture
async def stores(tmp_path: pathlib.Path) -> AsyncIterator[Stores]:
    s = open_stores(tmp_path / "store")
    yield s
    await s.close()


async def ask(stores: Stores, edges: list[E], name: str = "api", depth: int = 6) -> RootCauseReport:
    await stores.layers[Layer.IPC].upsert_windows(windows(edges))
    return await root_cause(stores.layers, stores.catalog, name, at=AT, window=WINDOW, depth=depth,
                            now=AT + 1)


def ranked(r: RootCauseReport) -> list[str]:
    return [c.service for c in r.candidates]


async def test_a_deep_cause_behind_healthy_looking_intermediaries(stores: Stores) -> None:
    r = await ask(stores, [E("web", "api", err=(0.01, 0.2)), E("api", "mid1"), E("mid1", "mid2"),
                           E("mid2", "ledger", err=(0.01, 0.4))])
    assert r.verdict is Verdict.UPSTREAM and ranked(r)[0] == "ledger"
    top = r.candidates[0]
    assert top.path == ("api", "mid1", "mid2", "ledger") and top.rank == 1
    errors = next(e for e in top.evidence if e.kind is EvidenceKind.ERRORS)
    assert (errors.layer, errors.baseline, errors.current) == (Layer.IPC, 0.01, 0.4)
    assert "calls into ledger fail: error rate 40.0% on IPC (baseline 1.0%)" in errors.detail
    assert any(e.kind is EvidenceKind.DEPENDENCIES and "no anomaly" in e.detail for e in top.evidence)
    assert "mid1" not in ranked(r) and "mid2" not in ranked(r)


async def test_two_simultaneous_independent_incidents_are_both_named(stores: Stores) -> None:
    r = await ask(stores, [E("web", "api", err=(0.01, 0.15), lat=(0.02, 0.1)),
                           E("api", "a", err=(0.01, 0.25)), E("a", "db1", err=(0.01, 0.45)),
                           E("api", "b", lat=(0.02, 0.12)), E("b", "cache", lat=(0.002, 0.05))])
    assert r.verdict is Verdict.UPSTREAM and set(ranked(r)[:2]) == {"db1", "cache"}
    cache = next(c for c in r.candidates if c.service == "cache")
    latency = next(e for e in cache.evidence if e.kind is EvidenceKind.LATENCY)
    assert latency.baseline == pytest.approx(0.002, rel=0.03)
    assert latency.current == pytest.approx(0.05, rel=0.03)


async def test_a_virtual_node_cause(stores: Stores) -> None:
    r = await ask(stores, [E("api", "orders", err=(0.0, 0.24)),
                           E("orders", "orders-db", err=(0.0, 0.4), dst_kind=NodeKind.DATABASE),
                           E("orders", "payments")])
    assert r.verdict is Verdict.UPSTREAM and ranked(r)[0] == "orders-db"
    assert r.candidates[0].path == ("api", "orders", "orders-db")


async def test_a_local_fault(stores: Stores) -> None:
    r = await ask(stores, [E("web", "api", err=(0.01, 0.3)), E("api", "orders"), E("orders", "db")])
    assert r.verdict is Verdict.LOCAL and ranked(r) == ["api"] and r.candidates[0].path == ("api",)


async def test_nothing_wrong_is_healthy_even_with_a_deploy_nearby(stores: Stores) -> None:
    await stores.catalog.record_changes([ChangeEvent("orders", ChangeKind.DEPLOY, AT - 300, "v2", "v2")])
    r = await ask(stores, [E("web", "api"), E("api", "orders"), E("orders", "db")])
    assert r.verdict is Verdict.HEALTHY and r.candidates == ()
    assert r.examined == 3


async def test_a_deploy_as_the_only_evidence(stores: Stores) -> None:
    await stores.catalog.record_health([HealthEvent("api", HealthState.DEGRADED, AT - 200, "p99 above SLO")])
    await stores.catalog.record_changes([
        ChangeEvent("pricing", ChangeKind.DEPLOY, AT - 420, "deployed pricing v7", "v7", "ci"),
        ChangeEvent("search", ChangeKind.INFRA, AT - 400, "pod moved"),  # where it runs, not what it does
    ])
    r = await ask(stores, [E("web", "api"), E("api", "pricing"), E("api", "search")])
    assert r.verdict is Verdict.UPSTREAM and ranked(r) == ["pricing", "api"]
    (change,) = [e for e in r.candidates[0].evidence if e.kind is EvidenceKind.CHANGE]
    assert "deploy v7" in change.detail and "7 min before" in change.detail
    assert [c.version for c in r.candidates[0].changes] == ["v7"]
    assert r.candidates[1].evidence[0].kind is EvidenceKind.HEALTH


async def test_a_source_beyond_the_depth_asked_is_unknown(stores: Stores) -> None:
    r = await ask(stores, [E("web", "api", err=(0.01, 0.15)), E("api", "a", err=(0.01, 0.3)),
                           E("a", "db", err=(0.01, 0.5))], depth=1)
    assert r.verdict is Verdict.UNKNOWN and r.candidates == ()
    deeper = await root_cause(stores.layers, stores.catalog, "api", at=AT, window=WINDOW, depth=2, now=AT + 1)
    assert deeper.verdict is Verdict.UPSTREAM and ranked(deeper)[0] == "db"

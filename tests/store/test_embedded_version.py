"""The embedded stores' ``version``: it changes after every write, and only then."""

from __future__ import annotations

import pathlib

from tests.store.contract import NET, T0, win
from topology.catalog import HealthEvent, HealthState, Owner, ServiceInfo
from topology.model import Granularity
from topology.store.embedded import open_stores
from topology.timewindow import TimeRange


async def test_a_layer_version_changes_after_each_write_and_not_after_reads(tmp_path: pathlib.Path) -> None:
    stores = open_stores(tmp_path / "s")
    try:
        layer = stores.layers[NET]
        first = layer.version
        assert isinstance(first, int)
        await layer.upsert_windows([win("a", "b", T0)])
        written = layer.version
        assert written != first
        await layer.edges(Granularity.APP, TimeRange(T0, T0 + 60), now=T0 + 60)
        assert layer.version == written  # reading changes nothing
        await layer.upsert_windows([win("b", "c", T0)])
        assert layer.version not in (first, written)
    finally:
        await stores.close()


async def test_the_catalog_version_changes_after_each_write(tmp_path: pathlib.Path) -> None:
    stores = open_stores(tmp_path / "s")
    try:
        catalog = stores.catalog
        seen = [catalog.version]
        await catalog.upsert_services([ServiceInfo("a", 1, "payments", Owner("team-a"))])
        seen.append(catalog.version)
        await catalog.services(["a"])
        assert catalog.version == seen[-1]
        await catalog.record_health([HealthEvent("a", HealthState.DEGRADED, T0)])
        seen.append(catalog.version)
        assert len(set(seen)) == 3
    finally:
        await stores.close()

"""Numbers users read: counters and byte totals past 2**31 (the Long scalar) in a paged 30-minute export."""

from __future__ import annotations

import pathlib
import random

from service.types import _parse_long_value
from tests.service.conftest import Client, client_for
from tests.service.fleet import NOW, fill
from topology.model import EdgeKey, EdgeWindow, Granularity, Layer
from topology.stats import EdgeStats
from topology.store.embedded import open_stores

EXPORT = """query($after: String) { topology(window: "30m", first: 17, after: $after) {
  edges { source target perLayer { layer requests errors bytes bytesSent bytesReceived connections } }
  pageInfo { hasNextPage endCursor } } }"""
BIG = 2**31


Totals = dict[tuple[str, str, str], dict[str, int]]  # (source, target, layer) -> field -> value


def fleet(services: int = 40, seed: int = 5) -> tuple[list[EdgeWindow], Totals]:
    """30 minute windows of a random fleet; every fifth edge moves ~150 MB (NETWORK) or 100 M calls (IPC)
    a minute, so its 30-minute totals pass 2**31 (4.5 GB). Returns the windows and each edge's totals."""
    rnd = random.Random(seed)
    names = [f"svc-{i:02d}" for i in range(services)]
    pairs = sorted({tuple(rnd.sample(names, 2)) for _ in range(3 * services)})
    windows: list[EdgeWindow] = []
    want: Totals = {}
    for n, (src, dst) in enumerate(pairs):
        layer = Layer.NETWORK if n % 2 else Layer.IPC
        big = n % 5 == 0
        total = want.setdefault((src, dst, layer.value), {"requests": 0, "errors": 0, "bytesSent": 0,
                                                          "bytesReceived": 0, "connections": 0})
        for m in range(30):
            start = int(NOW) - (m + 1) * 60
            if layer is Layer.NETWORK:
                sent = 150_000_000 + rnd.randrange(10**6) if big else rnd.randrange(10**6)
                received = 3 * sent
                st = EdgeStats(float(start), float(start + 59), protocol="tcp",
                               connections=rnd.randrange(1, 9), bytes_sent=sent, bytes_received=received)
            else:
                requests = 100_000_000 + rnd.randrange(10**6) if big else rnd.randrange(1, 10**4)
                st = EdgeStats(float(start), float(start + 59), protocol="http", requests=requests,
                               errors=requests // 50)
            windows.append(EdgeWindow(EdgeKey(layer, Granularity.APP, src, dst), start, 60, st))
            total["requests"] += st.requests
            total["errors"] += st.errors
            total["bytesSent"] += st.bytes_sent
            total["bytesReceived"] += st.bytes_received
            total["connections"] += st.connections
    return windows, want


async def test_a_30_minute_export_returns_every_edge_with_totals_past_2_31(tmp_path: pathlib.Path) -> None:
    windows, want = fleet()
    assert sum(1 for t in want.values() if t["bytesSent"] + t["bytesReceived"] > BIG) >= 5
    assert sum(1 for t in want.values() if t["requests"] > BIG) >= 5
    stores = open_stores(tmp_path / "store")
    try:
        await fill(stores, windows)
        got: Totals = {}
        pages = 0
        async with client_for(stores) as http:
            client, after = Client(http), None
            while True:
                page = (await client.data(EXPORT, {"after": after}))["topology"]
                pages += 1
                for e in page["edges"]:
                    for lay in e["perLayer"]:
                        key = (e["source"], e["target"], lay["layer"])
                        assert key not in got, f"{key} on two pages"
                        got[key] = {k: lay[k] for k in ("requests", "errors", "bytesSent", "bytesReceived",
                                                         "connections")}
                        assert lay["bytes"] == lay["bytesSent"] + lay["bytesReceived"]
                if not page["pageInfo"]["hasNextPage"]:
                    break
                after = page["pageInfo"]["endCursor"]
    finally:
        await stores.close()
    assert pages > 3
    assert got == want


def test_long_arguments_are_whole_64_bit_numbers() -> None:
    assert _parse_long_value(2**40) == 2**40 and _parse_long_value("-7") == -7
    for bad in (True, 1.5, "x", 2**63, None):
        try:
            _parse_long_value(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")

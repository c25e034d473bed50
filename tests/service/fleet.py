"""A small hand-built fleet with known answers, for the real embedded store.

Live edges (windows inside the 15 minutes before NOW), APP level::

    NETWORK  edge-gateway -> api, api -> orders, api -> auth, orders -> orders-db (DATABASE)
    IPC      edge-gateway -> api, api -> orders, orders -> payments
    TRACE    user (USER) -> edge-gateway, api -> orders, payments -> ledger

History only (two hours before NOW): NETWORK api -> legacy.
CLUSTER level (NETWORK): api-prod-v1 -> orders-prod-v3.

So upstream of ``api`` is auth, orders (1 hop); orders-db, payments (2); ledger (3): a path that
needs all three layers. Downstream of ``payments`` is orders, api, edge-gateway, user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from topology.catalog import HealthEvent, HealthState, Owner, ServiceInfo, TraceSummary
from topology.model import EdgeKey, EdgeWindow, Granularity, Layer, NodeInfo, NodeKind
from topology.sketch import LatencySketch
from topology.stats import EdgeStats
from topology.store.base import Stores

NOW = 1_800_000_000.0  # a multiple of 60: window boundaries are easy to reason about
LIVE = NOW - 5 * 60  # a window start inside the live window
PAST = NOW - 2 * 3600  # a window start well outside it

NET, IPC, TRC = Layer.NETWORK, Layer.IPC, Layer.TRACE
APP, CLUSTER = Granularity.APP, Granularity.CLUSTER

# Per-layer statistics of the edges the tests look at closely.
NET_API_ORDERS = EdgeStats(first_seen=LIVE, last_seen=LIVE + 59, protocol="tcp", ports=(8080,),
                           connections=12, bytes_sent=1000, bytes_received=3000,
                           intermediaries=("orders-lb",))
IPC_API_ORDERS = EdgeStats(first_seen=LIVE, last_seen=LIVE + 59, protocol="grpc", requests=900, errors=9,
                           endpoints=("orders.Orders/Get", "orders.Orders/List"),
                           latency=LatencySketch.of([0.003] * 890 + [0.2] * 10), latency_sum=4.67)
TRACE_API_ORDERS = EdgeStats(first_seen=LIVE + 1, last_seen=LIVE + 58, requests=9, errors=1,
                             latency=LatencySketch.of([0.003] * 9), latency_sum=0.027,
                             exemplars=("0af7651916cd43dd8448eb211c80319c",))


def _w(layer: Layer, src: str, dst: str, start: float = LIVE, stats: EdgeStats | None = None,
       src_kind: NodeKind = NodeKind.SERVICE, dst_kind: NodeKind = NodeKind.SERVICE,
       granularity: Granularity = APP, src_app: str | None = None, dst_app: str | None = None) -> EdgeWindow:
    st = stats or EdgeStats(first_seen=start, last_seen=start + 30, requests=60, connections=1)
    return EdgeWindow(EdgeKey(layer, granularity, src, dst), int(start), 60, st, src_kind, dst_kind, src_app,
                      dst_app)


WINDOWS: list[EdgeWindow] = [
    _w(NET, "edge-gateway", "api"),
    _w(NET, "api", "orders", stats=NET_API_ORDERS),
    _w(NET, "api", "auth"),
    _w(NET, "orders", "orders-db", dst_kind=NodeKind.DATABASE),
    _w(NET, "api", "legacy", start=PAST),
    _w(NET, "api-prod-v1", "orders-prod-v3", granularity=CLUSTER, src_app="api", dst_app="orders"),
    _w(IPC, "edge-gateway", "api"),
    _w(IPC, "api", "orders", stats=IPC_API_ORDERS),
    _w(IPC, "orders", "payments"),
    _w(TRC, "user", "edge-gateway", src_kind=NodeKind.USER),
    _w(TRC, "api", "orders", stats=TRACE_API_ORDERS),
    _w(TRC, "payments", "ledger"),
]


def _owner(team: str, **contacts: str) -> Owner:
    return Owner(team, contacts.get("email"), contacts.get("chat"), contacts.get("oncall"))


CATALOG: list[ServiceInfo] = [
    ServiceInfo("edge-gateway", 0, "edge", _owner("edge", email="edge@example.com")),
    ServiceInfo("api", 1, "core", _owner("core", email="core@example.com", chat="#core"), ("api-prod-v1",),
                {"logs": "https://logs.example/custom?app={service}"}),
    ServiceInfo("orders", 1, "commerce", _owner("commerce", oncall="commerce-pager"), ("orders-prod-v3",)),
    ServiceInfo("payments", 0, "payments", _owner("payments", chat="#payments")),
    ServiceInfo("ledger", 2, "payments", _owner("payments", email="payments@example.com")),
    ServiceInfo("auth", 2, "core", _owner("core")),
    ServiceInfo("legacy", 3, "core", _owner("core")),
    ServiceInfo("catalog-only", 2, "misc", None),  # never seen in traffic
]

HEALTH: list[HealthEvent] = [
    HealthEvent("orders", HealthState.HEALTHY, NOW - 3 * 3600),
    HealthEvent("orders", HealthState.DEGRADED, NOW - 600, "p99 latency above SLO"),
    HealthEvent("legacy", HealthState.HEALTHY, NOW - 3 * 3600),
    HealthEvent("legacy", HealthState.UNHEALTHY, NOW - 1800, "decommissioned"),
]

TRACES: list[TraceSummary] = [
    TraceSummary("0af7651916cd43dd8448eb211c80319c", "edge-gateway", "GET /checkout", LIVE + 1, 0.120, 7,
                 False, ("edge-gateway", "api", "orders")),
    TraceSummary("1bf7651916cd43dd8448eb211c80319d", "edge-gateway", "GET /orders", LIVE + 30,
                 0.0065582080000000005, 4,
                 True, ("edge-gateway", "api", "orders")),
]


def nodes_of(windows: Iterable[EdgeWindow]) -> list[NodeInfo]:
    """What the pipeline registers for these windows (both ends of each edge)."""
    out: list[NodeInfo] = []
    for w in windows:
        k = w.key
        ends = ((k.source, w.source_kind, w.source_app), (k.target, w.target_kind, w.target_app))
        for name, kind, app in ends:
            out.append(NodeInfo(name, kind, k.granularity, app, frozenset({k.layer}), w.stats.first_seen,
                                w.stats.last_seen))
    return out


async def fill(stores: Stores, windows: Sequence[EdgeWindow] = tuple(WINDOWS)) -> None:
    for layer in Layer:
        await stores.layers[layer].upsert_windows([w for w in windows if w.key.layer is layer])
    await stores.catalog.register_nodes(nodes_of(windows))
    await stores.catalog.upsert_services(CATALOG)
    await stores.catalog.record_health(HEALTH)
    await stores.catalog.record_traces(TRACES)

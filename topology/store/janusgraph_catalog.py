"""The JanusGraph :class:`CatalogStore`: the ``catalog`` graph (traversal source ``g_catalog``).

Graph model (schema in :mod:`topology.store.janusgraph_schema`)::

    (svc {cname, info, data, tier, domain, team})     one per service name; catalog fields only when
                                                       the catalog knows it (``info`` true)
    (svc) -health {at, hs, hr}-> (svc)                 one self-loop per health event, ``(name, at)``
                                                       is its identity (vertex-centric index by ``at``)
    (svc) -change {cid, at, cdata}-> (svc)             one self-loop per change event, ``cid`` its key
                                                       (vertex-centric index by ``at``)
    (svc) -took {tstart}-> (trace {tid, data})         the newest TRACES_PER_SERVICE traces per service
    (tracestore {hkey}) -keeps {xstart}-> (kept {xid, xdata})   the store of recent traces: one ``kept``
                                                       vertex per trace (its summary and kept spans as
                                                       JSON), bounded by ``Retention.traces`` and
                                                       ``Retention.trace_seconds`` (vertex-centric
                                                       index by ``xstart`` on the one hub vertex)
    (known {kkey, kname, kgran, kind, app, layers, first, last})   the registry of nodes seen in traffic

Absent values are stored as sentinels (tier -1, empty strings) because JanusGraph properties
cannot be null; health reasons are JSON so ``None`` survives.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import Direction, Merge, Order, P, Scope, T
from gremlin_python.statics import long
from gremlin_python.structure.graph import Graph

from topology.catalog import AddressLease, HealthEvent, HealthState, HealthStatus, ServiceInfo, TraceSummary
from topology.change import ChangeEvent
from topology.model import Granularity, Layer, NodeInfo, NodeKind
from topology.store.base import CatalogStore, ServiceFilter
from topology.store.janusgraph_pool import GremlinPool
from topology.store.janusgraph_schema import catalog_spec, ensure_schema
from topology.timewindow import Retention

log = logging.getLogger(__name__)

TRACES_PER_SERVICE = 100
_TRACE_STORE = {T.label: "tracestore", "hkey": "recent"}  # the hub of the store of recent traces


def _names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        raise ValueError("names must be a collection of names, not one string")
    return list(dict.fromkeys(names))


def _known_key(granularity: Granularity, name: str) -> str:
    return json.dumps([granularity.value, name], ensure_ascii=False)


def _merge_node(old: NodeInfo | None, new: NodeInfo) -> NodeInfo:
    if old is None:
        return new
    # a node seen as a real service stays one; otherwise the newest observation names the kind
    kind = NodeKind.SERVICE if NodeKind.SERVICE in (old.kind, new.kind) else new.kind
    firsts = [t for t in (old.first_seen, new.first_seen) if t]
    return NodeInfo(
        name=new.name, kind=kind, granularity=new.granularity, app=new.app or old.app,
        layers=old.layers | new.layers, first_seen=min(firsts) if firsts else 0.0,
        last_seen=max(old.last_seen, new.last_seen))


def _node_from(r: dict[str, Any]) -> NodeInfo:
    return NodeInfo(
        name=r["n"], kind=NodeKind(r["k"]), granularity=Granularity(r["g"]), app=r["a"] or None,
        layers=frozenset(Layer(x) for x in str(r["l"]).split(",") if x),
        first_seen=float(r["f"]), last_seen=float(r["z"]))


class JanusGraphCatalogStore(CatalogStore):
    def __init__(self, pool: GremlinPool, retention: Retention | None = None) -> None:
        self._retention = retention or Retention()
        self._pool = pool
        self._g = Graph().traversal()
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._lock = asyncio.Lock()

    @property
    def pool(self) -> GremlinPool:
        return self._pool

    async def ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                created = await ensure_schema(self._pool, catalog_spec())
                if created:
                    log.info("catalog: schema created: %s", ", ".join(created))
                self._ready = True

    async def _run(self, t: GraphTraversal) -> list[Any]:
        await self.ensure_ready()
        return await self._pool.submit(t.bytecode)

    async def _merge_vertices(self, rows: list[dict[str, Any]]) -> None:
        """Upsert one vertex a row: found or created by the row's ``m`` (label and key), its
        properties set to the row's ``p``."""
        await self._run(
            self._g.inject(rows).unfold().as_("r")
            .merge_v(__.select("r").select("m"))
            .option(Merge.on_create, __.select("r").select("p"))
            .option(Merge.on_match, __.select("r").select("p"))
            .count()
        )

    async def _merge_self_edges(self, rows: list[dict[str, Any]]) -> None:
        """Upsert one self-loop a row (a health or change event): the vertex found or created by the
        row's ``a``, the edge by its ``e`` (label and key), the edge's properties set to ``b``."""
        await self._run(
            self._g.inject(rows).unfold().as_("r")
            .merge_v(__.select("r").select("a")).as_("a")
            .select("r")  # mergeE takes its map from the row, not from a vertex
            .merge_e(__.select("e"))
            .option(Merge.out_v, __.select("a")).option(Merge.in_v, __.select("a"))
            .option(Merge.on_create, __.select("r").select("b"))
            .option(Merge.on_match, __.select("r").select("b"))
            .count()
        )

    # -- services --------------------------------------------------------------------------------
    async def upsert_services(self, infos: Sequence[ServiceInfo]) -> None:
        if not infos:
            return
        latest = {i.name: i for i in infos}
        rows = []
        for name, i in latest.items():
            props = {
                "info": True,
                "data": json.dumps(i.to_dict(), separators=(",", ":"), ensure_ascii=False),
                "tier": -1 if i.tier is None else i.tier,
                "domain": i.domain or "",
                "team": i.owner.team if i.owner is not None else "",
            }
            rows.append({"m": {T.label: "svc", "cname": name}, "p": props})
        await self._merge_vertices(rows)

    async def services(self, names: Iterable[str]) -> dict[str, ServiceInfo]:
        wanted = _names(names)
        if not wanted:
            return {}
        rows = await self._run(
            self._g.V().has("svc", "cname", P.within(wanted)).has("info", True)
            .project("n", "d").by("cname").by("data")
        )
        found = {r["n"]: ServiceInfo.from_stored(json.loads(r["d"])) for r in rows}
        return {n: found[n] for n in wanted if n in found}

    # -- nodes -----------------------------------------------------------------------------------
    @staticmethod
    def _known_projection(t: GraphTraversal) -> GraphTraversal:
        return (
            t.project("n", "g", "k", "a", "l", "f", "z")
            .by("kname").by("kgran").by("kind").by("app").by("layers").by("first").by("last")
        )

    async def _known(self, keys: list[str]) -> dict[tuple[Granularity, str], NodeInfo]:
        if not keys:
            return {}
        rows = await self._run(self._known_projection(self._g.V().has("known", "kkey", P.within(keys))))
        out: dict[tuple[Granularity, str], NodeInfo] = {}
        for r in rows:
            info = _node_from(r)
            out[(info.granularity, info.name)] = info
        return out

    async def register_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        if not nodes:
            return
        async with self._lock:
            keys = list(dict.fromkeys(_known_key(n.granularity, n.name) for n in nodes))
            stored = await self._known(keys)
            merged: dict[tuple[Granularity, str], NodeInfo] = {}
            for n in nodes:
                k = (n.granularity, n.name)
                merged[k] = _merge_node(merged.get(k) or stored.get(k), n)
            changed = [v for k, v in merged.items() if stored.get(k) != v]
            if not changed:
                return
            rows = []
            for v in changed:
                props = {
                    "kname": v.name, "kgran": v.granularity.value, "kind": v.kind.value, "app": v.app or "",
                    "layers": ",".join(sorted(x.value for x in v.layers)),
                    "first": float(v.first_seen), "last": float(v.last_seen),
                }
                rows.append({"m": {T.label: "known", "kkey": _known_key(v.granularity, v.name)}, "p": props})
            await self._merge_vertices(rows)

    async def known_nodes(self, names: Iterable[str]) -> dict[str, NodeInfo]:
        wanted = _names(names)
        keys = [_known_key(g, n) for n in wanted for g in Granularity]
        found = await self._known(keys)
        out: dict[str, NodeInfo] = {}
        for n in wanted:
            info = found.get((Granularity.APP, n)) or found.get((Granularity.CLUSTER, n))
            if info is not None:
                out[n] = info
        return out

    async def list_names(
        self, flt: ServiceFilter, granularity: Granularity, limit: int, after: str | None
    ) -> list[str]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        known_rows = await self._run(
            self._known_projection(self._g.V().has("known", "kgran", granularity.value))
        )
        known = {r["n"]: _node_from(r) for r in known_rows}
        svc_rows = await self._run(
            self._g.V().has("svc", "info", True).project("n", "d").by("cname").by("data")
        )
        services = {r["n"]: ServiceInfo.from_stored(json.loads(r["d"])) for r in svc_rows}
        cluster_app: dict[str, str] = {}
        for info in services.values():
            for c in info.clusters:
                cluster_app[c] = info.name
        names = set(known)
        names.update(services if granularity is Granularity.APP else cluster_app)
        prefix = flt.name_prefix
        out: list[str] = []
        for name in sorted(names):
            if len(out) >= limit:
                break
            if after is not None and name <= after:
                continue
            if prefix and not name.startswith(prefix):
                continue
            if flt.tiers is not None or flt.domains is not None or flt.owner_team is not None:
                if granularity is Granularity.APP:
                    app: str | None = name
                else:
                    node = known.get(name)
                    app = node.app if node is not None and node.app else cluster_app.get(name)
                entry = services.get(app) if app else None
                if entry is None:
                    continue
                if flt.tiers is not None and entry.tier not in flt.tiers:
                    continue
                if flt.domains is not None and entry.domain not in flt.domains:
                    continue
                if flt.owner_team is not None and (entry.owner is None or entry.owner.team != flt.owner_team):
                    continue
            if flt.layers is not None:
                node = known.get(name)
                if node is None or not (node.layers & flt.layers):
                    continue
            out.append(name)
        return out

    # -- health ----------------------------------------------------------------------------------
    async def record_health(self, events: Sequence[HealthEvent]) -> None:
        if not events:
            return
        latest = {(e.service, float(e.at)): e for e in events}
        rows = []
        for (service, at), e in latest.items():
            body = {"hs": e.status.value, "hr": json.dumps(e.reason, ensure_ascii=False)}
            rows.append({
                "a": {T.label: "svc", "cname": service},
                "e": {T.label: "health", Direction.OUT: Merge.out_v, Direction.IN: Merge.in_v, "at": at},
                "b": body,
            })
        await self._merge_self_edges(rows)

    async def health(self, names: Iterable[str], at: float) -> dict[str, HealthStatus]:
        wanted = _names(names)
        if not wanted:
            return {}
        rows = await self._run(
            self._g.V().has("svc", "cname", P.within(wanted))
            .project("n", "e")
            .by("cname")
            .by(
                __.out_e("health").has("at", P.lte(float(at))).order().by("at", Order.desc).limit(1)
                .project("at", "hs", "hr").by("at").by("hs").by("hr").fold()
            )
        )
        out: dict[str, HealthStatus] = {}
        for r in rows:
            if r["e"]:
                e = r["e"][0]
                out[r["n"]] = HealthStatus(HealthState(e["hs"]), float(e["at"]), json.loads(e["hr"]))
        return {n: out[n] for n in wanted if n in out}

    # -- changes ---------------------------------------------------------------------------------
    async def record_changes(self, events: Sequence[ChangeEvent]) -> None:
        if not events:
            return
        rows = []
        for e in {e.key: e for e in events}.values():
            data = json.dumps(e.to_dict(), separators=(",", ":"), ensure_ascii=False)
            rows.append({
                "a": {T.label: "svc", "cname": e.service},
                "e": {T.label: "change", Direction.OUT: Merge.out_v, Direction.IN: Merge.in_v, "cid": e.key},
                "b": {"at": float(e.at), "cdata": data},
            })
        await self._merge_self_edges(rows)

    async def changes(
        self, names: Iterable[str], start: float, end: float, limit: int
    ) -> list[ChangeEvent]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        wanted = _names(names)
        if not wanted or limit == 0:
            return []
        rows = await self._run(
            self._g.V().has("svc", "cname", P.within(wanted))
            .flat_map(
                __.out_e("change").has("at", P.gte(float(start))).has("at", P.lte(float(end)))
                .order().by("at", Order.desc).by("cid", Order.asc).limit(limit)
            )
            .values("cdata")
        )
        found = [ChangeEvent.from_dict(json.loads(d)) for d in rows]
        found.sort(key=lambda e: (-e.at, e.service, e.key))
        return found[:limit]

    # -- leases next to unattributed traffic ---------------------------------------------------------
    async def record_peer_leases(self, leases: Sequence[AddressLease]) -> None:
        if not leases:
            return
        rows = []
        for x in {(x.ip, x.owner, float(x.start)): x for x in leases}.values():
            rows.append({"m": {T.label: "plse", "pkey": json.dumps([x.ip, x.owner, float(x.start)])},
                         "p": {"paddr": x.ip, "pstart": float(x.start),
                               "pdata": json.dumps(x.to_dict(), separators=(",", ":"), ensure_ascii=False)}})
        await self._merge_vertices(rows)

    async def peer_leases(self, ips: Iterable[str]) -> dict[str, list[AddressLease]]:
        wanted = _names(ips)
        if not wanted:
            return {}
        rows = await self._run(self._g.V().has("plse", "paddr", P.within(wanted)).values("pdata"))
        found = sorted((AddressLease.from_dict(json.loads(d)) for d in rows),
                       key=lambda x: (x.ip, x.start, x.owner))
        out: dict[str, list[AddressLease]] = {}
        for x in found:
            out.setdefault(x.ip, []).append(x)
        return out

    # -- traces ----------------------------------------------------------------------------------
    async def record_traces(self, summaries: Sequence[TraceSummary]) -> None:
        if not summaries:
            return
        rows = []
        kept = []
        touched: set[str] = set()
        for s in dict((x.trace_id, x) for x in summaries).values():
            services = list(dict.fromkeys((s.root_service, *s.services)))
            touched.update(services)
            kept.append({
                "xv": {T.label: "kept", "xid": s.trace_id},
                "xd": {"xdata": json.dumps(s.to_dict(), separators=(",", ":"), ensure_ascii=False)},
                "hub": _TRACE_STORE,
                "em": {T.label: "keeps", Direction.OUT: Merge.out_v, Direction.IN: Merge.in_v},
                "eb": {"xstart": float(s.start)},
            })
            summary = replace(s, packed_spans=b"")
            rows.append({
                "tv": {T.label: "trace", "tid": s.trace_id},
                "td": {"data": json.dumps(summary.to_dict(), separators=(",", ":"), ensure_ascii=False)},
                "svcs": [{T.label: "svc", "cname": n} for n in services],
                "em": {T.label: "took", Direction.OUT: Merge.out_v, Direction.IN: Merge.in_v},
                "eb": {"tstart": float(s.start)},
            })
        async with self._lock:
            await self._run(
                self._g.inject(rows).unfold().as_("r")
                .merge_v(__.select("r").select("tv"))
                .option(Merge.on_create, __.select("r").select("td"))
                .option(Merge.on_match, __.select("r").select("td")).as_("t")
                .side_effect(
                    __.select("r").select("svcs").unfold().merge_v(__.identity()).as_("a")
                    .select("r").merge_e(__.select("em"))
                    .option(Merge.out_v, __.select("a")).option(Merge.in_v, __.select("t"))
                    .option(Merge.on_create, __.select("r").select("eb"))
                    .option(Merge.on_match, __.select("r").select("eb"))
                )
                .count()
            )
            # keep each service's newest TRACES_PER_SERVICE, then drop traces nobody refers to
            orphans = await self._run(
                self._g.V().has("svc", "cname", P.within(sorted(touched)))
                .flat_map(
                    __.out_e("took").order().by("tstart", Order.desc).by(__.in_v().values("tid"), Order.desc)
                    .range_(TRACES_PER_SERVICE, -1)
                )
                .side_effect(__.in_v().id_().aggregate("o"))
                .fold().side_effect(__.unfold().drop())
                .cap("o").unfold().dedup()
            )
            if orphans:
                ids = [long(int(x)) for x in orphans]
                await self._run(self._g.V(*ids).not_(__.in_e("took")).drop())
            await self._keep_traces(kept)

    async def _keep_traces(self, rows: list[dict[str, Any]]) -> None:
        """Write the store of recent traces, then bound it (by age, then by size)."""
        await self._run(
            self._g.inject(rows).unfold().as_("r")
            .merge_v(__.select("r").select("xv"))
            .option(Merge.on_create, __.select("r").select("xd"))
            .option(Merge.on_match, __.select("r").select("xd")).as_("t")
            .side_effect(
                __.select("r").select("hub").merge_v(__.identity()).as_("h")
                .select("r").merge_e(__.select("em"))
                .option(Merge.out_v, __.select("h")).option(Merge.in_v, __.select("t"))
                .option(Merge.on_create, __.select("r").select("eb"))
                .option(Merge.on_match, __.select("r").select("eb"))
            )
            .count()
        )
        hub = self._g.V().has("tracestore", "hkey", _TRACE_STORE["hkey"])
        newest = await self._run(hub.clone().out_e("keeps").order().by("xstart", Order.desc).limit(1)
                                 .values("xstart"))
        if newest:
            cut = float(newest[0]) - self._retention.trace_seconds
            await self._run(hub.clone().out_e("keeps").has("xstart", P.lt(cut)).in_v().drop())
        size = self._retention.traces
        counted = await self._run(hub.clone().out_e("keeps").count())
        if counted and int(counted[0]) > size:
            await self._run(
                hub.clone().out_e("keeps").order().by("xstart", Order.desc)
                .by(__.in_v().values("xid"), Order.desc).range_(size, -1).in_v().fold().unfold().drop()
            )

    async def trace(self, trace_id: str) -> TraceSummary | None:
        rows = await self._run(self._g.V().has("kept", "xid", trace_id).values("xdata").limit(1))
        return TraceSummary.from_dict(json.loads(rows[0])) if rows else None

    async def recent_traces(self, name: str, limit: int) -> list[TraceSummary]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit == 0:
            return []
        rows = await self._run(
            self._g.V().has("svc", "cname", name)
            .out_e("took").order().by("tstart", Order.desc).by(__.in_v().values("tid"), Order.desc)
            .limit(limit).in_v().values("data")
        )
        return [TraceSummary.from_dict(json.loads(d)) for d in rows]

    async def clear(self) -> None:
        """Delete every vertex of the catalog graph (tests and administration)."""
        while True:
            got = await self._run(
                self._g.V().limit(5000).fold().side_effect(__.unfold().drop()).count(Scope.local)
            )
            if not got or int(got[0]) == 0:
                break

    async def ping(self) -> None:
        await self._pool.submit(self._g.inject(1).bytecode, time_limit=10.0)

    async def close(self) -> None:
        await self._pool.close()

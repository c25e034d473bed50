"""The JanusGraph :class:`LayerStore`: one layer in its own graph (its own keyspace in production).

Graph model (schema in :mod:`topology.store.janusgraph_schema`)::

    (node {name, gran}) -calls-> (pair {pkey, src, tgt, gran, sk, tk, sa, ta}) -callee-> (node)
    (pair) -w60 {ws, st}-> (pair)        one self-loop edge per stored window (w3600, w86400 alike)

A *pair* vertex is one edge of the topology at one granularity; it carries the kinds and apps of
the latest window written for it and the source/target names (answers need no extra hop). Window
edges are self-loops on their pair so a window's identity is (pair, label, ws): ``mergeE`` by the
pair's id makes upserts idempotent, and the vertex-centric index ``<label>_by_ws`` makes "windows
of this pair inside [start, end)" one index range scan. APP and CLUSTER nodes are distinct
vertices (``gran``), so the two granularities are separate graphs inside the layer's graph.

Writes: a batch's pairs are resolved to vertex ids (cached in memory; unknown pairs are looked up
by ``pkey`` through a composite index, and created with ``mergeV`` if missing), then one traversal
per ``batch_size`` windows upserts all of them with ``mergeE`` by ids, updates changed kinds, and
marks the hour (day) slots those minute (hour) windows belong to. A stale cached id (the pair was
removed by retention) fails the whole traversal atomically and the batch is re-resolved.

Roll-ups read the finer windows of a marked hour (day) through the composite edge index
``<label>_ws`` and write the merged coarser windows together with clearing the mark, in one
transaction, and only if the mark's token is unchanged (a writer marking it again meanwhile keeps
the mark). Retention drops the windows of expired slots, then pairs left without windows and nodes
left without pairs.

Reads: a range is read as :func:`topology.timewindow.read_plan`'s spans (whole rolled-up hours or
days, then the finer windows not rolled up yet), each one vertex-centric range scan of its label;
what the roll-ups hold (the ``last_rollup`` clock and the slots still marked) is read in one small
traversal and kept for ``ROLLUP_STATE_SECONDS`` (this store's own writes and roll-ups drop it): a
state older than the graph's only makes reads use finer windows that are still there.

Traversal: one traversal per call (for up to ``LEVELS_PER_TRAVERSAL`` levels): per level each of the
frontier's pairs is projected once (its ``info`` and the stats of its windows in range, the windows read
once, batched by JanusGraph's multi-query), the pairs with a window in range are kept (``aggregate``, a
barrier, so levels run in order), and their far ends deduplicated and filtered against every node
already seen (``with_stats=False``: the pairs with a window in range are kept and only their ``info`` is
read, no window's stats). The answer is the set of pairs walked; the breadth-first order, ``via`` and
depths are recomputed from it in Python exactly like the embedded store (smallest parent name wins).
:meth:`~JanusGraphLayerStore.expand` is the same traversal with starts joining at later levels (the
unified walk's second round: the nodes a layer reached only through another layer's edges),
:meth:`~JanusGraphLayerStore.edge_stats` reads pairs by ``pair_by_key``. Nodes are found by name with
one index look-up and their ``gran`` read in one batch (as a ``has`` step JanusGraph folds the test into
the index query and loads each vertex on its own). Only values are projected: edge elements never cross
the wire (JanusGraph edge ids do not decode in plain gremlinpython). Every value travels inside the
bytecode as a bound argument: the stores send no Gremlin text built from values (the only script is the
schema's, constant).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time as _time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import Direction, Merge, Order, P, Scope, T
from gremlin_python.statics import long
from gremlin_python.structure.graph import Graph

from topology.model import (
    Direction as Walk,
)
from topology.model import (
    EdgeKey,
    EdgeSummary,
    EdgeWindow,
    Granularity,
    Layer,
    NodeInfo,
    NodeKind,
    Reached,
    TraversalResult,
)
from topology.stats import EdgeStats
from topology.store.base import LayerStore, RollupReport, StoreUnavailable
from topology.store.embedded_codec import merge_all
from topology.store.janusgraph_pool import GremlinPool, StaleVertexError
from topology.store.janusgraph_schema import WINDOW_LABELS, ensure_schema, layer_spec
from topology.timewindow import (
    DAY,
    HOUR,
    MINUTE,
    STORED_GRANULARITIES,
    Retention,
    Rollups,
    Span,
    TimeRange,
    align,
    read_plan,
)

log = logging.getLogger(__name__)

_COARSER = {MINUTE: HOUR, HOUR: DAY}
LEVELS_PER_TRAVERSAL = 32
DROP_BATCH = 10_000  # elements dropped per transaction
NAMES_PER_TRAVERSAL = 200  # neighbors() of more names runs as several concurrent traversals
BARE_PAIRS_KEPT = 100_000  # pairs without stats kept decoded (a layer of the bench fleet: 30,000-50,000)
ROLLUP_STATE_SECONDS = 2.0  # how long reads plan with the roll-up state they last read
_T = TypeVar("_T")
_NO_STATS = EdgeStats()  # what ``with_stats=False`` answers carry


def encode_stats(s: EdgeStats) -> str:
    return json.dumps(s.to_dict(), separators=(",", ":"), sort_keys=True)


def decode_stats(text: str) -> EdgeStats:
    return EdgeStats.from_dict(json.loads(text))


def pair_key(granularity: Granularity, source: str, target: str) -> str:
    """The indexed identity of a pair vertex (JSON keeps it injective for any names)."""
    return json.dumps([granularity.value, source, target], ensure_ascii=False)


def pair_info(source: str, target: str, source_kind: str, target_kind: str) -> str:
    """What a query answers for a pair, in one property (one read per pair)."""
    return json.dumps([source, target, source_kind, target_kind], ensure_ascii=False, separators=(",", ":"))


def _names_of(key: str) -> tuple[str, str]:
    _, source, target = json.loads(key)
    return str(source), str(target)


def validate_windows(layer: Layer, windows: Sequence[EdgeWindow]) -> None:
    for w in windows:
        if w.key.layer is not layer:
            raise ValueError(f"a {w.key.layer.value} window cannot be stored in the {layer.value} store")
        if w.window_seconds not in STORED_GRANULARITIES:
            raise ValueError(f"window_seconds must be one of {STORED_GRANULARITIES}, got {w.window_seconds}")
        if w.window_start % w.window_seconds:
            raise ValueError(f"window_start {w.window_start} is not aligned to {w.window_seconds} s")
        if not w.key.source or not w.key.target:
            raise ValueError("edge source and target must be non-empty names")


def distinct_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        raise ValueError("names must be a collection of names, not one string")
    return sorted(set(names))


@dataclass(slots=True)
class _Pair:
    """What this process knows of a stored pair vertex."""

    vid: int
    kinds: tuple[str, str, str, str]  # sk, tk, sa, ta ('' = no app)


@dataclass(frozen=True, slots=True)
class _Walked:
    source: str
    target: str
    source_kind: NodeKind
    target_kind: NodeKind
    stats: EdgeStats
    summary: EdgeSummary | None = None  # kept with a pair without stats (see ``_bare``)


def _kinds_of(w: EdgeWindow) -> tuple[str, str, str, str]:
    return (w.source_kind.value, w.target_kind.value, w.source_app or "", w.target_app or "")


class _StatsCache:
    """Decoded window stats by their stored JSON text (windows rarely change; queries repeat)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: dict[str, EdgeStats] = {}
        self._m: dict[tuple[str, ...], EdgeStats] = {}  # merges of several windows

    def get(self, text: str) -> EdgeStats:
        s = self._d.get(text)
        if s is None:
            s = self._d[text] = decode_stats(text)
            if len(self._d) > self.size:
                del self._d[next(iter(self._d))]  # the oldest entry
        return s

    def merged(self, texts: Sequence[str]) -> EdgeStats | None:
        if not texts:
            return None
        if len(texts) == 1:
            return self.get(texts[0])
        key = tuple(texts)
        s = self._m.get(key)
        if s is None:
            s = self._m[key] = merge_all([self.get(t) for t in texts])
            if len(self._m) > self.size:
                del self._m[next(iter(self._m))]
        return s


class JanusGraphLayerStore(LayerStore):
    remote = True  # a unified walk asks for each layer's whole walk (one traversal), not level by level

    def __init__(
        self,
        pool: GremlinPool,
        layer: Layer,
        retention: Retention,
        batch_size: int = 1000,
        write_retry_seconds: float = 120.0,
    ) -> None:
        if pool.layer is not layer:
            raise ValueError(f"pool for {pool.layer} given to the {layer.value} store")
        self.layer = layer
        self.retention = retention
        self.batch_size = batch_size
        self.write_retry_seconds = write_retry_seconds
        self._pool = pool
        self._g = Graph().traversal()  # builds bytecode only; the pool sends it
        self._pairs: dict[str, _Pair] = {}
        self._stats = _StatsCache(50_000)
        # pairs answered without stats, by granularity and ``info`` (the same text is the same answer:
        # a large walk decodes and builds ~10,000 of them, ~15 us each)
        self._bare: dict[tuple[Granularity, str], _Walked] = {}
        self._ready = False
        self._rollups: tuple[float, Rollups] | None = None  # (monotonic time read, state)
        self._ready_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._rollup_lock = asyncio.Lock()

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def pool(self) -> GremlinPool:
        return self._pool

    async def ensure_ready(self) -> None:
        """Create the schema and indexes (once per process; raises StoreUnavailable if unreachable)."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                created = await ensure_schema(self._pool, layer_spec())
                if created:
                    log.info("%s: schema created: %s", self.layer.value, ", ".join(created))
                self._ready = True

    async def _run(self, t: GraphTraversal) -> list[Any]:
        await self.ensure_ready()
        return await self._pool.submit(t.bytecode)

    async def _retrying(self, what: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        """Run a write until it succeeds; back off while the server is unavailable (writes are
        idempotent, so repeating one whose answer was lost changes nothing)."""
        deadline = _time.monotonic() + self.write_retry_seconds
        delay = 0.1
        while True:
            try:
                return await fn()
            except StoreUnavailable as e:
                if _time.monotonic() + delay > deadline:
                    raise
                log.warning("%s %s: %s; retrying in %.1f s", self.layer.value, what, e, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)

    # -- writing ---------------------------------------------------------------------------------
    async def upsert_windows(self, windows: Sequence[EdgeWindow]) -> None:
        validate_windows(self.layer, windows)
        if not windows:
            return
        latest: dict[tuple[EdgeKey, int, int], EdgeWindow] = {}
        for w in windows:  # the same window twice in one call: the last one wins
            latest[(w.key, w.window_seconds, w.window_start)] = w
        items = list(latest.values())
        done: set[int] = set()  # chunks already written (kept across retries)
        async with self._write_lock:
            try:
                await self._retrying("upsert", lambda: self._upsert(items, done))
            finally:
                self._rollups = None  # it marked hours and days to roll up (again)

    def _chunks(self, windows: Sequence[EdgeWindow]) -> list[list[EdgeWindow]]:
        """Up to ``batch_size`` windows per chunk, all windows of one pair in the same chunk (so
        concurrent chunks never touch the same pair vertex)."""
        by_pair: dict[str, list[EdgeWindow]] = {}
        for w in windows:
            by_pair.setdefault(pair_key(w.key.granularity, w.key.source, w.key.target), []).append(w)
        chunks: list[list[EdgeWindow]] = [[]]
        for group in by_pair.values():
            if chunks[-1] and len(chunks[-1]) + len(group) > self.batch_size:
                chunks.append([])
            chunks[-1].extend(group)
        return chunks

    async def _concurrently(self, jobs: Sequence[Awaitable[Any]]) -> list[Any]:
        """Run ``jobs`` over the pool's connections; all finish before the first error is raised."""
        limit = asyncio.Semaphore(self._pool.size)

        async def one(job: Awaitable[Any]) -> Any:
            async with limit:
                return await job

        results = await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results

    async def _upsert(self, windows: list[EdgeWindow], done: set[int]) -> None:
        for attempt in range(2):
            pairs = await self._resolve(windows)
            chunks = self._chunks(windows)
            try:
                if len(chunks) == 1:  # the common case: one round trip, marks included
                    await self._write_by_ids(chunks[0], pairs)
                    return
                todo = [i for i in range(len(chunks)) if i not in done]
                await self._concurrently([self._write_part(chunks[i], pairs, done, i) for i in todo])
                # marks only after every window is stored (a roll-up between would miss some)
                await self._write_by_ids([], pairs, slots_of=windows)
                return
            except StaleVertexError:
                if attempt:
                    raise
                log.info("%s: cached pair ids went stale; resolving again", self.layer.value)
                done.clear()
                for w in windows:
                    self._pairs.pop(pair_key(w.key.granularity, w.key.source, w.key.target), None)

    async def _write_part(self, windows: list[EdgeWindow], pairs: dict[str, _Pair], done: set[int],
                          i: int) -> None:
        await self._write_by_ids(windows, pairs, slots=False)
        done.add(i)

    async def stored_stats(
        self, keys: Sequence[tuple[EdgeKey, int, int]]
    ) -> dict[tuple[EdgeKey, int, int], EdgeStats]:
        """Pairs by their cached id or the ``pkey`` index (none created), then one read per window
        start of the pairs' windows there."""
        pkeys = {k: pair_key(k[0].granularity, k[0].source, k[0].target) for k in keys}
        missing = sorted({p for p in pkeys.values() if p not in self._pairs})
        for i in range(0, len(missing), 2000):
            for row in await self._run(
                self._g.V().has("pair", "pkey", P.within(missing[i : i + 2000]))
                .project("k", "id", "sk", "tk", "sa", "ta")
                .by("pkey").by(T.id).by("sk").by("tk").by("sa").by("ta")
            ):
                self._pairs[row["k"]] = _Pair(int(row["id"]), (row["sk"], row["tk"], row["sa"], row["ta"]))
        by_start: dict[tuple[int, int], dict[int, tuple[EdgeKey, int, int]]] = {}
        for k, pk in pkeys.items():
            pair = self._pairs.get(pk)
            if pair is not None:
                by_start.setdefault((k[1], k[2]), {})[pair.vid] = k
        out: dict[tuple[EdgeKey, int, int], EdgeStats] = {}
        for (wsec, ws), want in sorted(by_start.items()):
            ids = sorted(want)
            for i in range(0, len(ids), 2000):
                for r in await self._run(
                    self._g.V(*[long(x) for x in ids[i : i + 2000]]).out_e(WINDOW_LABELS[wsec])
                    .has("ws", long(ws)).project("p", "st").by(__.out_v().id_()).by("st")
                ):
                    key = want.get(int(r["p"]))
                    if key is not None:
                        out[key] = decode_stats(r["st"])
        return out

    async def _resolve(self, windows: Sequence[EdgeWindow]) -> dict[str, _Pair]:
        """Pair vertices for the windows' edges (found, or created with their nodes)."""
        wanted: dict[str, EdgeWindow] = {}
        for w in windows:
            wanted[pair_key(w.key.granularity, w.key.source, w.key.target)] = w  # last window wins
        missing = [k for k in wanted if k not in self._pairs]

        def remember(rows: list[Any]) -> None:
            for row in rows:
                self._pairs[row["k"]] = _Pair(int(row["id"]), (row["sk"], row["tk"], row["sa"], row["ta"]))

        if missing:
            lookups = [
                self._run(
                    self._g.V().has("pair", "pkey", P.within(missing[i : i + 2000]))
                    .project("k", "id", "sk", "tk", "sa", "ta")
                    .by("pkey").by(T.id).by("sk").by("tk").by("sa").by("ta")
                )
                for i in range(0, len(missing), 2000)
            ]
            for rows in await self._concurrently(lookups):
                remember(rows)
        create = [k for k in missing if k not in self._pairs]
        if not create:
            return {k: self._pairs[k] for k in wanted}
        # nodes first (each name in one chunk only), so concurrent pair creation finds them
        nodes = sorted({(wanted[k].key.granularity.value, n) for k in create
                        for n in (wanted[k].key.source, wanted[k].key.target)})
        step = max(1, self.batch_size)
        node_ids: dict[tuple[str, str], int] = {}
        for rows in await self._concurrently([
            self._run(
                self._g.inject([{T.label: "node", "name": n, "gran": g} for g, n in nodes[i : i + step]])
                .unfold().merge_v(__.identity()).project("g", "n", "id").by("gran").by("name").by(T.id)
            )
            for i in range(0, len(nodes), step)
        ]):
            for r in rows:
                node_ids[(str(r["g"]), str(r["n"]))] = int(r["id"])
        jobs = []
        for i in range(0, len(create), step):
            rows = []
            for k in create[i : i + step]:
                w = wanted[k]
                gran = w.key.granularity.value
                sk, tk, sa, ta = _kinds_of(w)
                rows.append({
                    # nodes by id: a direct read, no index look-up
                    "sv": {T.id: long(node_ids[(gran, w.key.source)])},
                    "tv": {T.id: long(node_ids[(gran, w.key.target)])},
                    "pv": {T.label: "pair", "pkey": k},
                    "pc": {"src": w.key.source, "tgt": w.key.target, "gran": gran,
                           "sk": sk, "tk": tk, "sa": sa, "ta": ta,
                           "info": pair_info(w.key.source, w.key.target, sk, tk)},
                })
            jobs.append(self._run(
                self._g.inject(rows).unfold().as_("r")
                .merge_v(__.select("r").select("sv")).as_("s")
                .merge_v(__.select("r").select("tv")).as_("t")
                .merge_v(__.select("r").select("pv"))
                .option(Merge.on_create, __.select("r").select("pc")).as_("p")
                .side_effect(__.coalesce(__.in_e("calls"), __.add_e("calls").from_("s")))
                .side_effect(__.coalesce(__.out_e("callee"), __.add_e("callee").to("t")))
                .project("k", "id", "sk", "tk", "sa", "ta")
                .by("pkey").by(T.id).by("sk").by("tk").by("sa").by("ta")
            ))
        for rows in await self._concurrently(jobs):
            remember(rows)
        return {k: self._pairs[k] for k in wanted}

    async def _write_by_ids(
        self,
        windows: Sequence[EdgeWindow],
        pairs: dict[str, _Pair],
        clear_mark: tuple[str, int] | None = None,
        slots: bool = True,
        slots_of: Sequence[EdgeWindow] = (),
    ) -> None:
        """One traversal: upsert the windows of already resolved pairs, update changed kinds, and
        (``slots``) record their slots and mark the coarser ones; ``slots_of``: only record and
        mark the slots of these windows. ``clear_mark`` = (slot key, token): clear that roll-up
        mark if its token is unchanged (roll-ups write their result and clear the mark atomically)."""
        rows: list[dict[Any, Any]] = []
        kinds: dict[str, tuple[str, str, str, str]] = {}
        slot_marks: dict[str, dict[str, Any]] = {}
        for w in windows:
            k = pair_key(w.key.granularity, w.key.source, w.key.target)
            pid = long(pairs[k].vid)
            label = WINDOW_LABELS[w.window_seconds]
            body = {"st": encode_stats(w.stats)}
            rows.append({
                "m": {T.label: label, Direction.OUT: pid, Direction.IN: pid, "ws": long(w.window_start)},
                "c": body,
            })
            kinds[k] = _kinds_of(w)
        for w in [*(windows if slots else ()), *slots_of]:
            slot = f"{w.window_seconds}:{w.window_start}"
            slot_marks.setdefault(slot, {"sw": w.window_seconds, "ss": long(w.window_start), "mark": False})
            coarse = _COARSER.get(w.window_seconds)
            if coarse is not None:
                start = align(w.window_start, coarse)
                mark = slot_marks.setdefault(
                    f"{coarse}:{start}", {"sw": coarse, "ss": long(start), "mark": False}
                )
                mark["mark"] = True
        changed = {k: v for k, v in kinds.items() if pairs[k].kinds != v}
        slot_rows = []
        for key, s in slot_marks.items():
            create: dict[str, Any] = {"sw": s["sw"], "ss": s["ss"]}
            update: dict[str, Any] = {}
            if s["mark"]:
                token = long(random.getrandbits(62))
                create.update(pend=True, pver=token)
                update.update(pend=True, pver=token)
            slot_rows.append({"m": {T.label: "slot", "slk": key}, "c": create, "u": update})

        t: GraphTraversal = self._g
        if changed:
            t = t.with_side_effect("K", {
                long(pairs[k].vid): [*v, pair_info(*_names_of(k), v[0], v[1])] for k, v in changed.items()
            })
        t = (
            t.inject(rows).unfold().as_("w")
            .merge_e(__.select("w").select("m"))
            .option(Merge.on_create, __.select("w").select("c"))
            .option(Merge.on_match, __.select("w").select("c"))
            .fold()
        )
        if slot_rows:
            t = t.side_effect(
                __.constant(slot_rows).unfold().as_("s")
                .merge_v(__.select("s").select("m"))
                .option(Merge.on_create, __.select("s").select("c"))
                .option(Merge.on_match, __.select("s").select("u"))
            )
        if changed:
            ids = [long(pairs[k].vid) for k in changed]
            kv = __.select("K").select(__.select("p").id_())
            t = t.side_effect(
                __.V(*ids).as_("p")
                .property("sk", kv.clone().limit(Scope.local, 1))
                .property("tk", kv.clone().range_(Scope.local, 1, 2))
                .property("sa", kv.clone().range_(Scope.local, 2, 3))
                .property("ta", kv.clone().range_(Scope.local, 3, 4))
                .property("info", kv.clone().range_(Scope.local, 4, 5))
            )
        if clear_mark is not None:
            slot_key, token = clear_mark
            t = t.side_effect(
                __.V().has("slot", "slk", slot_key).has("pver", long(token)).property("pend", False)
            )
        got = await self._run(t.count(Scope.local))
        if got != [len(rows)]:
            raise StaleVertexError(f"{self.layer.value}: wrote {got} of {len(rows)} windows")
        for k, v in changed.items():
            pairs[k].kinds = v

    # -- roll-up and retention -------------------------------------------------------------------
    async def _meta(self, key: str) -> str | None:
        got = await self._run(self._g.V().has("meta", "mkey", key).values("mval"))
        return str(got[0]) if got else None

    async def _set_meta(self, key: str, value: str) -> None:
        await self._run(
            self._g.merge_v({T.label: "meta", "mkey": key})
            .option(Merge.on_create, {"mval": value})
            .option(Merge.on_match, {"mval": value})
            .count()
        )

    async def rollup(self, now: float) -> RollupReport:
        async with self._rollup_lock:
            try:
                return await self._retrying("rollup", lambda: self._rollup(now))
            finally:
                self._rollups = None

    async def _rollup(self, now: float) -> RollupReport:
        text = await self._meta("last_rollup")
        last = float(text) if text else 0.0
        built = 0
        for fine in (MINUTE, HOUR):
            coarse = _COARSER[fine]
            deleted_before = align(last - self.retention.for_granularity(fine), fine) if last else None
            marks = await self._run(
                self._g.V().has("slot", "sw", coarse).has("pend", True)
                .project("k", "ss", "v").by("slk").by("ss").by("pver")
            )
            for m in sorted(marks, key=lambda r: int(r["ss"])):
                start = int(m["ss"])
                if start + coarse > now:
                    continue
                mark = (str(m["k"]), int(m["v"]))
                if deleted_before is not None and start < deleted_before:
                    log.warning("%s: not rebuilding the %d s window at %d: its finer windows were "
                                "partly deleted by retention", self.layer.value, coarse, start)
                    await self._run(self._g.V().has("slot", "slk", mark[0]).has("pver", long(mark[1]))
                                    .property("pend", False).count())
                    continue
                built += await self._rebuild(fine, coarse, start, mark)
        deleted = await self._apply_retention(now)
        await self._set_meta("last_rollup", repr(max(now, last)))
        return RollupReport(built=built, deleted=deleted)

    async def _rebuild(self, fine: int, coarse: int, start: int, mark: tuple[str, int]) -> int:
        """Replace the ``coarse`` windows at ``start`` with the merge of their ``fine`` windows."""
        label = WINDOW_LABELS[fine]
        starts = list(range(start, start + coarse, fine))
        merged: dict[int, EdgeStats] = {}
        info: dict[int, tuple[str, str, str, str, str, str, str]] = {}
        for ws in starts:  # one start per round trip keeps answers small (one window per pair)
            rows = await self._run(
                self._g.E().has_label(label).has("ws", long(ws))
                .project("p", "st").by(__.out_v().id_()).by("st")
            )
            for r in rows:
                pid = int(r["p"])
                got = decode_stats(r["st"])
                prev = merged.get(pid)
                merged[pid] = got if prev is None else prev.merge(got)
        if merged:
            ids = sorted(merged)
            for i in range(0, len(ids), 2000):
                for r in await self._run(
                    self._g.V(*[long(x) for x in ids[i : i + 2000]])
                    .project("id", "g", "s", "t", "sk", "tk", "sa", "ta")
                    .by(T.id).by("gran").by("src").by("tgt").by("sk").by("tk").by("sa").by("ta")
                ):
                    info[int(r["id"])] = (r["g"], r["s"], r["t"], r["sk"], r["tk"], r["sa"], r["ta"])
        windows: list[EdgeWindow] = []
        pairs: dict[str, _Pair] = {}
        for pid in sorted(merged):
            if pid not in info:
                continue  # removed meanwhile
            g, s, t, sk, tk, sa, ta = info[pid]
            gran = Granularity(g)
            windows.append(EdgeWindow(EdgeKey(self.layer, gran, s, t), start, coarse, merged[pid],
                                      NodeKind(sk), NodeKind(tk), sa or None, ta or None))
            pairs[pair_key(gran, s, t)] = _Pair(pid, (sk, tk, sa, ta))
        if not windows:
            await self._run(self._g.V().has("slot", "slk", mark[0]).has("pver", long(mark[1]))
                            .property("pend", False).count())
            return 0
        for i in range(0, len(windows), self.batch_size):
            chunk = windows[i : i + self.batch_size]
            last_chunk = i + self.batch_size >= len(windows)
            await self._write_by_ids(chunk, pairs, clear_mark=mark if last_chunk else None)
        return len(windows)

    async def _apply_retention(self, now: float) -> int:
        deleted = 0
        touched: set[int] = set()
        for wsec in STORED_GRANULARITIES:
            cutoff = now - self.retention.for_granularity(wsec)
            label = WINDOW_LABELS[wsec]
            slots = await self._run(
                self._g.V().has("slot", "sw", wsec).has("ss", P.lte(long(math.floor(cutoff - wsec))))
                .project("k", "ss").by("slk").by("ss")
            )
            for slot in sorted(slots, key=lambda r: int(r["ss"])):
                ws = long(int(slot["ss"]))
                pids = await self._run(self._g.E().has_label(label).has("ws", ws).out_v().id_().dedup())
                touched.update(int(x) for x in pids)
                while True:  # bounded transactions: a minute of a large fleet has many windows
                    got = await self._run(
                        self._g.E().has_label(label).has("ws", ws).limit(DROP_BATCH)
                        .fold().side_effect(__.unfold().drop()).count(Scope.local)
                    )
                    n = int(got[0]) if got else 0
                    deleted += n
                    if n < DROP_BATCH:
                        break
                await self._run(self._g.V().has("slot", "slk", str(slot["k"])).drop())
        if touched:
            await self._drop_empty_pairs(sorted(touched))
        return deleted

    async def _drop_empty_pairs(self, pair_ids: list[int]) -> None:
        labels = list(WINDOW_LABELS.values())
        nodes: set[int] = set()
        for i in range(0, len(pair_ids), 2000):
            part = [long(x) for x in pair_ids[i : i + 2000]]
            empty = await self._run(
                self._g.V(*part).not_(__.out_e(*labels))
                .project("id", "k", "n").by(T.id).by("pkey").by(__.both("calls", "callee").id_().fold())
            )
            if not empty:
                continue
            for r in empty:
                self._pairs.pop(str(r["k"]), None)
                nodes.update(int(x) for x in r["n"])
            await self._run(self._g.V(*[long(int(r["id"])) for r in empty]).drop())
        if nodes:
            ids = [long(x) for x in sorted(nodes)]
            for i in range(0, len(ids), 2000):
                await self._run(self._g.V(*ids[i : i + 2000]).not_(__.both_e("calls", "callee")).drop())

    # -- reading ---------------------------------------------------------------------------------
    async def _rollup_state(self) -> Rollups:
        """What the roll-ups hold: the clock of the last one and the hours and days marked since."""
        held = self._rollups
        if held is not None and _time.monotonic() - held[0] < ROLLUP_STATE_SECONDS:
            return held[1]
        def marked(wsec: int) -> GraphTraversal:
            return __.V().has("slot", "sw", wsec).has("pend", True).project("w", "s").by("sw").by("ss").fold()

        [row] = await self._run(
            self._g.inject(1).project("t", "h", "d")
            .by(__.V().has("meta", "mkey", "last_rollup").values("mval").fold())
            .by(marked(HOUR)).by(marked(DAY))
        )
        state = Rollups(
            float(row["t"][0]) if row["t"] else 0.0,
            frozenset((int(m["w"]), int(m["s"])) for m in [*row["h"], *row["d"]]),
        )
        self._rollups = (_time.monotonic(), state)
        return state

    async def _plan(self, time: TimeRange, now: float) -> tuple[Span, ...]:
        if self.retention.finest_covering(time.start, now) == MINUTE:  # minutes only: no roll-up asked
            return read_plan(time, now, self.retention, Rollups())
        return read_plan(time, now, self.retention, await self._rollup_state())

    @staticmethod
    def _in_span(span: Span) -> GraphTraversal:
        return (__.out_e(WINDOW_LABELS[span.seconds])
                .has("ws", P.gte(long(span.start))).has("ws", P.lt(long(span.end))))

    @staticmethod
    def _present(plan: Sequence[Span]) -> GraphTraversal:
        if len(plan) == 1:
            return JanusGraphLayerStore._in_span(plan[0])
        return __.union(*[JanusGraphLayerStore._in_span(s) for s in plan])

    @staticmethod
    def _stats_in(plan: Sequence[Span]) -> GraphTraversal:
        """The stats JSON of the pair's windows in the plan, in time order (span by span)."""
        return JanusGraphLayerStore._present(plan).values("st").fold()

    def _summaries(self, granularity: Granularity, rows: Iterable[Any],
                   with_stats: bool = True) -> dict[tuple[str, str], _Walked]:
        """Rows of :meth:`_project_pair` as walked pairs (without stats: each row is the info)."""
        out: dict[tuple[str, str], _Walked] = {}
        if not with_stats:
            bare = self._bare
            for info in rows:
                w = bare.get((granularity, info))
                if w is None:
                    s, t, sk, tk = json.loads(info)
                    key = EdgeKey(self.layer, granularity, s, t)
                    source_kind, target_kind = NodeKind(sk), NodeKind(tk)
                    w = bare[(granularity, info)] = _Walked(
                        s, t, source_kind, target_kind, _NO_STATS,
                        EdgeSummary(key, _NO_STATS, source_kind, target_kind))
                    if len(bare) > BARE_PAIRS_KEPT:
                        del bare[next(iter(bare))]  # the oldest entry
                out[(w.source, w.target)] = w
            return out
        for info, texts in rows:
            stats = self._stats.merged(texts)
            if stats is None:
                continue
            s, t, sk, tk = json.loads(info)
            out[(s, t)] = _Walked(s, t, NodeKind(sk), NodeKind(tk), stats)
        return out

    def _summary(self, granularity: Granularity, w: _Walked) -> EdgeSummary:
        if w.summary is not None:
            return w.summary
        return EdgeSummary(EdgeKey(self.layer, granularity, w.source, w.target), w.stats,
                           w.source_kind, w.target_kind)

    @staticmethod
    def _project_pair(t: GraphTraversal, plan: Sequence[Span], with_stats: bool = True) -> GraphTraversal:
        """Per pair with a window in the plan ``[info, [stats JSON of each window in range]]``
        (lists decode fastest). The windows are read once: a pair without one in range projects an
        empty list, which the ``where`` drops. Without stats: the info of each pair with a window in
        range (no window's stats is read, sent or decoded)."""
        if not with_stats:
            return t.where(JanusGraphLayerStore._present(plan)).values("info")
        row = __.union(__.values("info"), JanusGraphLayerStore._stats_in(plan)).fold()
        return t.map(row).where(__.tail(Scope.local, 1).unfold())

    def _nodes_named(self, names: list[str], granularity: Granularity) -> GraphTraversal:
        """The node vertices of ``names`` at ``granularity``: one look-up of ``node_by_name`` for all,
        then ``gran`` read for all of them in one batch. (As ``has("gran", ...)`` JanusGraph folds the
        test into the index query and loads each vertex on its own: 0.5-1.5 ms a name, ~50 times
        slower, ``profile()`` on JanusGraph 1.1 with 480 names.)"""
        gran = __.values("gran").is_(granularity.value)
        return self._g.V().has("node", "name", P.within(names)).where(gran)

    async def neighbors(
        self,
        names: Iterable[str],
        direction: Walk,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        with_stats: bool = True,
    ) -> list[EdgeSummary]:
        wanted = distinct_names(names)
        if not wanted:
            return []
        plan = await self._plan(time, now)
        jobs = []
        # a large frontier is split over the pool's connections (the server's threads)
        step = max(NAMES_PER_TRAVERSAL, -(-len(wanted) // self._pool.size))
        for i in range(0, len(wanted), step):
            t = self._nodes_named(wanted[i : i + step], granularity)
            t = t.out("calls") if direction is Walk.UPSTREAM else t.in_("callee")
            jobs.append(self._run(self._project_pair(t, plan, with_stats)))
        found: dict[tuple[str, str], _Walked] = {}
        for rows in await self._concurrently(jobs):
            found.update(self._summaries(granularity, rows, with_stats))
        return [self._summary(granularity, found[k]) for k in sorted(found)]

    async def edge_stats(
        self, keys: Iterable[tuple[str, str]], granularity: Granularity, time: TimeRange, now: float
    ) -> list[EdgeSummary]:
        """The pairs by ``pair_by_key`` and their windows in range, in one traversal (a large set split
        over the pool's connections, as in :meth:`neighbors`)."""
        wanted = sorted(set(keys))
        if not wanted:
            await self.ensure_ready()
            return []
        plan = await self._plan(time, now)
        pkeys = [pair_key(granularity, s, t) for s, t in wanted]
        step = max(NAMES_PER_TRAVERSAL, -(-len(pkeys) // self._pool.size))
        jobs = [self._run(self._project_pair(self._g.V().has("pair", "pkey", P.within(pkeys[i : i + step])),
                                             plan))
                for i in range(0, len(pkeys), step)]
        found: dict[tuple[str, str], _Walked] = {}
        for rows in await self._concurrently(jobs):
            found.update(self._summaries(granularity, rows))
        return [self._summary(granularity, found[k]) for k in sorted(found)]

    async def traverse(
        self,
        roots: Iterable[str],
        direction: Walk,
        depth: int,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        with_stats: bool = True,
    ) -> TraversalResult:
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        frontier = distinct_names(roots)
        if depth == 0 or not frontier:
            await self.ensure_ready()
            return TraversalResult((), ())
        plan = await self._plan(time, now)
        upstream = direction is Walk.UPSTREAM
        walked: dict[tuple[str, str], _Walked] = {}
        seen = set(frontier)
        reached: list[Reached] = []
        edges: list[_Walked] = []
        level = 0
        while level < depth and frontier:
            levels = min(LEVELS_PER_TRAVERSAL, depth - level)
            done = sorted(seen.difference(frontier))
            walked.update(await self._walk([frontier], done, levels, upstream, granularity, plan, with_stats))
            adj: dict[str, list[tuple[str, _Walked]]] = {}
            for w in walked.values():
                here, there = (w.source, w.target) if upstream else (w.target, w.source)
                adj.setdefault(here, []).append((there, w))
            for lst in adj.values():
                lst.sort(key=lambda x: x[0])
            for _ in range(levels):
                level += 1
                nxt: list[str] = []
                for name in frontier:  # sorted: the smallest parent name becomes ``via``
                    for other, w in adj.get(name, []):
                        edges.append(w)
                        if other not in seen:
                            seen.add(other)
                            nxt.append(other)
                            kind = w.target_kind if upstream else w.source_kind
                            reached.append(Reached(other, level, name, kind))
                nxt.sort()
                frontier = nxt
                if not frontier:
                    break
        reached.sort(key=lambda r: (r.depth, r.name))
        edges.sort(key=lambda w: (w.source, w.target))  # the embedded store's order
        return TraversalResult(tuple(reached), tuple(self._summary(granularity, w) for w in edges))

    async def expand(
        self,
        starts: Mapping[str, int],
        done: Collection[str],
        direction: Walk,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        with_stats: bool = True,
    ) -> list[EdgeSummary]:
        """One traversal: each start joins the walk at the level that leaves it its hops."""
        hops: dict[str, int] = {}
        for name, h in starts.items():
            if h < 0:
                raise ValueError(f"hops must be >= 0, got {h} for {name!r}")
            if h and name not in done:
                hops[name] = h
        levels = max(hops.values(), default=0)
        if levels > LEVELS_PER_TRAVERSAL:
            return await super().expand(starts, done, direction, granularity, time, now, with_stats)
        if not hops:
            await self.ensure_ready()
            return []
        plan = await self._plan(time, now)
        entries: list[list[str]] = [[] for _ in range(levels)]
        for name in sorted(hops):
            entries[levels - hops[name]].append(name)
        others = sorted(set(done).difference(hops))
        walked = await self._walk(entries, others, levels, direction is Walk.UPSTREAM, granularity, plan,
                                  with_stats)
        return [self._summary(granularity, walked[k]) for k in sorted(walked)]

    async def _walk(
        self,
        entries: Sequence[list[str]],
        done: list[str],
        levels: int,
        upstream: bool,
        granularity: Granularity,
        plan: Sequence[Span],
        with_stats: bool,
    ) -> dict[tuple[str, str], _Walked]:
        """One traversal: the pairs (with a window in range) leaving nodes less than ``levels - k``
        hops from a node of ``entries[k]`` (they join the walk at level ``k``), never expanding a
        node of ``done`` or an entry twice nor going through one.

        Only the entries are looked up by name (the index, then ``gran``); a node of ``done`` is
        recognised by its name when the walk reaches it. (Looking every done node up cost an index
        read, a ``gran`` read and a ``name`` read each, and JanusGraph reads a multi-name index look-up
        a few keys at a time: on Cassandra the unified walk's second round spent 80-90% of its time
        there, ``profile()`` on JanusGraph 1.1.)"""
        named = sorted({name for level in entries for name in level})
        t = self._nodes_named(named, granularity).aggregate("seen")
        if entries[0] != named:
            t = t.has("name", P.within(entries[0]))
        for level in range(levels):
            if level and level < len(entries) and entries[level]:
                # the nodes joining here were found by name with ``seen`` (no second index look-up)
                joining = __.select("seen").unfold().has("name", P.within(entries[level]))
                t = t.fold().flat_map(__.union(__.unfold(), joining))
            t = t.out("calls") if upstream else t.in_("callee")
            last = level + 1 == levels
            # each pair's windows are read once: its row is kept and the walk goes on from the pair
            # only when the row has a window in range (no label on the last level: a labelled step
            # there keeps JanusGraph from batching the pairs' reads)
            if not with_stats:  # the pairs are kept, their info read once at the end
                t = t.where(self._present(plan)).aggregate("R")
            else:
                t = self._project_pair(t if last else t.as_("p"), plan).aggregate("R")
                t = t if last else t.select("p")
            if not last:
                t = t.out("callee") if upstream else t.in_("calls")
                t = t.dedup().where(P.without("seen"))
                if done:
                    t = t.where(__.values("name").is_(P.without(done)))
                t = t.aggregate("seen")
        t = t.cap("R").unfold()
        if not with_stats:
            t = t.values("info")
        return self._summaries(granularity, await self._run(t), with_stats)

    async def edges(
        self,
        granularity: Granularity,
        time: TimeRange,
        now: float,
        limit: int | None = None,
        after: tuple[str, str] | None = None,
    ) -> list[EdgeSummary]:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit == 0:
            await self.ensure_ready()
            return []
        plan = await self._plan(time, now)
        keys = await self._run(
            self._g.V().has("pair", "gran", granularity.value)
            .project("s", "t", "id").by("src").by("tgt").by(T.id)
        )
        # sorted in Python: the same (code point) order as the embedded store for any names
        candidates = sorted((str(r["s"]), str(r["t"]), int(r["id"])) for r in keys)
        if after is not None:
            a = (after[0], after[1])
            candidates = [c for c in candidates if (c[0], c[1]) > a]
        out: list[EdgeSummary] = []
        i = 0
        chunk = 2000 if limit is None else min(2000, max(2 * limit, 50))
        while i < len(candidates) and (limit is None or len(out) < limit):
            part = candidates[i : i + chunk]
            i += chunk
            t = self._project_pair(self._g.V(*[long(c[2]) for c in part]), plan)
            found = self._summaries(granularity, await self._run(t))
            for s, tg, _ in part:
                w = found.get((s, tg))
                if w is not None:
                    out.append(self._summary(granularity, w))
                    if limit is not None and len(out) >= limit:
                        break
        return out

    async def nodes(self, names: Iterable[str]) -> dict[str, NodeInfo]:
        wanted = distinct_names(names)
        if not wanted:
            return {}
        pairs = __.union(__.out("calls"), __.in_("callee"))
        t = (
            self._g.V().has("node", "name", P.within(wanted))
            .project("n", "g", "k", "a", *[f"{e}{w}" for w in WINDOW_LABELS for e in "fl"])
            .by("name").by("gran")
            .by(__.union(__.out("calls").values("sk"), __.in_("callee").values("tk")).dedup().fold())
            .by(__.union(__.out("calls").values("sa"), __.in_("callee").values("ta"))
                .is_(P.neq("")).limit(1).fold())
        )
        for label in WINDOW_LABELS.values():
            # per pair one vertex-centric index seek for its first and its last window
            # (flat_map, not local: JanusGraph 1.1 ignores a descending order inside local())
            t = t.by(pairs.clone().flat_map(__.out_e(label).order().by("ws", Order.asc).limit(1))
                     .values("ws").min_().fold())
            t = t.by(pairs.clone().flat_map(__.out_e(label).order().by("ws", Order.desc).limit(1))
                     .values("ws").max_().fold())
        per_name: dict[str, list[NodeInfo]] = {}
        for r in await self._run(t):
            kinds = [NodeKind(k) for k in r["k"]]
            if not kinds:
                continue  # a node without edges is not part of the layer
            kind = NodeKind.SERVICE if NodeKind.SERVICE in kinds else min(kinds, key=lambda k: k.value)
            firsts = [int(x) for w in WINDOW_LABELS for x in r[f"f{w}"]]
            lasts = [int(x) + w for w in WINDOW_LABELS for x in r[f"l{w}"]]
            info = NodeInfo(
                name=r["n"], kind=kind, granularity=Granularity(r["g"]),
                app=(r["a"][0] if r["a"] else None), layers=frozenset((self.layer,)),
                first_seen=float(min(firsts)) if firsts else 0.0,
                last_seen=float(max(lasts)) if lasts else 0.0,
            )
            per_name.setdefault(info.name, []).append(info)
        out: dict[str, NodeInfo] = {}
        for name, infos in per_name.items():
            infos.sort(key=lambda i: 0 if i.granularity is Granularity.APP else 1)
            best = infos[0]
            if len(infos) > 1:
                seen_first = [i.first_seen for i in infos if i.first_seen]
                best = NodeInfo(best.name, best.kind, best.granularity, best.app, best.layers,
                                min(seen_first) if seen_first else 0.0, max(i.last_seen for i in infos))
            out[name] = best
        return out

    async def window_count(self) -> dict[int, int]:
        slots = await self._run(
            self._g.V().has("slot", "sw", P.within(list(WINDOW_LABELS))).project("w", "s").by("sw").by("ss")
        )
        starts: dict[int, set[int]] = {}
        for r in slots:
            starts.setdefault(int(r["w"]), set()).add(int(r["s"]))
        out: dict[int, int] = {}
        for wsec, label in WINDOW_LABELS.items():
            total = 0
            values = sorted(starts.get(wsec, []))
            for i in range(0, len(values), 200):
                part = [long(x) for x in values[i : i + 200]]
                got = await self._run(self._g.E().has_label(label).has("ws", P.within(part)).count())
                total += int(got[0])
            if total:
                out[wsec] = total
        return out

    async def ping(self) -> None:
        await self._pool.submit(self._g.inject(1).bytecode, time_limit=10.0)

    async def clear(self) -> None:
        """Delete every vertex of this layer's graph (tests and administration)."""
        while True:
            got = await self._run(
                self._g.V().limit(5000).fold().side_effect(__.unfold().drop()).count(Scope.local)
            )
            if not got or int(got[0]) == 0:
                break
        self._pairs.clear()
        self._rollups = None

    async def close(self) -> None:
        await self._pool.close()

"""Checks that a blast radius walked over the stores' kept adjacency is the level-by-level one.

The level walk (``query.blast_radius(..., kept=False)``: one ``neighbors`` call per layer and level)
is the reference: the kept walk must give the same affected services with the same depths and
``via``, counts, teams and catalog entries, and - once their edges are fetched - the same merged edges
and kinds.
"""

from __future__ import annotations

from typing import Any

from topology import query
from topology.model import Direction
from topology.store.base import Stores


def _shape(r: query.BlastRadius) -> dict[str, Any]:
    return {
        "reached": [(d.name, d.depth, d.via) for d in r.traversal.reached],
        "affected": [(d.name, d.depth, d.via) for d in r.affected],
        "by_tier": r.by_tier,
        "teams": r.teams,
        "unowned": r.unowned,
        "infos": dict(r.infos),
        "layers": r.traversal.layers,
        "answered": r.traversal.answered,
        "failures": [(f.layer, f.message) for f in r.traversal.failures],
    }


async def assert_kept_walk_is_level_walk(
    stores: Stores, root: str, depth: int, *, with_stats: bool = True, **kw: Any
) -> query.BlastRadius:
    """Both walks of ``root``'s blast radius, compared; the kept one is returned (edges fetched)."""
    kept = await query.blast_radius(stores.layers, stores.catalog, root, depth, with_stats=with_stats,
                                    kept=True, **kw)
    level = await query.blast_radius(stores.layers, stores.catalog, root, depth, with_stats=with_stats,
                                     kept=False, **kw)
    what = f"blast radius of {root!r}, depth {depth}, {kw}"
    assert _shape(kept) == _shape(level), what
    await kept.traversal.fetch_edges(kept.traversal.reached)
    await level.traversal.fetch_edges(level.traversal.reached)  # nothing to do: it kept its edges
    got = [(d.edge, d.kind) for d in kept.traversal.reached]
    want = [(d.edge, d.kind) for d in level.traversal.reached]
    if with_stats:
        assert got == want, what
    else:  # stats may be left empty without them: the same edges, layers and kinds
        assert [(e.key, e.layers, e.source_kind, e.target_kind, k) for e, k in got] == [
            (e.key, e.layers, e.source_kind, e.target_kind, k) for e, k in want], what
    return kept


async def assert_kept_traverse_is_level_traverse(
    stores: Stores, roots: list[str], direction: Direction, depth: int, **kw: Any
) -> None:
    """``query.traverse(..., kept=True)`` against the level walk, in either direction."""
    kept = await query.traverse(stores.layers, roots, direction, depth, kept=True, **kw)
    level = await query.traverse(stores.layers, roots, direction, depth, **kw)
    what = f"traverse {direction.value} from {roots}, depth {depth}, {kw}"
    assert [(d.name, d.depth, d.via) for d in kept.reached] == [
        (d.name, d.depth, d.via) for d in level.reached], what
    assert (kept.roots, kept.layers, kept.answered, kept.failures) == (
        level.roots, level.layers, level.answered, level.failures), what
    await kept.fetch_edges(kept.reached)
    assert [(d.edge, d.kind) for d in kept.reached] == [(d.edge, d.kind) for d in level.reached], what


async def assert_whole_traverse_is_level_traverse(
    stores: Stores, roots: list[str], direction: Direction, depth: int, **kw: Any
) -> query.UnifiedTraversal:
    """``query.traverse(..., whole=True)`` (each layer's whole walk, then the nodes it missed) against
    the level walk: the same nodes, depths, ``via``, merged edges, walked edges and failures."""
    whole = await query.traverse(stores.layers, roots, direction, depth, whole=True, **kw)
    level = await query.traverse(stores.layers, roots, direction, depth, whole=False, **kw)
    what = f"traverse {direction.value} from {roots}, depth {depth}, {kw}"
    assert [(d.name, d.depth, d.via) for d in whole.reached] == [
        (d.name, d.depth, d.via) for d in level.reached], what
    assert (whole.roots, whole.layers, whole.answered, whole.failures) == (
        level.roots, level.layers, level.answered, level.failures), what
    assert [(d.edge, d.kind) for d in whole.reached] == [(d.edge, d.kind) for d in level.reached], what
    assert whole.walked == level.walked, what
    assert whole.edges == level.edges, what
    return whole

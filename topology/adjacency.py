"""Compact integer adjacency of the edges present in a time range, and the level walk over it.

A store that holds its graph in memory (the embedded one) can hand out the edges of one layer present
in a range as an :class:`Adjacency`, built once and kept until a write changes which edges are present
(see :meth:`topology.store.base.LayerStore.adjacency`). A unified walk over several layers merges them
(:func:`union`, kept with its parts) and walks the merged graph level by level with array operations:
no store call and no Python work per edge.

Node ids are positions in the sorted list of names, so the smallest id is the smallest name: the
walk picks, for each newly reached node, the smallest frontier node it is reached from (as
:func:`topology.query.traverse` does) by taking the first of its occurrences in a frontier walked in
id order. Each direction's compressed sparse rows (``ptr``, ``far``) are built on first use: for
UPSTREAM the targets of each node's outgoing edges, for DOWNSTREAM the sources of its incoming ones.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Adjacency", "Level", "union", "walk"]

_Ids = npt.NDArray[np.int64]
#: Unions kept per first part (one per set of layers asked together).
_UNIONS_KEPT = 4


class Adjacency:
    """Edges between named nodes as integer arrays (each edge once). Immutable once built."""

    __slots__ = ("_rows", "_unions", "dst", "ids", "names", "src")

    def __init__(self, names: Sequence[str], src: _Ids, dst: _Ids) -> None:
        """``names`` sorted and distinct; ``src[i] -> dst[i]`` the edges, as ids into ``names``."""
        self.names = tuple(names)
        self.ids = {name: i for i, name in enumerate(self.names)}
        self.src = src
        self.dst = dst
        self._rows: dict[bool, tuple[_Ids, _Ids]] = {}
        # unions with other adjacencies, by their identity (the parts are kept, so ids stay theirs)
        self._unions: dict[tuple[int, ...], tuple[tuple[Adjacency, ...], Adjacency]] = {}

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Adjacency:
        """From (source, target) pairs (duplicates are merged)."""
        found = list(pairs)
        return cls.from_ends([s for s, _ in found], [t for _, t in found])

    @classmethod
    def from_ends(cls, sources: Sequence[str], targets: Sequence[str]) -> Adjacency:
        """From the edges ``sources[i] -> targets[i]`` (duplicates are merged)."""
        names = sorted({*sources, *targets})
        ids = {name: i for i, name in enumerate(names)}
        src = np.fromiter(map(ids.__getitem__, sources), np.int64, len(sources))
        dst = np.fromiter(map(ids.__getitem__, targets), np.int64, len(targets))
        return _deduplicated(names, src, dst)

    def __len__(self) -> int:
        """The number of edges."""
        return len(self.src)

    def pairs(self) -> list[tuple[str, str]]:
        """The edges as (source, target) names, sorted."""
        names = self.names
        return sorted((names[s], names[t]) for s, t in zip(self.src.tolist(), self.dst.tolist(), strict=True))

    def rows(self, upstream: bool) -> tuple[_Ids, _Ids]:
        """``(ptr, far)``: the far ends of node ``i``'s edges are ``far[ptr[i]:ptr[i + 1]]`` (targets of
        its outgoing edges when ``upstream``, else sources of its incoming edges)."""
        rows = self._rows.get(upstream)
        if rows is None:
            near, far = (self.src, self.dst) if upstream else (self.dst, self.src)
            order = np.argsort(near, kind="stable")
            ptr = np.zeros(len(self.names) + 1, np.int64)
            np.cumsum(np.bincount(near, minlength=len(self.names)), out=ptr[1:])
            rows = self._rows[upstream] = (ptr, far[order])
        return rows


def _deduplicated(names: Sequence[str], src: _Ids, dst: _Ids) -> Adjacency:
    if len(src):
        n = max(len(names), 1)
        codes = np.unique(src * n + dst)
        src, dst = codes // n, codes % n
    return Adjacency(names, src, dst)


def union(parts: Sequence[Adjacency]) -> Adjacency:
    """The edges of all ``parts`` (an edge in several once), over the union of their names. Kept with
    the first part, so asking again for the same parts costs a dictionary look-up."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Adjacency((), np.zeros(0, np.int64), np.zeros(0, np.int64))
    first = parts[0]
    key = tuple(id(p) for p in parts)
    kept = first._unions.get(key)
    if kept is not None:
        return kept[1]
    names = sorted({name for p in parts for name in p.names})
    ids = {name: i for i, name in enumerate(names)}
    src: list[_Ids] = []
    dst: list[_Ids] = []
    for p in parts:
        to_union = np.fromiter(map(ids.__getitem__, p.names), np.int64, len(p.names))
        src.append(to_union[p.src])
        dst.append(to_union[p.dst])
    merged = _deduplicated(names, np.concatenate(src), np.concatenate(dst))
    if len(first._unions) >= _UNIONS_KEPT:
        del first._unions[next(iter(first._unions))]  # the oldest
    first._unions[key] = (tuple(parts), merged)
    return merged


@dataclass(frozen=True, slots=True)
class Level:
    """The nodes first reached at ``depth`` (sorted by name), each with the smallest node of the
    previous level it is reached from (``via[i]`` for ``names[i]``)."""

    depth: int
    names: list[str]
    via: list[str]


def walk(adjacency: Adjacency, roots: Iterable[str], upstream: bool, depth: int) -> list[Level]:
    """Breadth-first from ``roots`` up to ``depth`` hops, along edges (``upstream``: from caller to
    callee) or against them; each node once, at its smallest depth. Roots are not listed."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    ptr, far_of = adjacency.rows(upstream)
    seen = np.zeros(len(adjacency.names), np.bool_)
    ids = adjacency.ids
    frontier = np.array(sorted({ids[r] for r in roots if r in ids}), np.int64)
    seen[frontier] = True
    names = adjacency.names
    levels: list[Level] = []
    for level in range(1, depth + 1):
        if not len(frontier):
            break
        starts = ptr[frontier]
        counts = ptr[frontier + 1] - starts
        total = int(counts.sum())
        if not total:
            break
        # every (near, far) edge of the frontier, near in ascending order
        ends = np.cumsum(counts)
        near = np.repeat(frontier, counts)
        far = far_of[np.arange(total) + np.repeat(starts - (ends - counts), counts)]
        new = ~seen[far]
        far, near = far[new], near[new]
        if not len(far):
            break
        # the first occurrence of each far node comes with its smallest near node (a stable sort)
        frontier, first = np.unique(far, return_index=True)
        seen[frontier] = True
        levels.append(Level(level, [names[i] for i in frontier.tolist()],
                            [names[i] for i in near[first].tolist()]))
    return levels

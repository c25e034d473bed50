"""The embedded store's kept adjacency: the edges present in a range, as integer arrays, kept.

Built from the in-memory index (:mod:`topology.store.embedded_index`) on first use for one
(granularity, key of the range) with the store's own test of "present in the range" (the one its
``neighbors`` and ``edges`` apply; equal keys must select the same windows, as for the stats memos),
and kept for the next queries over the same range.

A kept adjacency lives as long as the set of edges present in its range stays the same: a write that
re-writes windows of edges already present there (the usual case: a live edge's next minute, a
provisional window replaced, a roll-up of present edges) leaves it; one that makes an edge present or
absent in a kept range drops that range's adjacency (the next query builds it again). Retention drops
them all. Only a few ranges are kept (the oldest goes first).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from topology.adjacency import Adjacency
from topology.model import Granularity
from topology.store.embedded_index import EdgeRec, GraphIndex

Present = Callable[[EdgeRec], bool]

__all__ = ["KeptAdjacency"]

#: Ranges kept at once (the live window at APP granularity, a few past ones).
KEPT_RANGES = 4


class KeptAdjacency:
    """Adjacencies of one layer's index by (granularity, key of the range), each with the ids of its
    edges and the test it was built with."""

    def __init__(self, index: GraphIndex, kept: int = KEPT_RANGES) -> None:
        self._index = index
        self._size = kept
        self._kept: dict[tuple[Granularity, Hashable], tuple[Adjacency, set[int], Present]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, granularity: Granularity, key: Hashable, present: Present) -> Adjacency:
        """The edges of ``granularity`` that pass ``present`` (the range's test; ``key`` names the
        range), built now if not kept."""
        k = (granularity, key)
        held = self._kept.get(k)
        if held is not None:
            return held[0]
        recs = [r for r in self._index.all_edges() if r.key.granularity is granularity and present(r)]
        adjacency = Adjacency.from_ends([r.key.source for r in recs], [r.key.target for r in recs])
        ids = {r.id for r in recs}
        if len(self._kept) >= self._size:
            del self._kept[next(iter(self._kept))]  # the oldest
        self._kept[k] = (adjacency, ids, present)
        return adjacency

    def changed(self, recs: Sequence[EdgeRec]) -> None:
        """These edges' presence may have changed: drop the ranges where one came or went."""
        if not self._kept:
            return
        for k, (_, ids, present) in list(self._kept.items()):
            granularity = k[0]
            for rec in recs:
                if rec.key.granularity is granularity and present(rec) != (rec.id in ids):
                    del self._kept[k]
                    break

    def clear(self) -> None:
        self._kept.clear()

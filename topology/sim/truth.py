"""Ground truth: which app-level edges each layer should observe, from what the simulator emitted.

The simulator records an observation when it *emits* data that, by the observation contract, makes
an edge (a flow record, an IPC point with a nonzero count, a traced span pair or unpaired span). Times
are kept at one-minute resolution (the windows stage 3 writes): an edge observed at ``t`` belongs to
the window ``[align(t, 60), +60)``.
"""

from __future__ import annotations

from typing import Any

from topology.model import ALL_LAYERS, Layer
from topology.timewindow import MINUTE, align

Pair = tuple[str, str]


class TruthBook:
    def __init__(self) -> None:
        self._seen: dict[Layer, dict[Pair, set[int]]] = {layer: {} for layer in ALL_LAYERS}

    def observe(self, layer: Layer, src: str, dst: str, t: float) -> None:
        self._seen[layer].setdefault((src, dst), set()).add(align(t, MINUTE))

    def observe_window(self, layer: Layer, pair: Pair, window_start: int) -> None:
        self._seen[layer].setdefault(pair, set()).add(window_start)

    def pairs(self, layer: Layer, since: float | None = None, until: float | None = None) -> set[Pair]:
        """Pairs observed in a window overlapping [since, until) (all of them when both are None)."""
        seen = self._seen[layer]
        if since is None and until is None:
            return set(seen)
        lo = -float("inf") if since is None else since
        hi = float("inf") if until is None else until
        return {p for p, windows in seen.items() if any(w + MINUTE > lo and w < hi for w in windows)}

    def windows(self, layer: Layer, pair: Pair) -> list[int]:
        return sorted(self._seen[layer].get(pair, ()))

    def as_dict(self, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        """``{"layers": {"NETWORK": [[src, dst], ...], "IPC": [...], "TRACE": [...]}, "unified": [...]}``."""
        layers: dict[str, list[list[str]]] = {}
        unified: set[Pair] = set()
        for layer in ALL_LAYERS:
            ps = self.pairs(layer, since, until)
            unified |= ps
            layers[layer.value] = [list(p) for p in sorted(ps)]
        return {"layers": layers, "unified": [list(p) for p in sorted(unified)]}

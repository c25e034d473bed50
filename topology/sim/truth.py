"""Ground truth: which app-level edges each layer should observe, from what the simulator emitted.

The simulator records an observation when it *emits* data that, by the observation contract, makes
an edge (a flow record, an IPC point with a nonzero count, a traced span pair or unpaired span). Times
are kept at one-minute resolution (the windows stage 3 writes): an edge observed at ``t`` belongs to
the window ``[align(t, 60), +60)``. Each pair keeps one bit per minute, so a week of 10,000 services
stays small.
"""

from __future__ import annotations

import math
from typing import Any

from topology.model import ALL_LAYERS, Layer
from topology.timewindow import MINUTE

Pair = tuple[str, str]


class _Minutes:
    """A set of minute numbers (epoch seconds // 60) as a bitmap from the first one seen."""

    __slots__ = ("base", "bits", "first", "last")

    def __init__(self, m: int) -> None:
        self.base = m - m % 8
        self.bits = bytearray(1)
        self.first = self.last = m
        self.add(m)

    def add(self, m: int) -> None:
        if m < self.base:
            new_base = m - m % 8
            self.bits[:0] = bytes((self.base - new_base) // 8)
            self.base = new_base
        k = m - self.base
        i = k >> 3
        if i >= len(self.bits):
            self.bits.extend(bytes(i + 1 - len(self.bits) + len(self.bits) // 4))
        self.bits[i] |= 1 << (k & 7)
        if m < self.first:
            self.first = m
        if m > self.last:
            self.last = m

    def __contains__(self, m: int) -> bool:
        k = m - self.base
        return k >= 0 and (k >> 3) < len(self.bits) and bool(self.bits[k >> 3] >> (k & 7) & 1)

    def any_in(self, lo: int, hi: int) -> bool:
        """Is any minute in [lo, hi) set?"""
        lo, hi = max(lo, self.first), min(hi, self.last + 1)
        if lo >= hi:
            return False
        if lo == self.first or hi == self.last + 1:
            return True
        # Whole bytes strictly inside the range, then the partial bytes at both ends.
        i0, i1 = (lo - self.base + 7) >> 3, (hi - self.base) >> 3
        if i0 < i1 and any(self.bits[i0:i1]):
            return True
        edge = range(lo, min(hi, self.base + 8 * i0)) if i0 < i1 else range(lo, hi)
        tail = range(max(lo, self.base + 8 * i1), hi) if i0 < i1 else range(0)
        return any(m in self for m in edge) or any(m in self for m in tail)

    def minutes(self) -> list[int]:
        return [m for m in range(self.first, self.last + 1) if m in self]


class TruthBook:
    def __init__(self) -> None:
        self._seen: dict[Layer, dict[Pair, _Minutes]] = {layer: {} for layer in ALL_LAYERS}

    def observe(self, layer: Layer, src: str, dst: str, t: float) -> None:
        self._add(layer, (src, dst), int(t // MINUTE))

    def observe_window(self, layer: Layer, pair: Pair, window_start: int) -> None:
        self._add(layer, pair, window_start // MINUTE)

    def _add(self, layer: Layer, pair: Pair, m: int) -> None:
        seen = self._seen[layer]
        cur = seen.get(pair)
        if cur is None:
            seen[pair] = _Minutes(m)
        elif m != cur.last:
            cur.add(m)

    def pairs(self, layer: Layer, since: float | None = None, until: float | None = None) -> set[Pair]:
        """Pairs observed in a one-minute window overlapping [since, until) (all when both are None)."""
        seen = self._seen[layer]
        if since is None and until is None:
            return set(seen)
        # Window w (a minute number) overlaps [since, until) iff 60w + 60 > since and 60w < until.
        lo = -(1 << 62) if since is None else math.floor(since / MINUTE)
        hi = 1 << 62 if until is None else math.ceil(until / MINUTE)
        return {p for p, ms in seen.items() if ms.any_in(lo, hi)}

    def windows(self, layer: Layer, pair: Pair) -> list[int]:
        """Start times of the one-minute windows in which ``pair`` was observed."""
        ms = self._seen[layer].get(pair)
        return [] if ms is None else [m * MINUTE for m in ms.minutes()]

    def as_dict(self, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        """``{"layers": {"NETWORK": [[src, dst], ...], "IPC": [...], "TRACE": [...]}, "unified": [...]}``."""
        layers: dict[str, list[list[str]]] = {}
        unified: set[Pair] = set()
        for layer in ALL_LAYERS:
            ps = self.pairs(layer, since, until)
            unified |= ps
            layers[layer.value] = [list(p) for p in sorted(ps)]
        return {"layers": layers, "unified": [list(p) for p in sorted(unified)]}

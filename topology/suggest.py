"""The closest names to one that is not known: what a person most likely meant to type.

Ranked by similarity (:class:`difflib.SequenceMatcher` ratio, case-insensitive), with a bonus for
names that contain the typed text or are contained in it (``checkout`` for ``checkout-api``), so a
shortened or extended name finds its service. Pure: the caller hands in the known names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest"]

#: Names less similar than this are not offered.
CUTOFF = 0.6


def closest(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    """At most ``n`` known names closest to ``name``, best first (ties by name)."""
    typed = name.lower()
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(typed)
    scored: list[tuple[float, str]] = []
    for candidate in known:
        low = candidate.lower()
        if low == typed:
            score = 2.0
        else:
            matcher.set_seq1(low)
            if matcher.real_quick_ratio() < CUTOFF - 0.25 and typed not in low and low not in typed:
                continue
            score = matcher.ratio()
            if typed and (typed in low or low in typed):
                score += 0.25
        if score >= CUTOFF:
            scored.append((score, candidate))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [c for _, c in scored[:n]]

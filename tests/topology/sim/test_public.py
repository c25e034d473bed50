"""The public surface of topology.sim is what __all__ says, and nothing needs a private import."""

from __future__ import annotations

import topology.sim as sim


def test_all_names_exist_and_are_sorted() -> None:
    for name in sim.__all__:
        assert hasattr(sim, name), name
    assert sim.__all__ == sorted(sim.__all__, key=lambda n: (not n.isupper(), n))

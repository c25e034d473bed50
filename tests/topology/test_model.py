from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from topology.model import EdgeKey, EdgePartial, EdgeWindow, Granularity, Layer, NodeKind, Side
from topology.stats import EdgeStats

names = st.text(min_size=1, max_size=12)
keys = st.builds(EdgeKey, st.sampled_from(Layer), st.sampled_from(Granularity), names, names)
stats = st.builds(
    EdgeStats,
    requests=st.integers(0, 10**9),
    connections=st.integers(0, 10**6),
    endpoints=st.lists(names, max_size=3).map(lambda x: tuple(sorted(set(x)))),
)
common = {
    "key": keys,
    "window_start": st.integers(0, 2**40).map(lambda t: t - t % 60),
    "window_seconds": st.just(60),
    "stats": stats,
    "source_kind": st.sampled_from(NodeKind),
    "target_kind": st.sampled_from(NodeKind),
    "source_app": st.none() | names,
    "target_app": st.none() | names,
}


@given(st.builds(EdgePartial, side=st.sampled_from(Side), **common))
def test_partials_survive_their_wire_form(p: EdgePartial) -> None:
    assert EdgePartial.from_dict(p.to_dict()) == p


@given(st.builds(EdgeWindow, **common))
def test_windows_survive_their_wire_form(w: EdgeWindow) -> None:
    assert EdgeWindow.from_dict(w.to_dict()) == w
    assert "side" not in w.to_dict()

"""The in-process pipeline's windows for a simulated fleet: the answer every other road (the Kafka
workers with or without a broker, interrupted or not) must give for the same input."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from topology.model import Layer


def embedded_baseline(services: int, seed: int, start: float, minutes: float, step: float = 10.0,
                      layers: Iterable[Layer] = tuple(Layer)) -> dict[Any, Any]:
    """The same simulation through the in-process pipeline (no Kafka, no interruption): the windows an
    uninterrupted run must produce."""
    from topology.pipeline import Pipeline
    from topology.sim import Simulator, generate_fleet
    from topology.wire import flow, otlp

    wanted = {layer.value for layer in layers}
    sim = Simulator(generate_fleet(services=services, seed=seed), seed=seed, start=start)
    p = Pipeline()
    init = sim.initial_records()
    p.add_leases(init.leases)
    p.add_health(init.health)
    out: dict[Any, Any] = {}

    def take(po: Any) -> None:
        for layer, ws in po.windows.items():
            if layer.value in wanted:
                for w in ws:
                    k = w.key
                    out[(layer.value, k.granularity.value, w.window_start, k.source, k.target)] = w.stats

    t = start
    while t < start + minutes * 60 - 1e-9:
        em = sim.step(t, step)
        p.add_leases(em.leases)
        p.add_health(em.health)
        for b in em.flow_batches:
            p.add_flows(flow.decode(b))
        for m in em.metrics:
            p.add_metrics(otlp.decode_metrics(m))
        for s in em.spans:
            p.add_spans(otlp.decode_traces(s), t + step)
        t += step
        take(p.flush(t))
    for _ in range(40):
        t += step
        take(p.flush(t))
    return out


def comparable(stats: Any) -> dict[str, Any]:
    """EdgeStats as a dict for comparison: floats rounded (sums depend on the order of addition),
    exemplars by count (which trace ids are kept depends on merge order; how many does not)."""
    d = dict(stats.to_dict())
    for k, v in list(d.items()):
        if isinstance(v, float):
            d[k] = round(v, 6)
    if "exemplars" in d:
        d["exemplars"] = len(d["exemplars"])
    return d


def assert_same_windows(got: dict[Any, Any], want: dict[Any, Any]) -> None:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(got) & set(want) if comparable(got[k]) != comparable(want[k]))
    detail = [(k, comparable(got[k]), comparable(want[k])) for k in differ[:3]]
    assert not missing and not extra and not differ, (
        f"{len(missing)} windows missing {missing[:5]}, {len(extra)} extra {extra[:5]}, "
        f"{len(differ)} differ {detail}")

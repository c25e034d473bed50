"""Where is the source: rank the services that can explain what a service suffers.

Symptoms travel against the calls: when a dependency fails, the calls into it fail (or slow down),
so its callers fail a share of their own requests, and so on up. The source is therefore the
anomalous service whose *own* dependencies explain none of its anomaly. The method:

1. Walk ``depth`` hops upstream of the service asked about (every requested layer, merged): the
   candidates are the service itself and everything it depends on, virtual nodes (databases) too.
2. Read every edge into and out of the candidates in the *current* window (``[at - window, at)``)
   and in the *baseline* (the ``BASELINE_WINDOWS`` windows before it), layer by layer: one
   ``LayerStore.call_metrics`` call per layer, window and direction for the whole candidate set,
   which answers only what is judged (calls, errors, latency median and p99) and which the
   embedded store computes in one vectorised pass and remembers per range.
3. An edge is anomalous in a layer when, with at least ``MIN_CALLS`` calls now (and ``MIN_ERRORS``
   errors), its error rate rose by 2 percentage points and at least doubled (no baseline: an error
   rate of 5 % or more), or
   its p99 latency at least doubled and by 5 ms (:class:`topology.metric.Thresholds`). Its anomaly is
   ``10 x`` the error-rate excess plus ``log2`` of the latency ratio.
4. A candidate's *symptom* is the worst anomaly of the calls into it (as its callers see it), or its
   health event when that is worse (DEGRADED 0.3, UNHEALTHY 0.6: alerting sees what a layer with
   few calls may not); what its dependencies *explain* is the worst anomaly of its own calls or the
   worst symptom of a dependency. Its score is the symptom not explained, plus a deploy,
   configuration or flag change in the lookback before the window (+1 when it has a symptom, +0.4
   alone: "a deploy is the only evidence").
5. Verdict: ``HEALTHY`` when nothing in the walked graph is anomalous and the service is not
   unhealthy; otherwise ``LOCAL`` when the best candidate is the service itself, ``UPSTREAM`` when it
   is a dependency, ``UNKNOWN`` when no candidate reaches ``MIN_SCORE``.

Every candidate carries its evidence in words an engineer can check (the layer, the metric, the
baseline and current values), the path from the service asked about, and its change events.
Pure apart from the store interface.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from topology.catalog import HealthState, HealthStatus
from topology.change import BEHAVIOUR_CHANGES, ChangeEvent
from topology.metric import CallMetrics, EdgeMetric, Thresholds
from topology.model import ALL_LAYERS, Direction, EdgeKey, Granularity, Layer
from topology.query import LayerFailure, traverse
from topology.store.base import CatalogStore, LayerStore
from topology.timewindow import TimeRange

__all__ = ["Candidate", "Evidence", "EvidenceKind", "RootCauseReport", "Verdict", "root_cause"]

BASELINE_WINDOWS = 4  # the baseline is this many windows before the current one
CHANGE_LOOKBACK = 1800.0  # seconds before the window in which a change counts as "near the onset"
MIN_SCORE = 0.25
MIN_CALLS = 10  # calls an edge needs in a window to be judged
MIN_ERRORS = 3  # errors an edge needs now for its error rate to count
MIN_Z = 4.0  # how far beyond the baseline's error ratio (standard deviations) errors must be
MEDIAN_FACTOR = 1.5  # a latency anomaly needs the median to grow this much too
NO_BASELINE_ERRORS = 0.05
CHANGE_WITH_SYMPTOM = 1.0
CHANGE_ALONE = 0.4
OTHER_CHANGE = 0.2
#: A health event is a symptom too (alerting sees what the layers may not): its weight by state.
HEALTH_SYMPTOM = {HealthState.DEGRADED: 0.3, HealthState.UNHEALTHY: 0.6}

_Key = tuple[str, str]


class Verdict(enum.StrEnum):
    LOCAL = "LOCAL"
    UPSTREAM = "UPSTREAM"
    HEALTHY = "HEALTHY"
    UNKNOWN = "UNKNOWN"


class EvidenceKind(enum.StrEnum):
    ERRORS = "ERRORS"  # calls into the candidate fail more than in the baseline
    LATENCY = "LATENCY"  # calls into the candidate are slower than in the baseline
    DEPENDENCIES = "DEPENDENCIES"  # what its own calls explain (or that they are clean)
    HEALTH = "HEALTH"  # a health event
    CHANGE = "CHANGE"  # a change event near the onset


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: EvidenceKind
    detail: str
    layer: Layer | None = None
    metric: EdgeMetric | None = None
    baseline: float | None = None
    current: float | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    rank: int
    service: str
    score: float
    path: tuple[str, ...]  # from the service asked about to this one
    evidence: tuple[Evidence, ...]
    changes: tuple[ChangeEvent, ...]


@dataclass(frozen=True, slots=True)
class RootCauseReport:
    service: str
    verdict: Verdict
    candidates: tuple[Candidate, ...]
    current: TimeRange
    baseline: TimeRange
    examined: int  # services looked at (the service and its dependencies)
    failures: tuple[LayerFailure, ...]


@dataclass(slots=True)
class _Signal:
    """The worst anomaly of a set of edges, with what it consists of."""

    score: float = 0.0
    evidence: list[Evidence] = field(default_factory=list)
    edge: _Key | None = None


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%SZ")


def _surprising(errors: int, calls: int, base: CallMetrics | None) -> bool:
    """Whether ``errors`` of ``calls`` is far beyond the baseline's error ratio (z >= ``MIN_Z``; a
    baseline without errors counts as half an error, so a handful of calls is never surprising)."""
    if base is None or base.requests < MIN_CALLS:
        return True
    p = max(base.errors, 0.5) / base.requests
    expected = calls * p
    return (errors - expected) / math.sqrt(calls * p * (1.0 - p) + 1e-9) >= MIN_Z


def edge_anomaly(cur: CallMetrics, base: CallMetrics | None, th: Thresholds) -> tuple[float, list[Evidence]]:
    """How anomalous one layer's view of an edge is now against its baseline (0 = not at all)."""
    if cur.requests < MIN_CALLS:
        return 0.0, []
    score = 0.0
    found: list[Evidence] = []
    has_base = base is not None and base.requests >= MIN_CALLS
    err_now = cur.errors / cur.requests
    err_base = base.errors / base.requests if has_base and base is not None else None
    b = 0.0 if err_base is None else err_base
    excess = err_now - b
    if cur.errors >= MIN_ERRORS and _surprising(cur.errors, cur.requests, base) and (
        (err_base is None and err_now >= NO_BASELINE_ERRORS)
        or (err_base is not None and excess >= th.error_points and err_now >= th.error_factor * err_base)
    ):
        score += 10.0 * excess
        found.append(Evidence(EvidenceKind.ERRORS, "", None, EdgeMetric.ERROR_RATE, err_base, err_now))
    p_now = cur.p99
    p_base = base.p99 if has_base and base is not None else None
    m_now = cur.p50
    m_base = base.p50 if has_base and base is not None else None
    # p99 at least doubled, and the median moved too (a p99 of a few calls is noisy on its own)
    if (p_now is not None and p_base is not None and p_base > 0 and m_now is not None and m_base
            and p_now - p_base >= th.latency_absolute and p_now >= 2.0 * p_base
            and m_now >= MEDIAN_FACTOR * m_base):
        score += math.log2(p_now / p_base)
        found.append(Evidence(EvidenceKind.LATENCY, "", None, EdgeMetric.LATENCY_P99, p_base, p_now))
    return score, found


class _Edges:
    """Every edge into or out of the candidates, per layer, now and in the baseline."""

    def __init__(self) -> None:
        self.now: dict[Layer, dict[_Key, CallMetrics]] = {}
        self.base: dict[Layer, dict[_Key, CallMetrics]] = {}
        self.into: dict[str, set[_Key]] = {}
        self.out: dict[str, set[_Key]] = {}
        self._judged: dict[tuple[Layer, _Key], tuple[float, list[Evidence]]] = {}

    def add(self, layer: Layer, current: bool, answer: Sequence[tuple[EdgeKey, CallMetrics]]) -> None:
        tables = self.now if current else self.base
        pairs = [((key.source, key.target), metrics) for key, metrics in answer]
        table = dict(reversed(pairs))  # the first answer of an edge wins, here and ...
        table.update(tables.get(layer, {}))  # ... over what earlier answers gave
        tables[layer] = table
        if current:
            out, into = self.out, self.into
            for k, _ in pairs:
                s = out.get(k[0])
                if s is None:
                    s = out[k[0]] = set()
                s.add(k)
                s = into.get(k[1])
                if s is None:
                    s = into[k[1]] = set()
                s.add(k)

    def signal(self, keys: Iterable[_Key], th: Thresholds, shared: bool = False) -> tuple[_Signal, int]:
        """The worst anomaly over ``keys`` (each layer judged on its own) and how many edges show one.
        ``shared``: scaled by the share of the judged edges that show one (a failing service fails all
        its callers; one noisy edge among many is not a failing service)."""
        best = _Signal()
        anomalous = judged_edges = 0
        layers = [(layer, now, self.base.get(layer, {})) for layer in ALL_LAYERS
                  if (now := self.now.get(layer))]
        for k in sorted(keys):
            worst = 0.0
            judged_here = False
            for layer, now, base in layers:
                cur = now.get(k)
                if cur is None:
                    continue
                judged_here = judged_here or cur.requests >= MIN_CALLS
                judged = self._judged.get((layer, k))
                if judged is None:
                    judged = self._judged[(layer, k)] = edge_anomaly(cur, base.get(k), th)
                score, found = judged
                worst = max(worst, score)
                if score > best.score:
                    best = _Signal(score, [_with_layer(e, layer) for e in found], k)
            anomalous += worst > 0
            judged_edges += judged_here
        if shared and judged_edges:
            best = _Signal(best.score * anomalous / judged_edges, best.evidence, best.edge)
        return best, anomalous


def _with_layer(e: Evidence, layer: Layer) -> Evidence:
    return Evidence(e.kind, e.detail, layer, e.metric, e.baseline, e.current)


def _describe(e: Evidence, node: str, callers: int) -> Evidence:
    who = f"{callers} caller{'s' if callers != 1 else ''}"
    layer = e.layer.value if e.layer is not None else "?"
    if e.kind is EvidenceKind.ERRORS:
        base = "none measured" if e.baseline is None else f"{e.baseline:.1%}"
        text = (f"calls into {node} fail: error rate {e.current or 0.0:.1%} on {layer} (baseline {base}); "
                f"{who} see it")
    else:
        text = (f"calls into {node} are slower: p99 {1000 * (e.current or 0.0):.1f} ms on {layer} "
                f"(baseline {1000 * (e.baseline or 0.0):.1f} ms); {who} see it")
    return Evidence(e.kind, text, e.layer, e.metric, e.baseline, e.current)


async def _gather_edges(
    layer_stores: Mapping[Layer, LayerStore], layers: Sequence[Layer], names: list[str],
    granularity: Granularity, current: TimeRange, baseline: TimeRange, now: float,
) -> tuple[_Edges, list[LayerFailure]]:
    # Every call made by a candidate, and the calls into the service asked about: the calls into any
    # other candidate come from a candidate (it was reached through one) or from outside the walk,
    # whose callers see what the candidates' calls show.
    calls = [(layer, t is current, d) for layer in layers if layer in layer_stores
             for t in (baseline, current) for d in (Direction.UPSTREAM, Direction.DOWNSTREAM)]
    answers = await asyncio.gather(
        *(layer_stores[layer].call_metrics(names if d is Direction.UPSTREAM else names[:1], d, granularity,
                                           current if cur else baseline, now)
          for layer, cur, d in calls),
        return_exceptions=True,
    )
    edges = _Edges()
    failures: list[LayerFailure] = []
    for (layer, cur, _), answer in zip(calls, answers, strict=True):
        if isinstance(answer, BaseException):
            if not any(f.layer is layer for f in failures):
                failures.append(LayerFailure(layer, f"the {layer.value} layer could not answer: "
                                             f"{type(answer).__name__}", cause=answer))
            continue
        edges.add(layer, cur, answer)
    return edges, failures


async def root_cause(
    layer_stores: Mapping[Layer, LayerStore],
    catalog: CatalogStore,
    name: str,
    *,
    at: float,
    window: float,
    depth: int,
    now: float,
    layers: Iterable[Layer] | None = None,
    granularity: Granularity = Granularity.APP,
    first: int = 5,
    thresholds: Thresholds | None = None,
) -> RootCauseReport:
    """Rank the services that can explain what ``name`` suffers in ``[at - window, at)``."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    th = thresholds or Thresholds()
    current = TimeRange(at - window, at)
    baseline = TimeRange(at - window * (1 + BASELINE_WINDOWS), at - window)
    asked = tuple(layer for layer in ALL_LAYERS if layers is None or layer in set(layers))
    walk = await traverse(layer_stores, [name], Direction.UPSTREAM, depth, layers=asked,
                          granularity=granularity, time=current, now=now, with_stats=False, kept=True)
    names = [name, *(d.name for d in walk.reached)]
    via = {d.name: d.via for d in walk.reached}
    depth_of = {name: 0, **{d.name: d.depth for d in walk.reached}}
    (edges, failures), health, changes = await asyncio.gather(
        _gather_edges(layer_stores, walk.answered, names, granularity, current, baseline, now),
        catalog.health(names, at),
        catalog.changes(names, current.start - CHANGE_LOOKBACK, at, 50 * len(names)),
    )
    by_service: dict[str, list[ChangeEvent]] = {}
    for c in changes:
        by_service.setdefault(c.service, []).append(c)

    # What each candidate suffers: the worst anomaly of the calls into it, or its health event.
    symptoms: dict[str, tuple[_Signal, int, float]] = {}
    for node in names:
        signal, callers = edges.signal(edges.into.get(node, ()), th, shared=True)
        status = health.get(node)
        alert = HEALTH_SYMPTOM.get(status.status, 0.0) if status is not None else 0.0
        symptoms[node] = (signal, callers, alert)

    scored: list[tuple[float, str, list[Evidence]]] = []
    anything = False
    for node in names:
        symptom, callers, alert = symptoms[node]
        own = max(symptom.score, alert)
        # What its dependencies explain: the worst of its own calls, or of what a dependency suffers.
        explained, _ = edges.signal(edges.out.get(node, ()), th)
        deps = {k[1] for k in edges.out.get(node, ()) if k[1] in symptoms and k[1] != node}
        worst_dep = max(deps, key=lambda d: (max(symptoms[d][0].score, symptoms[d][2]), d), default=None)
        dep_score = 0.0 if worst_dep is None else max(symptoms[worst_dep][0].score, symptoms[worst_dep][2])
        if dep_score > explained.score and worst_dep is not None:
            explained = _Signal(dep_score, [], (node, worst_dep))
        anything = anything or symptom.score > 0 or explained.score > 0 or (node == name and alert > 0)
        score = max(0.0, own - explained.score)
        evidence = [_describe(e, node, callers) for e in symptom.evidence] if score > 0 else []
        status = health.get(node)
        if score > 0 and alert > 0 and status is not None:
            evidence.append(_health(node, status))
        if score > 0:
            evidence.append(_dependencies(node, explained))
        score += _change_evidence(node, by_service.get(node, []), own > 0, at, evidence)
        if score >= MIN_SCORE:
            scored.append((score, node, evidence))

    scored.sort(key=lambda s: (-s[0], depth_of[s[1]], s[1]))
    if not anything and not any(s[0] >= MIN_SCORE and s[1] == name for s in scored):
        verdict, scored = Verdict.HEALTHY, []
    elif not scored:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.LOCAL if scored[0][1] == name else Verdict.UPSTREAM
    candidates = tuple(
        Candidate(i + 1, node, round(score, 4), _path(node, via), tuple(evidence),
                  tuple(by_service.get(node, [])))
        for i, (score, node, evidence) in enumerate(scored[:first])
    )
    return RootCauseReport(name, verdict, candidates, current, baseline, len(names),
                           tuple(walk.failures) + tuple(f for f in failures if f.layer not in
                                                        {x.layer for x in walk.failures}))


def _dependencies(node: str, explained: _Signal) -> Evidence:
    if explained.score == 0 or explained.edge is None:
        return Evidence(EvidenceKind.DEPENDENCIES,
                        f"{node}'s own calls show no anomaly: nothing it depends on explains it")
    dep = explained.edge[1]
    if not explained.evidence:
        return Evidence(EvidenceKind.DEPENDENCIES, f"{dep}, which {node} calls, suffers too, but less: it "
                        "explains only part of it")
    return Evidence(EvidenceKind.DEPENDENCIES, f"{node}'s calls to {dep} are anomalous too, but less than "
                    f"the calls into {node}: they explain only part of it")


def _health(node: str, status: HealthStatus) -> Evidence:
    since = "" if status.since is None else f" since {_when(status.since)}"
    reason = f": {status.reason}" if status.reason else ""
    return Evidence(EvidenceKind.HEALTH, f"{node} is {status.status.value}{since}{reason}")


def _change_evidence(node: str, events: list[ChangeEvent], symptom: bool, at: float,
                     evidence: list[Evidence]) -> float:
    """The bonus of the change events near the onset, and their evidence (newest first)."""
    bonus = 0.0
    for e in events:
        behaviour = e.kind in BEHAVIOUR_CHANGES
        if behaviour:
            bonus = max(bonus, CHANGE_WITH_SYMPTOM if symptom else CHANGE_ALONE)
        elif symptom:
            bonus = max(bonus, OTHER_CHANGE)
        else:
            continue
        what = " ".join(x for x in (e.kind.value.lower().replace("_", " "), e.version or "") if x)
        minutes = (at - e.at) / 60.0
        desc = f" ({e.description})" if e.description else ""
        evidence.append(Evidence(EvidenceKind.CHANGE, f"{node}: {what} at {_when(e.at)}, {minutes:.0f} min "
                                 f"before the time asked about{desc}"))
    return bonus


def _path(node: str, via: Mapping[str, str]) -> tuple[str, ...]:
    out = [node]
    while out[-1] in via:
        out.append(via[out[-1]])
    return tuple(reversed(out))

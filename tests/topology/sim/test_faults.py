"""Incidents with a known root cause: effects at the root, symptoms along the call paths, the truth."""

from __future__ import annotations

from topology.catalog import HealthState
from topology.change import ChangeKind
from topology.sim import SimConfig, Simulator, generate_fleet
from topology.sim.faults import ERROR_CARRY, FaultKind

from .conftest import START, STEP

QUIET = SimConfig(churn_per_hour=0.0, edge_change_per_hour=0.0, incidents_per_app_day=0.0,
                  config_changes_per_app_day=0.0)


def sim() -> Simulator:
    return Simulator(generate_fleet(120, 5), seed=5, start=START, config=QUIET)


def test_a_failing_database_fails_its_callers_and_theirs_less() -> None:
    s = sim()
    (db, *_) = s.faults.candidates(FaultKind.FAILING_DATABASE)
    s.inject(db, FaultKind.FAILING_DATABASE, START + 15, 300.0)
    before = s.step(START, STEP)
    assert not before.change_events and all(h.status is HealthState.HEALTHY for h in before.health)
    during = s.step(START + STEP, STEP)
    (fault,) = s.incidents_so_far
    assert (fault.root, fault.kind, fault.start, fault.end) == (db, FaultKind.FAILING_DATABASE, START + 15,
                                                                 START + 315)
    w = s.world
    into_root = [e for e in w.active_edges() if e.dst == db]
    assert into_root and all(w.error_rate(e) >= 0.5 for e in into_root)
    direct = {e.src for e in into_root}
    assert direct <= set(fault.symptomatic) and fault.hops[min(direct)] == 1
    two = [n for n, h in fault.hops.items() if h == 2]
    assert two, "the candidate has callers two hops above"
    into_two = [e for e in w.active_edges() if e.dst in two]
    assert all(abs(w.error_rate(e) - e.error_rate - 0.5 * ERROR_CARRY**2) < 1e-9 for e in into_two)
    # a database has no agent and no alert of its own; a share of the symptomatic callers alerts
    degraded = {h.service for h in during.health if h.status is HealthState.DEGRADED}
    assert db not in degraded and degraded and degraded <= set(fault.symptomatic)
    assert s.truth()["incidents"] == [fault.to_dict()]
    # the incident ends: effects gone, the callers that alerted recover
    s.step(START + 30, 300.0)
    after = s.step(START + 330, STEP)
    assert all(w.error_rate(e) == e.error_rate for e in into_root)
    assert {h.service for h in after.health if h.status is HealthState.HEALTHY} == degraded


def test_a_bad_deploy_is_announced_and_a_slow_dependency_slows_its_callers() -> None:
    s = sim()
    app = s.faults.candidates(FaultKind.BAD_DEPLOY)[0]
    s.inject(app, FaultKind.BAD_DEPLOY, START, 600.0)
    em = s.step(START, STEP)
    (deploy,) = em.change_events
    assert (deploy.service, deploy.kind, deploy.at) == (app, ChangeKind.DEPLOY, START)
    assert any(h.service == app and h.status is not HealthState.HEALTHY for h in em.health)
    slow = s.faults.candidates(FaultKind.SLOW_DEPENDENCY)[-1]
    s.inject(slow, FaultKind.SLOW_DEPENDENCY, START + STEP, 600.0)
    s.step(START + STEP, STEP)
    w = s.world
    into = [e for e in w.active_edges() if e.dst == slow]
    assert into and all(abs(w.latency(e) - 8 * e.latency) < 1e-12 for e in into)
    fault = s.incidents_so_far[-1]
    callers = [e for e in w.active_edges() if fault.hops.get(e.dst) == 1]
    assert callers and all(w.latency(e) > e.latency for e in callers)


def test_random_faults_have_every_kind_and_deep_roots() -> None:
    s = Simulator(generate_fleet(200, 9), seed=9, start=START,
                  config=SimConfig(churn_per_hour=0.0, edge_change_per_hour=0.0, incidents_per_app_day=0.0,
                                   faults_per_hour=40.0))
    for i in range(60):
        s.step(START + i * 60.0, 60.0)
    faults = s.incidents_so_far
    assert {f.kind for f in faults} == set(FaultKind)
    assert all(max(f.hops.values()) >= 2 for f in faults)

"""Change events of the simulated fleet: one for every redeploy, config changes now and then."""

from __future__ import annotations

from topology.change import ChangeKind
from topology.sim import SimConfig

from .conftest import BUSY, Run, simulate


def test_every_redeploy_is_reported_at_its_time(run: Run) -> None:
    events = [e for em in run.steps for e in em.change_events]
    redeploys = run.sim.redeploys
    assert redeploys, "the busy run redeploys"
    reported = [e for e in events if e.kind in (ChangeKind.DEPLOY, ChangeKind.INFRA)]
    assert [(e.service, e.at) for e in reported] == [(r.app, r.at) for r in redeploys]
    for r, e in zip(redeploys, reported, strict=True):
        if r.version is None:  # one instance replaced: where it runs changed, not what it runs
            assert e.kind is ChangeKind.INFRA and r.old in (e.description or "")
        else:
            assert e.kind is ChangeKind.DEPLOY and e.version == f"v{r.version:03d}"
            assert r.new in (e.description or "") and r.new.endswith(e.version)
    assert {ChangeKind.DEPLOY, ChangeKind.INFRA} <= {e.kind for e in reported}


def test_each_event_is_emitted_in_the_step_it_happens() -> None:
    run = simulate(steps=20)
    for em in run.steps:
        assert all(em.start <= e.at < em.end for e in em.change_events)
    assert all(not em.change_events for em in [run.initial])


def test_config_changes_come_at_their_rate() -> None:
    cfg = SimConfig(churn_per_hour=0.0, edge_change_per_hour=0.0, incidents_per_app_day=0.0,
                    config_changes_per_app_day=200.0)
    run = simulate(services=60, steps=30, config=cfg)
    events = [e for em in run.steps for e in em.change_events]
    apps = len(run.sim.fleet.apps)
    expected = apps * 200.0 * 300.0 / 86400.0  # 30 steps of 10 s
    assert 0.6 * expected <= len(events) <= 1.4 * expected
    assert {e.kind for e in events} == {ChangeKind.CONFIG, ChangeKind.FEATURE_FLAG}
    assert all(e.service in run.sim.fleet.apps and e.description for e in events)


def test_change_events_leave_the_rest_of_the_simulation_as_it_was() -> None:
    """The config-change stream has a random generator of its own: turning it off changes no traffic."""
    quiet = SimConfig(churn_per_hour=BUSY.churn_per_hour, edge_change_per_hour=BUSY.edge_change_per_hour,
                      incidents_per_app_day=BUSY.incidents_per_app_day, trace_ratio=BUSY.trace_ratio,
                      config_changes_per_app_day=0.0)
    a, b = simulate(steps=10), simulate(steps=10, config=quiet)
    assert [em.flow_batches for em in a.steps] == [em.flow_batches for em in b.steps]
    assert a.sim.truth() == b.sim.truth()

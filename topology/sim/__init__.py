"""Deterministic fleet simulator: realistic fleets, their traffic in the real wire formats, and the
ground truth each layer should observe. Pure library (no I/O, no clock, no global random state);
the CLI and the transports live in ``service/``.

    fleet = generate_fleet(services=1000, seed=42)          # Fleet (plain data, never mutated)
    sim = Simulator(fleet, seed=42, start=t0)               # config=SimConfig(...) optional
    first = sim.initial_records()                           # Emission: catalog, leases, health at t0
    em = sim.step(t0, 10.0)                                 # Emission: traffic of [t0, t0 + 10)
    em = sim.step(t0 + 10.0, 10.0)                          # steps move forward; gaps allowed
    sim.truth()                                             # {"layers": {...}, "unified": [...]}
    sim.truth(since, until)                                 # pairs seen in minute windows overlapping it
    sim.ownership_at("10.0.3.7", t)                         # AddressLease | None

An :class:`Emission` carries ``flow_batches`` (flow wire format v1, one batch per host agent),
``metrics`` (serialized ``ExportMetricsServiceRequest``), ``spans`` (serialized
``ExportTraceServiceRequest``), ``catalog`` (ServiceInfo), ``health`` (HealthEvent), ``leases``
(AddressLease: new ones, and ended ones re-sent with ``end`` set, same ip and start) and
``change_events`` (ChangeEvent: a DEPLOY for every new version, INFRA for every replaced instance,
CONFIG and FEATURE_FLAG changes now and then). Apply an
emission's leases and catalog before its payloads: a redeploy at the start of a step leases the
addresses its flows already use.

What is emitted follows the observation contract in the brief; the truth is recorded from the
simulator's own knowledge as it emits (see :mod:`topology.sim.truth`):

* NETWORK: both ends of app-to-app connections; clients of a load balancer / API gateway / proxy
  point at its address and so do the backends (each fronts one app); behind a NAT gateway the
  client points at the backend and the backend sees the NAT. Databases, managed brokers and external
  hosts have no agent (client records only). Producers and consumers both connect to brokers.
* IPC: per-cluster resources exported every 10/30/60 s: Spectator (histograms cumulative, or
  ``statistic`` Sum/Gauge points delta; some apps also ``ipc.server.call`` naming the client), OTel old
  (ms) and new (s) conventions naming the target by peer name, DNS name or an instance address.
* TRACE: ~1 % of requests; roots in edge gateways and in instrumented apps called by uninstrumented
  ones; uninstrumented apps emit nothing and are named by their callers.
"""

from topology.sim.churn import EdgeChange, Redeploy
from topology.sim.fleet import (
    App,
    CallKind,
    Cluster,
    Edge,
    Fleet,
    Instance,
    Intermediary,
    Naming,
    Role,
    Sink,
    Style,
    Team,
)
from topology.sim.generator import generate_fleet
from topology.sim.simulator import Emission, SimConfig, Simulator
from topology.sim.spans import USER, virtual_peer

__all__ = [
    "USER",
    "App",
    "CallKind",
    "Cluster",
    "Edge",
    "EdgeChange",
    "Emission",
    "Fleet",
    "Instance",
    "Intermediary",
    "Naming",
    "Redeploy",
    "Role",
    "SimConfig",
    "Simulator",
    "Sink",
    "Style",
    "Team",
    "generate_fleet",
    "virtual_peer",
]

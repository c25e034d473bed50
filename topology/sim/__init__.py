"""Deterministic fleet simulator: realistic fleets, their traffic in the real wire formats, and the
ground truth each layer should observe. Pure library (no I/O); the CLI and transports live in
``service/``.
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
    generate_fleet,
)
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

"""The NETWORK layer's stages: stage 1 (windowed pre-aggregation) and stage 2 (address resolution and
intermediary collapse). Stage 3 is the layer-agnostic :mod:`topology.stages.final`.

    FlowBatch --NetworkStage1 (10 s)--> FlowAggregate --NetworkStage2 (60 s)--> EdgePartial

The implementations live in :mod:`topology.stages.network_stage1` and
:mod:`topology.stages.network_stage2`; cloud flow logs (read by :mod:`topology.wire.vpcflow`) are
turned into :class:`FlowAggregate` records directly by :mod:`topology.stages.vpc`.
"""

from __future__ import annotations

from topology.stages.network_stage1 import FlowAggregate, FlowAggregates, NetworkStage1, protocol_name
from topology.stages.network_stage2 import NetworkStage2

__all__ = ["FlowAggregate", "FlowAggregates", "NetworkStage1", "NetworkStage2", "protocol_name"]

"""Pipeline stages. Pure: records in, records out, the clock (watermark) passed in.

* NETWORK: :mod:`topology.stages.network` (stage 1 pre-aggregation, stage 2 resolution/collapse)
* IPC: :mod:`topology.stages.ipc`
* TRACE: :mod:`topology.stages.trace`
* every layer, stage 3: :mod:`topology.stages.final` (merge sides, lateness, edge health)

Every stage class has ``counters: dict[str, int]`` (records seen, rejected, late, dropped...).
"""

"""Runs a NETWORK golden scenario (``golden/<name>.input.json``) through stages 1, 2 and 3.

Input file::

    {"description": "...", "t0": 1700000040,          # every time below is seconds after t0
     "leases": [AddressLease dicts], "health": [HealthEvent dicts],
     "steps": [{"flows": [{"host": "h", "records": [flowdata record, ...]}],
                "vpc": ["flow-log line with {5} for t0+5", ...],
                "flush": 60}]}

Output (``golden/<name>.expected.json``): per step the watermark and the EdgeWindow dicts emitted
(sorted), then every stage's counters. Aggregates cross a JSON round trip between stage 1 and 2,
as they do on the Kafka repartition topic.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from topology.address import AddressBook
from topology.catalog import AddressLease, HealthEvent
from topology.health import HealthBook
from topology.stages.final import FinalStage
from topology.stages.network import FlowAggregate, NetworkStage1, NetworkStage2
from topology.stages.vpc import VpcStage
from topology.wire.flow import decode
from topology.wire.vpcflow import VpcFlowParser

from .flowdata import encode_records

GOLDEN = Path(__file__).parent / "golden"
_PLACEHOLDER = re.compile(r"\{(-?\d+)\}")


def _shift(d: dict[str, Any], t0: float, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: (v + t0 if k in keys and v is not None else v) for k, v in d.items()}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    t0 = spec["t0"]
    leases = [AddressLease.from_dict(_shift(d, t0, ("start", "end"))) for d in spec.get("leases", [])]
    book = AddressBook(leases)
    health = HealthBook(HealthEvent.from_dict(_shift(d, t0, ("at",))) for d in spec.get("health", []))
    s1, s2 = NetworkStage1(window_seconds=10), NetworkStage2(book, window_seconds=60, grace_seconds=120)
    s3 = FinalStage(window_seconds=60, grace_seconds=120, health=health)
    vpc, vpc_stage = VpcFlowParser(), VpcStage()
    steps: list[dict[str, Any]] = []
    vpc_errors: list[list[Any]] = []
    for step in spec["steps"]:
        for b in step.get("flows", []):
            records = [_shift(r, t0, ("start", "end")) for r in b["records"]]
            s1.add(decode(encode_records(records, host=b.get("host", "host-1"),
                                         strings=b.get("strings", ("",)))))
        wm = t0 + step["flush"]
        aggs = [FlowAggregate.from_dict(json.loads(json.dumps(a.to_dict()))) for a in s1.flush(wm)]
        if step.get("vpc"):
            lines = [_PLACEHOLDER.sub(lambda m: str(t0 + int(m.group(1))), x) for x in step["vpc"]]
            records, errors = vpc.parse_lines(lines)
            vpc_errors.extend([n, reason] for n, _, reason in errors)
            aggs.extend(vpc_stage.aggregate(records, window_seconds=10))
        s2.add(aggs)
        s3.add(s2.flush(wm))
        windows = sorted((w.to_dict() for w in s3.flush(wm)),
                         key=lambda d: (d["window_start"], d["granularity"], d["source"], d["target"]))
        steps.append({"flush": wm, "windows": windows})
    out: dict[str, Any] = {"steps": steps}
    if vpc_errors:
        out["vpc_errors"] = vpc_errors
    out["counters"] = {"stage1": s1.counters, "stage2": s2.counters, "final": s3.counters}
    if spec["steps"] and any(s.get("vpc") for s in spec["steps"]):
        out["counters"]["vpc"] = {**vpc.counters, **vpc_stage.counters}
    return out


def edges(out: dict[str, Any], granularity: str = "APP") -> dict[tuple[int, str, str], dict[str, Any]]:
    """The last emission of each (window, source, target) at ``granularity``."""
    got: dict[tuple[int, str, str], dict[str, Any]] = {}
    for step in out["steps"]:
        for w in step["windows"]:
            if w["granularity"] == granularity:
                got[(w["window_start"], w["source"], w["target"])] = w
    return got

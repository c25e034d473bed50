"""The edges each system found, and how they score against the simulator's TRACE truth.

The Collector's servicegraph connector reports an edge as the counter ``traces_service_graph_request_total``
with the attributes ``client`` and ``server`` (and ``connection_type``, ``failed`` and any configured
dimensions, which split one edge into several series). The file exporter writes each flush as one line of
OTLP/JSON (an ``ExportMetricsServiceRequest``); the counters are cumulative, so a series' last value is its
total. A series that the connector dropped from its cache and created again starts anew (a new
``startTimeUnixNano``): those totals add up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Pair = tuple[str, str]

REQUESTS = "traces_service_graph_request_total"


def _attributes(point: Mapping[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in point.get("attributes", ()) or ():  # type: ignore[attr-defined]
        value = kv.get("value", {})
        out[kv["key"]] = str(next(iter(value.values()), "")) if value else ""
    return out


def collector_edges(lines: Iterable[str]) -> dict[Pair, int]:
    """Requests per (client, server) from the file exporter's OTLP/JSON lines of the connector's metrics.

    Per series (all its attributes and its start time) the largest cumulative value counts; the series of
    one (client, server) are summed. Lines that are blank or cut short (the file is read while the Collector
    may still write) are skipped.
    """
    last: dict[tuple[tuple[tuple[str, str], ...], str], int] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            continue
        for rm in request.get("resourceMetrics", ()):
            for sm in rm.get("scopeMetrics", ()):
                for metric in sm.get("metrics", ()):
                    if metric.get("name") != REQUESTS:
                        continue
                    for point in metric.get("sum", {}).get("dataPoints", ()):
                        attrs = _attributes(point)
                        key = (tuple(sorted(attrs.items())), str(point.get("startTimeUnixNano", "")))
                        value = int(point.get("asInt", point.get("asDouble", 0)))
                        last[key] = max(value, last.get(key, 0))
    edges: dict[Pair, int] = {}
    for (series, _), value in last.items():
        labels = dict(series)
        pair = (labels.get("client", ""), labels.get("server", ""))
        edges[pair] = edges.get(pair, 0) + value
    return edges


@dataclass(frozen=True)
class Score:
    truth: int
    found: int
    hits: int

    @property
    def recall(self) -> float:
        return self.hits / self.truth if self.truth else 1.0

    @property
    def precision(self) -> float:
        return self.hits / self.found if self.found else 1.0


def score(found: Iterable[Pair], truth: Iterable[Pair]) -> Score:
    """Recall and precision of the ``found`` edges against the ``truth`` edges."""
    f, t = set(found), set(truth)
    return Score(truth=len(t), found=len(f), hits=len(f & t))


def counts_agree(a: Mapping[Pair, int], b: Mapping[Pair, int]) -> tuple[int, int]:
    """(edges both found, of those how many with the same request count)."""
    common = a.keys() & b.keys()
    return len(common), sum(1 for p in common if a[p] == b[p])

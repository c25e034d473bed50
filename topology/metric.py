"""The edge metrics the incident questions compare, and when a change in one counts.

``REQUEST_RATE`` is requests per second over the window (connections per second for a layer that
counts no requests, such as NETWORK); ``ERROR_RATE`` errors / requests (0..1); ``LATENCY_P99`` the
99th percentile latency in seconds. :class:`Thresholds` says when a metric *moved* between two
windows; the defaults are documented in the README (under the ``diff`` example) and are deliberately coarse:
a diff lists what an engineer should look at, not noise.

=============  ================================================================================
metric         moved when (both windows need ``min_requests`` requests, else it is not judged)
=============  ================================================================================
request rate   it at least doubled or halved, and by 0.1/s or more
error rate     it changed by at least 2 percentage points and at least doubled (or halved)
latency p99    it at least doubled or halved, and by 5 ms or more
=============  ================================================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from topology.stats import EdgeStats

__all__ = ["CallMetrics", "EdgeMetric", "Thresholds", "metric_value"]


class EdgeMetric(enum.StrEnum):
    REQUEST_RATE = "REQUEST_RATE"
    ERROR_RATE = "ERROR_RATE"
    LATENCY_P99 = "LATENCY_P99"


def _volume(s: EdgeStats) -> int:
    return s.requests or s.connections


def metric_value(s: EdgeStats, metric: EdgeMetric, seconds: float) -> float | None:
    """The metric of ``s`` (a window of ``seconds``); None when the layer does not measure it."""
    if metric is EdgeMetric.REQUEST_RATE:
        return _volume(s) / seconds if seconds > 0 and _volume(s) else None
    if metric is EdgeMetric.ERROR_RATE:
        return s.error_rate
    return s.latency_quantile(0.99)


@dataclass(frozen=True, slots=True)
class CallMetrics:
    """What an edge's calls did in a range, reduced to what the root-cause ranking judges: requests,
    errors and the latency median and p99 in seconds (None when unmeasured), exactly as the merged
    :class:`EdgeStats` of the range would give them."""

    requests: int = 0
    errors: int = 0
    p50: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, s: EdgeStats) -> CallMetrics:
        return cls(s.requests, s.errors, s.latency_quantile(0.5), s.latency_quantile(0.99))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a metric moved between two windows (see the module docstring)."""

    min_requests: int = 20
    rate_relative: float = 0.5
    rate_absolute: float = 0.1  # per second
    error_points: float = 0.02  # error-rate change, absolute (2 percentage points)
    error_factor: float = 2.0
    latency_relative: float = 0.5
    latency_absolute: float = 0.005  # seconds

    def moved(self, metric: EdgeMetric, before: EdgeStats, after: EdgeStats, seconds: float) -> bool:
        if min(_volume(before), _volume(after)) < self.min_requests:
            return False
        b, a = metric_value(before, metric, seconds), metric_value(after, metric, seconds)
        if b is None or a is None:
            return False
        delta = abs(a - b)
        if metric is EdgeMetric.REQUEST_RATE:
            return delta >= self.rate_relative * max(a, b) and delta >= self.rate_absolute
        if metric is EdgeMetric.ERROR_RATE:
            lo, hi = min(a, b), max(a, b)
            return delta >= self.error_points and hi >= self.error_factor * lo
        return delta >= self.latency_relative * max(a, b) and delta >= self.latency_absolute

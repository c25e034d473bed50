"""How the embedded store writes an :class:`EdgeStats` into one SQLite column."""

from __future__ import annotations

import json

from topology.stats import EdgeStats


def encode(stats: EdgeStats) -> bytes:
    return json.dumps(stats.to_dict(), separators=(",", ":")).encode()


def decode(blob: bytes) -> EdgeStats:
    return EdgeStats.from_dict(json.loads(blob))

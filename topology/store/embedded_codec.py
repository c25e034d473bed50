"""How the embedded store writes an :class:`EdgeStats` into one SQLite column, and merges many at once.

Format ``CODEC`` (recorded in each database's ``meta`` table): a :mod:`marshal` dump of a fixed
16-tuple of the fields in declaration order, with the latency histogram trimmed to
``(first non-zero bucket, counts up to the last non-zero bucket)`` (None when unmeasured). Only
``None``, ``int``, ``float``, ``str`` and tuples of them are written, so it reads back exactly (and
~5-10x faster than JSON, at 40% of its size). marshal's encoding of these basic types has not
changed since Python 3.4; the ``meta`` entry lets a future format be told apart.
"""

from __future__ import annotations

import marshal
from collections.abc import Sequence
from typing import Any, TypeVar

from topology.stats import MAX_ENDPOINTS, MAX_EXEMPLARS, MAX_INTERMEDIARIES, MAX_PORTS, N_BUCKETS, EdgeStats

CODEC = "marshal-tuple-2"
T = TypeVar("T")

_SMALL_TUPLE = ord(")")  # marshal's type code of a small tuple (its high bit flags a shared reference)
_HEALTH_ORDER = {"UNKNOWN": 0, "HEALTHY": 1, "DEGRADED": 2, "UNHEALTHY": 3}


def _strs(t: tuple[str, ...]) -> tuple[str, ...]:
    return t if all(type(x) is str for x in t) else tuple(str(x) for x in t)


def _ints(t: tuple[int, ...]) -> tuple[int, ...]:
    return t if all(type(x) is int for x in t) else tuple(int(x) for x in t)


def trim_histogram(lat: tuple[int, ...]) -> tuple[int, tuple[int, ...]] | None:
    """A histogram as (first non-zero bucket, counts up to the last non-zero one); None if unmeasured."""
    n = len(lat)
    if not n:
        return None
    lo = 0
    while lo < n and not lat[lo]:
        lo += 1
    hi = n
    while hi > lo and not lat[hi - 1]:
        hi -= 1
    return lo, _ints(lat[lo:hi])


def full_histogram(trimmed: tuple[int, tuple[int, ...]] | None) -> tuple[int, ...]:
    if trimmed is None:
        return ()
    lo, counts = trimmed
    hist = [0] * N_BUCKETS
    hist[lo : lo + len(counts)] = counts
    return tuple(hist)


def encode(s: EdgeStats) -> bytes:
    return marshal.dumps(
        (
            float(s.first_seen),
            float(s.last_seen),
            None if s.protocol is None else str(s.protocol),
            _ints(s.ports),
            int(s.connections),
            int(s.bytes_sent),
            int(s.bytes_received),
            _strs(s.intermediaries),
            int(s.requests),
            int(s.errors),
            trim_histogram(s.latency),
            float(s.latency_sum),
            _strs(s.endpoints),
            _strs(s.exemplars),
            None if s.connection_type is None else str(s.connection_type),
            str(s.health),
        )
    )


def decode_fields(blob: bytes) -> tuple[Any, ...]:
    """The stored 16-tuple, histogram still trimmed (for readers that want columns, not objects)."""
    if len(blob) < 2 or blob[0] & 0x7F != _SMALL_TUPLE or blob[1] != 16:
        raise ValueError("corrupt stats record: not a stored stats tuple")
    try:
        fields = marshal.loads(blob)
    except (EOFError, ValueError, TypeError) as e:
        raise ValueError(f"corrupt stats record: {e}") from e
    if type(fields) is not tuple or len(fields) != 16:
        raise ValueError("corrupt stats record: not a stored stats tuple")
    return fields


def decode(blob: bytes) -> EdgeStats:
    f = decode_fields(blob)
    try:
        return EdgeStats(
            f[0],
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            full_histogram(f[10]),
            f[11],
            f[12],
            f[13],
            f[14],
            f[15],
        )
    except (TypeError, ValueError, IndexError) as e:
        raise ValueError(f"corrupt stats record: {e}") from e


def _union(parts: list[tuple[T, ...]], limit: int) -> tuple[T, ...]:
    """What folding ``_bounded_union`` over ``parts`` gives: a lone non-empty part as it is, else the
    sorted union cut to ``limit``."""
    nonempty = [p for p in parts if p]
    if not nonempty:
        return ()
    if len(nonempty) == 1:
        return nonempty[0]
    found: set[T] = set()
    for p in nonempty:
        found.update(p)
    return tuple(sorted(found)[:limit])  # type: ignore[type-var]


def merge_all(items: Sequence[EdgeStats]) -> EdgeStats:
    """The same as ``items[0].merge(items[1]).merge(items[2])...``, in one pass."""
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return items[0].merge(items[1])
    firsts = [s.first_seen for s in items if s.first_seen]
    lats = [s.latency for s in items if s.latency]
    if not lats:
        latency: tuple[int, ...] = ()
    elif len(lats) == 1:
        latency = lats[0]
    else:
        latency = tuple(map(sum, zip(*lats, strict=True)))
    health = max((s.health for s in items), key=lambda h: _HEALTH_ORDER.get(h, 0))  # the first of the worst
    return EdgeStats(
        first_seen=min(firsts) if firsts else 0.0,
        last_seen=max(s.last_seen for s in items),
        protocol=next((s.protocol for s in items if s.protocol), items[-1].protocol),
        ports=_union([s.ports for s in items], MAX_PORTS),
        connections=sum(s.connections for s in items),
        bytes_sent=sum(s.bytes_sent for s in items),
        bytes_received=sum(s.bytes_received for s in items),
        intermediaries=_union([s.intermediaries for s in items], MAX_INTERMEDIARIES),
        requests=sum(s.requests for s in items),
        errors=sum(s.errors for s in items),
        latency=latency,
        latency_sum=sum(s.latency_sum for s in items),
        endpoints=_union([s.endpoints for s in items], MAX_ENDPOINTS),
        exemplars=_union([s.exemplars for s in items], MAX_EXEMPLARS),
        connection_type=next(
            (s.connection_type for s in items if s.connection_type), items[-1].connection_type
        ),
        health=health,
    )


def merge_fields(items: Sequence[tuple[Any, ...]]) -> EdgeStats:
    """:func:`merge_all` of stored tuples (``decode_fields``), without building each EdgeStats."""
    if len(items) == 1:
        f = items[0]
        return EdgeStats(
            f[0],
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            full_histogram(f[10]),
            f[11],
            f[12],
            f[13],
            f[14],
            f[15],
        )
    (
        first,
        last,
        protocol,
        ports,
        conns,
        sent,
        received,
        inter,
        requests,
        errors,
        lats,
        lat_sum,
        endpoints,
        exemplars,
        ctype,
        health,
    ) = zip(*items, strict=True)
    firsts = [t for t in first if t]
    measured = [t for t in lats if t is not None]
    if not measured:
        latency: tuple[int, ...] = ()
    elif len(measured) == 1:
        latency = full_histogram(measured[0])
    else:
        hist = [0] * N_BUCKETS
        for lo, counts in measured:
            for j, c in enumerate(counts, lo):
                hist[j] += c
        latency = tuple(hist)
    return EdgeStats(
        first_seen=min(firsts) if firsts else 0.0,
        last_seen=max(last),
        protocol=next((p for p in protocol if p), protocol[-1]),
        ports=_union(list(ports), MAX_PORTS),
        connections=sum(conns),
        bytes_sent=sum(sent),
        bytes_received=sum(received),
        intermediaries=_union(list(inter), MAX_INTERMEDIARIES),
        requests=sum(requests),
        errors=sum(errors),
        latency=latency,
        latency_sum=sum(lat_sum),
        endpoints=_union(list(endpoints), MAX_ENDPOINTS),
        exemplars=_union(list(exemplars), MAX_EXEMPLARS),
        connection_type=next((c for c in ctype if c), ctype[-1]),
        health=max(health, key=lambda h: _HEALTH_ORDER.get(h, 0)),
    )

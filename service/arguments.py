"""Checking query arguments (limits, time ranges, layers) and encoding opaque Relay cursors.

Every problem raises :class:`~service.errors.BadUserInput` naming the argument.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar

from service.config import ServiceConfig
from service.errors import BadUserInput
from service.moment import epoch
from topology.model import Layer
from topology.timewindow import TimeRange

__all__ = [
    "check_depth",
    "check_first",
    "check_layers",
    "decode_cursor",
    "encode_cursor",
    "time_bounds",
    "time_range",
    "to_set",
]


def check_depth(depth: int, config: ServiceConfig) -> int:
    if not 1 <= depth <= config.max_depth:
        raise BadUserInput(f"depth must be between 1 and {config.max_depth}, got {depth}", "depth")
    return depth


def check_first(first: int | None, config: ServiceConfig) -> int:
    if first is None:
        return config.default_page
    if not 0 <= first <= config.max_page:
        raise BadUserInput(f"first must be between 0 and {config.max_page}, got {first}", "first")
    return first


def check_layers(layers: Sequence[Layer] | None) -> tuple[Layer, ...] | None:
    """None = every layer; an empty list is a mistake, not a request for nothing."""
    if layers is None:
        return None
    if not layers:
        raise BadUserInput("layers must name at least one layer (leave it out for all layers)", "layers")
    return tuple(dict.fromkeys(layers))


_V = TypeVar("_V", int, str)


def to_set(values: Iterable[_V] | None, argument: str) -> frozenset[_V] | None:
    """A filter's values; None = no filter. An empty list is a mistake, not a filter matching nothing."""
    if values is None:
        return None
    out = frozenset(values)
    if not out:
        raise BadUserInput(f"{argument} must not be an empty list (leave it out for no filter)", argument)
    return out


def time_range(
    at: datetime | None, window: float | None, now: float, config: ServiceConfig
) -> tuple[TimeRange, float]:
    """The range ``[at - window, at)`` (defaults: now, the live window) and ``at`` in epoch seconds."""
    end = now if at is None else epoch(at, now)
    seconds = config.live_window if window is None else float(window)
    if not 0 < seconds <= config.max_window:
        raise BadUserInput(
            f"window must be positive and at most {config.max_window:g} seconds, got {seconds:g}", "window"
        )
    if end > now + config.max_window:
        raise BadUserInput("at is too far in the future", "at")
    return TimeRange.ending_at(end, seconds), end


def time_bounds(
    start: datetime | None, end: datetime | None, now: float, default_span: float, config: ServiceConfig
) -> tuple[float, float]:
    """``[from, to]`` in epoch seconds: ``to`` defaults to now, ``from`` to ``default_span`` before ``to``."""
    hi = now if end is None else epoch(end, now)
    lo = hi - default_span if start is None else epoch(start, now)
    if hi > now + config.max_window:
        raise BadUserInput("to is too far in the future", "to")
    if lo > hi:
        raise BadUserInput("from must not be after to", "from")
    return lo, hi


_CURSOR_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder for all cursors (made once)


def encode_cursor(kind: str, *parts: str | int) -> str:
    raw = _CURSOR_JSON.encode([kind, *parts]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, types: Sequence[type]) -> tuple[str | int, ...]:
    """The parts of a cursor made by :func:`encode_cursor` with the same ``kind``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadUserInput("after is not a cursor this API gave out", "after") from None
    if (
        not isinstance(value, list)
        or len(value) != len(types) + 1
        or value[0] != kind
        or not all(
            isinstance(v, t) and not isinstance(v, bool) for v, t in zip(value[1:], types, strict=True)
        )
    ):
        raise BadUserInput("after is a cursor of another list", "after")
    return tuple(value[1:])

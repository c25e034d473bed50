"""OTLP payloads inside repartition records: ``{"otlp": <base64 of the serialized request>}``, and,
when the stage that wrote it knew them, ``"t"`` (its latest time, epoch nanoseconds) and ``"n"`` (the
records in it): the next stage orders it in event time without parsing it first."""

from __future__ import annotations

import base64
import binascii
from typing import Any


def item(data: bytes, latest_ns: int | None = None, records: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"otlp": base64.b64encode(data).decode("ascii")}
    if latest_ns is not None and records is not None:
        d["t"], d["n"] = latest_ns, records
    return d


def timing(d: Any) -> tuple[int, int] | None:
    """(latest time in ns, records) of an item that carries them, else None."""
    t, n = (d.get("t"), d.get("n")) if isinstance(d, dict) else (None, None)
    if isinstance(t, int) and isinstance(n, int) and not isinstance(t, bool) and not isinstance(n, bool):
        return t, n
    return None


def payload(d: Any) -> bytes:
    """The serialized request of one item; ValueError if the item is not one."""
    if not isinstance(d, dict) or not isinstance(d.get("otlp"), str):
        raise ValueError("repartitioned OTLP item needs a base64 string 'otlp'")
    try:
        return base64.b64decode(d["otlp"], validate=True)
    except binascii.Error as e:
        raise ValueError(f"repartitioned OTLP item is not base64: {e}") from None

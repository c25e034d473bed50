"""OTLP payloads inside repartition records: ``{"otlp": <base64 of the serialized request>}``."""

from __future__ import annotations

import base64
import binascii
from typing import Any


def item(data: bytes) -> dict[str, Any]:
    return {"otlp": base64.b64encode(data).decode("ascii")}


def payload(d: Any) -> bytes:
    """The serialized request of one item; ValueError if the item is not one."""
    if not isinstance(d, dict) or not isinstance(d.get("otlp"), str):
        raise ValueError("repartitioned OTLP item needs a base64 string 'otlp'")
    try:
        return base64.b64decode(d["otlp"], validate=True)
    except binascii.Error as e:
        raise ValueError(f"repartitioned OTLP item is not base64: {e}") from None

"""What the workers write to Kafka besides the input formats: repartition batches, ticks, dead letters.

* A repartition record holds a JSON list of items (the stage's ``to_dict`` records), headers
  ``st.src`` (the upstream input partition the items come from) and ``st.now`` (its clock).
* A tick record (header ``st.tick``) has a JSON object ``{source: clock}``: how far each upstream
  partition of one worker has got, sent to every partition of the repartition topic so the next
  stage can close windows even when no items came its way.
* A dead letter (topic ``topology.dlq``) is a JSON envelope with the reason and where the record came
  from, and the rejected bytes in base64; the same facts are in headers ``dlq.*`` for tools that
  only look at headers.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

H_SOURCE = "st.src"
H_NOW = "st.now"
H_TICK = "st.tick"
H_FORMAT = "st.format"
FORMAT_JSON = b"json1"

Headers = list[tuple[str, bytes]]


class EnvelopeError(ValueError):
    """A repartition record does not parse."""


def batch_record(items: Sequence[dict[str, Any] | list[Any]], source: str,
                 now: float) -> tuple[bytes, Headers]:
    value = json.dumps(items, separators=(",", ":")).encode()
    return value, [(H_FORMAT, FORMAT_JSON), (H_SOURCE, source.encode()), (H_NOW, repr(now).encode())]


def tick_record(clocks: dict[str, float]) -> tuple[bytes, Headers]:
    return json.dumps(clocks, separators=(",", ":")).encode(), [(H_TICK, b"1")]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A parsed repartition record: items (None for a tick) and the clocks it carries."""

    items: list[Any] | None
    clocks: dict[str, float]


def parse(value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> Incoming:
    h = dict(headers or ())
    try:
        if H_TICK in h:
            raw = json.loads(value or b"{}")
            if not isinstance(raw, dict):
                raise EnvelopeError("tick record is not a JSON object")
            return Incoming(None, {str(k): float(v) for k, v in raw.items()})
        if h.get(H_FORMAT) != FORMAT_JSON:
            raise EnvelopeError(f"unknown repartition format {h.get(H_FORMAT)!r}")
        items = json.loads(value or b"")
        if not isinstance(items, list):
            raise EnvelopeError("repartition record is not a JSON list")
        clocks = {}
        if H_SOURCE in h and H_NOW in h:
            clocks[h[H_SOURCE].decode()] = float(h[H_NOW])
        return Incoming(items, clocks)
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, EnvelopeError):
            raise
        raise EnvelopeError(f"repartition record does not parse: {e}") from e


def dead_letter(reason: str, *, topic: str, partition: int, offset: int, timestamp_ms: int | None,
                key: bytes | None, payload: bytes | None, layer: str, stage: int, worker: str,
                at: float | None = None) -> tuple[bytes, Headers]:
    """Value and headers of one ``topology.dlq`` record."""
    env = {
        "reason": reason,
        "source": {"topic": topic, "partition": partition, "offset": offset, "timestamp_ms": timestamp_ms,
                   "key_b64": None if key is None else base64.b64encode(key).decode()},
        "layer": layer,
        "stage": stage,
        "worker": worker,
        "at": time.time() if at is None else at,
        "payload_b64": base64.b64encode(payload or b"").decode(),
    }
    headers = [("dlq.topic", topic.encode()), ("dlq.partition", str(partition).encode()),
               ("dlq.offset", str(offset).encode()), ("dlq.reason", reason.encode()[:1000]),
               ("dlq.layer", layer.encode()), ("dlq.stage", str(stage).encode())]
    return json.dumps(env).encode(), headers

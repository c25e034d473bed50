"""OTLP trace requests decoded natively: one pass, in Rust (``topology/wire/native/spans``: prost
decodes the compact schema of :func:`topology.wire.otlp.spans_view`, pyo3 binds it).

:func:`decode` gives a :class:`~topology.wire._spans.Batch`: the decoded request, which the TRACE stage's
native pairer takes as it is, and whose :func:`columns` numpy reads without copying (fixed-width ids,
times, kinds, status codes, resource and scope indexes per span). It accepts and rejects exactly what
:func:`topology.wire.otlp.decode_spans` does, with the same reasons (:class:`OtlpDecodeError`,
:class:`OtlpSchemaError`); :func:`decode_unchecked` is :func:`~topology.wire.otlp.spans_view`'s
counterpart (ids not checked: the pairer counts bad ones).

:data:`native` is the extension module, or None where it was not built (then the callers use the
Python decoders; :func:`available` logs that once).
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from topology.wire.otlp import JSON, PROTOBUF, OtlpDecodeError, OtlpSchemaError, decode_traces, spans_view

try:
    from topology.wire import _spans

    native: ModuleType | None = _spans if _spans.LAYOUT == 2 else None
    _why = "" if native is not None else f"it has layout {_spans.LAYOUT}, this code reads 2"
except ImportError as e:  # not built (a source checkout without Rust)
    native, _why = None, str(e)

log = logging.getLogger(__name__)
_warned = False

#: numpy dtypes of :func:`columns`.
DTYPES: dict[str, Any] = {"trace_id": "V16", "span_id": "V8", "parent_span_id": "V8", "start": "<u8",
                          "end": "<u8", "kind": "<i4", "status": "<i4", "resource": "<u4", "scope": "<u4"}


def available() -> bool:
    """Whether the native decoder is there; the first time it is not, says so in the log."""
    global _warned
    if native is None and not _warned:
        _warned = True
        log.warning("the native OTLP spans decoder (topology.wire._spans) is not available (%s): spans are "
                    "decoded and paired in Python, several times slower", _why)
    return native is not None


def decode_unchecked(data: bytes) -> Any:
    """A Batch of a serialized request, ids unchecked; OtlpDecodeError if it does not parse.

    Where prost refuses what the Python parser (upb) accepts (a known field with another wire type,
    which upb keeps as an unknown field), the Python parser decides: its reason if it refuses too,
    else its parse without the unknown fields is decoded again. So the decisions are upb's."""
    assert native is not None
    try:
        return native.decode(data if type(data) is bytes else bytes(data))
    except ValueError:
        view = spans_view(data)  # raises with the Python parser's reason
    view.DiscardUnknownFields()
    try:
        return native.decode(view.SerializeToString())
    except ValueError as e:
        raise OtlpDecodeError(str(e)) from None


def decode(data: bytes, content_type: str = PROTOBUF) -> Any:
    """A Batch, validated as :func:`topology.wire.otlp.decode_spans` validates (same errors)."""
    from topology.wire.otlp import _media  # the one content-type rule

    if _media(content_type) == JSON:
        batch = decode_unchecked(decode_traces(data, JSON).SerializeToString())  # validated there
        return batch
    batch = decode_unchecked(data)
    problem = batch.problem
    if problem is not None:
        i, j, k, t, s, p, zero = problem
        where = f"resource_spans[{i}].scope_spans[{j}].spans[{k}]"
        if zero:
            raise OtlpSchemaError(f"{where}: all-zero id")
        raise OtlpSchemaError(f"{where}: ids have wrong lengths (trace_id {t} bytes, span_id {s}, "
                              f"parent_span_id {p}; expected 16, 8, 0 or 8)")
    if not batch.spans and data:
        raise OtlpDecodeError(f"no spans found in {len(data)} bytes of protobuf")
    return batch


def columns(batch: Any) -> dict[str, npt.NDArray[Any]]:
    """The batch's per-span columns as numpy arrays (views of the bytes, no copy): see :data:`DTYPES`."""
    return {k: np.frombuffer(v, dtype=DTYPES[k]) for k, v in batch.columns().items()}


def is_batch(obj: Any) -> bool:
    return native is not None and isinstance(obj, native.Batch)


def is_pairer(obj: Any) -> bool:
    return native is not None and isinstance(obj, native.Pairer)

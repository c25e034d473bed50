"""OTLP metrics as columns: a whole ``ExportMetricsServiceRequest`` decoded in one native pass.

The native module ``topology.wire._metrics`` (Rust, ``topology/wire/native/metrics``: prost decodes the
compact schema of :func:`topology.wire.otlp.metrics_view`, pyo3 binds) returns a handful of byte strings
and small lists; :func:`metric_columns` wraps them with ``numpy.frombuffer`` (no copy):

* ``points``: one record per data point, in request order (resource, scope, metric, point), with the
  fields of :data:`POINT` — the metric row and series key it belongs to (indexes into ``metrics`` and
  ``keys``), times, count, sum, the value of a number point (``as_double or as_int``), the zero count of
  an exponential histogram (negative buckets included), and its slice of ``buckets``;
* ``buckets``: every point's bucket counts, flattened (explicit histograms: the packed counts;
  exponential histograms: the positive buckets, whose offset is the record's ``bounds``);
* ``resources``: the serialized Resource of each ``resource_metrics`` entry;
* ``metrics``: per metric ``(name, unit, kind, temporality, resource index, points)``, kinds
  :data:`NONE` … :data:`SUMMARY` (the first set of histogram, sum, gauge, exponential histogram,
  summary: the compact schema has no oneof);
* ``keys``: the distinct series identities of the request (resource, metric name, attributes, each
  length-prefixed: equal identities are equal bytes; :func:`key_parts` splits one) and ``key_metric``,
  the metric row of each key's first point;
* ``bounds``: the distinct ``explicit_bounds`` byte strings (a histogram record's ``bounds`` indexes it).

The IPC stage does not use these columns: its native core (:func:`ipc_core`, ``IpcCore``) decodes with the
same prost messages and adds the points as it reads them. The columns serve tests and benchmarks (the
decoder against upb) and readers that want a request's points as arrays.

Accepts exactly what :func:`~topology.wire.otlp.metrics_view` accepts: when prost refuses a request,
upb decides (prost refuses a known field sent with another wire type, which upb keeps as an unknown
field); if upb takes it, the columns come from upb's parse re-serialized without its unknown fields.
Rejections raise :class:`~topology.wire.otlp.OtlpDecodeError` with upb's reason.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from topology.wire.otlp import OtlpDecodeError, metrics_view

try:
    from topology.wire import _metrics
except ImportError:  # not built (pip install -e . builds it): callers check NATIVE
    _metrics = None  # type: ignore[assignment]

LAYOUT = 4
T = TypeVar("T")
NATIVE: bool = _metrics is not None and _metrics.LAYOUT == LAYOUT

NONE, GAUGE, SUM, HISTOGRAM, EXPONENTIAL, SUMMARY = range(6)

POINT = np.dtype([
    ("metric", "<u4"), ("key", "<u4"), ("time", "<u8"), ("start", "<u8"), ("count", "<u8"), ("sum", "<f8"),
    ("value", "<f8"), ("zero", "<u8"), ("boff", "<u4"), ("blen", "<u4"), ("bounds", "<i4"), ("scale", "<i4"),
])
assert POINT.itemsize == 72

# name, unit, kind, temporality, resource index, points
MetricRow = tuple[str, str, int, int, int, int]
RawColumns = tuple[bytes, bytes, list[bytes], list[MetricRow], list[bytes], bytes, list[bytes]]


@dataclass(frozen=True, slots=True)
class MetricColumns:
    points: np.ndarray
    buckets: np.ndarray
    resources: list[bytes]
    metrics: list[MetricRow]
    keys: list[bytes]
    key_metric: list[int]
    bounds: list[bytes]

    @property
    def raw_points(self) -> bytes:
        """The point records as bytes (to concatenate the records of many requests)."""
        return self.points.tobytes()


def metric_columns(data: bytes) -> MetricColumns:
    """The columns of a serialized ``ExportMetricsServiceRequest`` (see the module doc)."""
    points, buckets, resources, metrics, keys, key_metric, bounds = raw_columns(data)
    return MetricColumns(np.frombuffer(points, POINT), np.frombuffer(buckets, "<u8"), resources, metrics,
                         keys, np.frombuffer(key_metric, "<u4").tolist(), bounds)


def raw_columns(data: bytes) -> RawColumns:
    """The native module's tuple, unwrapped: (points, buckets, resources, metrics, keys, key_metric,
    bounds); points and buckets are the raw little-endian bytes. Raises OtlpDecodeError."""
    if _metrics is None:
        raise RuntimeError("the native metrics decoder is not built (pip install -e .)")
    return upb_decides(_metrics.decode, data)


def upb_decides(decode: Callable[[bytes], T], data: bytes) -> T:
    """``decode(data)`` with a prost decoder of this module; where prost refuses the request (ValueError),
    upb decides: its parse without unknown fields is decoded again, or OtlpDecodeError with its reason."""
    try:
        return decode(data)
    except ValueError as first:
        view = metrics_view(data)  # upb's decision: raises OtlpDecodeError if it refuses too
        view.DiscardUnknownFields()
        try:
            return decode(view.SerializeToString())
        except ValueError as e:
            raise OtlpDecodeError(f"not a valid protobuf ExportMetricsServiceRequest: {first}; {e}") from e


def key_parts(key: bytes) -> tuple[bytes, str, tuple[bytes, ...]]:
    """(serialized resource, metric name, serialized attributes) of a series key."""
    parts: list[bytes] = []
    i = 0
    while i < len(key):
        (n,) = struct.unpack_from("<I", key, i)
        parts.append(key[i + 4:i + 4 + n])
        i += 4 + n
    return parts[0], parts[1].decode(), tuple(parts[2:])


def ipc_core(window_seconds: int, max_series: int, names: dict[str, float], units: dict[str, float],
             bottom: int, top: int, collide: bool = False) -> Any:
    """The native per-point work of the IPC stage 1 (``topology.wire._metrics.IpcCore``; see
    :class:`topology.stages.ipc.IpcStage1`): ``names`` are the metrics it reads with their default seconds
    per unit, ``units`` seconds per unit, ``bottom`` and ``top`` the sketch buckets kept at our scale.
    ``collide`` (tests): series hashes of 2 bits, so that nearly every series is told apart by its key."""
    if _metrics is None:
        raise RuntimeError("the native metrics decoder is not built (pip install -e .)")
    return _metrics.IpcCore(window_seconds, max_series, names, units, bottom, top, collide)


def load_ipc_core(data: bytes) -> Any:
    """An :func:`ipc_core` from its ``dump()`` bytes (ValueError if malformed)."""
    if _metrics is None:
        raise RuntimeError("the native metrics decoder is not built (pip install -e .)")
    if not isinstance(data, bytes):
        raise TypeError(f"IPC stage state must be bytes, not {type(data).__name__}")
    return _metrics.IpcCore.load(data)

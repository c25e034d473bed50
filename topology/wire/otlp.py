"""OTLP decoders: metrics and traces, protobuf (``otlp_proto``) and JSON (OTLP/HTTP JSON).

:func:`decode_metrics` and :func:`decode_traces` return the ``opentelemetry-proto`` request messages
and raise :class:`OtlpDecodeError` (and nothing else) on malformed input; its message is the
dead-letter reason. :class:`OtlpSchemaError`, a subclass, says that the payload decodes but a record
in it lacks what it needs.

OTLP/JSON differs from protobuf's canonical JSON mapping in one way that matters: trace and span ids
are **hex** strings, where protobuf's JSON parser expects base64 for ``bytes``. They are converted
before parsing (and back in :func:`encode_json`). Enums may be integers or names, 64-bit integers
strings or numbers, field names lowerCamelCase or snake_case, unknown fields are ignored.

Protobuf parsing is permissive: random bytes often parse as a message made of unknown fields. A
non-empty payload that yields no span (no data point) is rejected, and so is any span with ids of the
wrong length, or a metric without a name.

:func:`decode_spans` is :func:`decode_traces` for the TRACE stage: the request in the compact schema
(below), validated the same way, parsed once; :func:`split_spans` regroups its spans (by trace id,
or to cut some out) keeping each span's resource and scope.

:func:`metrics_view` and :func:`spans_view` are the fast paths of the IPC and TRACE stages: they parse
a request with a *compact* schema (same field numbers) that keeps resources and attributes as raw bytes
and histogram buckets as packed bytes, so a point's identity is a tuple of bytes instead of a dozen
Python objects, and nothing is decoded that a stage does not read. :func:`attribute` decodes one raw
``KeyValue``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,
    "otlp_proto": PROTOBUF,  # the OTel Collector kafka exporter's encoding names
    "application/json": JSON,
    "otlp_json": JSON,
}

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8

AttrValue = str | int | float | bool
K = TypeVar("K")


class OtlpDecodeError(ValueError):
    """An OTLP payload is malformed; the message says why (it becomes the dead-letter reason)."""


class OtlpSchemaError(OtlpDecodeError):
    """An OTLP payload decodes, but a record in it lacks what it needs (ids of the wrong length, a metric
    without a name)."""


# -- public decoders -------------------------------------------------------------------------------
def decode_metrics(data: bytes, content_type: str = PROTOBUF) -> ExportMetricsServiceRequest:
    """Decode an ``ExportMetricsServiceRequest`` (protobuf or OTLP/JSON)."""
    req = ExportMetricsServiceRequest()
    if _media(content_type) == JSON:
        _parse_json(data, req, _fix_metric_ids, "metrics")
    else:
        _parse_protobuf(data, req, "metrics")
    points = _validate_metrics(req)
    if not points and data and _media(content_type) == PROTOBUF:
        raise OtlpDecodeError(f"no metric data points found in {len(data)} bytes of protobuf")
    return req


def decode_traces(data: bytes, content_type: str = PROTOBUF) -> ExportTraceServiceRequest:
    """Decode an ``ExportTraceServiceRequest`` (protobuf or OTLP/JSON)."""
    req = ExportTraceServiceRequest()
    if _media(content_type) == JSON:
        _parse_json(data, req, _fix_span_ids, "traces")
    else:
        _parse_protobuf(data, req, "traces")
    spans = _validate_traces(req)
    if not spans and data and _media(content_type) == PROTOBUF:
        raise OtlpDecodeError(f"no spans found in {len(data)} bytes of protobuf")
    return req


def decode_spans(data: bytes, content_type: str = PROTOBUF) -> tuple[Any, list[tuple[int, int]]]:
    """The spans of an ``ExportTraceServiceRequest`` in the compact schema (:func:`spans_view`), validated
    as :func:`decode_traces` validates them, and every span's (start, end) in nanoseconds, in order.
    Protobuf is parsed once, with the compact schema; OTLP/JSON is decoded by :func:`decode_traces` and
    carried over. Only the compact schema's own fields are checked: attribute and resource bytes are
    decoded where a stage reads them (and tolerated if bad)."""
    times: list[tuple[int, int]] = []
    if _media(content_type) == JSON:
        view = spans_view(decode_traces(data, JSON).SerializeToString())
        _validate_traces(view, times)
        return view, times
    view = spans_view(data)
    if not _validate_traces(view, times) and data:
        raise OtlpDecodeError(f"no spans found in {len(data)} bytes of protobuf")
    return view, times


def split_spans(view: Any, key: Callable[[Any], K]) -> dict[K, Any]:
    """Requests (compact schema) of the spans of ``view`` grouped by ``key(span)``, each span under its
    own resource and scope (their other fields, kept as unknown fields, come along)."""
    out: dict[K, Any] = {}
    for rs in view.resource_spans:
        rshell = None
        resources: dict[K, Any] = {}  # key -> this resource's ResourceSpans in that key's request
        for ss in rs.scope_spans:
            sshell = None
            scopes: dict[K, Any] = {}  # key -> this scope's ScopeSpans in that key's request
            for span in ss.spans:
                k = key(span)
                dst = scopes.get(k)
                if dst is None:
                    rdst = resources.get(k)
                    if rdst is None:
                        if rshell is None:
                            rshell = _shell(rs, "scope_spans")
                        req = out.get(k)
                        if req is None:
                            req = out[k] = type(view)()
                        rdst = resources[k] = req.resource_spans.add()
                        rdst.CopyFrom(rshell)
                    if sshell is None:
                        sshell = _shell(ss, "spans")
                    dst = scopes[k] = rdst.scope_spans.add()
                    dst.CopyFrom(sshell)
                dst.spans.append(span)
    return out


def _shell(msg: Any, children: str) -> Any:
    """A copy of ``msg`` without its repeated field ``children`` (all its other fields, known or not)."""
    shell = type(msg)()
    shell.CopyFrom(msg)
    del getattr(shell, children)[:]
    return shell


def span_count(view: Any) -> int:
    """Spans in a request (full or compact schema)."""
    return sum(len(ss.spans) for rs in view.resource_spans for ss in rs.scope_spans)


def encode_json(request: ExportMetricsServiceRequest | ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of a request: hex ids, integer enums, lowerCamelCase names (what OTLP/HTTP sends)."""
    d = json_format.MessageToDict(request, use_integers_for_enums=True)
    fix = _fix_span_ids if isinstance(request, ExportTraceServiceRequest) else _fix_metric_ids
    fix(d, _b64_to_hex)
    return json.dumps(d, separators=(",", ":")).encode()


def attribute(raw: bytes) -> tuple[str, AttrValue | None]:
    """Key and value of one serialized ``KeyValue`` (arrays, maps and bytes come back as their JSON text)."""
    kv = KeyValue.FromString(raw)
    return kv.key, any_value(kv.value)


_SCALARS = frozenset(("string_value", "int_value", "bool_value", "double_value"))


def any_value(v: AnyValue) -> AttrValue | None:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which in _SCALARS:
        value: AttrValue = getattr(v, which)
        return value
    return str(json_format.MessageToJson(v, indent=None))


def metrics_view(data: bytes) -> Any:
    """Parse a serialized ``ExportMetricsServiceRequest`` with the compact schema (see the module doc).

    The result has the request's shape (``resource_metrics[].scope_metrics[].metrics[]``) with these
    differences: ``resource`` is the serialized Resource; every point's ``attributes`` is a list of
    serialized KeyValues; histogram ``bucket_counts`` / ``explicit_bounds`` are the packed little-endian
    bytes (empty when a sender wrote them unpacked); ``gauge`` and ``sum`` share one type.
    """
    msg = _VIEW_METRICS()
    try:
        msg.ParseFromString(data)
    except Exception as e:  # upb raises DecodeError, but never let anything else escape either
        raise OtlpDecodeError(f"not a valid protobuf ExportMetricsServiceRequest: {e}") from e
    return msg


def spans_view(data: bytes) -> Any:
    """Parse a serialized ``ExportTraceServiceRequest`` with the compact schema (see the module doc).

    The shape is the request's (``resource_spans[].scope_spans[].spans[]``); ``resource`` is the serialized
    Resource and every span's ``attributes`` a list of serialized KeyValues; ids are not validated here.
    """
    msg = _VIEW_TRACES()
    try:
        msg.ParseFromString(data)
    except Exception as e:
        raise OtlpDecodeError(f"not a valid protobuf ExportTraceServiceRequest: {e}") from e
    return msg


# -- protobuf and JSON parsing ------------------------------------------------------------------
def _media(content_type: str) -> str:
    ct = content_type.split(";", 1)[0].strip().lower()
    media = _CONTENT_TYPES.get(ct)
    if media is None:
        raise OtlpDecodeError(f"unsupported content type {content_type!r} (use {PROTOBUF} or {JSON})")
    return media


def _parse_protobuf(data: bytes, msg: Any, what: str) -> None:
    try:
        msg.ParseFromString(data)
    except Exception as e:
        raise OtlpDecodeError(f"not a valid protobuf OTLP {what} request: {e}") from e


def _parse_json(data: bytes, msg: Any, fix: Callable[[Any, Callable[[str], str]], None], what: str) -> None:
    try:
        obj = json.loads(data)
    except Exception as e:  # bad UTF-8, bad JSON, nesting too deep
        raise OtlpDecodeError(f"OTLP/JSON {what} request is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise OtlpDecodeError(f"OTLP/JSON {what} request must be a JSON object, got {type(obj).__name__}")
    fix(obj, _hex_to_b64)
    try:
        json_format.ParseDict(obj, msg, ignore_unknown_fields=True)
    except Exception as e:
        raise OtlpDecodeError(f"OTLP/JSON {what} request does not match the schema: {e}") from e


_HEX = re.compile(r"[0-9a-fA-F]*")


def _hex_to_b64(s: str) -> str:
    if len(s) % 2 or not _HEX.fullmatch(s):
        raise OtlpDecodeError(f"id {s[:40]!r} is not a hex string (OTLP/JSON ids are hex, not base64)")
    return base64.b64encode(bytes.fromhex(s)).decode()


def _b64_to_hex(s: str) -> str:
    return base64.b64decode(s).hex()


def _each(obj: Any, *keys: str) -> list[Any]:
    """The list under the first of ``keys`` present in ``obj`` (camelCase or snake_case)."""
    if not isinstance(obj, dict):
        return []
    for k in keys:
        v = obj.get(k)
        if isinstance(v, list):
            return v
    return []


def _convert(obj: Any, conv: Callable[[str], str], *keys: str) -> None:
    if not isinstance(obj, dict):
        return
    for k in keys:
        v = obj.get(k)
        if isinstance(v, str):
            obj[k] = conv(v)


_TRACE_KEYS = ("traceId", "trace_id")
_SPAN_KEYS = ("spanId", "span_id")
_ID_KEYS = (*_TRACE_KEYS, *_SPAN_KEYS)


def _fix_span_ids(root: Any, conv: Callable[[str], str]) -> None:
    for rs in _each(root, "resourceSpans", "resource_spans"):
        for ss in _each(rs, "scopeSpans", "scope_spans"):
            for span in _each(ss, "spans"):
                _convert(span, conv, *_ID_KEYS, "parentSpanId", "parent_span_id")
                for link in _each(span, "links"):
                    _convert(link, conv, *_ID_KEYS)


_METRIC_DATA = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary")


def _fix_metric_ids(root: Any, conv: Callable[[str], str]) -> None:
    for rm in _each(root, "resourceMetrics", "resource_metrics"):
        for sm in _each(rm, "scopeMetrics", "scope_metrics"):
            for metric in _each(sm, "metrics"):
                if not isinstance(metric, dict):
                    continue
                for kind in _METRIC_DATA:
                    for dp in _each(metric.get(kind), "dataPoints", "data_points"):
                        for ex in _each(dp, "exemplars"):
                            _convert(ex, conv, *_ID_KEYS)


_ZERO_TRACE = bytes(TRACE_ID_BYTES)
_ZERO_SPAN = bytes(SPAN_ID_BYTES)
_PARENT_LENGTHS = (0, SPAN_ID_BYTES)
_EXEMPLAR_TRACE = (0, TRACE_ID_BYTES)


# -- validation -------------------------------------------------------------------------------
def _validate_traces(req: Any, times: list[tuple[int, int]] | None = None) -> int:
    """Spans in ``req`` (full or compact schema); raises OtlpSchemaError for ids of the wrong length.
    Appends each span's (start, end) to ``times`` if given."""
    n = 0
    for i, rs in enumerate(req.resource_spans):
        for j, ss in enumerate(rs.scope_spans):
            for k, span in enumerate(ss.spans):
                if times is not None:
                    times.append((span.start_time_unix_nano, span.end_time_unix_nano))
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                if len(tid) != TRACE_ID_BYTES or len(sid) != SPAN_ID_BYTES or len(pid) not in _PARENT_LENGTHS:
                    where = f"resource_spans[{i}].scope_spans[{j}].spans[{k}]"
                    raise OtlpSchemaError(
                        f"{where}: ids have wrong lengths (trace_id {len(tid)} bytes, span_id {len(sid)}, "
                        f"parent_span_id {len(pid)}; expected {TRACE_ID_BYTES}, {SPAN_ID_BYTES}, 0 or "
                        f"{SPAN_ID_BYTES})"
                    )
                if tid == _ZERO_TRACE or sid == _ZERO_SPAN:
                    raise OtlpSchemaError(f"resource_spans[{i}].scope_spans[{j}].spans[{k}]: all-zero id")
            n += len(ss.spans)
    return n


def _validate_metrics(req: ExportMetricsServiceRequest) -> int:
    n = 0
    for i, rm in enumerate(req.resource_metrics):
        for j, sm in enumerate(rm.scope_metrics):
            for k, metric in enumerate(sm.metrics):
                where = f"resource_metrics[{i}].scope_metrics[{j}].metrics[{k}]"
                if not metric.name:
                    raise OtlpSchemaError(f"{where}: metric has no name")
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                points = getattr(metric, kind).data_points
                for dp in () if kind == "summary" else points:  # summaries have no exemplars
                    for ex in dp.exemplars:
                        if len(ex.trace_id) not in _EXEMPLAR_TRACE or len(ex.span_id) not in _PARENT_LENGTHS:
                            raise OtlpSchemaError(f"{where} ({metric.name}): exemplar ids have wrong lengths")
                n += len(points)
    return n


# -- the compact schemas -------------------------------------------------------------------
def _build_view() -> Any:
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="topology/otlp_metrics_view.proto", package="topology.otlpview", syntax="proto3"
    )

    def message(name: str, *fields: tuple[int, str, int, bool, str | None]) -> None:
        m = fdp.message_type.add(name=name)
        for number, fname, ftype, repeated, tname in fields:
            f = m.field.add(name=fname, number=number, type=ftype,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if tname:
                f.type_name = ".topology.otlpview." + tname

    B, MSG, S, FX, D = F.TYPE_BYTES, F.TYPE_MESSAGE, F.TYPE_STRING, F.TYPE_FIXED64, F.TYPE_DOUBLE
    I32, SI32, SFX, U64 = F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED64, F.TYPE_UINT64
    times = ((2, "start_time_unix_nano", FX, False, None), (3, "time_unix_nano", FX, False, None))
    count_sum = ((4, "count", FX, False, None), (5, "sum", D, False, None))
    temporality = (2, "aggregation_temporality", I32, False, None)
    message("MetricsRequest", (1, "resource_metrics", MSG, True, "ResourceMetrics"))
    message("ResourceMetrics", (1, "resource", B, False, None),
            (2, "scope_metrics", MSG, True, "ScopeMetrics"))
    message("ScopeMetrics", (2, "metrics", MSG, True, "Metric"))
    message("Metric", (1, "name", S, False, None), (3, "unit", S, False, None),
            (5, "gauge", MSG, False, "Numbers"), (7, "sum", MSG, False, "Numbers"),
            (9, "histogram", MSG, False, "Histogram"),
            (10, "exponential_histogram", MSG, False, "ExpHistogram"),
            (11, "summary", MSG, False, "Summary"))
    message("Numbers", (1, "data_points", MSG, True, "NumberPoint"), temporality)
    message("NumberPoint", (7, "attributes", B, True, None), *times, (4, "as_double", D, False, None),
            (6, "as_int", SFX, False, None))
    message("Histogram", (1, "data_points", MSG, True, "HistogramPoint"), temporality)
    message("HistogramPoint", (9, "attributes", B, True, None), *times, *count_sum,
            (6, "bucket_counts", B, False, None), (7, "explicit_bounds", B, False, None))
    message("ExpHistogram", (1, "data_points", MSG, True, "ExpPoint"), temporality)
    message("ExpPoint", (1, "attributes", B, True, None), *times, *count_sum,
            (6, "scale", SI32, False, None), (7, "zero_count", FX, False, None),
            (8, "positive", MSG, False, "ExpBuckets"), (9, "negative", MSG, False, "ExpBuckets"))
    message("ExpBuckets", (1, "offset", SI32, False, None), (2, "bucket_counts", U64, True, None))
    message("Summary", (1, "data_points", MSG, True, "SummaryPoint"))
    message("SummaryPoint", (7, "attributes", B, True, None), *times, *count_sum)
    # traces: Span fields 1 trace_id, 2 span_id, 4 parent_span_id, 5 name, 6 kind, 7/8 times, 9 attributes,
    # 15 status (Status: 3 code); trace_state, events, links, flags stay unknown (kept as raw bytes)
    message("TracesRequest", (1, "resource_spans", MSG, True, "ResourceSpans"))
    message("ResourceSpans", (1, "resource", B, False, None), (2, "scope_spans", MSG, True, "ScopeSpans"))
    message("ScopeSpans", (2, "spans", MSG, True, "Span"))
    message("Span", (1, "trace_id", B, False, None), (2, "span_id", B, False, None),
            (4, "parent_span_id", B, False, None), (5, "name", S, False, None), (6, "kind", I32, False, None),
            (7, "start_time_unix_nano", FX, False, None), (8, "end_time_unix_nano", FX, False, None),
            (9, "attributes", B, True, None), (15, "status", MSG, False, "Status"))
    message("Status", (3, "code", I32, False, None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"topology.otlpview.{name}"))
                 for name in ("MetricsRequest", "TracesRequest"))


_VIEW_METRICS, _VIEW_TRACES = _build_view()

"""Admission: the one step every input passes before a stage sees it, over HTTP and over Kafka alike.

Each ``admit_*`` function decodes one payload (with :mod:`topology.wire`), applies the policy below
and returns an :class:`Admission`: what is kept (decoded, ready for the stages) and what is rejected,
each rejection with its reason and the rejected bytes (the dead letter). The HTTP receiver
(``service/runtime.py``) and every Kafka stage-1 spec (``ingest/``) call these functions and nothing
else to judge input, so the same payload gets the same verdict on both roads:

* **rejected whole** (``kept is None``): nothing in it can be used. HTTP answers 400 with the reason;
  Kafka dead-letters the record. The first rejection's payload is the whole input.
* **kept in part**: some records are cut out (a flow record, spans, a metric resource, a flow-log
  line). HTTP answers 200 and counts the rejected part (OTLP ``partial_success``); Kafka
  dead-letters that part and passes the rest on. Both write the cut-out part as a dead letter.
* **kept**: everything goes on.

Reasons
-------
A rejection's reason is a sentence for the person who sent the input (the HTTP answer, the dead
letter) that starts with its *class* and a colon, one of a small fixed set (:data:`REASON_CLASSES`),
so metrics can label rejections without an unbounded label:

    decode     the bytes are not the format they claim (bad protobuf, JSON, magic, UTF-8, a bad line)
    schema     they decode, but a record lacks what it needs (ids of the wrong length, a missing field)
    timestamp  a time is not plausible (the time policy below)
    empty      nothing at all: a zero-byte payload (a well-formed request with no records is kept)
    limit      too large (a body over the size limit)
    other      anything else

:func:`reason_class` gives the class of a reason text (``"other"`` for texts without one).

Time policy
-----------
A time is plausible when it is finite, not before 2000-01-01 (:data:`MIN_TIME`: a zero or garbage
clock), at most a day after the *reference* (:data:`MAX_FUTURE`: clocks are not that wrong) and at
most 30 days before it (:data:`MAX_PAST`: older than any window that could still be placed). The
reference is when the input was produced, as its carrier says: a flow batch's ``emitted_ms``, else
the Kafka record's timestamp or, over HTTP, the arrival time (the server's clock). So a replay of
an old topic is judged as it was when written, and a span pair dated 2100-01-01 is rejected on
both roads. Without a plausible reference only the lower bound applies. The policy covers flow
records (start and end), spans (start and end), metric points (their time; one bad point rejects its
resource, whose series would otherwise be cut), flow-log lines (start and end), health and change
events (``at``: no lower bound but 2000, a state may hold for months); address leases need finite
times only (a lease may have started long ago), and an ip that is an address.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from topology.catalog import NAME_MAX, AddressLease, BadTime, HealthEvent, ServiceInfo
from topology.change import ChangeEvent
from topology.wire import flow, otlp, spans
from topology.wire.vpcflow import VpcFlowError, VpcFlowParser, VpcFlowRecord

DECODE: Final = "decode"
SCHEMA: Final = "schema"
TIMESTAMP: Final = "timestamp"
EMPTY: Final = "empty"
LIMIT: Final = "limit"
OTHER: Final = "other"
#: Every reason class; a metric's ``reason`` label takes only these values.
REASON_CLASSES: Final[tuple[str, ...]] = (DECODE, SCHEMA, TIMESTAMP, EMPTY, LIMIT, OTHER)
_CLASSES = frozenset(REASON_CLASSES)

MIN_TIME: Final = 946_684_800.0  # 2000-01-01: before that, a zero or garbage clock
MAX_FUTURE: Final = 86_400.0  # a day ahead of the reference
MAX_PAST: Final = 30 * 86_400.0  # a month behind the reference

T = TypeVar("T")
M = TypeVar("M")  # a decoded OTLP request


def reason(cls: str, detail: str) -> str:
    """The reason text of a rejection of class ``cls``: ``"<class>: <detail>"``."""
    if cls not in _CLASSES:
        raise ValueError(f"unknown reason class {cls!r} (one of {', '.join(REASON_CLASSES)})")
    return f"{cls}: {detail}"


def reason_class(text: str) -> str:
    """The class a reason text starts with (one of :data:`REASON_CLASSES`; ``"other"`` if none)."""
    head, sep, _ = text.partition(":")
    return head if sep and head in _CLASSES else OTHER


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejected input or part of one: why (a reason text, see the module docstring) and its bytes."""

    reason: str
    payload: bytes

    @property
    def reason_class(self) -> str:
        return reason_class(self.reason)


@dataclass(frozen=True, slots=True)
class Admission(Generic[T]):
    """The verdict on one payload: what is kept, how many records, their latest time, what is rejected."""

    kept: T | None  # None: rejected whole (rejected[0] says why; its payload is the whole input)
    items: int = 0  # records kept (flow records, spans, points, flow-log records, JSON records)
    latest: float | None = None  # the latest event time kept, epoch seconds
    rejected: tuple[Rejection, ...] = ()
    dropped: int = 0  # records cut out (0 when rejected whole: the records were not counted)

    @property
    def reason(self) -> str | None:
        """The first rejection's reason (None when everything was kept)."""
        return self.rejected[0].reason if self.rejected else None


def _whole(cls: str, detail: str, payload: bytes) -> Admission[Any]:
    return Admission(None, rejected=(Rejection(reason(cls, detail), payload),))


# -- time policy ---------------------------------------------------------------------------------------
def reference(*candidates: float | None) -> float | None:
    """The first plausible candidate (epoch seconds) for when an input was produced, or None."""
    for t in candidates:
        if t is not None and math.isfinite(t) and t >= MIN_TIME:
            return t
    return None


def time_problem(t: float, ref: float | None) -> str | None:
    """Why the time ``t`` (epoch seconds) is not plausible against ``ref``, or None if it is."""
    if not math.isfinite(t):
        return f"time {t!r} is not a finite number"
    if t < MIN_TIME:
        return f"time {_when(t)} is before 2000-01-01"
    if ref is not None and t > ref + MAX_FUTURE:
        return f"time {_when(t)} is more than a day after it was produced ({_when(ref)})"
    if ref is not None and t < ref - MAX_PAST:
        return f"time {_when(t)} is more than 30 days before it was produced ({_when(ref)})"
    return None


def implausible(start: npt.NDArray[np.float64], end: npt.NDArray[np.float64],
                ref: float | None) -> npt.NDArray[np.bool_]:
    """:func:`time_problem` for many records at once: True where ``start`` or ``end`` is not plausible."""
    finite = np.isfinite(start) & np.isfinite(end)
    bad: npt.NDArray[np.bool_] = ~(finite & (start >= MIN_TIME) & (end >= MIN_TIME))
    if ref is not None:
        bad |= ~((end <= ref + MAX_FUTURE) & (start <= ref + MAX_FUTURE))
        bad |= ~((start >= ref - MAX_PAST) & (end >= ref - MAX_PAST))
    return bad


def _span_problem(start: float, end: float, ref: float | None) -> str | None:
    return time_problem(start, ref) or time_problem(end, ref)


def _when(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{t:.0f}"


# -- flow batches ---------------------------------------------------------------------------------
def admit_flows(data: bytes, produced: float | None) -> Admission[flow.FlowBatch]:
    """A flow batch (:mod:`topology.wire.flow`); records with implausible times are cut out (re-encoded)."""
    if not data:
        return _whole(EMPTY, "empty flow batch", data)
    try:
        batch = flow.decode(data)
    except flow.FlowSchemaError as e:
        return _whole(SCHEMA, str(e), data)
    except flow.FlowDecodeError as e:
        return _whole(DECODE, str(e), data)
    recs = batch.records
    if not len(recs):
        return Admission(batch)
    ref = reference(batch.emitted_ms / 1000.0, produced)
    start = recs["start_ms"] / 1000.0
    end = recs["end_ms"] / 1000.0
    long = np.array([len(s) > NAME_MAX for s in batch.strings])
    misnamed = long[recs["local_app"]] | long[recs["local_cluster"]]
    bad = implausible(start, end, ref) | misnamed
    nbad = int(bad.sum())
    if not nbad:
        return Admission(batch, len(recs), float(end.max()))
    i = int(np.flatnonzero(bad)[0])
    cls, why = ((SCHEMA, f"its app or cluster name is longer than {NAME_MAX} characters") if misnamed[i]
                else (TIMESTAMP, _span_problem(float(start[i]), float(end[i]), ref)))
    text = reason(cls, f"flow record {i}: {why} ({nbad} of {len(recs)} flow records in the batch)")
    if nbad == len(recs):
        return Admission(None, rejected=(Rejection(text, data),))
    cut = flow.encode(np.ascontiguousarray(recs[bad]), batch.strings, batch.host, batch.emitted_ms)
    good = np.ascontiguousarray(recs[~bad])
    kept = flow.FlowBatch(batch.version, batch.emitted_ms, batch.host, batch.strings, good)
    return Admission(kept, len(good), float(end[~bad].max()), (Rejection(text, cut),), nbad)


# -- OTLP ----------------------------------------------------------------------------------------------
def _otlp(data: bytes, content_type: str, what: str, decode: Callable[[bytes, str], M],
          judge: Callable[[M], Admission[Any]]) -> Admission[Any]:
    """``judge`` the decoded request; an empty payload or one that does not decode is rejected whole."""
    if not data:
        return _whole(EMPTY, f"empty {what} request", data)
    try:
        request = decode(data, content_type)
    except otlp.OtlpDecodeError as e:
        return _whole(SCHEMA if isinstance(e, otlp.OtlpSchemaError) else DECODE, str(e), data)
    return judge(request)


def admit_spans(data: bytes, content_type: str, produced: float | None) -> Admission[Any]:
    """An ``ExportTraceServiceRequest``, kept in the compact schema of :func:`topology.wire.otlp.spans_view`
    (decoded once: the stages and the Kafka splitter take it as it is). Spans with an implausible start
    or end are cut out into a request of their own. Where the native decoder is built, a request kept
    whole is its :class:`~topology.wire._spans.Batch` (judged on its columns; what the TRACE stage's
    pairer takes as it is); a request with spans to cut goes the compact schema's way."""
    if spans.available():
        return _otlp(data, content_type, "spans", spans.decode,
                     lambda batch: _judge_batch(batch, data, content_type, produced))
    return _otlp(data, content_type, "spans", otlp.decode_spans,
                 lambda view: _judge_spans(view, data, produced))


_FEW = 64  # spans: below this, a request's times are judged as Python integers


def _judge_batch(batch: Any, data: bytes, content_type: str, produced: float | None) -> Admission[Any]:
    n = batch.spans
    if not n:
        return Admission(batch)
    long = [_long_name(r) for r in batch.resources()]
    raw = batch.columns()
    ns_start = np.frombuffer(raw["start"], spans.DTYPES["start"])
    ns_end = np.frombuffer(raw["end"], spans.DTYPES["end"])
    ref = reference(produced)
    if not any(long):  # the common case, without a column of verdicts: plausibility is an interval, so
        # the earliest and latest times decide for all (integers to floats and / 1e9 keep the order)
        if n <= _FEW:  # numpy's reductions cost more than Python's on a few values
            starts, ends = ns_start.tolist(), ns_end.tolist()
            first, last, latest = min(min(starts), min(ends)), max(max(starts), max(ends)), max(ends)
        else:
            first, last = min(ns_start.min(), ns_end.min()), max(ns_start.max(), ns_end.max())
            latest = ns_end.max()
        if time_problem(first / 1e9, ref) is None and time_problem(last / 1e9, ref) is None:
            return Admission(batch, n, float(latest / 1e9))
    cols = spans.columns(batch)
    start, end = cols["start"] / 1e9, cols["end"] / 1e9
    bad = implausible(start, end, ref)
    if any(long):
        bad |= np.array(long, dtype=np.bool_)[cols["resource"]]
    if not bad.any():  # the common case: kept whole, decoded once
        return Admission(batch, n, float(end.max()))
    return _judge_spans(otlp.decode_spans(data, content_type), data, produced)  # cut: the view's way


def _judge_spans(decoded: tuple[Any, list[tuple[int, int]]], data: bytes,
                 produced: float | None) -> Admission[Any]:
    view, times = decoded
    n = len(times)
    if not n:
        return Admission(view)
    ns = np.array(times, dtype=np.float64) / 1e9
    start, end = ns[:, 0], ns[:, 1]
    ref = reference(produced)
    misnamed = _misnamed_spans(view, n)
    bad = implausible(start, end, ref)
    if misnamed is not None:
        bad |= misnamed
    nbad = int(bad.sum())
    if not nbad:  # the common case: nothing to cut, no copy
        return Admission(view, n, float(end.max()))
    cut = np.flatnonzero(bad)
    i = int(cut[0])
    first = next(sp for k, sp in enumerate(_spans(view)) if k == i)
    why: str | None
    if misnamed is not None and misnamed[i]:
        cls, why = SCHEMA, _LONG_RESOURCE
    else:
        cls, why = TIMESTAMP, _span_problem(float(start[i]), float(end[i]), ref)
    text = reason(cls, f"span {first.name[:100]!r}: {why} ({nbad} of {n} spans in the request)")
    if nbad == n:
        return Admission(None, rejected=(Rejection(text, data),))
    flags = iter((~bad).tolist())
    parts = otlp.split_spans(view, lambda _: next(flags))
    return Admission(parts[True], n - nbad, float(end[~bad].max()),
                     (Rejection(text, parts[False].SerializeToString()),), nbad)


_NAMED = ("service.name", "k8s.deployment.name")  # resource attributes that become node names
_LONG_RESOURCE = f"its resource's service.name or k8s.deployment.name is longer than {NAME_MAX} characters"


def _long_name(resource: bytes) -> bool:
    """Whether a serialized Resource names a service or deployment longer than :data:`NAME_MAX`."""
    if len(resource) <= NAME_MAX:  # too short to hold such a name, no parse
        return False
    if len(resource) <= _CACHED_RESOURCE:
        return _long_name_cached(resource)
    return _parse_long_name(resource)


_CACHED_RESOURCE = 4096  # bytes: the cache holds at most 4096 such keys (16 MiB)


@functools.lru_cache(maxsize=4096)  # a fleet sends the same few resources over and over
def _long_name_cached(resource: bytes) -> bool:
    return _parse_long_name(resource)


def _parse_long_name(resource: bytes) -> bool:
    try:
        attributes = Resource.FromString(resource).attributes
    except Exception:  # a resource that does not parse names nothing (the stages count it)
        return False
    return _names_too_long(attributes)


def _names_too_long(attributes: Any) -> bool:
    return any(kv.key in _NAMED and len(kv.value.string_value) > NAME_MAX for kv in attributes)


def _misnamed_spans(view: Any, n: int) -> npt.NDArray[np.bool_] | None:
    """True for each span (in request order) under a resource with a name that is too long; None if
    there is none."""
    resources = view.resource_spans
    if not any(_long_name(rs.resource) for rs in resources):  # the common case: one pass, cached
        return None
    out = np.zeros(n, dtype=np.bool_)
    k = 0
    for rs in resources:
        count = sum(len(ss.spans) for ss in rs.scope_spans)
        if count and _long_name(rs.resource):
            out[k:k + count] = True
        k += count
    return out if out.any() else None


def _spans(view: Any) -> Iterator[Any]:
    for rs in view.resource_spans:
        for ss in rs.scope_spans:
            yield from ss.spans


def admit_metrics(data: bytes, content_type: str,
                  produced: float | None) -> Admission[ExportMetricsServiceRequest]:
    """An ``ExportMetricsServiceRequest``; a resource with any point at an implausible time is cut out
    whole (its series are judged together)."""
    return _otlp(data, content_type, "metrics", otlp.decode_metrics,
                 lambda req: _judge_metrics(req, data, produced))


def _judge_metrics(req: ExportMetricsServiceRequest, data: bytes,
                   produced: float | None) -> Admission[ExportMetricsServiceRequest]:
    ref = reference(produced)
    bad: list[int] = []
    first: str | None = None
    first_cls: str | None = None
    points = kept_points = 0
    latest: float | None = None
    for i, rm in enumerate(req.resource_metrics):
        why = None
        newest = None
        n = 0
        cls = TIMESTAMP
        if _names_too_long(rm.resource.attributes):
            why = f"metric resource: {_LONG_RESOURCE}"
            cls = SCHEMA
        for sm in rm.scope_metrics:
            for dp in _points(sm.metrics):
                n += 1
                t = dp.time_unix_nano / 1e9
                p = time_problem(t, ref)
                if p is not None:
                    why = why or f"metric point: {p}"
                elif newest is None or t > newest:
                    newest = t
        points += n
        if why is not None:
            bad.append(i)
            if first is None:
                first, first_cls = why, cls
            continue
        kept_points += n
        if newest is not None and (latest is None or newest > latest):
            latest = newest
    if not bad:
        return Admission(req, points, latest)
    text = reason(first_cls or TIMESTAMP,
                  f"{first} ({len(bad)} of {len(req.resource_metrics)} resources in the request)")
    if len(bad) == len(req.resource_metrics):
        return Admission(None, rejected=(Rejection(text, data),))
    good, cut = ExportMetricsServiceRequest(), ExportMetricsServiceRequest()
    skip = set(bad)
    for i, rm in enumerate(req.resource_metrics):
        (cut if i in skip else good).resource_metrics.add().CopyFrom(rm)
    return Admission(good, kept_points, latest, (Rejection(text, cut.SerializeToString()),),
                     points - kept_points)


def admit_metric_bytes(data: bytes, content_type: str, produced: float | None) -> Admission[bytes]:
    """:func:`admit_metrics`'s verdict (the same kept points, rejections, reasons and dead letters), with
    what is kept as a serialized ``ExportMetricsServiceRequest``: what the IPC stage's native core reads
    (``IpcStage1.add_serialized``), so a request kept whole reaches it as the bytes that arrived, without
    being re-serialised (the Kafka road's stage 2 reads its records' bytes the same way).

    A protobuf request is judged by :func:`_metric_bytes_kept` first: upb's parse of the full schema
    (acceptance as :func:`admit_metrics`), then one pass over each metric's times and the names, without
    the per-point work of :func:`admit_metrics` (its exemplar loop, a time check per point, a copy of the
    request). Anything else — OTLP/JSON, a request with exemplars (their ids are
    checked point by point), one with something to cut out or reject — is judged by :func:`admit_metrics`
    itself, its kept part serialized."""
    if data and _protobuf(content_type):
        kept = _metric_bytes_kept(data, produced)
        if kept is not None:
            return kept
    adm = admit_metrics(data, content_type, produced)
    if adm.kept is None:
        return Admission(None, rejected=adm.rejected)
    whole = not adm.rejected and _protobuf(content_type)
    return Admission(data if whole else adm.kept.SerializeToString(), adm.items, adm.latest, adm.rejected,
                     adm.dropped)


def _metric_bytes_kept(data: bytes, produced: float | None) -> Admission[bytes] | None:
    """The admission of a protobuf request kept whole; None when it is not (rejected, cut, or not decided
    here: :func:`admit_metrics` then says why). upb parses it with the full schema (acceptance as
    :func:`admit_metrics`); a request with exemplars is left to it (their ids are checked point by point);
    then what :func:`_judge_metrics` checks, with one pass over each metric's times: time plausibility is
    an interval, so a metric's earliest and latest points decide for all of them."""
    try:
        req = ExportMetricsServiceRequest.FromString(data)
        if not _EXEMPLARS.FromString(data).IsInitialized():  # an exemplar somewhere: its ids to check
            return None
    except Exception:  # whatever refuses it, admit_metrics gives the reason
        return None
    ref = reference(produced)
    n = 0
    lo = hi = None
    for rm in req.resource_metrics:
        if _names_too_long(rm.resource.attributes):
            return None
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if not m.name:
                    return None
                if kind is None:
                    continue
                times = [dp.time_unix_nano for dp in getattr(m, kind).data_points]
                if times:
                    n += len(times)
                    first, last = min(times), max(times)
                    lo = first if lo is None or first < lo else lo
                    hi = last if hi is None or last > hi else hi
    if lo is None or hi is None:
        return None  # no point: admit_metrics decides (an error for protobuf bytes without one)
    latest = hi / 1e9
    if time_problem(lo / 1e9, ref) is not None or time_problem(latest, ref) is not None:
        return None  # resources to cut out: admit_metrics cuts them
    return Admission(data, n, latest)


def _protobuf(content_type: str) -> bool:
    try:
        return otlp._media(content_type) == otlp.PROTOBUF  # the OTLP module's own reading of it
    except otlp.OtlpDecodeError:
        return False


def _exemplar_view() -> Any:
    """A schema of ``ExportMetricsServiceRequest`` that knows only the path to exemplars, each with a
    required field no exemplar has: ``IsInitialized()`` is False exactly when some point has one (upb
    decides it in C, without a Python loop over the points)."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="topology/otlp_exemplars.proto", package="topology.ex",
                                             syntax="proto2")

    def message(name: str, *fields: tuple[int, str]) -> None:
        m = fdp.message_type.add(name=name)
        for number, tname in fields:
            m.field.add(name=f"f{number}", number=number, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                        type_name=".topology.ex." + tname)

    message("Request", (1, "Resource"))
    message("Resource", (2, "Scope"))
    message("Scope", (2, "Metric"))
    message("Metric", (5, "Numbers"), (7, "Numbers"), (9, "Histogram"), (10, "Exponential"))
    message("Numbers", (1, "NumberPoint"))
    message("Histogram", (1, "HistogramPoint"))
    message("Exponential", (1, "ExponentialPoint"))
    message("NumberPoint", (5, "Exemplar"))  # the exemplars' field numbers in the OTLP points
    message("HistogramPoint", (8, "Exemplar"))
    message("ExponentialPoint", (11, "Exemplar"))
    fdp.message_type.add(name="Exemplar").field.add(name="absent", number=536_870_911, type=F.TYPE_BOOL,
                                                    label=F.LABEL_REQUIRED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("topology.ex.Request"))


_EXEMPLARS = _exemplar_view()


def _points(metrics: Any) -> Any:
    for m in metrics:
        kind = m.WhichOneof("data")
        if kind is not None:
            yield from getattr(m, kind).data_points


# -- VPC flow logs --------------------------------------------------------------------------------
def admit_vpcflows(data: bytes, produced: float | None) -> Admission[list[VpcFlowRecord]]:
    """Flow-log text (:mod:`topology.wire.vpcflow`: the default format, or a header line naming the
    fields, which applies to the lines after it). Malformed lines and lines with an implausible start
    or end are cut out one by one; rejected whole when no line is kept."""
    if not data.strip():
        return _whole(EMPTY, "empty flow-log record", data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return _whole(DECODE, f"flow-log record is not UTF-8 text: {e}", data)
    ref = reference(produced)
    parser = VpcFlowParser()
    records: list[VpcFlowRecord] = []
    rejected: list[Rejection] = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            r = parser.parse_line(line)
        except VpcFlowError as e:
            rejected.append(Rejection(reason(DECODE, f"flow-log line {n}: {e}"), line.encode()))
            continue
        if r is None:
            continue
        why = _span_problem(float(r.start), float(r.end), ref)
        if why is not None:
            rejected.append(Rejection(reason(TIMESTAMP, f"flow-log line {n}: {why}"), line.encode()))
            continue
        records.append(r)
    if rejected and not records:
        rejected[0] = Rejection(rejected[0].reason + _more(len(rejected), "lines"), data)
        return Admission(None, rejected=tuple(rejected[:1]))
    latest = max((float(r.end) for r in records), default=None)
    return Admission(records, len(records), latest, tuple(rejected), len(rejected))


def _more(n: int, what: str) -> str:
    return f" (and {n - 1} more {what})" if n > 1 else ""


# -- JSON records: catalog, health, changes, address leases ---------------------------------------
def admit_catalog(data: bytes, produced: float | None) -> Admission[list[ServiceInfo]]:
    """Catalog records: a JSON object or array of :meth:`ServiceInfo.to_dict` objects."""
    return _admit_json(data, "catalog", ServiceInfo.from_dict, None)


def admit_health(data: bytes, produced: float | None) -> Admission[list[HealthEvent]]:
    """Health events (a JSON object or array); ``at`` must be plausible (no later than a day after
    ``produced``)."""
    ref = reference(produced)

    def check(e: HealthEvent) -> str | None:  # no lower bound but 2000: a state may hold for months
        return time_problem(e.at, ref if ref is not None and e.at > ref else None)

    return _admit_json(data, "health", HealthEvent.from_dict, check)


def admit_changes(data: bytes, produced: float | None) -> Admission[list[ChangeEvent]]:
    """Change events (a JSON object or array, :meth:`ChangeEvent.from_dict`); ``at`` must be plausible
    as for health events (no lower bound but 2000: a change may be reported long after it was made)."""
    ref = reference(produced)

    def check(e: ChangeEvent) -> str | None:
        return time_problem(e.at, ref if ref is not None and e.at > ref else None)

    return _admit_json(data, "change event", ChangeEvent.from_dict, check)


def admit_leases(data: bytes, produced: float | None) -> Admission[list[AddressLease]]:
    """Address leases (a JSON object or array); the ip must be an address, the times finite."""

    def parse(d: dict[str, Any]) -> AddressLease:
        lease = AddressLease.from_dict(d)
        try:
            flow.pack_ip(lease.ip)
        except ValueError:
            ip = lease.ip[:64]
            raise ValueError(f"address lease for {lease.owner!r}: ip {ip!r} is not an address") from None
        return lease

    def check(lease: AddressLease) -> str | None:
        for t in (lease.start, lease.end):
            if t is not None and not math.isfinite(t):
                return f"time {t!r} is not a finite number"
        return None

    return _admit_json(data, "address lease", parse, check)


def _admit_json(data: bytes, what: str, parse: Callable[[dict[str, Any]], T],
                check: Callable[[T], str | None] | None) -> Admission[list[T]]:
    """Every record parses and passes ``check``, or the payload is rejected whole (one bad record in a
    batch of catalog entries or leases would otherwise leave the rest inconsistent)."""
    if not data.strip():
        return _whole(EMPTY, f"empty {what} payload", data)
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        return _whole(DECODE, f"{what} payload is not JSON: {e}", data)
    items: Sequence[Any] = raw if isinstance(raw, list) else [raw]
    out: list[T] = []
    for i, d in enumerate(items):
        where = f"{what} record {i}" if isinstance(raw, list) else f"{what} record"
        if not isinstance(d, dict):
            return _whole(SCHEMA, f"{where} is not a JSON object", data)
        try:
            rec = parse(d)
        except BadTime as e:
            return _whole(TIMESTAMP, f"{where}: {e}", data)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
            return _whole(SCHEMA, f"{where}: {e}", data)
        why = check(rec) if check is not None else None
        if why is not None:
            return _whole(TIMESTAMP, f"{where}: {why}", data)
        out.append(rec)
    return Admission(out, len(out))

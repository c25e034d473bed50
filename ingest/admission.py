"""Stage-1 specs judge their input with :mod:`topology.admit`, as the HTTP receiver does; this turns
an admission into what the worker expects: the kept part, and an :class:`~ingest.logic.Added` whose
rejects (the cut-out parts) go to the dead-letter topic. A payload rejected whole raises
:class:`~ingest.logic.Rejected` (the worker dead-letters the record itself)."""

from __future__ import annotations

from typing import TypeVar

from ingest.logic import Added, Rejected
from ingest.record import Record
from topology.admit import OTHER, Admission, reason

T = TypeVar("T")


def produced(record: Record) -> float | None:
    """When the record was produced (its Kafka timestamp, epoch seconds), the time policy's reference."""
    return record.timestamp_ms / 1000.0 if record.timestamp_ms > 0 else None


def admitted(adm: Admission[T]) -> tuple[T, Added]:
    """The kept part and what feeding it reports; raises Rejected when nothing was kept."""
    if adm.kept is None:
        raise Rejected(adm.reason or reason(OTHER, "rejected"))
    return adm.kept, Added(adm.latest, adm.items, [(r.reason, r.payload) for r in adm.rejected])

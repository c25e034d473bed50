"""Admission: the one step every input passes before a stage sees it, over HTTP and over Kafka alike.

Rejections carry a *reason*: a sentence for the person who sent the input (the HTTP answer, the
dead letter), which starts with its *class* and a colon, one of a small fixed set
(:data:`REASON_CLASSES`), so that metrics can label rejections without an unbounded label:

    decode     the bytes are not the format they claim (bad protobuf, JSON, magic, UTF-8, ...)
    schema     they decode, but a record lacks what it needs (ids of the wrong length, a missing field)
    timestamp  a time is not plausible (see the time policy below)
    empty      nothing to take (an empty body or record)
    limit      too large (a body over the size limit)
    other      anything else

:func:`reason_class` gives the class of a reason text (``"other"`` for texts without one).
"""

from __future__ import annotations

from typing import Final

DECODE: Final = "decode"
SCHEMA: Final = "schema"
TIMESTAMP: Final = "timestamp"
EMPTY: Final = "empty"
LIMIT: Final = "limit"
OTHER: Final = "other"
#: Every reason class; a metric's ``reason`` label takes only these values.
REASON_CLASSES: Final[tuple[str, ...]] = (DECODE, SCHEMA, TIMESTAMP, EMPTY, LIMIT, OTHER)
_CLASSES = frozenset(REASON_CLASSES)


def reason(cls: str, detail: str) -> str:
    """The reason text of a rejection of class ``cls``: ``"<class>: <detail>"``."""
    if cls not in _CLASSES:
        raise ValueError(f"unknown reason class {cls!r} (one of {', '.join(REASON_CLASSES)})")
    return f"{cls}: {detail}"


def reason_class(text: str) -> str:
    """The class a reason text starts with (one of :data:`REASON_CLASSES`; ``"other"`` if none)."""
    head, sep, _ = text.partition(":")
    return head if sep and head in _CLASSES else OTHER

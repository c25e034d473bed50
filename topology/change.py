"""Change events: deploys, configuration changes and the like, kept beside the graphs.

A change event says that something about a service changed at ``at`` (topic ``topology.changes``,
HTTP ``POST /ingest/changes``). Deploys and configuration changes are the most common cause of
incidents, so the incident questions (``diff``, ``rootCause``) list the changes of the services
they look at. An event's identity is the whole record: the same event sent twice is kept once.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

#: Longest text kept in ``description``; the other text fields are shorter.
MAX_DESCRIPTION: Final = 2000
MAX_FIELD: Final = 500


class ChangeKind(enum.StrEnum):
    DEPLOY = "DEPLOY"
    CONFIG = "CONFIG"
    FEATURE_FLAG = "FEATURE_FLAG"
    SCALING = "SCALING"
    INFRA = "INFRA"
    OTHER = "OTHER"


#: Kinds that change what a service does (a deploy, its configuration or flags), as opposed to where
#: it runs: what the root-cause ranking treats as a likely cause.
BEHAVIOUR_CHANGES: Final = frozenset({ChangeKind.DEPLOY, ChangeKind.CONFIG, ChangeKind.FEATURE_FLAG})

_TEXT_FIELDS: Final = ("description", "version", "author", "link")


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """Something about ``service`` changed at ``at`` (epoch seconds)."""

    service: str
    kind: ChangeKind
    at: float
    description: str | None = None
    version: str | None = None
    author: str | None = None
    link: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "kind": self.kind.value, "at": self.at,
                "description": self.description, "version": self.version, "author": self.author,
                "link": self.link}

    @property
    def key(self) -> str:
        """The event's identity (a digest of the whole record): stores keep one event per key."""
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeEvent:
        service = d.get("service")
        if not isinstance(service, str) or not service:
            raise ValueError("change event needs a non-empty string 'service'")
        if len(service) > MAX_FIELD:
            raise ValueError(f"change event 'service' is longer than {MAX_FIELD} characters")
        kind = d.get("kind", "OTHER")
        if kind not in ChangeKind.__members__:
            kinds = ", ".join(ChangeKind.__members__)
            raise ValueError(f"change event for {service!r}: 'kind' must be one of {kinds}, got {kind!r}")
        at = d.get("at")
        if not isinstance(at, int | float) or isinstance(at, bool):  # finite and plausible: admission
            raise ValueError(f"change event for {service!r} needs a numeric 'at' (epoch seconds)")
        texts: dict[str, str | None] = {}
        for name in _TEXT_FIELDS:
            value = d.get(name)
            limit = MAX_DESCRIPTION if name == "description" else MAX_FIELD
            if value is not None and not isinstance(value, str):
                raise ValueError(f"change event for {service!r}: {name!r} must be a string or null")
            if value is not None and len(value) > limit:
                raise ValueError(f"change event for {service!r}: {name!r} is longer than {limit} characters")
            texts[name] = value
        return cls(service, ChangeKind(kind), float(at), texts["description"], texts["version"],
                   texts["author"], texts["link"])

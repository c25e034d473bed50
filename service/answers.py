"""Answers to repeated GraphQL requests, kept until the data or the time they were read at changes.

A map widget asks the same few queries again and again (every viewer, every refresh). Each answer
over HTTP that had no errors is kept, as the bytes sent, under a key made of everything the answer
can depend on:

* the request as sent: method, query string, ``Content-Type``, ``Accept`` and the body (document,
  operation name, variables and extensions, byte for byte: the same text from the same client);
* the version of every store (:attr:`topology.store.base.LayerStore.version`, read before the
  operation and again after it: an answer is kept only if no write finished meanwhile); a store
  that has no version (JanusGraph) turns the cache off;
* the second "now" falls in: a query without ``at`` reads the range ending now, and windows start on
  whole seconds, so within one second (with durations in whole seconds) the same windows answer,
  while a new window, or a relative ``at`` such as ``now-30m`` rolling over one, makes a new key.

Who asks is not part of the key: authentication decides whether a request may reach ``/graphql``
at all (before the cache is looked at, :mod:`service.auth`), and no resolver's answer depends on the
caller. Only operations of type query that executed without any error are kept (an outage of a
layer is an error, so a partial answer is never served again). The answers kept are bounded in
bytes (``TOPOLOGY_RESPONSE_CACHE``); the least recently used go first, and an answer larger than an
eighth of the bound is not kept. Each time a store's version changes, the answers read before are
gone (they can never be asked for again; they are dropped when next the cache is used).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from threading import Lock
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

__all__ = ["AnswerCache", "Answered", "Outcomes", "store_versions"]

#: An answer computed at "now" = t is served for requests whose "now" is in the same second.
STEP = 1.0
#: No answer larger than this part of the bound is kept (one answer must not empty the cache).
LARGEST = 8


@dataclass(frozen=True, slots=True)
class Answered:
    """An answer kept: the body sent, its content type, and its operations' names (for metrics)."""

    body: bytes
    content_type: str
    operations: tuple[str | None, ...]


_Key = tuple[Any, ...]


class AnswerCache:
    """A bounded map from a request and the state it was answered in to the answer's bytes."""

    def __init__(self, max_bytes: int, versions: Callable[[], tuple[int, ...] | None]) -> None:
        """``versions``: the stores' versions now, or None when a store cannot tell (then nothing
        is kept)."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_bytes = max_bytes
        self._versions = versions
        self._answers: OrderedDict[_Key, Answered] = OrderedDict()
        self._bytes = 0
        self._seen: tuple[int, ...] | None = None  # (second, *versions) of the latest key used
        self._lock = Lock()  # looked up on the server's loop, filled from the stores' thread
        self.hits = 0
        self.misses = 0

    def key(self, request: Sequence[Any], now: float) -> _Key | None:
        """The key of ``request`` (its parts as sent) answered at ``now``, or None: not to keep."""
        versions = self._versions()
        if versions is None or not math.isfinite(now):
            return None
        return ((math.floor(now / STEP), *versions), *request)

    def get(self, key: _Key) -> Answered | None:
        with self._lock:
            self._forget_older(key[0])
            found = self._answers.get(key)
            if found is None:
                self.misses += 1
                return None
            self._answers.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: _Key, answer: Answered) -> bool:
        """Keep ``answer`` if the stores are still at the versions in ``key``; whether it was kept."""
        size = self._size(key, answer)
        if size > self.max_bytes // LARGEST or self._versions() != key[0][1:]:
            return False
        with self._lock:
            self._forget_older(key[0])
            old = self._answers.pop(key, None)
            if old is not None:
                self._bytes -= self._size(key, old)
            self._answers[key] = answer
            self._bytes += size
            while self._bytes > self.max_bytes:
                k, a = self._answers.popitem(last=False)
                self._bytes -= self._size(k, a)
        return True

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def bytes(self) -> int:
        return self._bytes

    @staticmethod
    def _size(key: _Key, answer: Answered) -> int:
        return len(answer.body) + sum(len(p) for p in key[1:] if isinstance(p, bytes | str))

    def _forget_older(self, epoch: tuple[int, ...]) -> None:
        """Drop every answer once the second or a version moves on from the ones they were read at
        (holding the lock): both only grow, so those answers can never be asked for again."""
        seen = self._seen
        if epoch != seen:
            if seen is not None and all(a >= b for a, b in zip(epoch, seen, strict=True)):
                self._answers.clear()
                self._bytes = 0
            self._seen = epoch


def store_versions(stores: Sequence[Any]) -> Callable[[], tuple[int, ...] | None]:
    """The versions of ``stores`` (layer stores and the catalog), None if any has none."""
    held = tuple(stores)

    def versions() -> tuple[int, ...] | None:
        out = []
        for store in held:
            v = getattr(store, "version", None)
            if not isinstance(v, int):
                return None
            out.append(v)
        return tuple(out)

    return versions


class Outcomes(SchemaExtension):
    """Notes, in the request context's ``executed``, each operation's name and whether its answer
    may be kept (a query without errors): what the HTTP view needs to keep an answer."""

    def on_operation(self) -> Iterator[None]:
        yield
        ctx = self.execution_context
        executed = getattr(ctx.context, "executed", None)
        if isinstance(executed, list):
            executed.append((ctx.operation_name if ctx.graphql_document is not None else None,
                             _keepable(ctx)))


def _keepable(ctx: ExecutionContext) -> bool:
    """Whether the answer of the operation in ``ctx`` may be kept: a query, without any error."""
    result = ctx.result
    return (
        ctx.graphql_document is not None  # (operation_type raises without one)
        and not ctx.pre_execution_errors
        and result is not None
        and not result.errors
        and not getattr(ctx.context, "outages", None)
        and ctx.operation_type is OperationType.QUERY
    )

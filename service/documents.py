"""Parsed documents kept by query text, so a query sent again is not parsed again.

Unlike Strawberry's ``ParserCache``, parsing itself is left to Strawberry: this extension only hands
over a document it already has, and keeps the ones that parsed. A text that does not parse is parsed
(and fails) the ordinary way every time, so its error gets its ``extensions.code`` like any other.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from threading import Lock

from graphql import DocumentNode
from strawberry.extensions import SchemaExtension

__all__ = ["DocumentCache", "ParsedDocuments"]


class DocumentCache:
    """A bounded LRU map (query text, parse options) -> parsed document, shared by all requests."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._docs: OrderedDict[tuple[str, tuple[tuple[str, object], ...]], DocumentNode] = OrderedDict()
        self._lock = Lock()

    @staticmethod
    def key(query: str, options: dict[str, object]) -> tuple[str, tuple[tuple[str, object], ...]]:
        return query, tuple(sorted(options.items()))

    def get(self, key: tuple[str, tuple[tuple[str, object], ...]]) -> DocumentNode | None:
        with self._lock:
            doc = self._docs.get(key)
            if doc is not None:
                self._docs.move_to_end(key)
            return doc

    def put(self, key: tuple[str, tuple[tuple[str, object], ...]], doc: DocumentNode) -> None:
        with self._lock:
            self._docs[key] = doc
            self._docs.move_to_end(key)
            while len(self._docs) > self.maxsize:
                self._docs.popitem(last=False)

    def __len__(self) -> int:
        return len(self._docs)


class ParsedDocuments(SchemaExtension):
    """Per request: use the cached document of this query text, or keep the one Strawberry parses."""

    def __init__(self, cache: DocumentCache) -> None:
        super().__init__()
        self._cache = cache

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        query = ctx.query
        if ctx.graphql_document is not None or not query:
            yield
            return
        key = self._cache.key(query, dict(ctx.parse_options))
        doc = self._cache.get(key)
        if doc is not None:
            ctx.graphql_document = doc
            yield
            return
        yield  # Strawberry parses here; a parse error is reported by it, never cached
        if ctx.graphql_document is not None and not ctx.pre_execution_errors:
            self._cache.put(key, ctx.graphql_document)
